"""The gradient statistics: three sums per leaf, on one device or many.

For each leaf GARO needs ``[Σg², Σm², Σg·m]`` of its gradient ``g`` and
momentum ``m``. A non-finite gradient entry makes ``Σg²`` non-finite, which is
how GARO detects the steps it must skip without a reduction of its own
(gradients so large that ``Σg²`` overflows float32, ``‖g‖ > 1.8e19``, are
skipped too).

How the sums are written depends on where the leaves live:

- one device: one variadic ``lax.reduce`` per leaf, a single pass over its
  gradient and momentum (:func:`_local_sums`), or per few leaves of the same
  size (:func:`_same_size_sums`);
- a mesh with explicit axes: each device sums its shards in that way inside
  ``shard_map``, and one all-reduce covers all leaves
  (:func:`_sharded_tree_statistics`);
- several devices with auto axes, where the shardings are not known while
  tracing: a ``custom_partitioning`` rule does the same for all leaves once XLA's
  partitioner knows them (:func:`_partitioned_statistics`). XLA's partitioner cannot
  split a variadic reduction itself: it all-gathers the partial sums, one
  small collective per statistic, leaf and mesh axis.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

NUM_STATISTICS = 3
# On one device, leaves of the same size are summed together, up to
# _GROUP_SIZE in one reduction, or _LARGE_GROUP_SIZE from _SPLIT_SIZE entries
# on; a leaf from _SPLIT_SIZE entries on with none of its size to share a
# reduction with is summed in two halves (_partial_sums).
_GROUP_SIZE = 4
_LARGE_GROUP_SIZE = 2
_SPLIT_SIZE = 1 << 16


def _add(a, b):
  return tuple(x + y for x, y in zip(a, b, strict=True))


def _local_sums(grad: jax.Array, mu: jax.Array) -> tuple[jax.Array, ...]:
  """The sums of one leaf on one device, in one pass over its buffers.

  One variadic ``lax.reduce`` is one kernel per leaf that reads ``grad`` and
  ``mu`` once. Three ``jnp.sum`` calls measured about twice as slow inside a
  training loop on one XLA:CPU device (``benchmarks/step_time.py``).
  """
  sums = _partial_sums(grad, mu)
  return (
    _add(sums[:NUM_STATISTICS], sums[NUM_STATISTICS:])
    if len(sums) > NUM_STATISTICS
    else sums
  )


def _partial_sums(grad: jax.Array, mu: jax.Array) -> tuple[jax.Array, ...]:
  """:func:`_local_sums` before its halves are added: three sums or six.

  XLA:CPU emits the reduction as a scalar loop bound by the latency of its
  additions; summing a large leaf in two halves, six running sums in one loop,
  takes about 20% off the step of a model with large leaves. The halves are
  left for the caller to add, so that a tree's halves are added in one op
  rather than in small kernels of their own for each leaf.
  """
  g = grad.astype(jnp.float32)
  m = mu.astype(jnp.float32)
  if g.size >= _SPLIT_SIZE and g.size % 2 == 0:
    g, m, half = g.reshape(-1), m.reshape(-1), g.size // 2
    operands = []
    for start in (0, half):
      # lax.slice_in_dim, not indexing: it traces several times faster, which
      # matters for models with thousands of leaves.
      g_i, m_i = (jax.lax.slice_in_dim(x, start, start + half) for x in (g, m))
      operands += [g_i * g_i, m_i * m_i, g_i * m_i]
    return _variadic_sum(tuple(operands))
  return _variadic_sum((g * g, m * m, g * m))


def _same_size_sums(
  grads: list[jax.Array], mus: list[jax.Array]
) -> tuple[jax.Array, ...]:
  """The sums of several leaves of the same size, in one reduction.

  Each running sum is a chain of additions that waits on itself (XLA:CPU
  does not reorder them), so one loop with the three sums of ``k`` leaves
  keeps ``k`` times as many additions in flight as a leaf alone. Inside a
  training loop, four leaves of 1e4 entries summed together took 40% less
  time than one at a time, two of 1e5 entries 28% less, and neither took
  longer to compile.
  """
  shape = grads[0].shape
  if any(g.shape != shape for g in grads):  # same size, other shapes
    grads, mus = [g.reshape(-1) for g in grads], [m.reshape(-1) for m in mus]
  operands = []
  for g, m in zip(grads, mus, strict=True):
    g, m = g.astype(jnp.float32), m.astype(jnp.float32)
    operands += [g * g, m * m, g * m]
  return _variadic_sum(tuple(operands))


def _batches_of_same_size(leaves: list[jax.Array]) -> list[list[int]]:
  """Indices of the leaves to sum together: the same size, a few at a time."""
  by_size: dict[int, list[int]] = {}
  for i, leaf in enumerate(leaves):
    by_size.setdefault(leaf.size, []).append(i)
  batches = []
  for size, indices in by_size.items():
    step = _GROUP_SIZE if size < _SPLIT_SIZE else _LARGE_GROUP_SIZE
    batches += [indices[i : i + step] for i in range(0, len(indices), step)]
  return batches


def _variadic_sum(operands: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
  init = tuple(jnp.zeros((), jnp.float32) for _ in operands)
  return jax.lax.reduce(operands, init, _add, tuple(range(operands[0].ndim)))


# Three layers make one op, the sums of all leaves, that XLA's partitioner
# splits well and that JAX can still transform. Inside out:
# `custom_partitioning` has each device sum its shards of every leaf with
# `_local_sums` and adds them up with one all-reduce, once the partitioner
# knows the shardings. It has no batching or differentiation rules, so
# `custom_vmap` batches with plain sums, and `custom_jvp` gives the derivatives
# as plain sums (linear in the tangents, so reverse mode works too).


def _leaf_pairs(leaves: tuple[jax.Array, ...]):
  """``(grad, mu)`` pairs of the gradient leaves followed by the momentum ones."""
  half = len(leaves) // 2
  return zip(leaves[:half], leaves[half:], strict=True)


@custom_partitioning
def _sharded_tree_sums(*leaves: jax.Array) -> jax.Array:
  return jnp.stack([jnp.stack(_local_sums(g, m)) for g, m in _leaf_pairs(leaves)])


def _replicated_result(mesh, arg_shapes, result_shape):
  del arg_shapes, result_shape
  return NamedSharding(mesh, P())


def _partition(mesh, arg_shapes, result_shape):
  """Each momentum sharded as its gradient; local sums, one all-reduce.

  A leaf replicated along some mesh axes has the same partial sums on every
  device of those axes; only the device at index 0 of each keeps them, so one
  ``psum`` over all mesh axes adds every entry of every leaf exactly once.
  """
  del result_shape
  half = len(arg_shapes) // 2
  shardings = []
  for shape in arg_shapes[:half]:
    sharding = shape.sharding
    if getattr(sharding, "spec", None) is None:  # unnamed: sum whole leaves
      sharding = NamedSharding(mesh, P())
    shardings.append(sharding)
  specs = [sharding.spec for sharding in shardings]
  lower = functools.partial(_masked_sums, mesh=mesh, specs=specs)
  return mesh, lower, NamedSharding(mesh, P()), (*shardings, *shardings)


def _masked_sums(*leaves, mesh, specs) -> jax.Array:
  """Every device's sums of its shards, added up over the mesh (see above)."""
  rows = []
  for (g, m), spec in zip(_leaf_pairs(leaves), specs, strict=True):
    sums = jnp.stack(_local_sums(g, m))
    sharded = {a for entry in spec if entry is not None for a in _axes(entry)}
    for axis in mesh.axis_names:
      if axis not in sharded and mesh.shape[axis] > 1:
        sums = jnp.where(jax.lax.axis_index(axis) == 0, sums, 0.0)
    rows.append(sums)
  return jax.lax.psum(jnp.stack(rows), mesh.axis_names)


def _sharding_rule(mesh, value_types, result_types):
  """Every dimension of every leaf is summed over; the result is ``(L, 3)``."""
  del mesh, result_types
  half = len(value_types) // 2
  leaf_dims = [
    tuple(f"l{i}d{d}" for d in range(len(t.shape)))
    for i, t in enumerate(value_types[:half])
  ]
  operands = ", ".join(" ".join(dims) for dims in leaf_dims)
  reduced = tuple(f for dims in leaf_dims for f in dims)
  return f"{operands}, {operands} -> leaves sums", {"reduction_factors": reduced}


_sharded_tree_sums.def_partition(
  partition=_partition,
  infer_sharding_from_operands=_replicated_result,
  sharding_rule=_sharding_rule,
)


def _plain_tree_sums(*leaves: jax.Array) -> jax.Array:
  """The sums as plain ``jnp.sum``s: what any transformation understands."""
  rows = []
  for g, m in _leaf_pairs(leaves):
    g, m = g.astype(jnp.float32), m.astype(jnp.float32)
    rows.append(jnp.stack([jnp.sum(g * g), jnp.sum(m * m), jnp.sum(g * m)]))
  return jnp.stack(rows)


@custom_vmap
def _batchable_tree_sums(*leaves: jax.Array) -> jax.Array:
  return _sharded_tree_sums(*leaves)


@_batchable_tree_sums.def_vmap
def _batched_tree_sums(axis_size, in_batched, *leaves):
  leaves = [
    x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
    for x, batched in zip(leaves, in_batched, strict=True)
  ]
  return jax.vmap(_plain_tree_sums)(*leaves), True


@jax.custom_jvp
def _partitioned_tree_sums(*leaves: jax.Array) -> jax.Array:
  """The ``(L, 3)`` sums of leaves whose shardings XLA decides later.

  ``leaves``: the gradient leaves, then the momentum leaves, at least 1-D.
  """
  return _batchable_tree_sums(*leaves)


@_partitioned_tree_sums.defjvp
def _partitioned_tree_sums_jvp(primals, tangents):
  rows = []
  for (g, m), (dg, dm) in zip(_leaf_pairs(primals), _leaf_pairs(tangents), strict=True):
    g, m, dg, dm = (x.astype(jnp.float32) for x in (g, m, dg, dm))
    rows.append(
      jnp.stack(
        [
          2.0 * jnp.sum(g * dg),
          2.0 * jnp.sum(m * dm),
          jnp.sum(dg * m + g * dm),
        ]
      )
    )
  return _partitioned_tree_sums(*primals), jnp.stack(rows)


def _partitioned_statistics(grad_leaves, mu_leaves) -> jax.Array:
  """:func:`tree_statistics` for shardings XLA's partitioner decides."""
  at_least_1d = [jnp.atleast_1d(x) for x in (*grad_leaves, *mu_leaves)]
  return _partitioned_tree_sums(*at_least_1d)


def tree_statistics(
  grads: Any, mu: Any, *, partitionable: bool | None = None
) -> jax.Array:
  """The sums of every leaf, as one ``(L, NUM_STATISTICS)`` array.

  When the leaves are typed with a mesh whose axes are all explicit (arrays
  placed under ``jax.set_mesh`` with ``AxisType.Explicit`` axes, the default
  of ``jax.make_mesh``), their shardings are known while tracing:
  each device then sums its own shards with the one-pass variadic reduction,
  and a single all-reduce of the ``(L, 3)`` partial sums finishes the job for
  all leaves at once (:func:`_sharded_tree_statistics`). Otherwise, with
  ``partitionable``, a partitioning rule does the same once XLA's partitioner
  knows the shardings (:func:`_partitioned_statistics`); without it each leaf
  is summed in one pass on its device.

  Args:
    grads: the gradients.
    mu: the momentum buffers (same structure and shapes).
    partitionable: whether XLA may still partition the program with shardings
      not known while tracing. ``None`` (the default) chooses so when JAX
      sees more than one device: a program on one device is never
      partitioned.

  Returns:
    Per leaf ``Σg²`` (not finite if any entry of the gradient is not),
    ``Σm²`` and ``Σg·m``.

  The per-leaf scalars go into one ``stack`` (two, when some leaves are summed
  in halves) rather than one small stack per leaf: on XLA:CPU each small stack
  is a kernel of its own.
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
  if partitionable:
    return _partitioned_statistics(grad_leaves, mu_leaves)
  # Leaves of the same size are summed a few at a time (_same_size_sums). One
  # stack for the leaves summed whole and one for those summed in halves,
  # whose halves are then added in one op: one small kernel per leaf to add
  # them took a third of the compile time of a model with large leaves.
  whole, halves = {}, {}  # leaf index -> its sums
  for batch in _batches_of_same_size(grad_leaves):
    if len(batch) == 1:
      (i,) = batch
      sums = _partial_sums(grad_leaves[i], mu_leaves[i])
      (whole if len(sums) == NUM_STATISTICS else halves)[i] = sums
      continue
    sums = _same_size_sums(
      [grad_leaves[i] for i in batch], [mu_leaves[i] for i in batch]
    )
    for k, i in enumerate(batch):
      whole[i] = sums[k * NUM_STATISTICS : (k + 1) * NUM_STATISTICS]
  whole, halves = dict(sorted(whole.items())), dict(sorted(halves.items()))
  parts = [jnp.zeros((0, NUM_STATISTICS), jnp.float32)] if not grad_leaves else []
  if whole:
    parts.append(_stack(whole.values()).reshape(-1, NUM_STATISTICS))
  if halves:
    parts.append(_stack(halves.values()).reshape(-1, 2, NUM_STATISTICS).sum(axis=1))
  order = [*whole, *halves]
  stats = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
  if order == sorted(order):
    return stats
  # Back into the order of the leaves (one small gather).
  return stats[np.argsort(order)]


def _stack(sums) -> jax.Array:
  """One ``(3n,)`` stack of an iterable of ``n`` tuples of three sums."""
  return jnp.stack([x for leaf in sums for x in leaf])


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

  Inside ``shard_map`` every device sums its shard of each leaf, and
  :func:`_masked_sums` adds them up.
  """
  local = functools.partial(_masked_sums, mesh=mesh, specs=specs)
  return jax.shard_map(local, mesh=mesh, in_specs=(*specs, *specs), out_specs=P())(
    *grad_leaves, *mu_leaves
  )


def _axes(entry: str | tuple[str, ...]) -> tuple[str, ...]:
  return (entry,) if isinstance(entry, str) else tuple(entry)
