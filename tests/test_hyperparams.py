"""Tests of the heads' biases from the starting values and their move home
(``_hyperparams``)."""

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _hyperparams


def test_head_biases_of_concrete_values_are_numpy_and_match_traced_ones():
  args = (np.array([0.01, 0.3], np.float32), 0.9, np.array([0.0, 1e-4], np.float32))
  concrete = _hyperparams.head_bias(*args)
  assert isinstance(concrete, np.ndarray) and concrete.dtype == np.float32
  traced = jax.jit(_hyperparams.head_bias)(*args)
  np.testing.assert_allclose(concrete, traced, rtol=1e-6)


def test_home_bias_leaves_a_start_at_home_exactly_as_it_is():
  """However the start's bias rounds, a start at the home rate is not moved."""
  from garo_optax._hyperparams import _home_gap, _relaxed_bias

  start = np.array([0.01, 0.1], np.float32)
  bias = _hyperparams.head_bias(start, 0.0, 0.0)
  bias[0, 0] = np.nextafter(bias[0, 0], np.float32(0.0))  # one ulp off
  gap = _home_gap(bias, start, 0.01)
  moved = _relaxed_bias(bias, gap, jnp.array(50), 10.0)
  assert moved[0, 0] == bias[0, 0]
  assert moved[1, 0] < bias[1, 0]  # 0.1 moves down towards 0.01
  np.testing.assert_array_equal(moved[:, 1:], bias[:, 1:])
