"""Tests of garo_optax.meta: the inner loop, meta-gradient estimators and the
trainer (the task families are in ``test_meta_tasks.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import garo_optax
from garo_optax.meta import estimators, inner, problems, tasks


@pytest.fixture(scope="module")
def quadratic():
  return tasks.quadratic_family(8, 4).sample(jax.random.key(0))


def test_conv_matches_lax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  expected = jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(problems._conv3x3(x, w), expected, rtol=1e-4, atol=1e-4)


def test_meta_loss_penalises_divergence():
  initial = jnp.array(1.0)
  progress = inner.meta_loss(jnp.array([1.0, 0.5, 0.25]), initial)
  assert progress < 0
  diverged = inner.meta_loss(jnp.array([1.0, 10.0, jnp.nan]), initial)
  assert diverged == pytest.approx(
    (np.log(10.0) + inner.LOG_CAP) * (1 + inner.DIVERGENCE_PENALTY) / 3
  )


def test_meta_loss_floor_is_configurable():
  initial = jnp.array(1.0)
  deep = jnp.full((4,), np.exp(-15.0))
  assert inner.meta_loss(deep, initial) == pytest.approx(-inner.LOG_FLOOR)
  assert inner.meta_loss(deep, initial, log_floor=20.0) == pytest.approx(
    -15.0, rel=1e-5
  )


def _small_controller(scale=1.0):
  return garo_optax.init_controller(jax.random.key(5), hidden_size=4, head_scale=scale)


def test_truncated_gradient_matches_finite_differences(quadratic):
  controller = _small_controller()
  learning_rate = jnp.array(0.05)
  key = jax.random.key(6)

  @jax.jit
  def f(c):
    return inner.unroll_meta_loss(c, quadratic, key, learning_rate, 6)

  task = jax.tree.map(lambda x: x[None], quadratic)
  state = jax.vmap(inner.inner_init, (None, 0, 0, 0))(
    controller, task, key[None], learning_rate[None]
  )
  _, grad, _ = jax.jit(estimators.truncated_gradient, static_argnums=4)(
    controller, task, state, learning_rate[None], 6
  )
  direction = jax.tree.map(
    lambda x: jax.random.normal(jax.random.key(7), x.shape), controller
  )
  eps = 1e-2
  plus = f(jax.tree.map(lambda c, d: c + eps * d, controller, direction))
  minus = f(jax.tree.map(lambda c, d: c - eps * d, controller, direction))
  finite_difference = (plus - minus) / (2 * eps)
  analytic = sum(
    jnp.vdot(g, d)
    for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
  )
  assert analytic == pytest.approx(float(finite_difference), rel=0.05, abs=1e-4)
  assert abs(float(analytic)) > 1e-4


def _flat(tree):
  return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


def test_es_gradient_correlates_with_true_gradient(quadratic):
  controller = _small_controller()
  pairs, steps, learning_rate = 512, 6, jnp.array(0.05)
  key = jax.random.key(6)
  true = jax.jit(jax.grad(inner.unroll_meta_loss), static_argnums=4)(
    controller, quadratic, key, learning_rate, steps
  )
  task = jax.tree.map(lambda x: jnp.broadcast_to(x, (pairs, *x.shape)), quadratic)
  _, es = jax.jit(
    lambda c: estimators.es_gradient(
      c,
      task,
      jnp.stack([key] * pairs),
      jnp.full((pairs,), learning_rate),
      steps,
      jax.random.key(8),
      sigma=1e-3,
    )
  )(controller)
  cosine = jnp.vdot(_flat(true), _flat(es)) / (
    jnp.linalg.norm(_flat(true)) * jnp.linalg.norm(_flat(es))
  )
  assert cosine > 0.5


def test_pes_first_truncation_is_es_and_perturbations_accumulate(quadratic):
  controller = _small_controller()
  pairs, steps = 8, 4
  learning_rate = jnp.full((pairs,), 0.05)
  task = jax.tree.map(lambda x: jnp.broadcast_to(x, (pairs, *x.shape)), quadratic)
  keys = jax.random.split(jax.random.key(6), pairs)

  pes_step = jax.jit(
    lambda state, key: estimators.pes_gradient(
      controller, task, state, learning_rate, steps, key, sigma=0.01
    )
  )
  loss1, grad1, state = pes_step(
    jax.jit(estimators.pes_init)(controller, task, keys, learning_rate),
    jax.random.key(1),
  )
  _, _, state = pes_step(state, jax.random.key(2))
  es_loss, es_grad = jax.jit(
    lambda c: estimators.es_gradient(
      c, task, keys, learning_rate, steps, jax.random.key(1), sigma=0.01
    )
  )(controller)
  # A first truncation from scratch is a whole unroll: PES is ES there.
  assert loss1 == pytest.approx(float(es_loss), rel=1e-5)
  np.testing.assert_allclose(_flat(grad1), _flat(es_grad), rtol=1e-3, atol=1e-5)
  assert int(state.plus.step[0]) == 2 * steps
  perturbations = jax.jit(estimators._perturbations, static_argnums=(2, 3))
  expected = jax.tree.map(
    jnp.add,
    perturbations(jax.random.key(1), controller, pairs, 0.01),
    perturbations(jax.random.key(2), controller, pairs, 0.01),
  )
  np.testing.assert_allclose(
    _flat(state.accumulated), _flat(expected), rtol=1e-5, atol=1e-7
  )


def test_es_keeps_candidate_biases_at_zero():
  controller = _small_controller()
  epsilon = jax.jit(estimators._perturbations, static_argnums=(2, 3))(
    jax.random.key(0), controller, 3, 1.0
  )
  np.testing.assert_array_equal(epsilon.gru.input_bias[:, 8:], 0.0)
  np.testing.assert_array_equal(epsilon.gru.hidden_bias, 0.0)
  assert np.all(epsilon.gru.input_bias[:, :8] != 0.0)
  assert np.all(epsilon.head_kernel != 0.0)


def test_pes_training_is_deterministic_and_resumes(tmp_path, monkeypatch):
  from garo_optax.meta import train

  # Two tiny families (one problem type each), so that a pair's runs outlive
  # the meta-steps in which their family is not drawn.
  families = (tasks.quadratic_family(4, 2), tasks.logistic_family(4, 2, 4))
  monkeypatch.setattr(train, "_training_families", lambda: families)

  def run(name, meta_steps, checkpoint=None):
    out = tmp_path / f"{name}.npz"
    flags = ["--out", str(out), "--meta-steps", str(meta_steps)]
    flags += ["--estimator", "pes", "--unroll", "2", "--horizon", "6"]
    flags += ["--pairs", "2", "--families-per-step", "1", "--hidden-size", "4"]
    if checkpoint:
      flags += ["--checkpoint", str(checkpoint), "--checkpoint-every", "3"]
    train.main(flags)
    return _flat(garo_optax.load_controller(str(out)))

  initial = _flat(_small_controller())
  first = run("first", 8)
  assert first.shape == initial.shape and np.all(np.isfinite(first))
  np.testing.assert_array_equal(run("again", 8), first)
  # Stopped after 6 meta-steps (restarts have happened, runs are mid-horizon),
  # then resumed from the checkpoint: the same weights as the straight run.
  checkpoint = tmp_path / "ckpt.npz"
  partial = run("resumed", 6, checkpoint)
  assert not np.array_equal(partial, first)
  np.testing.assert_array_equal(run("resumed", 8, checkpoint), first)
  with pytest.raises(ValueError, match="multiple"):
    train.main(["--out", "x.npz", "--estimator", "pes", "--unroll", "2"])


def test_training_starts_from_init_file(tmp_path, monkeypatch):
  """One Adam step from ``--init`` moves each weight by at most ``--meta-lr``."""
  from garo_optax.meta import train

  families = (tasks.quadratic_family(4, 2),)
  monkeypatch.setattr(train, "_training_families", lambda: families)
  start = garo_optax.init_controller(jax.random.key(5), hidden_size=4, head_scale=1.0)
  garo_optax.save_controller(tmp_path / "start.npz", start)
  flags = ["--out", str(tmp_path / "out.npz"), "--meta-steps", "1", "--unroll", "5"]
  flags += ["--pairs", "2", "--families-per-step", "1", "--meta-lr", "1e-3"]
  flags += ["--init", str(tmp_path / "start.npz")]
  train.main(flags)
  moved = _flat(garo_optax.load_controller(tmp_path / "out.npz")) - _flat(start)
  assert 0 < np.max(np.abs(moved)) <= 1e-3 * (1 + 1e-4)


def test_dropped_features_are_zeroed_and_stay_zero(tmp_path, monkeypatch):
  """``--drop-features`` zeroes the features' input weights of the ``--init``
  controller, ES never perturbs them, and every other input weight trains."""
  from garo_optax import _features
  from garo_optax.meta import train

  families = (tasks.quadratic_family(4, 2),)
  monkeypatch.setattr(train, "_training_families", lambda: families)
  start = garo_optax.init_controller(jax.random.key(5), hidden_size=4, head_scale=1.0)
  garo_optax.save_controller(tmp_path / "start.npz", start)
  dropped = ["time", "log_grad_norm_change"]
  rows = [_features.FEATURE_NAMES.index(name) for name in dropped]
  kept = [i for i in range(_features.NUM_FEATURES) if i not in rows]
  flags = ["--init", str(tmp_path / "start.npz"), "--drop-features", *dropped]
  flags += ["--unroll", "5", "--pairs", "2", "--families-per-step", "1"]

  def input_kernel(controller):
    return np.asarray(controller.gru.input_kernel)

  train.main(["--out", str(tmp_path / "zero.npz"), "--meta-steps", "0", *flags])
  pruned = garo_optax.load_controller(tmp_path / "zero.npz")
  np.testing.assert_array_equal(input_kernel(pruned)[rows], 0.0)
  np.testing.assert_array_equal(input_kernel(pruned)[kept], input_kernel(start)[kept])
  np.testing.assert_array_equal(pruned.head_kernel, start.head_kernel)

  train.main(["--out", str(tmp_path / "trained.npz"), "--meta-steps", "2", *flags])
  trained = garo_optax.load_controller(tmp_path / "trained.npz")
  np.testing.assert_array_equal(input_kernel(trained)[rows], 0.0)
  assert np.all(input_kernel(trained)[kept] != input_kernel(start)[kept])
  epsilon = estimators._perturbations(jax.random.key(0), start, 2, 1.0, tuple(rows))
  epsilon = np.asarray(epsilon.gru.input_kernel)
  np.testing.assert_array_equal(epsilon[:, rows], 0.0)
  assert np.all(epsilon[:, kept] != 0.0)
  with pytest.raises(SystemExit):  # argparse: not a feature's name
    train.main(["--out", str(tmp_path / "x.npz"), "--drop-features", "momentum"])


def test_inner_runs_use_the_home_rate_and_the_flags_go_together(tmp_path):
  """With zeroed heads the inner optimizer's learning rate is softplus of its
  bias, which the home rate moves from lr0's towards the home rate's."""
  from garo_optax.meta import train

  controller = _small_controller()
  controller = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([0.1, -0.2, 0.3])}

  def learning_rates(config):
    tx = inner._optimizer(controller, 0.1, config)
    state, out = tx.init(params), []
    for _ in range(20):
      _, state = tx.update(grads, state, params)
      out.append(float(garo_optax.hyperparams(state)["learning_rate"]))
    return np.array(out)

  np.testing.assert_allclose(learning_rates(inner.InnerConfig()), 0.1, rtol=1e-5)
  home = inner.InnerConfig(home_learning_rate=0.01, home_steps=5.0)
  moving = learning_rates(home)
  assert moving[0] == pytest.approx(0.1, rel=1e-5)
  assert np.all(np.diff(moving) < 0) and moving[-1] < 0.012
  with pytest.raises(ValueError, match="go together"):
    train.main(["--out", str(tmp_path / "x.npz"), "--home-lr", "0.01"])


def test_evaluation_summary_holds_the_issue_criteria():
  """Closed-form check of ``evaluate.summarise`` on made-up final losses."""
  from benchmarks import pretrained as evaluate
  from benchmarks.train import Curves

  def curves(final, initial=1.0):
    losses = np.array([initial, final])
    return Curves(np.array([0, 10]), losses, losses, {}, 0.0)

  def base(sgd, adam, tuned):
    record = lambda x: {"learning_rate": 0.1, "final": [x], "metric": [x]}
    return {
      "sgd": record(sgd),
      "adam": record(adam),
      "sgd_momentum_tuned": record(tuned),
      "adam_tuned": record(2 * tuned),
    }

  garo = {
    "a": {1e-3: [curves(0.4)], 1e-2: [curves(0.2)], 1e-1: [curves(0.1)]},
    # The tuned baseline fits exactly: ratio 1 when GARO does too.
    "b": {1e-3: [curves(0.0)], 1e-2: [curves(0.0)], 1e-1: [curves(0.0)]},
  }
  summary = evaluate.summarise(
    garo, {"a": base(0.5, 0.1, 0.05), "b": base(0.5, 0.1, 0.0)}
  )
  assert summary["beats_sgd"] == 2 and summary["beats_adam"] == 1
  assert summary["geomean_ratio_to_best_tuned"] == pytest.approx(np.sqrt(4.0 * 1.0))
  assert summary["tasks"]["a"]["lr_spread"] == pytest.approx(4.0)
  assert summary["lr_spread_within_2x"] == 1
  assert summary["nonfinite"] == 0 and summary["above_initial"] == 0
  # Losses are floored at 1e-6 of the initial loss (1.0 here), as the suite's
  # report floors them: 1e-3 against an exact fit is 1e3 times the floor.
  garo["b"][1e-2] = [curves(1e-3)]
  summary = evaluate.summarise(
    garo, {"a": base(0.5, 0.1, 0.05), "b": base(0.5, 0.1, 0.0)}
  )
  assert summary["geomean_ratio_to_best_tuned"] == pytest.approx(np.sqrt(4e3))
  assert summary["geomean_ratio_unfloored"] == float("inf")
  assert summary["tasks"]["b"]["lr_spread"] == pytest.approx(1e3)
  # Both below the floor: solved alike, whatever their unfloored ratio.
  garo["b"][1e-2] = [curves(1e-9)]
  summary = evaluate.summarise(
    garo, {"a": base(0.5, 0.1, 0.05), "b": base(0.5, 0.1, 1e-12)}
  )
  assert summary["tasks"]["b"]["ratio"] == 1.0
  assert summary["tasks"]["b"]["ratio_unfloored"] == pytest.approx(1e3)
  assert summary["max_lr_spread"] == pytest.approx(4.0)
  assert summary["max_lr_spread_unfloored"] == float("inf")
