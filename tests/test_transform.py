"""Tests of ``garo_optax.garo``: SGD at the start, guards, dtypes, options."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

HEAD_NAMES = ("learning_rate", "momentum", "weight_decay")


def _controller(head_scale, seed=1):
  return garo_optax.init_controller(jax.random.key(seed), head_scale=head_scale)


def _hyperparams_trajectory(tx, params, grads):
  """Hyperparameters after each of ``grads`` (leading step axis), params fixed."""

  def step(state, g):
    _, state = tx.update(g, state, params)
    return state, garo_optax.hyperparams(state)

  return jax.lax.scan(step, tx.init(params), grads)[1]


def _at(grads, t):
  return jax.tree.map(lambda g: g[t], grads)


def test_learning_rate_caps(params, random_grads):
  grads = random_grads(jax.random.key(0), params, 100)
  effective = lambda hp: hp["learning_rate"] / (1.0 - jnp.abs(hp["momentum"]))

  def peaks(**cap):
    tx = garo_optax.garo(0.1, 0.5, controller=_controller(3.0), **cap)
    trajectory = jax.jit(_hyperparams_trajectory, static_argnums=0)(tx, params, grads)
    return jnp.max(trajectory["learning_rate"]), jnp.max(effective(trajectory))

  uncapped = peaks()
  for i, (option, start) in enumerate(
    [("max_learning_rate", 0.1), ("max_effective_learning_rate", 0.2)]
  ):
    assert uncapped[i] > 1.02 * start
    bound = float(start + uncapped[i]) / 2
    assert peaks(**{option: bound})[i] <= bound * (1 + 1e-6)


@pytest.mark.parametrize("make", [garo_optax.garo, garo_optax.garo_adamw])
def test_max_learning_rate_cuts_the_rise_not_the_rate_given(make, params, random_grads):
  """A starting rate above ``max_learning_rate`` is applied as given; as the
  rate worked around moves home, below the bound, the bound holds again."""
  grads = random_grads(jax.random.key(1), params, 300)
  tx = make(
    0.5,
    controller=_controller(3.0),
    max_learning_rate=0.05,
    home_learning_rate=0.01,
    home_steps=20.0,
  )
  lr = jax.jit(_hyperparams_trajectory, static_argnums=0)(tx, params, grads)[
    "learning_rate"
  ]
  assert lr[0] == pytest.approx(0.5, rel=1e-5)
  inverse = lambda x: x + np.log(-np.expm1(-x))  # softplus⁻¹
  t = np.arange(300)
  worked_around = np.logaddexp(
    0, inverse(0.5) + (inverse(0.01) - inverse(0.5)) * -np.expm1(-t / 20.0)
  )
  assert np.all(lr <= np.maximum(0.05, worked_around) * (1 + 1e-5))
  assert np.max(lr[200:]) <= 0.05 * (1 + 1e-6)
  assert np.max(lr[200:]) > 0.02  # the controller does rise: the cap is live


@pytest.mark.parametrize("momentum", [-0.5, 1.0])
def test_momentum_outside_zero_one_is_refused(momentum):
  with pytest.raises(ValueError, match="momentum"):
    garo_optax.garo(0.1, momentum)


def test_learning_rate_moves_home_in_closed_form(params, random_grads):
  """With zeroed heads the learning rate is softplus of its bias, which moves
  from softplus⁻¹(lr0) to softplus⁻¹(home) as 1 - exp(-t / home_steps)."""
  controller = _controller(1.0)
  controller = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  grads = random_grads(jax.random.key(0), params, 30)
  inverse = lambda x: x + np.log(-np.expm1(-x))  # softplus⁻¹
  for lr0, home in [(1e-3, 0.01), (0.1, 0.01), (0.05, 0.2)]:
    tx = garo_optax.garo(
      lr0, 0.9, controller=controller, home_learning_rate=home, home_steps=7.0
    )
    trajectory = jax.jit(_hyperparams_trajectory, static_argnums=0)(tx, params, grads)
    t = np.arange(30)
    bias = inverse(lr0) + (inverse(home) - inverse(lr0)) * -np.expm1(-t / 7.0)
    np.testing.assert_allclose(
      trajectory["learning_rate"], np.logaddexp(0, bias), rtol=2e-5
    )
    np.testing.assert_allclose(trajectory["momentum"], 0.9, rtol=1e-6)


def test_starting_at_home_is_the_run_without(params, random_grads):
  grads = random_grads(jax.random.key(0), params, 20)

  def trajectory(lr0, **home):
    tx = garo_optax.garo(lr0, 0.5, controller=_controller(1.0), **home)
    return jax.jit(_hyperparams_trajectory, static_argnums=0)(tx, params, grads)

  home = {"home_learning_rate": 0.05, "home_steps": 5.0}
  chex.assert_trees_all_close(trajectory(0.05, **home), trajectory(0.05), rtol=1e-6)
  # Elsewhere the home rate pulls: the comparison above has teeth.
  away = trajectory(0.2, **home)["learning_rate"]
  assert not np.allclose(away, trajectory(0.2)["learning_rate"], rtol=1e-3)
  # home_steps=0 turns it off.
  chex.assert_trees_all_equal(
    trajectory(0.2, home_learning_rate=0.05, home_steps=0.0), trajectory(0.2)
  )


def test_hyperparams_start_values_and_tree_get(params, random_grads):
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    garo_optax.garo(0.1, 0.9, 0.0, controller=_controller(1.0)),
  )
  state = tx.init(params)
  start = garo_optax.hyperparams(state)
  np.testing.assert_allclose(
    [start["learning_rate"], start["momentum"]], [0.1, 0.9], rtol=1e-6
  )
  assert 0 < start["weight_decay"] < 1e-8
  grads = random_grads(jax.random.key(0), params, 2)
  for t in range(2):
    for name in HEAD_NAMES:
      assert optax.tree.get(state, name) == garo_optax.hyperparams(state)[name]
    _, state = tx.update(_at(grads, t), state, params)
  assert garo_optax.hyperparams(state)["learning_rate"] != start["learning_rate"]


def test_callback_sees_each_step_under_jit(params, random_grads):
  calls = []
  tx = garo_optax.garo(
    0.1,
    controller=_controller(1.0),
    callback=lambda step, hp: calls.append((int(step), float(hp["learning_rate"]))),
  )
  update = jax.jit(tx.update)
  grads = random_grads(jax.random.key(0), params, 3)
  state, learning_rates = tx.init(params), []
  for t in range(3):
    _, state = update(_at(grads, t), state, params)
    learning_rates.append(float(state.hyperparams["learning_rate"]))
  jax.effects_barrier()
  assert calls == list(zip([1, 2, 3], learning_rates, strict=True))


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"momentum": 1.0}, "momentum"),
    ({"granularity": "per_layer"}, "granularity"),
    ({"home_learning_rate": 0.0, "home_steps": 10.0}, "home_learning_rate"),
    ({"home_learning_rate": 0.1, "home_steps": -1.0}, "home_steps"),
    # (The pretrained controller, the default, fills in its own home_steps.)
    ({"home_learning_rate": 0.1, "controller": "init"}, "home_steps"),
  ],
)
def test_bad_options_are_value_errors(params, kwargs, match):
  with pytest.raises(ValueError, match=match):
    garo_optax.garo(**kwargs).init(params)


def test_unknown_controller_name_is_a_missing_file():
  """A string other than 'pretrained' or 'init' is a path: a typo says so."""
  with pytest.raises(FileNotFoundError, match=r"pretrained-typo.*'init'"):
    garo_optax.garo(controller="pretrained-typo")


@pytest.mark.parametrize(
  ("kwargs", "name"),
  [
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"learning_rate": np.float32(-0.1)}, "learning_rate"),
    ({"learning_rate": jnp.asarray(-0.1)}, "learning_rate"),
    ({"learning_rate": jnp.asarray(float("nan"))}, "learning_rate"),
    ({"weight_decay": float("nan")}, "weight_decay"),
    ({"momentum": np.float64(1.0)}, "momentum"),
    ({"hidden_size": 0, "controller": "init"}, "hidden_size"),
    ({"hidden_size": -1, "controller": "init"}, "hidden_size"),
    ({"granularity": "bogus"}, "granularity"),
    ({"max_learning_rate": 0.0}, "max_learning_rate"),
    ({"total_steps": 0}, "total_steps"),
    ({"total_steps": -100}, "total_steps"),
    ({"total_steps": float("inf")}, "total_steps"),
    ({"total_steps": jnp.ones(2)}, "total_steps"),
  ],
)
def test_bad_argument_is_refused_by_name(kwargs, name):
  with pytest.raises(ValueError, match=name):
    garo_optax.garo(**kwargs)


@pytest.mark.parametrize(
  ("kwargs", "name"),
  [
    ({"learning_rate": jnp.ones(2)}, "learning_rate"),
    ({"learning_rate": "0.1"}, "learning_rate"),
    ({"hidden_size": 8.0, "controller": "init"}, "hidden_size"),
    ({"seed": jnp.asarray(0), "controller": "init"}, "seed"),
    ({"total_steps": "1000"}, "total_steps"),
    ({"total_steps": True}, "total_steps"),
  ],
)
def test_argument_of_wrong_type_is_refused_by_name(kwargs, name):
  with pytest.raises(TypeError, match=name):
    garo_optax.garo(**kwargs)


def _zero_heads(controller):
  return controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))


def test_schedule_is_the_rate_at_every_step(loss_fn, params, train):
  """With the heads' weights zeroed, GARO is SGD at the schedule's rate."""
  schedule = optax.cosine_decay_schedule(0.2, 100, alpha=0.1)
  controller = _zero_heads(garo_optax.init_controller(jax.random.key(0)))
  got, state, losses = train(
    garo_optax.garo(schedule, controller=controller), params, 120
  )
  want, _, sgd_losses = train(optax.sgd(schedule), params, 120)
  np.testing.assert_allclose(losses, sgd_losses, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    state.hyperparams["learning_rate"], schedule(119), rtol=1e-5
  )


def test_injected_rate_is_the_rate_at_every_step(loss_fn, params):
  """``optax.inject_hyperparams``: the injected learning rate is the rate
  GARO works around; changed between steps, it is followed as SGD would."""
  controller = _zero_heads(garo_optax.init_controller(jax.random.key(0)))
  tx = optax.inject_hyperparams(garo_optax.garo)(0.1, controller=controller)
  sgd = optax.inject_hyperparams(optax.sgd)(0.1)
  states = [tx.init(params), sgd.init(params)]
  current = [params, params]
  for t in range(30):
    for i, opt in enumerate((tx, sgd)):
      states[i].hyperparams["learning_rate"] = jnp.asarray(0.1 / (1 + t))
      grads = jax.grad(loss_fn)(current[i])
      updates, states[i] = opt.update(grads, states[i], current[i])
      current[i] = optax.apply_updates(current[i], updates)
  chex.assert_trees_all_close(current[0], current[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    garo_optax.hyperparams(states[0])["learning_rate"], 0.1 / 30, rtol=1e-5
  )


def test_total_steps_beyond_int32_runs_in_and_outside_jit(params):
  # Any number of steps is a valid horizon (progress reads it as a float),
  # also where the update runs op by op and passes it to a jitted part.
  grads = jax.tree.map(jnp.ones_like, params)
  for total_steps in (2**31 - 1, 10**12):
    tx = garo_optax.garo(0.05, total_steps=total_steps)
    state = tx.init(params)
    eager = tx.update(grads, state, params, value=jnp.float32(1.0))
    jitted = jax.jit(tx.update)(grads, state, params, value=jnp.float32(1.0))
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6)
    chex.assert_tree_all_finite(eager)


def test_schedule_with_home_rate_is_refused():
  with pytest.raises(ValueError, match="home_learning_rate"):
    garo_optax.garo(
      optax.constant_schedule(0.1), home_learning_rate=0.01, home_steps=10
    )


def test_total_steps_changes_the_run_only_through_progress(params, random_grads):
  """A horizon is one more input to the controller: the same first step, then
  other hyperparameters than without it; past the horizon progress stays 1."""
  grads = random_grads(jax.random.key(0), params, 30)

  def trajectory(total_steps):
    tx = garo_optax.garo(0.05, controller=_controller(3.0), total_steps=total_steps)
    return jax.jit(_hyperparams_trajectory, static_argnums=0)(tx, params, grads)

  without, with_horizon = trajectory(None), trajectory(10)
  assert without["learning_rate"][0] == with_horizon["learning_rate"][0]
  assert not np.allclose(
    without["learning_rate"][5:], with_horizon["learning_rate"][5:]
  )
  # optax.inject_hyperparams makes it an array: the same run.
  injected = optax.inject_hyperparams(garo_optax.garo)(
    0.05, controller=_controller(3.0), total_steps=10
  )
  state = injected.init(params)
  for t in range(12):
    _, state = injected.update(_at(grads, t), state, params)
    np.testing.assert_allclose(
      garo_optax.hyperparams(state)["learning_rate"],
      with_horizon["learning_rate"][t],
      rtol=1e-5,
    )
