"""Tests of the per-leaf and per-group sums Σg², Σm², Σg·m (``_statistics``)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import garo_optax
from garo_optax import _groups, _statistics, _statistics_sharded


# The large leaves check float32 accumulation over many entries (hence rtol);
# (512, 256) is summed in two halves, (257, 257) (odd) in one pass. Both ways
# of writing the sums (see ``_statistics.tree_statistics``) give the same values.
@pytest.mark.parametrize("partitionable", [False, True])
@pytest.mark.parametrize("shape", [(3, 4), (256, 128), (512, 256), (257, 257)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_leaf_statistics_match_reference(grad_and_mu, shape, dtype, partitionable):
  g, m = grad_and_mu(shape, dtype)
  g32, m32 = g.astype(jnp.float32), m.astype(jnp.float32)
  expected = [
    optax.tree.vdot(g32, g32),
    optax.tree.vdot(m32, m32),
    optax.tree.vdot(g32, m32),
  ]
  statistics = _statistics.tree_statistics(g, m, partitionable=partitionable)[0]
  assert statistics.dtype == jnp.float32
  np.testing.assert_allclose(statistics, expected, rtol=1e-4)


@pytest.mark.parametrize("partitionable", [False, True])
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_leaf_statistics_flag_nonfinite_gradients(grad_and_mu, bad, partitionable):
  g, m = grad_and_mu()
  grad_sq, mu_sq, _ = _statistics.tree_statistics(
    g.at[1, 2].set(bad), m, partitionable=partitionable
  )[0]
  assert not np.isfinite(grad_sq) and np.isfinite(mu_sq)


def test_statistics_match_tree_reductions():
  keys = jax.random.split(jax.random.key(1), 2)
  big = (512, 64)
  grads = {"x": jax.random.normal(keys[0], big), "y": jnp.arange(4.0)}
  mu = {"x": jax.random.normal(keys[1], big), "y": -jnp.ones(4)}
  stats = _statistics.tree_statistics(grads, mu)
  assert stats.shape == (2, _statistics.NUM_STATISTICS)
  total = stats.sum(0)
  np.testing.assert_allclose(total[0], optax.tree.norm(grads, squared=True), rtol=1e-5)
  np.testing.assert_allclose(total[1], optax.tree.norm(mu, squared=True), rtol=1e-5)
  np.testing.assert_allclose(total[2], optax.tree.vdot(grads, mu), rtol=1e-5)


# Leaves of one size in several shapes, sizes from _SPLIT_SIZE on (summed in
# pairs, or in halves when alone), from _ROWS_SIZE on (in rows too, if they
# divide into them), odd sizes and a scalar, interleaved.
MIXED_SHAPES = [
  (3,), (2**17,), (8, 16), (5, 7), (300, 512), (16, 8), (), (2**16 + 2,),
  (128,), (1,), (2**17,), (4, 32), (2**17,), (7, 5), (128,), (8, 16), (2,),
  (1024, 512), (2**19 + 8,), (2**19 + 2,), (2**19 + 8,),
]  # fmt: skip


def _mixed_leaves(seed):
  """Random gradients and momenta shaped ``MIXED_SHAPES``, and each leaf's
  three sums in float64."""
  keys = jax.random.split(jax.random.key(seed), len(MIXED_SHAPES))
  shapes = zip(keys, MIXED_SHAPES, strict=True)
  pairs = [jax.random.normal(k, (2, *shape)) for k, shape in shapes]
  grads, mu = [p[0] for p in pairs], [p[1] for p in pairs]
  sums = []
  for g, m in (np.asarray(p, np.float64) for p in pairs):
    sums.append([np.sum(g * g), np.sum(m * m), np.sum(g * m)])
  sums = np.array(sums)
  return grads, mu, sums


def _assert_float32_sums_close(actual, sums):
  """Float32 sums within 1e-4 of ``(Σg² + Σm²) / 2``, which bounds every sum
  of absolute terms ``Σ|g·m|`` too: ``Σg·m`` of a large leaf cancels down to
  far below its terms, so a relative tolerance on it would test rounding."""
  tolerance = 1e-4 * (sums[:, :1] + sums[:, 1:2]) / 2
  np.testing.assert_array_equal(np.abs(actual - sums) <= tolerance, True)


def test_statistics_per_leaf_with_grouped_and_halved_leaves_interleaved():
  # Leaves of the same size are summed several in one reduction (shapes may
  # differ), a large one alone in halves: each row must still be its
  # own leaf's, in the order of the leaves.
  grads, mu, want = _mixed_leaves(2)
  stats = jax.jit(_statistics.tree_statistics)(grads, mu)
  _assert_float32_sums_close(stats, want)


@pytest.mark.parametrize("granularity", ["global", "per_leaf", "labels"])
def test_group_statistics_add_up_their_leaves(granularity):
  # Leaves of one group are added entry by entry before the reduction, a few
  # of one size together, a large one alone in halves: each group's sums must
  # still be those of its leaves, whichever batches they fell into.
  grads, mu, per_leaf = _mixed_leaves(3)
  if granularity == "labels":
    granularity = ["ab"[i % 3 == 0] for i in range(len(MIXED_SHAPES))]
  groups = _groups.make_groups(grads, granularity)
  stats = jax.jit(lambda g, m: _statistics.group_statistics(g, m, groups))(grads, mu)
  want = np.zeros((len(groups.names), _statistics.NUM_STATISTICS))
  np.add.at(want, np.asarray(groups.leaf_groups), per_leaf)
  _assert_float32_sums_close(stats, want)


@pytest.mark.parametrize("size", [3, 40_000, 2**17])
def test_statistics_flag_non_finite_gradients(size):
  mu = {"x": jnp.zeros(size)}
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    grads = {"x": jnp.ones(size).at[1].set(bad)}
    assert not jnp.isfinite(_statistics.tree_statistics(grads, mu)[0, 0])
  assert jnp.isfinite(_statistics.tree_statistics({"x": jnp.ones(size)}, mu)[0, 0])


def test_explicit_one_device_mesh_matches_plain_arrays():
  """Leaves typed with an explicit mesh take the shard_map path, same numbers.

  The large leaf is one that plain arrays sum in two halves.
  """
  keys = jax.random.split(jax.random.key(2), 2)
  params = {"w": jax.random.normal(keys[0], (512, 256)), "b": jnp.ones(7)}
  grads = {"w": jax.random.normal(keys[1], (512, 256)), "b": jnp.arange(7.0)}
  tx = garo_optax.garo(learning_rate=0.1, momentum=0.5)

  def two_steps(params, grads):
    state = tx.init(params)
    for _ in range(2):
      updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
      params = optax.apply_updates(params, updates)
    return params, garo_optax.hyperparams(state)

  want = jax.jit(two_steps)(params, grads)
  mesh = jax.make_mesh((1,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
  with jax.set_mesh(mesh):
    specs = {"w": P("x", None), "b": P()}
    got = jax.jit(two_steps)(
      jax.device_put(params, specs), jax.device_put(grads, specs)
    )
    assert jax.typeof(got[0]["w"]).sharding.spec == P("x", None)
  # Float32 rounding of params of order 1 (XLA fuses the sharded program
  # differently, and the second step's rate carries the first's rounding):
  # a few ulps, absolute, for entries that cancel to near zero.
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=5e-7)


def test_partitioned_sums_transform_like_plain_sums():
  """The sums for auto-sharded programs support jit, vmap, grad and jvp.

  ``custom_partitioning`` has no batching or differentiation rules of its own;
  the wrappers around it must give what plain ``jnp.sum``s give.
  """
  keys = jax.random.split(jax.random.key(3), 3)
  g, m = (jax.random.normal(k, (3, 16, 8)) for k in keys[:2])
  weights = jax.random.normal(keys[2], (_statistics.NUM_STATISTICS,))

  def partitioned(g, m):
    return _statistics.tree_statistics(g, m, partitionable=True)[0]

  def plain(g, m):
    return _statistics_sharded._plain_tree_sums(g, m)[0]

  def both(transform):
    return transform(partitioned), transform(plain)

  for got, want in [
    both(lambda f: jax.jit(f)(g[0], m[0])),
    both(lambda f: jax.vmap(f)(g, m)),
    both(lambda f: jax.vmap(f, in_axes=(0, None))(g, m[0])),
    both(lambda f: jax.grad(lambda g, m: f(g, m) @ weights, (0, 1))(g[0], m[0])),
    both(lambda f: jax.jvp(f, (g[0], m[0]), (m[0], g[0]))),
    both(lambda f: jax.vmap(jax.grad(lambda g, m: f(g, m) @ weights))(g, m)),
  ]:
    chex.assert_trees_all_close(got, want, rtol=1e-5)
