"""Tests of the compile-time workarounds (``_xla``): each leaves results as
they are."""

import jax
import jax.numpy as jnp
import numpy as np

import garo_optax
from garo_optax import _xla


def test_hyperparameters_computed_once_are_unchanged():
  scales = jnp.array([[1e-30], [1.0], [1e30]])
  values = jax.random.normal(jax.random.key(4), (3, 5)) * scales
  out = jax.jit(lambda v: _xla.computed_once(*v))(values)
  np.testing.assert_array_equal(jnp.stack(out), values)


def test_every_leaf_reads_its_own_groups_values_across_index_chunks():
  # The leaves read their groups' hyperparameters at indices made in chunks
  # (`_xla.group_indices`): more groups than two chunks hold.
  n = 2 * _xla._INDEX_CHUNK + 3
  params = {f"p{i:02d}": jnp.full((2, 3), float(i)) for i in range(n)}
  rates = {name: 1e-3 * (i + 1) for i, name in enumerate(params)}
  tx = garo_optax.garo(rates, weight_decay=0.0, granularity="per_leaf")
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  for name, rate in rates.items():
    np.testing.assert_allclose(updates[name], -rate, rtol=1e-6)
  applied = garo_optax.hyperparams(state)["learning_rate"]
  np.testing.assert_allclose(
    [applied[n] for n in rates], list(rates.values()), rtol=1e-6
  )
