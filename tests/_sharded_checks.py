"""Measures GARO on 8 simulated CPU devices; ``tests/test_sharding.py`` asserts.

Run in its own process, started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set
before JAX starts, so the rest of the suite keeps one device). Prints one JSON
object: for each granularity, how far 20 sharded training steps drift from the
same 20 steps on one device, where the optimizer state lives, and which
collectives the compiled ``tx.update`` contains.
"""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import garo_optax
from benchmarks.sharded_step_time import COLLECTIVES
from garo_optax import _statistics

STEPS = 20
BATCH = 64
# A data-parallel x model-parallel layout of a two-layer MLP: `w1` is split over
# both axes (FSDP x tensor parallel), `w2` over the model axis (row parallel).
PARAM_SPECS = {
  "b1": P("model"),
  "b2": P(),
  "w1": P("data", "model"),
  "w2": P("model", None),
}
BATCH_SPECS = (P("data", None), P("data"))
_COLLECTIVE = re.compile(
  r"= (?P<shape>.*?) (?P<op>{})(?:-start)?\(".format("|".join(COLLECTIVES))
)
_ARRAY = re.compile(r"\w+\[([\d,]*)\]")


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
  # NumPy, so that every device_put makes fresh buffers the steps may donate.
  normal = lambda *shape: rng.standard_normal(shape, np.float32) / math.sqrt(shape[0])
  return {
    "b1": np.zeros(256, np.float32),
    "b2": np.zeros(10, np.float32),
    "w1": normal(32, 256),
    "w2": normal(256, 10),
  }


def loss_fn(params, x, y):
  # tanh, not relu: a relu unit sitting at zero flips on a rounding difference,
  # and the two runs would then part by more than rounding for the model's sake.
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = hidden @ params["w2"] + params["b2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``STEPS`` batches labelled by a fixed random linear teacher."""
  x = rng.standard_normal((STEPS, BATCH, 32), np.float32)
  y = np.argmax(x @ rng.standard_normal((32, 10), np.float32), axis=-1)
  return x, y.astype(np.int32)


def make_tx(
  granularity: str, optimizer: str = "garo"
) -> optax.GradientTransformationExtraArgs:
  # The seeded controller: the sharded and one-device runs differ only in the
  # order of the sums, and the pretrained controller, which reacts to its
  # features, carries that rounding further (1.5e-5 after 50 steps against
  # below 1e-6), which would blur what these checks measure.
  if optimizer == "garo_adamw":
    return garo_optax.garo_adamw(
      learning_rate=0.01, granularity=granularity, controller="init"
    )
  return garo_optax.garo(
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    granularity=granularity,
    controller="init",
  )


def buffers(state) -> dict:
  """The state's buffers shaped like the params: ``mu`` (and Adam's ``nu``)."""
  return {k: getattr(state, k) for k in ("mu", "nu") if hasattr(state, k)}


def make_step(tx):
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss

  return step


def train(step, params, state, data):
  """Runs ``step`` over the batches; returns params, state, losses, hyperparams.

  The losses and the hyperparameters of every step are stacked on axis 0.
  """
  losses, trajectory = [], []
  for x, y in zip(*data, strict=True):
    params, state, loss = step(params, state, x, y)
    # Copied out now: a donating step deletes this state on its next call.
    losses.append(np.asarray(loss))
    trajectory.append(jax.tree.map(np.asarray, garo_optax.hyperparams(state)))
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *trajectory)
  return params, state, np.stack(losses), stacked


def max_relative_difference(a, b) -> float:
  """Largest ``|a - b|`` over leaves, relative to each leaf's largest ``|b|``."""
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(y)))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def collectives(hlo: str) -> list[dict]:
  """The collective ops of an HLO module, with the element count they move."""
  found = []
  for line in hlo.splitlines():
    match = _COLLECTIVE.search(line)
    if match:
      elements = sum(
        math.prod(int(d) for d in dims.split(",") if d)
        for dims in _ARRAY.findall(match["shape"])
      )
      found.append({"op": match["op"], "elements": elements})
  return found


def holds_only_its_shard(array: jax.Array, sharding: NamedSharding) -> bool:
  """Whether every device holds exactly its shard of ``array`` under ``sharding``."""
  return array.sharding.is_equivalent_to(sharding, array.ndim) and all(
    shard.data.shape == sharding.shard_shape(array.shape)
    for shard in array.addressable_shards
  )


def _padded(spec: P, ndim: int) -> tuple:
  return (*spec, *(None,) * (ndim - len(spec)))


def measure(granularity: str, mesh, params, data, optimizer: str = "garo") -> dict:
  replicated = NamedSharding(mesh, P())
  param_sh = {k: NamedSharding(mesh, s) for k, s in PARAM_SPECS.items()}
  batch_sh = tuple(NamedSharding(mesh, s) for s in BATCH_SPECS)
  tx = make_tx(granularity, optimizer)
  step = make_step(tx)

  abstract_params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params
  )
  abstract = jax.eval_shape(tx.init, abstract_params)
  state_sh = jax.tree.map(lambda _: replicated, abstract)._replace(
    **{k: param_sh for k in buffers(abstract)}
  )
  # With explicit mesh axes the abstract values carry shardings, and tx.init
  # passes them on to `mu`.
  explicit_mesh = jax.make_mesh(
    mesh.axis_sizes, mesh.axis_names, axis_types=(AxisType.Explicit,) * 2
  )
  with jax.set_mesh(explicit_mesh):
    explicit = jax.eval_shape(
      tx.init,
      jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        params,
        PARAM_SPECS,
      ),
    )

  one_state = jax.jit(tx.init)(params)
  one_params, _, one_losses, one_hyper = train(jax.jit(step), params, one_state, data)

  sharded_params = jax.device_put(params, param_sh)
  state = jax.jit(tx.init, out_shardings=state_sh)(sharded_params)
  init_mu_like_params = all(
    holds_only_its_shard(b[k], param_sh[k])
    for b in buffers(state).values()
    for k in params
  )
  sharded_step = jax.jit(
    step,
    in_shardings=(param_sh, state_sh, *batch_sh),
    out_shardings=(param_sh, state_sh, replicated),
    donate_argnums=(0, 1),
  )
  sharded_params, state, losses, hyper = train(
    sharded_step, sharded_params, state, data
  )

  update = jax.jit(
    lambda grads, state, params, value: tx.update(grads, state, params, value=value),
    in_shardings=(param_sh, state_sh, param_sh, replicated),
    out_shardings=(param_sh, state_sh),
    donate_argnums=(0, 1),
  )
  hlo = (
    update.lower(
      abstract_params, abstract, abstract_params, jax.ShapeDtypeStruct((), "float32")
    )
    .compile()
    .as_text()
  )
  return {
    "num_leaves": len(params),
    "smallest_sharded_leaf": min(
      x.size for k, x in params.items() if PARAM_SPECS[k] != P()
    ),
    "params_difference": max_relative_difference(sharded_params, one_params),
    "hyperparams_difference": max_relative_difference(hyper, one_hyper),
    "loss_difference": max_relative_difference(losses, one_losses),
    "loss_first_last": [float(losses[0]), float(losses[-1])],
    "learning_rate_range": [
      float(np.min(jax.tree.leaves(hyper["learning_rate"]))),
      float(np.max(jax.tree.leaves(hyper["learning_rate"]))),
    ],
    "mu_like_params": all(
      holds_only_its_shard(b[k], param_sh[k])
      for b in buffers(state).values()
      for k in params
    ),
    "hidden_replicated": state.hidden.sharding.is_fully_replicated,
    "rest_replicated": all(
      x.sharding.is_fully_replicated
      for x in jax.tree.leaves(state._replace(**dict.fromkeys(buffers(state))))
    ),
    "eval_shape_matches_init": jax.tree.all(
      jax.tree.map(
        lambda a, c: (a.shape, a.dtype) == (c.shape, c.dtype),
        abstract,
        one_state,
      )
    ),
    "eval_shape_mu_shardings": all(
      _padded(b[k].sharding.spec, x.ndim) == _padded(PARAM_SPECS[k], x.ndim)
      for b in buffers(explicit).values()
      for k, x in params.items()
    ),
    "init_mu_like_params": init_mu_like_params,
    "update_collectives": collectives(hlo),
  }


def measure_explicit(
  granularity: str, mesh, params, rng, optimizer: str = "garo"
) -> dict:
  """The same optimizer under a mesh with explicit axes (``jax.set_mesh``).

  There the leaves' shardings are part of their types, and GARO sums each
  device's shards itself, then all-reduces once. ``STEPS`` updates with fixed
  random gradients run sharded and on one device.
  """
  tx = make_tx(granularity, optimizer)
  grads = [
    jax.tree.map(lambda p: 0.1 * rng.standard_normal(p.shape, np.float32), params)
    for _ in range(STEPS)
  ]
  losses = [2.0 * 0.98**k for k in range(STEPS)]

  def update(grads, state, params, value):
    updates, state = tx.update(grads, state, params, value=value)
    return optax.apply_updates(params, updates), state

  def run(params, grads, put):
    params = put(params)
    state = jax.jit(tx.init)(params)
    step = jax.jit(update)
    trajectory = []
    for g, loss in zip(grads, losses, strict=True):
      params, state = step(put(g), state, params, jnp.float32(loss))
      trajectory.append(jax.tree.map(np.asarray, garo_optax.hyperparams(state)))
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *trajectory)
    return jax.tree.map(np.asarray, params), state, stacked

  one_params, _, one_hyper = run(params, grads, jax.device_put)
  explicit_mesh = jax.make_mesh(
    mesh.axis_sizes, mesh.axis_names, axis_types=(AxisType.Explicit,) * 2
  )
  with jax.set_mesh(explicit_mesh):
    shardings = {k: NamedSharding(explicit_mesh, s) for k, s in PARAM_SPECS.items()}
    sharded_params, state, hyper = run(
      params, grads, lambda tree: jax.device_put(tree, shardings)
    )
    abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      params,
      shardings,
    )
    hlo = (
      jax.jit(update)
      .lower(
        abstract,
        jax.eval_shape(tx.init, abstract),
        abstract,
        jax.ShapeDtypeStruct((), "float32"),
      )
      .compile()
      .as_text()
    )
    # Momentum replicated while the gradients are sharded: the statistics line
    # the shards up by slicing, without moving any buffer between devices.
    mu = jax.tree.map(lambda g: 0.5 * g + 0.1, grads[0])
    statistics = jax.jit(_statistics.tree_statistics)
    sharded_grads = jax.device_put(grads[0], shardings)
    replicated_mu = jax.device_put(mu, NamedSharding(explicit_mesh, P()))
    mixed = statistics(sharded_grads, replicated_mu)
    mixed_hlo = statistics.lower(sharded_grads, replicated_mu).compile().as_text()
  one = _statistics.tree_statistics(grads[0], mu, partitionable=False)
  return {
    "params_difference": max_relative_difference(sharded_params, one_params),
    "hyperparams_difference": max_relative_difference(hyper, one_hyper),
    "mu_like_params": all(
      holds_only_its_shard(b[k], shardings[k])
      for b in buffers(state).values()
      for k in params
    ),
    "update_collectives": collectives(hlo),
    "mixed_statistics_difference": max_relative_difference(mixed, one),
    "mixed_statistics_collectives": collectives(mixed_hlo),
  }


def main():
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  rng = np.random.default_rng(0)
  params, data = init_params(rng), make_data(rng)
  granularities = ("global", "per_leaf")
  result = {
    "device_count": jax.device_count(),
    "granularity": {g: measure(g, mesh, params, data) for g in granularities},
    "explicit": {
      g: measure_explicit(g, mesh, params, np.random.default_rng(1))
      for g in granularities
    },
    # garo_adamw: the same pipeline over Adam's two buffers (auto axes; the
    # explicit ones share garo's statistics code, checked above).
    "adamw": {"granularity": measure("global", mesh, params, data, "garo_adamw")},
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
