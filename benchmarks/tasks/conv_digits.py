"""A small convolutional net on scikit-learn's 8x8 digits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from sklearn.datasets import load_digits

from benchmarks.tasks._common import classification_task
from benchmarks.tasks._task import Task


def patches(x: jax.Array) -> jax.Array:
  """3x3 'SAME' patches: (B, H, W, C) -> (B, H, W, 9 C)."""
  height, width = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate(
    [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)],
    axis=-1,
  )


class ConvNet(nn.Module):
  """conv3x3(16) - conv3x3/2(32) - dense(10), ReLU, on 8x8x1 images.

  Each convolution is a dense layer over 3x3 patches (the same function as
  ``nn.Conv`` with 'SAME' padding): XLA's CPU convolutions are ~8x slower on
  images this small.
  """

  @nn.compact
  def __call__(self, x):
    x = x.reshape(-1, 8, 8, 1)
    x = nn.relu(nn.Dense(16)(patches(x)))
    x = nn.relu(nn.Dense(32)(patches(x)[:, ::2, ::2]))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def task() -> Task:
  data = load_digits()
  return classification_task(
    "conv_digits",
    "ConvNet conv16-conv32/2-dense10 on 8x8 digits, batch 64.",
    ConvNet(),
    data.data,
    data.target,
    batch_size=64,
    steps=1500,
  )
