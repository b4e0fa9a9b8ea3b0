"""GARO's gradient statistics when the leaves live on several devices.

Two backends of :func:`garo_optax._statistics.group_statistics`, both one
all-reduce of the ``(L, 3)`` per-leaf partial sums:

- a mesh with explicit axes, where the shardings are known while tracing:
  each device sums its shards of every leaf inside ``shard_map``
  (:func:`explicit_statistics`);
- several devices with auto axes, where the shardings are not known while
  tracing: a ``custom_partitioning`` rule does the same for all leaves once
  XLA's partitioner knows them (:func:`partitioned_statistics`). XLA's
  partitioner cannot split a variadic reduction itself: it would all-gather
  the partial sums, one small collective per statistic, leaf and mesh axis.
"""

import functools

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from garo_optax import _statistics

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
  return jnp.stack(
    [jnp.stack(_statistics.local_sums(g, m)) for g, m in _leaf_pairs(leaves)]
  )


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
    sums = jnp.stack(_statistics.local_sums(g, m))
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


def partitioned_statistics(grad_leaves, mu_leaves) -> jax.Array:
  """The ``(L, 3)`` sums of every leaf, for shardings XLA's partitioner decides."""
  at_least_1d = [jnp.atleast_1d(x) for x in (*grad_leaves, *mu_leaves)]
  return _partitioned_tree_sums(*at_least_1d)


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


def explicit_statistics(
  grad_leaves: list[jax.Array], mu_leaves: list[jax.Array]
) -> jax.Array | None:
  """The ``(L, 3)`` sums of every leaf if the leaves' types carry their
  shardings (a mesh with explicit axes), else ``None``.

  Inside ``shard_map`` every device sums its shard of each leaf, and
  :func:`_masked_sums` adds them up with one all-reduce.
  """
  explicit = _explicit_shardings(grad_leaves, mu_leaves)
  if explicit is None:
    return None
  mesh, specs = explicit
  # Both buffers of a leaf in the sharding their product has (the one GARO's
  # update gives them too), so that each device's shards line up; where they
  # already have it, nothing moves.
  grad_leaves, mu_leaves = (
    [_reshard(x, spec) for x, spec in zip(leaves, specs, strict=True)]
    for leaves in (grad_leaves, mu_leaves)
  )
  local = functools.partial(_masked_sums, mesh=mesh, specs=specs)
  return jax.shard_map(local, mesh=mesh, in_specs=(*specs, *specs), out_specs=P())(
    *grad_leaves, *mu_leaves
  )


def _axes(entry: str | tuple[str, ...]) -> tuple[str, ...]:
  return (entry,) if isinstance(entry, str) else tuple(entry)
