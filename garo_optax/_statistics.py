"""The gradient statistics: three sums per group of leaves, in one pass.

For each group of leaves (one for GARO's global granularity, one per leaf for
``per_leaf``) GARO needs ``[Σg², Σm², Σg·m]`` of its gradients ``g`` and
momenta ``m``. A non-finite gradient entry makes ``Σg²`` non-finite, which is
how GARO detects the steps it must skip without a reduction of its own
(gradients so large that ``Σg²`` overflows float32, ``‖g‖ > 1.8e19``, are
skipped too).

On one device the sums are one variadic ``lax.reduce`` per few leaves of the
same size, a single pass over their gradients and momenta, with the leaves of
one group added entry by entry first and large leaves summed in rows that the
device's threads share (:func:`_batch_sums`). Leaves on several devices go to
the backends of :mod:`garo_optax._statistics_sharded`
(:func:`group_statistics` picks one).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from garo_optax import _groups, _statistics_sharded

NUM_STATISTICS = 3
# On one device, leaves of the same size are summed a few in one reduction:
# _BATCH_SIZE of them, or _LARGE_BATCH_SIZE from _SPLIT_SIZE entries on; such
# a large leaf left in a batch of its own is summed as its two halves
# (_batch_sums).
_BATCH_SIZE = 4
_LARGE_BATCH_SIZE = 2
_SPLIT_SIZE = 1 << 16
# Leaves from _ROWS_SIZE entries on are summed in _ROWS rows, which XLA:CPU
# shares out among its threads.
_ROWS = 8
_ROWS_SIZE = 1 << 19


def _add(a, b):
  return tuple(x + y for x, y in zip(a, b, strict=True))


def local_sums(grad: jax.Array, mu: jax.Array) -> tuple[jax.Array, ...]:
  """The three sums of one leaf on one device, in one pass over its buffers."""
  ((_, sums),) = _batch_sums([grad], [mu], [0])
  return sums


def _batch_sums(
  grads: list[jax.Array], mus: list[jax.Array], groups: list[int]
) -> list[tuple[int, tuple[jax.Array, ...]]]:
  """The sums of leaves of one size, per group, in one reduction.

  One variadic ``lax.reduce`` is one kernel that reads every ``grad`` and
  ``mu`` once; three ``jnp.sum`` calls per leaf measured about twice as slow
  inside a training loop on XLA:CPU (``benchmarks/step_time.py``). The leaves
  of one group are added entry by entry before the reduction, so the
  reduction carries three running sums per group rather than per leaf.

  XLA:CPU emits the reduction as a scalar loop bound by the latency of its
  running sums, so each step of the loop should do more than one entry's work:
  here one entry of every leaf of the batch, or of both halves of a large leaf
  in a batch of its own (which took about 20% off the step of a model with
  large leaves). Halving the leaves of larger batches too left the step time
  as it was but made their slices cost compile time: one step of 100 leaves of
  1e5 entries compiled in 0.72-0.84 s rather than 0.54-0.55 s (two runs, each
  timing both in one process). And the fewer sums come out, the smaller the
  one ``stack`` that gathers them all (:func:`_local_group_statistics`): at
  1000 leaves, a stack of three scalars per leaf was 1.8 MB of LLVM IR, most
  of GARO's compile time.

  XLA:CPU runs independent reductions on its threads at once, but each one on
  one thread. With few leaves, a few large reductions left cores idle, so a
  leaf from ``_ROWS_SIZE`` entries on is summed into ``_ROWS`` rows, which
  XLA:CPU shares among its threads, and the rows are added afterwards. The
  sums of one leaf of 1e7 entries took 3.62 ms instead of 6.90, and GARO's
  step with 1e7 params in 10 leaves 1.07x AdamW's instead of 1.51x
  (``benchmarks/results/rows_before_after/``).

  Returns:
    ``(group, (Σg², Σm², Σg·m))`` for each group among ``groups`` (the group of
    each leaf), in order of first appearance.
  """
  grads = [_as_float32(g) for g in grads]
  mus = [_as_float32(m) for m in mus]
  size = grads[0].size
  if len(grads) == 1 and size >= _SPLIT_SIZE and size % 2 == 0:
    half = size // 2
    # lax.slice_in_dim, not indexing: it traces several times faster, which
    # matters for models with thousands of leaves.
    grads, mus = (
      [
        jax.lax.slice_in_dim(x.reshape(-1), i, i + half)
        for x in leaves
        for i in (0, half)
      ]
      for leaves in (grads, mus)
    )
    groups = [group for group in groups for _ in range(2)]
  elif any(g.shape != grads[0].shape for g in grads):  # same size, other shapes
    grads, mus = [g.reshape(-1) for g in grads], [m.reshape(-1) for m in mus]
  rows = _ROWS if size >= _ROWS_SIZE and grads[0].size % _ROWS == 0 else 1
  if rows > 1:
    grads, mus = ([x.reshape(rows, -1) for x in leaves] for leaves in (grads, mus))
  members: dict[int, list[int]] = {}
  for i, group in enumerate(groups):
    members.setdefault(group, []).append(i)
  # lax rather than jnp arithmetic: it traces faster, and the operands already
  # share one dtype and shape.
  mul = jax.lax.mul
  operands = []
  for indices in members.values():
    g, m = [grads[i] for i in indices], [mus[i] for i in indices]
    operands += [
      _total(mul(x, x) for x in g),
      _total(mul(y, y) for y in m),
      _total(mul(x, y) for x, y in zip(g, m, strict=True)),
    ]
  sums = _variadic_sum(tuple(operands), rows > 1)
  if rows > 1:  # each sum is a row's
    sums = _variadic_sum(sums)
  return [
    (group, sums[k * NUM_STATISTICS : (k + 1) * NUM_STATISTICS])
    for k, group in enumerate(members)
  ]


def _total(terms) -> jax.Array:
  """The entry-by-entry sum of some arrays (without a ``0 +`` of its own)."""
  return functools.reduce(jax.lax.add, terms)


def _as_float32(x: jax.Array) -> jax.Array:
  return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


def _batches_of_same_size(leaves: list[jax.Array]) -> list[list[int]]:
  """Indices of the leaves to sum together: the same size, a few at a time."""
  by_size: dict[int, list[int]] = {}
  for i, leaf in enumerate(leaves):
    by_size.setdefault(leaf.size, []).append(i)
  batches = []
  for size, indices in by_size.items():
    step = _BATCH_SIZE if size < _SPLIT_SIZE else _LARGE_BATCH_SIZE
    batches += [indices[i : i + step] for i in range(0, len(indices), step)]
  return batches


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _variadic_sum(
  operands: tuple[jax.Array, ...], keep_rows: bool = False
) -> tuple[jax.Array, ...]:
  """Each operand's sum, in one reduction; with ``keep_rows``, of each row.

  Its derivatives are plain sums (it is linear): JAX's rule for a variadic
  ``lax.reduce`` fails when only some operands have tangents, as when a
  controller is differentiated through steps on given gradients.
  """
  init = tuple(jnp.zeros((), jnp.float32) for _ in operands)
  return jax.lax.reduce(operands, init, _add, _summed_dims(operands, keep_rows))


@_variadic_sum.defjvp
def _variadic_sum_jvp(keep_rows, primals, tangents):
  (operands,), (operand_tangents,) = primals, tangents
  dims = _summed_dims(operands, keep_rows)
  return _variadic_sum(operands, keep_rows), tuple(
    jnp.sum(t, axis=dims) for t in operand_tangents
  )


def _summed_dims(operands: tuple[jax.Array, ...], keep_rows: bool) -> tuple[int, ...]:
  return tuple(range(int(keep_rows), operands[0].ndim))


def _local_group_statistics(
  grad_leaves: list[jax.Array], mu_leaves: list[jax.Array], groups: _groups.Groups
) -> jax.Array:
  """:func:`group_statistics` of leaves that all live on one device."""
  if not grad_leaves:
    return jnp.zeros((len(groups.names), NUM_STATISTICS), jnp.float32)
  rows, row_groups = [], []
  for batch in _batches_of_same_size(grad_leaves):
    for group, sums in _batch_sums(
      [grad_leaves[i] for i in batch],
      [mu_leaves[i] for i in batch],
      [groups.leaf_groups[i] for i in batch],
    ):
      rows += sums
      row_groups.append(group)
  # One stack for all the sums: on XLA:CPU each small stack is a kernel of its
  # own.
  stats = jnp.stack(rows).reshape(-1, NUM_STATISTICS)
  return _groups.group_sums(stats, groups._replace(leaf_groups=tuple(row_groups)))


def group_statistics(
  grads: Any,
  mu: Any,
  groups: _groups.Groups,
  *,
  partitionable: bool | None = None,
) -> jax.Array:
  """The sums of every group of leaves, as one ``(G, NUM_STATISTICS)`` array.

  When the leaves are typed with a mesh whose axes are all explicit (arrays
  placed under ``jax.set_mesh`` with ``AxisType.Explicit`` axes, the default
  of ``jax.make_mesh``), their shardings are known while tracing: each device
  then sums its own shards with the one-pass variadic reduction, and a single
  all-reduce of the ``(L, 3)`` partial sums finishes the job for all leaves at
  once (``_statistics_sharded.explicit_statistics``). Otherwise, with
  ``partitionable``, a partitioning rule does the same once XLA's partitioner
  knows the shardings (``_statistics_sharded.partitioned_statistics``);
  without it the leaves are summed on their device a few at a time, those of
  one group together (:func:`_local_group_statistics`).

  Args:
    grads: the gradients.
    mu: the momentum buffers (same structure and shapes).
    groups: which group each leaf belongs to (``_groups.make_groups``).
    partitionable: whether XLA may still partition the program with shardings
      not known while tracing. ``None`` (the default) chooses so when JAX
      sees more than one device: a program on one device is never
      partitioned.

  Returns:
    Per group ``Σg²`` (not finite if any entry of its gradients is not),
    ``Σm²`` and ``Σg·m``.
  """
  grad_leaves, treedef = jax.tree.flatten(grads)
  mu_leaves = treedef.flatten_up_to(mu)
  stats = _statistics_sharded.explicit_statistics(grad_leaves, mu_leaves)
  if stats is not None:
    return _groups.group_sums(stats, groups)
  if partitionable is None:
    partitionable = jax.device_count() > 1
  if partitionable and grad_leaves:
    stats = _statistics_sharded.partitioned_statistics(grad_leaves, mu_leaves)
    return _groups.group_sums(stats, groups)
  return _local_group_statistics(grad_leaves, mu_leaves, groups)


def tree_statistics(
  grads: Any, mu: Any, *, partitionable: bool | None = None
) -> jax.Array:
  """The sums of every leaf, as one ``(L, NUM_STATISTICS)`` array.

  :func:`group_statistics` with each leaf a group of its own.
  """
  num_leaves = len(jax.tree.leaves(grads))
  each_alone = _groups.Groups(
    tuple(map(str, range(num_leaves))), tuple(range(num_leaves)), False
  )
  return group_statistics(grads, mu, each_alone, partitionable=partitionable)
