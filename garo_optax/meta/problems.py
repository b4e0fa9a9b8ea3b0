"""The problem types the controller is meta-trained on.

A :class:`Task` is a problem instance: it makes initial params, draws a
minibatch from a key, and scores params on a minibatch. Tasks are pytrees
whose arrays (data, teacher weights, initial scale) are the leaves and whose
architecture (widths, activation, batch size) is static, so a batch of tasks
of one architecture is a single task with a leading axis, made and trained
under :func:`jax.vmap`. The families that sample them are in
:mod:`garo_optax.meta.tasks`.
"""

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Batch = Any

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}
# Datasets the families draw from (the held-out suite must use none of them).


class Task(Protocol):
  """A training problem: initial params, minibatches and a loss."""

  def init(self, key: jax.Array) -> Params:
    """Initial params."""

  def batch(self, key: jax.Array) -> Batch:
    """A minibatch drawn with ``key``."""

  def loss(self, params: Params, batch: Batch) -> jax.Array:
    """Scalar loss of ``params`` on ``batch``."""


def _pytree(*, data: tuple[str, ...], meta: tuple[str, ...]):
  def register(cls):
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(
      cls, data_fields=list(data), meta_fields=list(meta)
    )

  return register


def dense_init(key, sizes, scale):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {
      "w": scale * jax.random.normal(k, (m, n)) / jnp.sqrt(m),
      "b": jnp.zeros((n,)),
    }
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def dense_apply(params, x, activation):
  for layer in params[:-1]:
    x = ACTIVATIONS[activation](x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def _sample_rows(key, arrays, batch_size):
  idx = jax.random.randint(key, (batch_size,), 0, arrays[0].shape[0])
  return tuple(a[idx] for a in arrays)


def _loss(outputs, targets, objective):
  if objective == "xent":
    logp = jax.nn.log_softmax(outputs)
    return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], -1))
  return jnp.mean(jnp.square(outputs - targets))


@_pytree(
  data=("inputs", "targets", "init_scale"),
  meta=("hidden", "activation", "batch_size", "objective", "num_outputs"),
)
class MLPTask:
  """An MLP (no hidden layer: linear or logistic regression) on a dataset."""

  inputs: jax.Array  # (N, D) float32
  targets: jax.Array  # (N,) int32 classes, or (N, K) float32 regression targets
  init_scale: jax.Array  # () float32, multiplies the LeCun-normal init
  hidden: tuple[int, ...]
  activation: str
  batch_size: int
  objective: str  # "xent" or "mse"
  num_outputs: int

  def init(self, key):
    sizes = (self.inputs.shape[-1], *self.hidden, self.num_outputs)
    return dense_init(key, sizes, self.init_scale)

  def batch(self, key):
    return _sample_rows(key, (self.inputs, self.targets), self.batch_size)

  def loss(self, params, batch):
    x, y = batch
    return _loss(dense_apply(params, x, self.activation), y, self.objective)


@_pytree(data=("eigenvalues", "rotation", "start", "noise"), meta=("batch_size",))
class QuadraticTask:
  """``½ (θ − b)ᵀ A (θ − b)`` with ``A = Q diag(λ) Qᵀ`` and a noisy target ``b``.

  The minibatch is the target: the mean of ``batch_size`` draws of
  ``noise · N(0, I)``, so the loss has a noise floor as real problems do.
  """

  eigenvalues: jax.Array  # (D,)
  rotation: jax.Array  # (D, D) orthogonal
  start: jax.Array  # (D,) initial params
  noise: jax.Array  # () standard deviation of one target draw
  batch_size: int

  def init(self, key):
    del key
    return {"x": self.start}

  def batch(self, key):
    return (
      self.noise * jax.random.normal(key, self.start.shape) / np.sqrt(self.batch_size)
    )

  def loss(self, params, batch):
    z = self.rotation.T @ (params["x"] - batch)
    return 0.5 * jnp.sum(self.eigenvalues * z * z)


@_pytree(
  data=("images", "labels", "init_scale"),
  meta=("channels", "batch_size", "num_classes"),
)
class ConvTask:
  """A small convnet (3x3 convs, ReLU, global average pool, dense) on images."""

  images: jax.Array  # (N, S, S, 1)
  labels: jax.Array  # (N,) int32
  init_scale: jax.Array  # ()
  channels: tuple[int, ...]
  batch_size: int
  num_classes: int

  def init(self, key):
    keys = jax.random.split(key, len(self.channels) + 1)
    sizes = (1, *self.channels)
    convs = [
      {
        "w": self.init_scale * jax.random.normal(k, (3, 3, m, n)) / jnp.sqrt(9.0 * m),
        "b": jnp.zeros((n,)),
      }
      for k, m, n in zip(keys[:-1], sizes[:-1], sizes[1:], strict=True)
    ]
    head = dense_init(keys[-1], (self.channels[-1], self.num_classes), 1.0)
    return {"convs": convs, "head": head}

  def batch(self, key):
    return _sample_rows(key, (self.images, self.labels), self.batch_size)

  def loss(self, params, batch):
    x, y = batch
    for layer in params["convs"]:
      x = jax.nn.relu(_conv3x3(x, layer["w"]) + layer["b"])
    logits = dense_apply(params["head"], jnp.mean(x, axis=(1, 2)), "relu")
    return _loss(logits, y, "xent")


def _conv3x3(x, w):
  """A 'SAME' 3x3 convolution written as one matmul over image patches.

  Under ``vmap`` over tasks this is a batched matmul, which CPUs run far
  faster than a batched ``lax.conv_general_dilated``.
  """
  size = x.shape[1]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate(
    [padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3)],
    axis=-1,
  )
  return patches @ w.reshape(-1, w.shape[-1])


@_pytree(
  data=("text", "init_scale"),
  meta=("context", "embed", "hidden", "vocab", "batch_size"),
)
class CharTask:
  """A character-level language model: embed ``context`` chars, MLP, softmax."""

  text: jax.Array  # (N,) int32 characters
  init_scale: jax.Array  # ()
  context: int
  embed: int
  hidden: int
  vocab: int
  batch_size: int

  def init(self, key):
    embed_key, mlp_key = jax.random.split(key)
    return {
      "embed": jax.random.normal(embed_key, (self.vocab, self.embed)),
      "mlp": dense_init(
        mlp_key,
        (self.context * self.embed, self.hidden, self.vocab),
        self.init_scale,
      ),
    }

  def batch(self, key):
    start = jax.random.randint(
      key, (self.batch_size,), 0, self.text.shape[0] - self.context
    )
    window = start[:, None] + jnp.arange(self.context + 1)
    return self.text[window]

  def loss(self, params, batch):
    x = params["embed"][batch[:, :-1]].reshape(batch.shape[0], -1)
    return _loss(dense_apply(params["mlp"], x, "tanh"), batch[:, -1], "xent")
