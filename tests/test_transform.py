"""Tests of ``garo_optax.garo``: SGD at the start, guards, dtypes, options."""

import functools

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


@pytest.fixture(scope="module")
def moving():
  """GARO whose hyperparameters visibly move, and its update, jitted once.

  Pass ``value`` as a float32 array so that every test reuses one compilation.
  """
  tx = garo_optax.garo(0.1, 0.9, 0.01, controller=_controller(1.0))
  return tx, jax.jit(tx.update)


@pytest.mark.parametrize("head_scale", [0.1, 3.0])
@pytest.mark.parametrize(
  ("hyperparams", "reference"),
  [
    ({"learning_rate": 0.1}, optax.sgd(0.1)),
    (
      {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01},
      optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, 0.9)),
    ),
  ],
)
@pytest.mark.parametrize("total_steps", [None, 10])
def test_first_step_is_sgd(
  params, random_grads, hyperparams, reference, head_scale, total_steps
):
  tx = garo_optax.garo(
    **hyperparams, controller=_controller(head_scale), total_steps=total_steps
  )
  grads = _at(random_grads(jax.random.key(0), params, 1), 0)
  updates, state = tx.update(grads, tx.init(params), params)
  expected, _ = reference.update(grads, reference.init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(state.hidden, 0.0)


def test_zero_heads_equal_sgd_over_many_steps(params, train):
  controller = _controller(1.0)
  controller = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  tx = garo_optax.garo(0.05, 0.9, 0.01, controller=controller)
  reference = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, 0.9))
  final, state, losses = train(tx, params, 50)
  expected, _, expected_losses = train(reference, params, 50)
  chex.assert_trees_all_close(final, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  # The GRU did run: only the zeroed heads keep the hyperparameters constant.
  assert np.abs(state.hidden).max() > 1e-3
  assert losses[-1] < 0.5 * losses[0]


def test_jit_matches_eager(params, random_grads, moving):
  tx, jitted_update = moving
  grads = random_grads(jax.random.key(0), params, 3)
  results = []
  for update in (tx.update, jitted_update):
    state = tx.init(params)
    for t in range(3):
      value = jnp.float32(1.0 / (t + 1))
      updates, state = update(_at(grads, t), state, params, value=value)
    results.append((updates, state))
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  assert results[0][1].count == 3


def test_vmap_over_controller_seeds(params, random_grads):
  grads = random_grads(jax.random.key(0), params, 3)
  controllers = [_controller(1.0, seed) for seed in range(3)]

  def final_learning_rate(controller):
    tx = garo_optax.garo(0.1, 0.5, controller=controller)
    return _hyperparams_trajectory(tx, params, grads)["learning_rate"][-1]

  stacked = jax.tree.map(lambda *x: jnp.stack(x), *controllers)
  batched = jax.jit(jax.vmap(final_learning_rate))(stacked)
  one_by_one = jnp.stack([jax.jit(final_learning_rate)(c) for c in controllers])
  np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
  assert len(np.unique(np.asarray(batched))) == 3


@pytest.mark.parametrize("bad", ["nan_grad", "inf_grad", "nan_value"])
def test_nonfinite_step_is_skipped(params, random_grads, moving, bad):
  tx, update = moving
  grads = random_grads(jax.random.key(0), params, 4)
  values = jnp.array([1.0, 0.9, 0.8, 0.7])
  bad_grads = {
    "nan_grad": {**grads, "scale": grads["scale"].at[2].set(jnp.nan)},
    "inf_grad": {**grads, "scale": grads["scale"].at[2].set(-jnp.inf)},
    "nan_value": grads,
  }[bad]
  bad_value = jnp.float32(jnp.nan) if bad == "nan_value" else values[2]

  def run(bad_step):
    state, p = tx.init(params), params
    for t in range(4):
      if t == bad_step:
        updates, new_state = update(_at(bad_grads, t), state, p, value=bad_value)
        chex.assert_trees_all_equal(updates, optax.tree.zeros_like(p))
        chex.assert_trees_all_equal(
          new_state,
          state._replace(
            skipped=state.skipped + 1, skipped_in_a_row=state.skipped_in_a_row + 1
          ),
        )
        state = new_state
      updates, state = update(_at(grads, t), state, p, value=values[t])
      p = optax.apply_updates(p, updates)
    return p, state

  clean_params, clean_state = run(bad_step=None)
  skipped_params, skipped_state = run(bad_step=2)
  assert skipped_state.skipped == 1 and clean_state.skipped == 0
  chex.assert_trees_all_equal(
    (skipped_params, skipped_state._replace(skipped=clean_state.skipped)),
    (clean_params, clean_state),
  )


# Gradients so large that Σg² overflows float32 are skipped, as documented.
@pytest.mark.parametrize(("scale", "skipped"), [(0.0, 0), (1e-30, 0), (1e30, 3)])
def test_extreme_gradients_give_finite_output(
  params, random_grads, moving, scale, skipped
):
  tx, update = moving
  grads = random_grads(jax.random.key(0), params, 3)
  state = tx.init(params)
  for t in range(3):
    g = jax.tree.map(lambda x, t=t: scale * x[t], grads)
    updates, state = update(g, state, params, value=jnp.float32(1.0))
    chex.assert_tree_all_finite((updates, state))
  assert state.skipped == skipped and state.count == 3 - skipped


def test_hyperparams_invariant_to_gradient_scale(params, random_grads):
  tx = garo_optax.garo(0.1, 0.9, 0.0, controller=_controller(1.0))
  trajectory = jax.jit(functools.partial(_hyperparams_trajectory, tx, params))
  grads = random_grads(jax.random.key(0), params, 20)
  reference = trajectory(grads)
  for scale in (1e-4, 1e4):
    scaled = trajectory(jax.tree.map(lambda g, s=scale: s * g, grads))
    chex.assert_trees_all_close(scaled, reference, rtol=1e-4)
  # The trajectory moves, so the comparison is not between constants.
  assert np.ptp(reference["learning_rate"]) > 1e-2 * 0.1
  assert np.ptp(reference["momentum"]) > 1e-2 * 0.9


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


def test_per_leaf_granularity(params, random_grads):
  tx = garo_optax.garo(0.1, controller=_controller(1.0), granularity="per_leaf")
  grads = random_grads(jax.random.key(0), params, 2)
  state = tx.init(params)
  updates, state = tx.update(_at(grads, 0), state, params)
  chex.assert_trees_all_close(
    updates, jax.tree.map(lambda g: -0.1 * g, _at(grads, 0)), rtol=1e-6, atol=1e-9
  )
  _, state = tx.update(_at(grads, 1), state, params)
  learning_rates = garo_optax.hyperparams(state)["learning_rate"]
  assert set(learning_rates) == {"dense/bias", "dense/kernel", "scale"}
  assert len({float(v) for v in learning_rates.values()}) == 3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_updates_keep_param_dtype(params, random_grads, dtype):
  params = optax.tree.cast(params, dtype)
  tx = garo_optax.garo(0.1, 0.9, 0.01)
  grads = optax.tree.cast(_at(random_grads(jax.random.key(0), params, 1), 0), dtype)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  _assert_dtypes(updates, state, dtype, dtype)


def test_float64_params_keep_their_dtype(params):
  tx = garo_optax.garo(0.1, 0.9, 0.01)
  with jax.enable_x64(True):
    # Dtypes only: tracing with jax.eval_shape is enough, and compiles nothing.
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float64), params)
    state = jax.eval_shape(tx.init, params)
    for _ in range(2):
      updates, state = jax.eval_shape(tx.update, params, state, params)
    _assert_dtypes(updates, state, jnp.float64, jnp.float64)


def test_mu_dtype_is_honoured(params, random_grads):
  tx = garo_optax.garo(0.1, 0.9, mu_dtype=jnp.bfloat16)
  grads = _at(random_grads(jax.random.key(0), params, 1), 0)
  updates, state = tx.update(grads, tx.init(params), params)
  _assert_dtypes(updates, state, jnp.float32, jnp.bfloat16)
  # The applied step is read back from the bfloat16 buffer.
  expected = jax.tree.map(
    lambda g: -0.1 * g.astype(jnp.bfloat16).astype(g.dtype), grads
  )
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-9)


def _assert_dtypes(updates, state, update_dtype, mu_dtype):
  def dtypes(tree):
    return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)}

  assert dtypes(updates) == {jnp.dtype(update_dtype)}
  assert dtypes(state.mu) == {jnp.dtype(mu_dtype)}
  assert dtypes((state.hidden, state.hyperparams)) == {jnp.dtype(jnp.float32)}


def test_missing_params_is_a_value_error(params):
  tx = garo_optax.garo()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize(
  "grads",
  [
    lambda p: {"dense": p["dense"]},
    lambda p: {**p, "extra": p["scale"]},
    lambda p: {**p, "scale": jnp.zeros(2)},
  ],
  ids=["missing_leaf", "extra_leaf", "wrong_shape"],
)
def test_grads_unlike_state_are_a_value_error(params, grads):
  tx = garo_optax.garo()
  with pytest.raises(ValueError, match="grads"):
    tx.update(grads(params), tx.init(params), params)


def test_integer_params_are_a_type_error(params):
  params = {**params, "steps": jnp.arange(3)}
  with pytest.raises(TypeError, match=r"\['steps'\].*int"):
    garo_optax.garo().init(params)


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


def test_non_scalar_value_is_refused(params):
  tx = garo_optax.garo()
  state = tx.init(params)
  with pytest.raises(ValueError, match="value"):
    tx.update(params, state, params, value=jnp.ones(3))


def test_state_of_another_controller_is_refused(params):
  small = garo_optax.init_controller(jax.random.key(0), hidden_size=8)
  state = garo_optax.garo(controller="init").init(params)  # hidden size 16
  with pytest.raises(ValueError, match="hidden"):
    garo_optax.garo(controller=small).update(params, state, params)


@pytest.mark.parametrize(
  ("made", "used"), [("per_leaf", "global"), ("global", "per_leaf")]
)
def test_state_of_another_granularity_is_refused(params, made, used):
  state = garo_optax.garo(granularity=made).init(params)
  with pytest.raises(ValueError, match="granularity"):
    garo_optax.garo(granularity=used).update(params, state, params)


def test_integer_params_at_update_are_refused(params):
  tx = garo_optax.garo()
  state = tx.init(params)
  ints = jax.tree.map(lambda p: p.astype(jnp.int32), params)
  with pytest.raises(TypeError, match="floating-point"):
    tx.update(params, state, ints)


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
