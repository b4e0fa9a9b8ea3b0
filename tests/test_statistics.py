"""Tests of the per-leaf and per-group sums Σg², Σm², Σg·m (``_statistics``)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from garo_optax import _statistics


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
