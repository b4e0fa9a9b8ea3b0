"""A gated recurrent unit in plain ``jax.numpy``.

The equations and the gate order (reset ``r``, update ``z``, candidate ``n``)
are those of :class:`flax.linen.GRUCell`, so weights can be moved between the
two (``tests/test_gru.py`` checks that they agree).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class GRUParams(NamedTuple):
  """Weights of a GRU cell with ``I`` inputs and ``H`` hidden units."""

  input_kernel: jax.Array  # shape=(I, 3 * H): columns [r | z | n]
  input_bias: jax.Array  # shape=(3 * H,)
  hidden_kernel: jax.Array  # shape=(H, 3 * H): columns [r | z | n]
  hidden_bias: jax.Array  # shape=(H,): bias of the candidate's hidden term


def gru_cell(params: GRUParams, inputs: jax.Array, hidden: jax.Array) -> jax.Array:
  r"""One GRU step.

  .. math::

    r &= \sigma(x W_{ir} + b_{ir} + h W_{hr}) \\
    z &= \sigma(x W_{iz} + b_{iz} + h W_{hz}) \\
    n &= \tanh(x W_{in} + b_{in} + r \odot (h W_{hn} + b_{hn})) \\
    h' &= (1 - z) \odot n + z \odot h

  Args:
    params: the cell's weights.
    inputs: array of shape ``(..., I)``.
    hidden: array of shape ``(..., H)``.

  Returns:
    The new hidden state, shaped like ``hidden``.
  """
  x_r, x_z, x_n = jnp.split(inputs @ params.input_kernel + params.input_bias, 3, -1)
  h_r, h_z, h_n = jnp.split(hidden @ params.hidden_kernel, 3, -1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * (h_n + params.hidden_bias))
  return (1.0 - z) * n + z * hidden


def init_gru(key: jax.Array, input_size: int, hidden_size: int) -> GRUParams:
  """Initialises a GRU cell as :class:`flax.linen.GRUCell` does.

  LeCun-normal input kernels, orthogonal recurrent kernels (one orthogonal
  block per gate) and zero biases. Zero biases matter to GARO: with a zero
  input and a zero hidden state, the candidate ``n`` is zero, so the hidden
  state stays exactly zero.

  Args:
    key: a PRNG key.
    input_size: number of input features ``I``.
    hidden_size: number of hidden units ``H``.

  Returns:
    The cell's weights, in float32.
  """
  input_key, hidden_key = jax.random.split(key)
  input_kernel = jax.nn.initializers.lecun_normal()(
    input_key, (input_size, 3 * hidden_size), jnp.float32
  )
  hidden_blocks = [
    jax.nn.initializers.orthogonal()(k, (hidden_size, hidden_size), jnp.float32)
    for k in jax.random.split(hidden_key, 3)
  ]
  return GRUParams(
    input_kernel=input_kernel,
    input_bias=jnp.zeros((3 * hidden_size,), jnp.float32),
    hidden_kernel=jnp.concatenate(hidden_blocks, axis=1),
    hidden_bias=jnp.zeros((hidden_size,), jnp.float32),
  )
