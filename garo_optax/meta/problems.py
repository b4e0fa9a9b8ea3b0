"""The problem types the controller is meta-trained on.

A :class:`Task` is a problem instance: it makes initial params, draws a
minibatch from a key, and scores params on a minibatch. Tasks are pytrees
whose arrays (data, teacher weights, initial scale) are the leaves and whose
architecture (widths, activation, layer norm, batch size) is static, so a
batch of tasks of one architecture is a single task with a leading axis, made
and trained under :func:`jax.vmap`. The families that sample them are in
:mod:`garo_optax.meta.tasks`.

The types: :class:`MLPTask` (linear and logistic regression, MLPs with or
without layer norm, autoencoders), :class:`QuadraticTask`, :class:`ConvTask`,
:class:`CharTask` (an embedding and an MLP over a window of characters),
:class:`TransformerTask` (a small causal transformer language model) and
:class:`FactorizationTask` (deterministic low-rank matrix factorisation);
:class:`ReparametrizedTask` rescales the params of any of them. All are
written in plain :mod:`jax.numpy` so that a vmapped batch of them is a batch
of matmuls.
"""

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Batch = Any

ACTIVATIONS = {
  "relu": jax.nn.relu,
  "tanh": jnp.tanh,
  "gelu": jax.nn.gelu,
  "linear": lambda x: x,
}


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


def dense_init(key, sizes, scale, layer_norm=False):
  """Layers ``{"w", "b"}`` of an MLP with widths ``sizes``: LeCun-normal
  weights times ``scale``, zero biases; with ``layer_norm``, every hidden
  layer also has a ``"gain"`` (ones) for its layer norm."""
  keys = jax.random.split(key, len(sizes) - 1)
  layers = [
    {
      "w": scale * jax.random.normal(k, (m, n)) / jnp.sqrt(m),
      "b": jnp.zeros((n,)),
    }
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]
  if layer_norm:
    for layer in layers[:-1]:
      layer["gain"] = jnp.ones_like(layer["b"])
  return layers


def layer_norm(x, eps=1e-5):
  """``x`` normalised to zero mean and unit variance over its last axis."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def dense_apply(params, x, activation):
  """The MLP of :func:`dense_init`: a hidden layer with a ``"gain"`` is
  ``activation(gain * layer_norm(x @ w) + b)``, one without is
  ``activation(x @ w + b)``; the last layer is linear."""
  for layer in params[:-1]:
    x = x @ layer["w"]
    if "gain" in layer:
      x = layer["gain"] * layer_norm(x)
    x = ACTIVATIONS[activation](x + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def _sample_rows(key, arrays, batch_size):
  idx = jax.random.randint(key, (batch_size,), 0, arrays[0].shape[0])
  return tuple(a[idx] for a in arrays)


def _loss(outputs, targets, objective):
  """Mean cross-entropy of logits ``outputs`` (..., K) against classes
  ``targets`` (...), or mean squared error against same-shaped targets."""
  if objective == "xent":
    # A product with one-hot targets: its gradient is dense, which XLA:CPU
    # runs faster than the scatter that the gradient of a gather is.
    logp = jax.nn.log_softmax(outputs)
    return -jnp.mean(jnp.sum(logp * jax.nn.one_hot(targets, logp.shape[-1]), -1))
  return jnp.mean(jnp.square(outputs - targets))


@_pytree(
  data=("inputs", "targets", "init_scale"),
  meta=(
    "hidden",
    "activation",
    "batch_size",
    "objective",
    "num_outputs",
    "layer_norm",
  ),
)
class MLPTask:
  """An MLP (no hidden layer: linear or logistic regression) on a dataset.

  ``batch_size=0`` trains on the whole dataset at every step (deterministic).
  An autoencoder is an MLP with a narrow hidden layer whose targets are its
  inputs (``objective="mse"``, ``num_outputs`` the input width).
  """

  inputs: jax.Array  # (N, D) float32
  targets: jax.Array  # (N,) int32 classes, or (N, K) float32 regression targets
  init_scale: jax.Array  # () float32, multiplies the LeCun-normal init
  hidden: tuple[int, ...]
  activation: str
  batch_size: int
  objective: str  # "xent" or "mse"
  num_outputs: int
  layer_norm: bool = False  # layer norm (with a learned gain) in hidden layers

  def init(self, key):
    sizes = (self.inputs.shape[-1], *self.hidden, self.num_outputs)
    return dense_init(key, sizes, self.init_scale, self.layer_norm)

  def batch(self, key):
    if self.batch_size == 0:
      return self.inputs, self.targets
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


@_pytree(data=("target", "init_scale"), meta=("rank",))
class FactorizationTask:
  """``½ ‖U Vᵀ − M‖²`` over the whole matrix ``M``: deterministic (every
  minibatch is the full matrix), nonconvex, and stiffer the larger ``U`` and
  ``V`` grow, so that a step size stable at the start is not stable later
  (as on a curved valley)."""

  target: jax.Array  # (M, N)
  init_scale: jax.Array  # () float32, multiplies the N(0, 1/rank) init
  rank: int

  def init(self, key):
    u_key, v_key = jax.random.split(key)
    m, n = self.target.shape
    scale = self.init_scale / np.sqrt(self.rank)
    return {
      "u": scale * jax.random.normal(u_key, (m, self.rank)),
      "v": scale * jax.random.normal(v_key, (n, self.rank)),
    }

  def batch(self, key):
    del key
    return None

  def loss(self, params, batch):
    del batch
    return 0.5 * jnp.sum(jnp.square(params["u"] @ params["v"].T - self.target))


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


def _windows(key, text, context, batch_size):
  """``batch_size`` random windows of ``context + 1`` characters of ``text``."""
  start = jax.random.randint(key, (batch_size,), 0, text.shape[0] - context)
  return text[start[:, None] + jnp.arange(context + 1)]


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
    return _windows(key, self.text, self.context, self.batch_size)

  def loss(self, params, batch):
    x = params["embed"][batch[:, :-1]].reshape(batch.shape[0], -1)
    return _loss(dense_apply(params["mlp"], x, "tanh"), batch[:, -1], "xent")


def causal_self_attention(x, qkv, heads):
  """Multi-head causal self-attention of ``x`` (B, T, W) with queries, keys
  and values ``x @ qkv`` (W, 3W): position ``t`` attends to positions ``≤ t``.
  Returns the heads' outputs, concatenated: (B, T, W)."""
  batch, length, width = x.shape
  head = width // heads
  q, k, v = jnp.split((x @ qkv).reshape(batch, length, 3 * heads, head), 3, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head)
  causal = np.tril(np.ones((length, length), bool))
  weights = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, width)


@_pytree(
  data=("text", "init_scale", "embed_scale"),
  meta=("context", "width", "depth", "heads", "vocab", "batch_size"),
)
class TransformerTask:
  """A decoder-only transformer language model on a text of characters.

  Token and learned position embeddings, ``depth`` pre-norm blocks (causal
  self-attention, then a GELU MLP of width ``4 * width``, each added to the
  residual stream), a final layer norm and a linear readout. The loss is the
  mean next-character cross-entropy over every position of a window of
  ``context`` characters. Layer norms have a learned gain and bias.
  """

  text: jax.Array  # (N,) int32 characters
  init_scale: jax.Array  # () multiplies the LeCun-normal init of the matrices
  context: int
  width: int
  depth: int
  heads: int
  vocab: int
  batch_size: int
  # () the standard deviation of the initial token embeddings (None: 1)
  embed_scale: jax.Array | None = None

  def init(self, key):
    keys = jax.random.split(key, 3 + 4 * self.depth)
    width = self.width

    def matrix(k, m, n):
      return self.init_scale * jax.random.normal(k, (m, n)) / np.sqrt(m)

    def dense(k, m, n):
      return {"w": matrix(k, m, n), "b": jnp.zeros((n,))}

    def norm():
      return {"gain": jnp.ones((width,)), "bias": jnp.zeros((width,))}

    blocks = [
      {
        "norm1": norm(),
        "qkv": matrix(k[0], width, 3 * width),
        "proj": dense(k[1], width, width),
        "norm2": norm(),
        "up": dense(k[2], width, 4 * width),
        "down": dense(k[3], 4 * width, width),
      }
      for k in keys[3:].reshape(self.depth, 4)
    ]
    embed = jax.random.normal(keys[0], (self.vocab, width))
    if self.embed_scale is not None:
      embed = self.embed_scale * embed
    return {
      "embed": embed,
      "position": 0.1 * jax.random.normal(keys[1], (self.context, width)),
      "blocks": blocks,
      "norm": norm(),
      "head": dense(keys[2], width, self.vocab),
    }

  def batch(self, key):
    return _windows(key, self.text, self.context, self.batch_size)

  def logits(self, params, tokens):
    """Next-character logits (B, T, vocab) at every position of ``tokens``."""

    def norm(p, x):
      return p["gain"] * layer_norm(x) + p["bias"]

    def dense(p, x):
      return x @ p["w"] + p["b"]

    x = params["embed"][tokens] + params["position"][: tokens.shape[1]]
    for block in params["blocks"]:
      attended = causal_self_attention(
        norm(block["norm1"], x), block["qkv"], self.heads
      )
      x = x + dense(block["proj"], attended)
      hidden = jax.nn.gelu(dense(block["up"], norm(block["norm2"], x)))
      x = x + dense(block["down"], hidden)
    return dense(params["head"], norm(params["norm"], x))

  def loss(self, params, batch):
    return _loss(self.logits(params, batch[:, :-1]), batch[:, 1:], "xent")


@_pytree(data=("task", "scale"), meta=())
class ReparametrizedTask:
  """``task`` in params ``φ = θ / scale``: the loss is the task's at
  ``θ = scale · φ``, and the initial params are the task's divided by
  ``scale``.

  The function the params compute is the task's, but a step of a given size
  in ``φ`` is ``scale`` times as large in ``θ``: AdamW's best learning rate is
  the task's divided by ``scale`` (SGD's by ``scale²``), while the ratio of
  the step to the params at that rate is the task's.
  (``ReparamWeights`` in learned_optimization's task augmentations.)
  """

  task: Any
  scale: jax.Array  # ()

  def init(self, key):
    return jax.tree.map(lambda x: x / self.scale, self.task.init(key))

  def batch(self, key):
    return self.task.batch(key)

  def loss(self, params, batch):
    return self.task.loss(jax.tree.map(lambda x: x * self.scale, params), batch)
