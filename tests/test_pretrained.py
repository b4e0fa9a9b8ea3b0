"""Tests of the shipped, meta-trained controller (garo_optax/pretrained)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax import _controller, pretrained

OPTIMIZERS = list(pretrained.FILES)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weights_file_loads_with_expected_version_and_shapes(optimizer):
  path = pretrained.FILES[optimizer]
  with np.load(path, allow_pickle=False) as data:
    assert str(data["format"]) == _controller.FILE_FORMAT
    assert int(data["version"]) == _controller.FILE_VERSION
    assert str(data["optimizer"]) == optimizer
    num_features = int(data["num_features"])
    assert num_features in _controller.NUM_FEATURES_READ
    hidden = int(data["hidden_size"])
  controller = pretrained.load(optimizer)
  assert isinstance(controller, garo_optax.ControllerParams)
  assert controller.hidden_size == hidden
  assert controller.gru.input_kernel.shape == (num_features, 3 * hidden)
  assert controller.head_kernel.shape == (hidden, 3)
  assert all(
    x.dtype == jnp.float32 and np.all(np.isfinite(x))
    for x in jax.tree.leaves(controller)
  )
  # Meta-training moved the weights away from the seeded initialization.
  assert float(jnp.max(jnp.abs(controller.head_kernel))) > 0.1
  assert path.stat().st_size < 100_000


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_feature_is_read(optimizer):
  """Meta-training reached every input weight of the shipped controller."""
  kernel = np.asarray(pretrained.load(optimizer).gru.input_kernel)
  assert np.all(np.any(kernel != 0.0, axis=1))


def test_other_version_is_rejected(tmp_path):
  with np.load(pretrained.WEIGHTS, allow_pickle=False) as data:
    arrays = dict(data)
  arrays["version"] = np.array(_controller.FILE_VERSION + 1)
  np.savez(tmp_path / "c.npz", **arrays)
  with pytest.raises(ValueError, match="version"):
    garo_optax.load_controller(tmp_path / "c.npz")


@pytest.mark.parametrize("learning_rate", [1e-3, 1e-2, 1e-1])
def test_pretrained_first_step_is_sgd(learning_rate):
  params = {"w": jnp.arange(4.0), "b": jnp.ones((2, 3))}
  grads = jax.tree.map(lambda p: 0.3 * p + 1.0, params)
  tx = garo_optax.garo(learning_rate, controller="pretrained")
  updates, _ = tx.update(grads, tx.init(params), params, value=jnp.array(2.0))
  sgd = optax.sgd(learning_rate)
  expected, _ = sgd.update(grads, sgd.init(params))
  for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(u, e, rtol=1e-6)


def test_pretrained_uses_its_training_bound():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}

  def run(tx):
    state = tx.init(params)
    out = []
    for step in range(4):
      _, state = tx.update(grads, state, params, value=jnp.array(1.0 + step))
      out.append(garo_optax.hyperparams(state)["learning_rate"])
    return np.array(out)

  # lr / (1 - momentum) = 2.5 from the start: the bound of 1 binds.
  bounded = run(garo_optax.garo(0.5, 0.8, controller="pretrained"))
  np.testing.assert_array_equal(
    bounded,
    run(
      garo_optax.garo(
        0.5,
        0.8,
        controller=pretrained.load(),
        max_effective_learning_rate=pretrained.MAX_EFFECTIVE_LEARNING_RATE,
        home_learning_rate=pretrained.HOME_LEARNING_RATE,
        home_steps=pretrained.HOME_STEPS,
      )
    ),
  )
  # The bound binds here: without it the learning rates differ.
  unbounded = run(
    garo_optax.garo(
      0.5,
      0.8,
      controller=pretrained.load(),
      home_learning_rate=pretrained.HOME_LEARNING_RATE,
      home_steps=pretrained.HOME_STEPS,
    )
  )
  assert not np.array_equal(bounded, unbounded)
  # So does the home rate (below the bound): without it the rates differ too.
  home = run(garo_optax.garo(0.05, controller="pretrained"))
  at_start = run(garo_optax.garo(0.05, controller="pretrained", home_steps=0))
  assert np.all(home < 1.0) and not np.array_equal(home, at_start)


def _hyperparams_over_steps(tx, params):
  """The hyperparameters after each of 5 steps on fixed sine gradients."""
  state, out = tx.init(params), []
  for step in range(5):
    grads = jax.tree.map(lambda p, s=step: jnp.sin(p * (s + 1.0)), params)
    _, state = tx.update(grads, state, params, value=jnp.array(1.0 / (step + 1)))
    out.append(jax.tree.map(np.asarray, garo_optax.hyperparams(state)))
  return out


@pytest.mark.parametrize("learning_rate", [1e-4, 1e-3, 1e-2])
def test_pretrained_adamw_first_step_is_adamw(learning_rate):
  params = {"w": jnp.arange(4.0), "b": jnp.ones((2, 3))}
  grads = jax.tree.map(lambda p: 0.3 * p + 1.0, params)
  tx = garo_optax.garo_adamw(learning_rate)
  updates, _ = tx.update(grads, tx.init(params), params, value=jnp.array(2.0))
  adamw = optax.adamw(learning_rate)
  expected, _ = adamw.update(grads, adamw.init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-12)


def test_pretrained_adamw_uses_its_training_bound():
  """garo_adamw() is garo_adamw(controller="pretrained") with the bound and
  home rate it was trained under."""
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  bounds = pretrained.BOUNDS["garo_adamw"]

  def hyperparams(tx):
    return _hyperparams_over_steps(tx, params)

  default = hyperparams(garo_optax.garo_adamw(0.5))
  spelled_out = hyperparams(
    garo_optax.garo_adamw(
      0.5,
      controller=pretrained.load("garo_adamw"),
      max_learning_rate=bounds.max_learning_rate,
      home_learning_rate=bounds.home_learning_rate,
      home_steps=bounds.home_steps,
    )
  )
  chex.assert_trees_all_equal(default, spelled_out)
  # A starting rate above the bound is applied as given (the bound cuts the
  # controller's rise only: tests/test_transform.py).
  assert default[0]["learning_rate"] == pytest.approx(0.5, rel=1e-5)
  assert bounds.max_learning_rate < 0.5


def test_pretrained_can_first_be_built_inside_jit():
  pretrained.load.cache_clear()
  params = {"w": jnp.ones(2)}

  @jax.jit
  def first_update(learning_rate):
    tx = garo_optax.garo(learning_rate, controller="pretrained")
    return tx.update(params, tx.init(params), params)[0]

  np.testing.assert_allclose(first_update(0.1)["w"], -0.1, rtol=1e-6)


def test_default_controller_is_the_pretrained_one():
  """``garo()`` is ``garo(controller="pretrained")``, bound and home rate
  included; ``controller="init"`` gives the seeded controller instead."""
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}

  def hyperparams(tx):
    return _hyperparams_over_steps(tx, params)

  default = hyperparams(garo_optax.garo(0.5))
  pretrained_ = hyperparams(garo_optax.garo(0.5, controller="pretrained"))
  seeded = hyperparams(garo_optax.garo(0.5, controller="init"))
  for a, b in zip(default, pretrained_, strict=True):
    chex.assert_trees_all_equal(a, b)
  assert not np.allclose(default[-1]["learning_rate"], seeded[-1]["learning_rate"])
