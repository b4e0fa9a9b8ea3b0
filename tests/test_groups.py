"""Layer-wise GARO: per-leaf and per-group hyperparameters."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

GRANULARITIES = (
  "global",
  "per_leaf",
  {"w": "weights", "b": "biases", "v": "weights"},
  lambda params: jax.tree.map(lambda p: "matrices" if p.ndim == 2 else "rest", params),
)


def _params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {
    "w": jax.random.normal(keys[0], (4, 3)),
    "b": jax.random.normal(keys[1], (3,)),
    "v": jax.random.normal(keys[2], (5,)),
  }


def _grads(step: int, params):
  keys = jax.random.split(jax.random.key(100 + step), len(params))
  return {
    name: jax.random.normal(key, p.shape) * (1 + step)
    for (name, p), key in zip(sorted(params.items()), keys, strict=True)
  }


def _run(tx, params, steps: int, grads_fn=_grads):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(steps):
    updates, state = update(
      grads_fn(step, params), state, params, value=1.0 / (1 + step)
    )
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize(
  "granularity", GRANULARITIES, ids=["global", "per_leaf", "labels", "fn"]
)
def test_step_zero_is_sgd_at_every_granularity(granularity):
  params = _params()
  grads = _grads(0, params)
  tx = garo_optax.garo(0.05, momentum=0.5, granularity=granularity)
  updates, _ = tx.update(grads, tx.init(params), params)
  sgd = optax.sgd(0.05, momentum=0.5)
  expected, _ = sgd.update(grads, sgd.init(params))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, expected
  )


def test_per_leaf_equals_global_when_groups_see_identical_statistics():
  x = jax.random.normal(jax.random.key(1), (6,))
  params = {"a": x, "b": x, "c": x}

  def same_grads(step, params):
    g = jax.random.normal(jax.random.key(step), (6,)) * (1 + step)
    return {name: g for name in params}

  controller = garo_optax.init_controller(jax.random.key(3), head_scale=1.0)
  global_params, global_state = _run(
    garo_optax.garo(controller=controller), params, 20, same_grads
  )
  leaf_params, leaf_state = _run(
    garo_optax.garo(controller=controller, granularity="per_leaf"),
    params,
    20,
    same_grads,
  )
  chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
  jax.tree.map(chex_close, leaf_params, global_params)
  per_leaf = garo_optax.hyperparams(leaf_state)
  for name, value in garo_optax.hyperparams(global_state).items():
    assert set(per_leaf[name]) == {"a", "b", "c"}
    for group_value in per_leaf[name].values():
      chex_close(group_value, value)
  # The trajectory moved: the comparison is not between two constants.
  assert abs(float(per_leaf["learning_rate"]["a"]) - 0.01) > 1e-4


def test_layers_get_different_learning_rates_on_digits():
  from sklearn.datasets import load_digits

  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  y = jnp.asarray(digits.target)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
    "hidden": {"kernel": jax.random.normal(k1, (64, 64)) / 8.0, "bias": jnp.zeros(64)},
    "out": {"kernel": jax.random.normal(k2, (64, 10)) / 8.0, "bias": jnp.zeros(10)},
  }

  def loss_fn(params):
    h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    logits = h @ params["out"]["kernel"] + params["out"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  tx = garo_optax.garo(0.1, granularity="per_leaf")

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss

  state = tx.init(params)
  first_loss = None
  for _ in range(100):
    params, state, loss = step(params, state)
    first_loss = first_loss if first_loss is not None else loss
  assert loss < first_loss
  lr = garo_optax.hyperparams(state)["learning_rate"]
  assert set(lr) == {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"}
  values = np.array([float(v) for v in lr.values()])
  assert np.all(np.isfinite(values))
  # Different layers see different gradient statistics and so, through one
  # shared controller, get different learning rates.
  assert values.max() / values.min() > 1.001


def test_per_group_starting_values_and_weight_decay_mask():
  params = _params()
  labels = {"w": "decay", "b": "no_decay", "v": "no_decay"}
  tx = garo_optax.garo(
    0.1, weight_decay={"decay": 0.01, "no_decay": 0.0}, granularity=labels
  )
  grads = _grads(0, params)
  updates, state = tx.update(grads, tx.init(params), params)
  reference = optax.chain(
    optax.masked(optax.add_decayed_weights(0.01), {"w": True, "b": False, "v": False}),
    optax.sgd(0.1),
  )
  expected, _ = reference.update(grads, reference.init(params), params)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, expected
  )
  wd = garo_optax.hyperparams(state)["weight_decay"]
  np.testing.assert_allclose(wd["decay"], 0.01, rtol=1e-6)
  assert float(wd["no_decay"]) < 1e-8


def test_hyperparams_by_group_name_and_tree_get():
  params = _params()
  _, state = _run(garo_optax.garo(granularity="per_leaf"), params, 3)
  by_name = garo_optax.hyperparams(state)["momentum"]
  assert set(by_name) == {"w", "b", "v"}
  found = optax.tree.get(state, "momentum")
  for name, value in by_name.items():
    assert found[name] == value
  with pytest.raises(KeyError, match="Unknown group 'nope'"):
    found["nope"]
  assert state.hidden.shape == (3, 16)


def test_per_group_state_checkpoints_with_flax():
  params = _params()
  tx = garo_optax.garo(granularity="per_leaf")
  _, state = _run(tx, params, 3)
  restored = flax.serialization.from_bytes(
    tx.init(params), flax.serialization.to_bytes(state)
  )
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, state)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"granularity": {"w": "a"}}, "structure of the params"),
    ({"granularity": {"w": "a", "b": 1, "v": "a"}}, "must be strings"),
    ({"granularity": "per_layer"}, "Unknown granularity 'per_layer'"),
    (
      {
        "granularity": {"w": "a", "b": "b", "v": "b"},
        "learning_rate": {"a": 0.1, "c": 0.1},
      },
      r"Unknown groups: \['c'\]; groups without a value: \['b'\]",
    ),
    ({"learning_rate": {"a": 0.1}}, "granularity is 'global'"),
  ],
)
def test_bad_groups_give_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    garo_optax.garo(**kwargs).init(_params())


def test_bad_per_group_value_is_rejected_up_front():
  with pytest.raises(ValueError, match="momentum must be in"):
    garo_optax.garo(momentum={"a": 1.5}, granularity="per_leaf")


def test_nnx_per_leaf_groups_are_named_by_module_path():
  from flax import nnx

  class Model(nnx.Module):
    def __init__(self):
      self.hidden = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
      self.out = nnx.Linear(3, 1, rngs=nnx.Rngs(1))

  optimizer = nnx.Optimizer(
    Model(), garo_optax.garo(granularity="per_leaf"), wrt=nnx.Param
  )
  names = set(garo_optax.hyperparams(optimizer.opt_state)["learning_rate"])
  assert names == {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"}


def test_hyperparams_unwraps_nnx_variables():
  from flax import nnx

  model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  for granularity in ("global", "per_leaf"):
    optimizer = nnx.Optimizer(
      model, garo_optax.garo(granularity=granularity), wrt=nnx.Param
    )
    lr = garo_optax.hyperparams(optimizer.opt_state)["learning_rate"]
    values = lr.values() if isinstance(lr, dict) else [lr]
    assert all(isinstance(v, jax.Array) for v in values)
    np.testing.assert_allclose(list(values), 0.01, rtol=1e-6)
