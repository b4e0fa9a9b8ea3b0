"""What every GARO transformation does, checked for ``garo`` and ``garo_adamw``.

Both are one pipeline (statistics, features, controller, safeguard) around
their update rules, so they share these checks: the first step is the rule
they start from (optax's SGD, optax's AdamW), zero head weights keep it so,
``jit``, ``vmap``, skipped non-finite steps, gradient-scale invariance,
dtypes, bad input, optax's wrappers and checkpoints. Each transformation's
own behaviour is tested in ``test_transform.py`` and ``test_adamw.py``.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

import garo_optax


@dataclasses.dataclass(frozen=True)
class Kind:
  """A GARO transformation, and the optax rule it starts as."""

  make: Callable[..., optax.GradientTransformationExtraArgs]
  state_type: type
  # The second head's hyperparameter: "momentum" or "b1".
  moment: str
  # Starting values that visibly use every part of the rule.
  values: dict[str, float]
  # (learning_rate, moment, weight_decay) -> the optax rule at those values.
  reference: Callable[[float, float, float], optax.GradientTransformation]
  # The state's buffers shaped like the params.
  buffers: tuple[str, ...]

  def reference_at(self, values: dict[str, Any]) -> optax.GradientTransformation:
    full = {**self.defaults, **values}
    return self.reference(
      full["learning_rate"], full[self.moment], full["weight_decay"]
    )

  @property
  def defaults(self) -> dict[str, float]:
    return (
      {"momentum": 0.0, "weight_decay": 0.0}
      if self.moment == "momentum"
      else {"b1": 0.9, "weight_decay": 1e-4}
    )


KINDS = {
  "garo": Kind(
    make=garo_optax.garo,
    state_type=garo_optax.GaroState,
    moment="momentum",
    values={"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    reference=lambda lr, mom, wd: optax.chain(
      optax.add_decayed_weights(wd), optax.sgd(lr, mom)
    ),
    buffers=("mu",),
  ),
  "garo_adamw": Kind(
    make=garo_optax.garo_adamw,
    state_type=garo_optax.GaroAdamWState,
    moment="b1",
    values={"learning_rate": 0.01, "b1": 0.8, "weight_decay": 0.01},
    reference=lambda lr, b1, wd: optax.adamw(lr, b1, weight_decay=wd),
    buffers=("mu", "nu"),
  ),
}


@pytest.fixture(params=list(KINDS))
def kind(request) -> Kind:
  return KINDS[request.param]


def _controller(head_scale, seed=1, num_features=7):
  return garo_optax.init_controller(
    jax.random.key(seed), head_scale=head_scale, num_features=num_features
  )


def _zero_heads(controller):
  return controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))


def _at(grads, t):
  return jax.tree.map(lambda g: g[t], grads)


def _hyperparams_trajectory(tx, params, grads):
  """Hyperparameters after each of ``grads`` (leading step axis), params fixed."""

  def step(state, g):
    _, state = tx.update(g, state, params)
    return state, garo_optax.hyperparams(state)

  return jax.lax.scan(step, tx.init(params), grads)[1]


@functools.cache
def _moving(name):
  """A transformation whose hyperparameters visibly move, and its update,
  jitted once (pass ``value`` as a float32 array to reuse the compilation)."""
  kind = KINDS[name]
  tx = kind.make(**kind.values, controller=_controller(1.0))
  return tx, jax.jit(tx.update)


@pytest.fixture
def moving(kind):
  return _moving(kind.make.__name__)


@pytest.mark.parametrize(
  ("head_scale", "full", "total_steps"),
  [(0.1, False, None), (3.0, True, 10), (3.0, False, None), (0.1, True, 10)],
)
def test_first_step_is_the_reference(
  kind, params, random_grads, full, head_scale, total_steps
):
  values = kind.values if full else {"learning_rate": 0.1}
  tx = kind.make(**values, controller=_controller(head_scale), total_steps=total_steps)
  reference = kind.reference_at(values)
  grads = _at(random_grads(jax.random.key(0), params, 1), 0)
  updates, state = tx.update(grads, tx.init(params), params)
  expected, _ = reference.update(grads, reference.init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(state.hidden, 0.0)


def test_zero_heads_equal_the_reference_over_many_steps(kind, params, train):
  tx = kind.make(**kind.values, controller=_zero_heads(_controller(1.0)))
  final, state, losses = train(tx, params, 50)
  expected, _, expected_losses = train(kind.reference_at(kind.values), params, 50)
  chex.assert_trees_all_close(final, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  # The GRU did run: only the zeroed heads keep the hyperparameters constant.
  assert np.abs(state.hidden).max() > 1e-3
  assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_learning_rate_moves_at_most_its_bounds(kind, params, direction):
  """A controller whose head asks for a far higher (or lower) rate gets it
  at the running mean's pace: 0.05 a step in log, up as down."""
  controller = _controller(1.0)
  gru, size = controller.gru, controller.hidden_size
  # Every hidden unit goes to 1 and stays there; the head reads them.
  climber = controller._replace(
    gru=gru._replace(
      input_kernel=jnp.zeros_like(gru.input_kernel),
      hidden_kernel=jnp.zeros_like(gru.hidden_kernel),
      input_bias=jnp.concatenate(
        [jnp.zeros(size), jnp.full(size, -30.0), jnp.full(size, 30.0)]
      ),
      hidden_bias=jnp.zeros_like(gru.hidden_bias),
    ),
    head_kernel=jnp.zeros_like(controller.head_kernel).at[:, 0].set(direction),
  )
  tx = kind.make(1e-3, controller=climber)
  grads = jax.tree.map(lambda p: jnp.ones((40, *p.shape), p.dtype), params)
  lr = np.asarray(_hyperparams_trajectory(tx, params, grads)["learning_rate"])
  steps = np.diff(np.log(lr.reshape(40)))
  np.testing.assert_allclose(steps[1:], 0.05 * direction, rtol=1e-3)


def test_jit_matches_eager(kind, params, random_grads, moving):
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


def test_vmap_over_controller_seeds(kind, params, random_grads):
  grads = random_grads(jax.random.key(0), params, 3)
  controllers = [_controller(1.0, seed) for seed in range(3)]

  def final_learning_rate(controller):
    tx = kind.make(**kind.values, controller=controller)
    return _hyperparams_trajectory(tx, params, grads)["learning_rate"][-1]

  stacked = jax.tree.map(lambda *x: jnp.stack(x), *controllers)
  batched = jax.jit(jax.vmap(final_learning_rate))(stacked)
  one_by_one = jnp.stack([jax.jit(final_learning_rate)(c) for c in controllers])
  np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
  assert len(np.unique(np.asarray(batched))) == 3


@pytest.mark.parametrize("bad", ["nan_grad", "inf_grad", "nan_value"])
def test_nonfinite_step_is_skipped(kind, params, random_grads, moving, bad):
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


def test_backoff_takes_back_the_last_step(kind, params, random_grads):
  """A loss a million times higher, and a gradient against the last step
  and far larger: a blow-up. The back-off's update returns the params to
  where they were before the last step (weight decay included, strong
  enough here that AdamW's would show), and it does not use the gradient:
  the buffers stay the last step's."""
  values = {**kind.values, "learning_rate": 0.1, "weight_decay": 0.5}
  tx = kind.make(**values, controller=_controller(1.0))
  update = jax.jit(tx.update)
  grads = random_grads(jax.random.key(0), params, 4)
  state, p = tx.init(params), params
  for t in range(4):
    before, last_state = p, state
    updates, state = update(_at(grads, t), state, p, value=jnp.float32(1.0))
    p = optax.apply_updates(p, updates)
  against = jax.tree.map(lambda m: -1e6 * m, state.mu)
  updates, new_state = update(against, state, p, value=jnp.float32(1e6))
  assert int(new_state.safeguard.backoffs) == int(last_state.safeguard.backoffs) + 1
  chex.assert_trees_all_close(
    optax.apply_updates(p, updates), before, rtol=1e-5, atol=1e-6
  )
  chex.assert_trees_all_equal(
    [getattr(new_state, b) for b in kind.buffers],
    [getattr(state, b) for b in kind.buffers],
  )
  # The next step starts again without momentum (SGD) or from the moments of
  # the point it returned to (AdamW), and backs off from nothing.
  assert bool(new_state.safeguard.reverted)
  _, after = update(_at(grads, 0), new_state, before, value=jnp.float32(1.0))
  assert int(after.safeguard.backoffs) == int(new_state.safeguard.backoffs)
  if kind.moment == "momentum":
    np.testing.assert_array_equal(np.asarray(after.hyperparams["momentum"]), 0.0)


# Gradients so large that Σg² overflows float32 are skipped, as documented.
@pytest.mark.parametrize(("scale", "skipped"), [(0.0, 0), (1e-30, 0), (1e30, 3)])
def test_extreme_gradients_give_finite_output(
  kind, params, random_grads, moving, scale, skipped
):
  tx, update = moving
  grads = random_grads(jax.random.key(0), params, 3)
  state = tx.init(params)
  for t in range(3):
    g = jax.tree.map(lambda x, t=t: scale * x[t], grads)
    updates, state = update(g, state, params, value=jnp.float32(1.0))
    chex.assert_tree_all_finite((updates, state))
  assert state.skipped == skipped and state.count == 3 - skipped


def test_hyperparams_invariant_to_gradient_scale(kind, params, random_grads):
  values = {**kind.values, "weight_decay": 0.0}
  # AdamW's step does not scale with the gradient, so neither does
  # log_update_ratio, the eighth feature; heavy ball's does.
  num_features = (7,) if kind.moment == "momentum" else (7, 8)
  grads = random_grads(jax.random.key(0), params, 20)
  for n in num_features:
    tx = kind.make(**values, controller=_controller(1.0, num_features=n))
    trajectory = jax.jit(functools.partial(_hyperparams_trajectory, tx, params))
    reference = trajectory(grads)
    for scale in (1e-4, 1e4):
      scaled = trajectory(jax.tree.map(lambda g, s=scale: s * g, grads))
      chex.assert_trees_all_close(scaled, reference, rtol=1e-4)
    # The trajectory moves, so the comparison is not between constants.
    assert np.ptp(reference["learning_rate"]) > 1e-2 * values["learning_rate"]
    assert np.ptp(reference[kind.moment]) > 1e-2 * values[kind.moment]


def test_update_ratio_input_with_zero_weights_changes_nothing(kind, params, train):
  """A controller that reads log_update_ratio with zero weights on it drives
  the rule as the same controller without that input does."""
  base = _controller(1.0)
  kernel = jnp.concatenate(
    [base.gru.input_kernel, jnp.zeros_like(base.gru.input_kernel[:1])]
  )
  reading = base._replace(gru=base.gru._replace(input_kernel=kernel))
  assert reading.num_features == 8
  runs = [
    train(kind.make(**kind.values, controller=c), params, 20) for c in (base, reading)
  ]
  (base_params, base_state, _), (got_params, got_state, _) = runs
  chex.assert_trees_all_close(got_params, base_params, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(
    garo_optax.hyperparams(got_state),
    garo_optax.hyperparams(base_state),
    rtol=1e-5,
  )
  assert got_state.feature_state.update_ratio.shape == (1,)
  assert base_state.feature_state.update_ratio.shape == (0,)


@pytest.mark.parametrize("granularity", ["global", "per_leaf"])
def test_update_ratio_is_the_steps_size_against_the_weights(
  kind, params, random_grads, granularity
):
  """``log_update_ratio`` is log10(‖Δθ‖ / ‖θ‖) + 3 of each group's first
  step, then a running mean (decay 0.9) of it."""
  tx = kind.make(
    **kind.values,
    controller=_controller(1.0, num_features=8),
    granularity=granularity,
  )
  grads = random_grads(jax.random.key(0), params, 2)
  state = tx.init(params)
  expected = None
  for t in range(2):
    updates, state = tx.update(_at(grads, t), state, params)
    leaves = jax.tree.leaves
    if granularity == "global":
      readings = np.array([optax.tree.norm(updates) / optax.tree.norm(params)])
    else:
      readings = np.array(
        [
          np.linalg.norm(u) / np.linalg.norm(p)
          for u, p in zip(leaves(updates), leaves(params), strict=True)
        ]
      )
    # The groups are sorted by name, as the leaves are.
    readings = np.log10(readings) + 3.0
    expected = readings if expected is None else 0.9 * expected + 0.1 * readings
    np.testing.assert_allclose(state.feature_state.update_ratio, expected, rtol=1e-5)
    params = optax.apply_updates(params, updates)


def _assert_dtypes(kind, updates, state, update_dtype, mu_dtype):
  def dtypes(tree):
    return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)}

  assert dtypes(updates) == {jnp.dtype(update_dtype)}
  assert dtypes(state.mu) == {jnp.dtype(mu_dtype)}
  for name in kind.buffers[1:]:  # Adam's second moments: the params' dtype
    assert dtypes(getattr(state, name)) == {jnp.dtype(update_dtype)}
  assert dtypes((state.hidden, state.hyperparams)) == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_updates_keep_param_dtype(kind, params, random_grads, dtype):
  params = optax.tree.cast(params, dtype)
  tx = kind.make(**kind.values, controller="init")
  grads = optax.tree.cast(_at(random_grads(jax.random.key(0), params, 1), 0), dtype)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  _assert_dtypes(kind, updates, state, dtype, dtype)


def test_float64_params_keep_their_dtype(kind, params):
  tx = kind.make(**kind.values, controller="init")
  with jax.enable_x64(True):
    # Dtypes only: tracing with jax.eval_shape is enough, and compiles nothing.
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float64), params)
    state = jax.eval_shape(tx.init, params)
    for _ in range(2):
      updates, state = jax.eval_shape(tx.update, params, state, params)
    _assert_dtypes(kind, updates, state, jnp.float64, jnp.float64)


def test_mu_dtype_is_honoured(kind, params, random_grads):
  values = {"learning_rate": 0.1, kind.moment: 0.9}
  tx = kind.make(**values, controller="init", mu_dtype=jnp.bfloat16)
  grads = _at(random_grads(jax.random.key(0), params, 1), 0)
  updates, state = tx.update(grads, tx.init(params), params)
  _assert_dtypes(kind, updates, state, jnp.float32, jnp.bfloat16)
  if kind.moment == "momentum":
    # The applied step is read back from the bfloat16 buffer.
    expected = jax.tree.map(
      lambda g: -0.1 * g.astype(jnp.bfloat16).astype(g.dtype), grads
    )
  else:  # as optax.adamw's: computed before the buffer is cast
    reference = optax.adamw(0.1, 0.9, mu_dtype=jnp.bfloat16)
    expected, _ = reference.update(grads, reference.init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-9)


def test_missing_params_is_a_value_error(kind, params):
  tx = kind.make(controller="init")
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
def test_grads_unlike_state_are_a_value_error(kind, params, grads):
  tx = kind.make(controller="init")
  with pytest.raises(ValueError, match="grads"):
    tx.update(grads(params), tx.init(params), params)


def test_integer_params_are_a_type_error(kind, params):
  params = {**params, "steps": jnp.arange(3)}
  with pytest.raises(TypeError, match=r"\['steps'\].*int"):
    kind.make(controller="init").init(params)


def test_integer_params_at_update_are_refused(kind, params):
  tx = kind.make(controller="init")
  state = tx.init(params)
  ints = jax.tree.map(lambda p: p.astype(jnp.int32), params)
  with pytest.raises(TypeError, match="floating-point"):
    tx.update(params, state, ints)


def test_non_scalar_value_is_refused(kind, params):
  tx = kind.make(controller="init")
  with pytest.raises(ValueError, match="value"):
    tx.update(params, tx.init(params), params, value=jnp.ones(3))


def test_state_of_another_controller_is_refused(kind, params):
  small = garo_optax.init_controller(jax.random.key(0), hidden_size=8)
  state = kind.make(controller="init").init(params)  # hidden size 16
  with pytest.raises(ValueError, match="hidden"):
    kind.make(controller=small).update(params, state, params)


@pytest.mark.parametrize(
  ("made", "used"), [("per_leaf", "global"), ("global", "per_leaf")]
)
def test_state_of_another_granularity_is_refused(kind, params, made, used):
  state = kind.make(granularity=made, controller="init").init(params)
  with pytest.raises(ValueError, match="granularity"):
    kind.make(granularity=used, controller="init").update(params, state, params)


def test_state_of_the_other_transformation_is_refused(kind, params):
  other = next(k for k in KINDS.values() if k is not kind)
  state = other.make(controller="init").init(params)
  with pytest.raises(TypeError, match=kind.state_type.__name__):
    kind.make(controller="init").update(params, state, params)


@pytest.mark.parametrize(
  ("name", "bad"),
  [
    ("learning_rate", -0.1),
    ("learning_rate", float("nan")),
    ("weight_decay", -1.0),
    ("moment", 1.0),
    ("moment", -0.5),
    ("max_learning_rate", 0.0),
    ("total_steps", 0),
    ("granularity", "per_layer"),
  ],
)
def test_bad_argument_is_refused_by_name(kind, name, bad):
  name = kind.moment if name == "moment" else name
  with pytest.raises(ValueError, match=name):
    kind.make(**{name: bad}, controller="init")


def test_per_leaf_groups_get_their_own_values(kind, params, random_grads):
  tx = kind.make(**kind.values, granularity="per_leaf", controller=_controller(1.0))
  grads = random_grads(jax.random.key(0), params, 5)
  learning_rates = _hyperparams_trajectory(tx, params, grads)["learning_rate"]
  assert set(learning_rates) == {"dense/bias", "dense/kernel", "scale"}
  assert len({float(v[-1]) for v in learning_rates.values()}) == 3


LABELS = {"dense": {"kernel": "garo", "bias": "garo"}, "scale": "frozen"}
MASK = {"dense": {"kernel": True, "bias": True}, "scale": False}


@pytest.mark.parametrize(
  "wrap",
  [
    lambda tx: optax.chain(optax.clip_by_global_norm(0.1), tx),
    lambda tx: optax.chain(
      optax.masked(tx, MASK),
      optax.masked(optax.set_to_zero(), jax.tree.map(lambda m: not m, MASK)),
    ),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=4),
    lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=3),
    lambda tx: optax.partition({"garo": tx, "frozen": optax.set_to_zero()}, LABELS),
  ],
  ids=["chain_clip", "masked", "multi_steps", "apply_if_finite", "partition"],
)
def test_wrapped_matches_the_wrapped_reference(kind, params, train, wrap):
  """With zero head weights, each optax wrapper of the transformation is the
  same wrapper of the optax rule it starts as."""
  tx = kind.make(**kind.values, controller=_zero_heads(_controller(1.0)))
  final, state, losses = train(wrap(tx), params, 8)
  expected, _, expected_losses = train(wrap(kind.reference_at(kind.values)), params, 8)
  chex.assert_trees_all_close(final, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  assert losses[-1] < losses[0]
  np.testing.assert_allclose(
    garo_optax.hyperparams(state)["learning_rate"],
    kind.values["learning_rate"],
    rtol=1e-6,
  )


def test_multi_steps_updates_only_every_kth_step(kind, params, random_grads, moving):
  tx = optax.MultiSteps(moving[0], every_k_schedule=4)
  grads = random_grads(jax.random.key(0), params, 8)
  state, update = tx.init(params), jax.jit(tx.update)
  for t in range(8):
    updates, state = update(_at(grads, t), state, params, value=jnp.float32(1.0))
    norm = optax.tree.norm(updates)
    assert norm > 0 if t % 4 == 3 else norm == 0
  assert state.inner_opt_state.count == 2


@pytest.mark.parametrize("value", [None, 2.5])
def test_value_passes_through_chain(kind, params, random_grads, value):
  tx = optax.chain(optax.clip_by_global_norm(1.0), kind.make(controller="init"))
  _, state = tx.update(
    _at(random_grads(jax.random.key(0), params, 1), 0),
    tx.init(params),
    params,
    value=value,
  )
  # The running mean of the loss starts at the first loss seen; 0 with none.
  assert state[1].feature_state.loss == (0.0 if value is None else value)


def test_apply_if_finite_and_garo_both_skip_nan(kind, params, random_grads):
  tx = optax.apply_if_finite(
    kind.make(**kind.values, controller="init"), max_consecutive_errors=3
  )
  grads = _at(random_grads(jax.random.key(0), params, 1), 0)
  state = tx.init(params)
  nan_grads = {**grads, "scale": jnp.float32(jnp.nan)}
  updates, state = tx.update(nan_grads, state, params)
  chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
  assert state.notfinite_count == 1 and state.inner_state.count == 0
  _, state = tx.update(grads, state, params)
  assert state.notfinite_count == 0 and state.inner_state.count == 1


def test_checkpoint_round_trip_resumes_bit_identically(kind, params, loss_fn):
  tx = kind.make(**kind.values, controller=_controller(1.0))

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  def run(params, state, num_steps):
    for _ in range(num_steps):
      params, state = step(params, state)
    return params, state

  params, state = run(params, tx.init(params), 10)
  restored = serialization.from_bytes(
    (params, tx.init(params)), serialization.to_bytes((params, state))
  )
  assert isinstance(restored[1], kind.state_type)
  chex.assert_trees_all_equal(restored, (params, state))

  resumed = run(*restored, 10)
  uninterrupted = run(params, state, 10)
  chex.assert_trees_all_equal(resumed, uninterrupted)
  # Resuming from a fresh state would not do: the saved state mattered.
  fresh = run(params, tx.init(params), 10)
  assert not np.array_equal(fresh[0]["scale"], uninterrupted[0]["scale"])
