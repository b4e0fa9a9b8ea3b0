"""Gradient statistics and the controller's input features.

The statistics of a leaf are three sums of its gradient and momentum:

  ``[Σg², Σm², Σg·m]``

A non-finite gradient entry makes ``Σg²`` non-finite, which is how GARO
detects the steps it must skip without a reduction of its own (gradients so
large that ``Σg²`` overflows float32, ``‖g‖ > 1.8e19``, are skipped too).

The features built from them are invariant to the scale of the gradients,
clipped to ``[-FEATURE_CLIP, FEATURE_CLIP]``, and exactly zero at step 0, so a
GRU with a zero candidate bias keeps its hidden state at zero on the first
step (and GARO starts as plain SGD).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

NUM_STATISTICS = 3
NUM_FEATURES = 6
FEATURE_NAMES = (
  "log_grad_norm_change",
  "cos_grad_momentum",
  "relative_loss_change",
  "log_learning_rate_ratio",
  "time",
  "log_grad_norm_trend",
)
FEATURE_CLIP = 5.0
# Decays of the running means the features are measured against: a fast one
# for step-to-step changes and a slow one for the trend of the gradient norm.
EMA_DECAY = 0.9
SLOW_EMA_DECAY = 0.99

# Leaves from this many entries on are summed in two halves (leaf_statistics).
_SPLIT_SIZE = 1 << 16
_TINY = float(jnp.finfo(jnp.float32).tiny)
# Sums of squares of huge gradients overflow float32; clipping them to the
# largest float keeps inf out of the running means, where it would stay.
_MAX = float(jnp.finfo(jnp.float32).max)


class FeatureState(NamedTuple):
  """Running statistics the features are measured against."""

  log_grad_norm: jax.Array  # shape=(G,), float32: running mean of log‖g‖
  slow_log_grad_norm: jax.Array  # shape=(G,), float32: slow running mean
  loss: jax.Array  # shape=(), float32: running mean of the loss


def init_feature_state(num_groups: int) -> FeatureState:
  zeros = jnp.zeros((num_groups,), jnp.float32)
  return FeatureState(
    log_grad_norm=zeros, slow_log_grad_norm=zeros, loss=jnp.zeros((), jnp.float32)
  )


def _add(a, b):
  return tuple(x + y for x, y in zip(a, b, strict=True))


def leaf_statistics(
  grad: jax.Array, mu: jax.Array, *, partitionable: bool | None = None
) -> tuple[jax.Array, ...]:
  """The three sums of one leaf, in float32.

  There are two ways to write them, and each backend setting wants its own:

  - One variadic ``lax.reduce`` is one kernel per leaf that reads ``grad`` and
    ``mu`` once. Three ``jnp.sum`` calls measured about twice as slow inside a
    training loop on one XLA:CPU device (``benchmarks/step_time.py``).
  - XLA's SPMD partitioner cannot split a variadic reduction: for a sharded
    leaf it all-gathers the partial sums, one small collective per statistic
    and mesh axis, and none are combined. Plain sums it turns into local sums
    and one all-reduce, which it combines across statistics and leaves.

  Args:
    grad: the leaf's gradient.
    mu: its momentum buffer (same shape).
    partitionable: write the sums so that a sharded program all-reduces them.
      ``None`` (the default) chooses so when JAX sees more than one device:
      a program on one device is never partitioned.

  Returns:
    ``Σg²`` (not finite if any entry of ``grad`` is not), ``Σm²`` and ``Σg·m``.
  """
  if partitionable is None:
    partitionable = jax.device_count() > 1
  g = grad.astype(jnp.float32)
  m = mu.astype(jnp.float32)
  operands = (g * g, m * m, g * m)
  if partitionable:
    return tuple(jnp.sum(x) for x in operands)
  if g.size >= _SPLIT_SIZE and g.size % 2 == 0:
    # Two halves, six running sums: XLA:CPU emits the reduction as a scalar
    # loop bound by the latency of its additions, and two independent chains
    # per sum take about 20% off the step of a model with large leaves.
    g, m = g.reshape(2, -1), m.reshape(2, -1)
    operands = tuple(
      x for i in range(2) for x in (g[i] * g[i], m[i] * m[i], g[i] * m[i])
    )
    sums = _variadic_sum(operands)
    return _add(sums[:NUM_STATISTICS], sums[NUM_STATISTICS:])
  return _variadic_sum(operands)


def _variadic_sum(operands: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
  init = tuple(jnp.zeros((), jnp.float32) for _ in operands)
  return jax.lax.reduce(operands, init, _add, tuple(range(operands[0].ndim)))


def tree_statistics(
  grads: Any, mu: Any, *, partitionable: bool | None = None
) -> jax.Array:
  """The sums of every leaf, as one ``(L, NUM_STATISTICS)`` array.

  When the leaves are typed with a mesh whose axes are all explicit (arrays
  placed under ``jax.set_mesh`` with ``AxisType.Explicit`` axes, the default
  of ``jax.make_mesh``), their shardings are known while tracing:
  each device then sums its own shards with the one-pass variadic reduction,
  and a single all-reduce of the ``(L, 3)`` partial sums finishes the job for
  all leaves at once (:func:`_sharded_tree_statistics`). Otherwise each leaf
  is summed by :func:`leaf_statistics`, ``partitionable`` as there.

  The per-leaf scalars go into a single ``stack`` rather than one small stack
  per leaf: on XLA:CPU each small stack is a kernel of its own.
  """
  grad_leaves, treedef = jax.tree.flatten(grads)
  mu_leaves = treedef.flatten_up_to(mu)
  explicit = _explicit_shardings(grad_leaves, mu_leaves)
  if explicit is not None:
    mesh, specs = explicit
    # Both buffers of a leaf in the sharding their product has (the one GARO's
    # update gives them too), so that each device's shards line up; where
    # they already have it, nothing moves.
    grad_leaves, mu_leaves = (
      [_reshard(x, spec) for x, spec in zip(leaves, specs, strict=True)]
      for leaves in (grad_leaves, mu_leaves)
    )
    return _sharded_tree_statistics(grad_leaves, mu_leaves, mesh, specs)
  if partitionable is None:
    partitionable = jax.device_count() > 1
  sums = [
    leaf_statistics(g, m, partitionable=partitionable)
    for g, m in zip(grad_leaves, mu_leaves, strict=True)
  ]
  return jnp.stack([x for leaf in sums for x in leaf]).reshape(-1, NUM_STATISTICS)


def _explicit_shardings(
  grad_leaves: list[jax.Array], mu_leaves: list[jax.Array]
) -> tuple[jax.sharding.AbstractMesh, list[P]] | None:
  """The mesh and each leaf's partition spec, if the leaves' types carry them.

  The spec of a leaf is that of ``grad * mu``: JAX's rule for the sharding of
  an elementwise result. ``None`` unless every buffer is typed with the same
  mesh, whose axes are all explicit: with auto axes (or none) a type does not
  say how its array is sharded.
  """
  mesh, specs = None, []
  for g, m in zip(grad_leaves, mu_leaves, strict=True):
    for leaf in (g, m):
      sharding = getattr(jax.typeof(leaf), "sharding", None)
      leaf_mesh = getattr(sharding, "mesh", None)
      if (
        leaf_mesh is None
        or leaf_mesh.empty
        or not leaf_mesh.are_all_axes_explicit
        or (mesh is not None and leaf_mesh != mesh)
        or getattr(sharding.spec, "unreduced", None)
      ):
        return None
      mesh = leaf_mesh
    specs.append(jax.eval_shape(jnp.multiply, g, m).sharding.spec)
  return None if mesh is None else (mesh, specs)


def _reshard(x: jax.Array, spec: P) -> jax.Array:
  if jax.typeof(x).sharding.spec == spec:
    return x
  return jax.sharding.reshard(x, spec)


def _sharded_tree_statistics(
  grad_leaves: list[jax.Array],
  mu_leaves: list[jax.Array],
  mesh: jax.sharding.AbstractMesh,
  specs: list[P],
) -> jax.Array:
  """:func:`tree_statistics` for leaves of known shardings, one all-reduce.

  Inside ``shard_map`` every device sums its shard of each leaf. A leaf that
  is replicated along some mesh axes has the same partial sums on every device
  of those axes; only the device at index 0 of each of them keeps its sums, so
  one ``psum`` over all mesh axes adds every entry of every leaf exactly once.
  """

  def local(grad_leaves, mu_leaves):
    rows = []
    for g, m, spec in zip(grad_leaves, mu_leaves, specs, strict=True):
      sums = jnp.stack(leaf_statistics(g, m, partitionable=False))
      sharded = {a for entry in spec if entry is not None for a in _axes(entry)}
      for axis in mesh.axis_names:
        if axis not in sharded and mesh.shape[axis] > 1:
          sums = jnp.where(jax.lax.axis_index(axis) == 0, sums, 0.0)
      rows.append(sums)
    return jax.lax.psum(jnp.stack(rows), mesh.axis_names)

  return jax.shard_map(local, mesh=mesh, in_specs=(specs, specs), out_specs=P())(
    grad_leaves, mu_leaves
  )


def _axes(entry: str | tuple[str, ...]) -> tuple[str, ...]:
  return (entry,) if isinstance(entry, str) else tuple(entry)


def _finite_clip(x: jax.Array) -> jax.Array:
  x = jnp.nan_to_num(x, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP)
  return jnp.clip(x, -FEATURE_CLIP, FEATURE_CLIP)


def _running_mean(
  current: jax.Array, running: jax.Array, first: jax.Array, decay: float = EMA_DECAY
):
  """The running mean before and after seeing ``current``.

  On the first step the running mean starts at ``current``, so the change
  ``current - previous`` is exactly zero there.
  """
  previous = jnp.where(first, current, running)
  return previous, decay * previous + (1.0 - decay) * current


def compute_features(
  statistics: jax.Array,
  feature_state: FeatureState,
  count: jax.Array,
  log_learning_rate_ratio: jax.Array,
  value: jax.Array | None,
) -> tuple[jax.Array, FeatureState]:
  """Builds the controller's inputs from the statistics of each group.

  Args:
    statistics: array ``(G, NUM_STATISTICS)``, the sums of each group.
    feature_state: the running statistics.
    count: the number of steps taken so far (0 on the first step).
    log_learning_rate_ratio: array ``(G,)``, ``log(lr_{t-1} / lr_0)``.
    value: the loss, or ``None`` (then the loss feature is zero).

  Returns:
    A tuple ``(features, new_feature_state)`` with ``features`` of shape
    ``(G, NUM_FEATURES)``.
  """
  first = count == 0
  grad_sq, mu_sq, grad_dot_mu = (statistics[:, i] for i in range(NUM_STATISTICS))
  log_grad_norm = 0.5 * jnp.log(jnp.clip(grad_sq, _TINY, _MAX))
  previous_grad, running_grad = _running_mean(
    log_grad_norm, feature_state.log_grad_norm, first
  )
  previous_slow, running_slow = _running_mean(
    log_grad_norm, feature_state.slow_log_grad_norm, first, SLOW_EMA_DECAY
  )
  grad_change = log_grad_norm - previous_grad
  grad_trend = log_grad_norm - previous_slow
  # A zero momentum buffer (step 0) gives 0 / tiny = 0.
  cos = grad_dot_mu / jnp.maximum(jnp.sqrt(grad_sq) * jnp.sqrt(mu_sq), _TINY)

  if value is None:
    loss_change = jnp.zeros_like(grad_change)
    running_loss = feature_state.loss
  else:
    value = jnp.asarray(value, jnp.float32)
    previous_loss, running_loss = _running_mean(value, feature_state.loss, first)
    relative = (value - previous_loss) / jnp.maximum(jnp.abs(previous_loss), _TINY)
    loss_change = jnp.broadcast_to(relative, grad_change.shape)

  time = jnp.broadcast_to(
    jnp.log1p(count.astype(jnp.float32)) / 10.0, grad_change.shape
  )
  features = jnp.stack(
    [grad_change, cos, loss_change, log_learning_rate_ratio, time, grad_trend],
    axis=-1,
  )
  new_state = FeatureState(
    log_grad_norm=running_grad, slow_log_grad_norm=running_slow, loss=running_loss
  )
  return _finite_clip(features), new_state
