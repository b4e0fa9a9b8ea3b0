"""Tests of the GRU cell against :class:`flax.linen.GRUCell`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from garo_optax import _gru

INPUT_SIZE, HIDDEN_SIZE, BATCH = 3, 5, 4


def _to_gru_params(flax_params):
  """Maps flax's ``ir/iz/in/hr/hz/hn`` weights onto columns ``[r | z | n]``."""
  p = flax_params["params"]
  return _gru.GRUParams(
    input_kernel=jnp.concatenate([p[k]["kernel"] for k in ("ir", "iz", "in")], 1),
    input_bias=jnp.concatenate([p[k]["bias"] for k in ("ir", "iz", "in")]),
    hidden_kernel=jnp.concatenate([p[k]["kernel"] for k in ("hr", "hz", "hn")], 1),
    hidden_bias=p["hn"]["bias"],
  )


def test_matches_flax_gru_cell():
  cell = nn.GRUCell(features=HIDDEN_SIZE)
  init_key, weight_key, input_key, hidden_key = jax.random.split(jax.random.key(0), 4)
  inputs = jax.random.normal(input_key, (BATCH, INPUT_SIZE))
  hidden = jax.random.normal(hidden_key, (BATCH, HIDDEN_SIZE))
  # Flax starts its biases at zero; random weights everywhere check that every
  # weight, biases included, lands in its place.
  flax_params = optax.tree.random_like(
    weight_key, jax.eval_shape(cell.init, init_key, hidden, inputs)
  )
  expected, _ = cell.apply(flax_params, hidden, inputs)
  actual = _gru.gru_cell(_to_gru_params(flax_params), inputs, hidden)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_zero_input_keeps_zero_hidden_state():
  params = _gru.init_gru(jax.random.key(0), INPUT_SIZE, HIDDEN_SIZE)
  hidden = _gru.gru_cell(params, jnp.zeros((INPUT_SIZE,)), jnp.zeros((HIDDEN_SIZE,)))
  np.testing.assert_array_equal(hidden, 0.0)


def test_init_is_flax_style():
  params = _gru.init_gru(jax.random.key(0), INPUT_SIZE, HIDDEN_SIZE)
  assert params.input_kernel.shape == (INPUT_SIZE, 3 * HIDDEN_SIZE)
  np.testing.assert_array_equal(params.input_bias, 0.0)
  np.testing.assert_array_equal(params.hidden_bias, 0.0)
  for block in jnp.split(params.hidden_kernel, 3, axis=1):
    np.testing.assert_allclose(block.T @ block, jnp.eye(HIDDEN_SIZE), atol=1e-5)
