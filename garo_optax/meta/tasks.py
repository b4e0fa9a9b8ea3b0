"""Problems the controller is meta-trained on: tasks and task families.

A :class:`Task` is a problem instance: it makes initial params, draws a
minibatch from a key, and scores params on a minibatch. Tasks are pytrees
whose arrays (data, teacher weights, initial scale) are the leaves and whose
architecture (widths, activation, batch size) is static, so a batch of tasks
of one architecture is a single task with a leading axis, made and trained
under :func:`jax.vmap`.

A :class:`Family` is a static architecture plus a sampler of random instances
of it (data, scales, conditioning). :func:`training_families` lists the
families of the shipped controller. All data is made offline: synthetic, or
scikit-learn's bundled digits.

None of the evaluation suite's held-out problems is here: no breast cancer,
diabetes, Tiny Shakespeare, Rosenbrock, MNIST-1D, or convnet on digits. Every
held-out task differs from every meta-training task in its data or in its
architecture (``tests/test_meta.py`` checks the dataset names).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Batch = Any

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}
# Datasets the families draw from (the held-out suite must use none of them).
DATASETS = (
  "quadratic",
  "gaussian_clusters",
  "random_teacher",
  "digits",
  "synthetic_images",
  "markov_text",
)


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


def _dense_init(key, sizes, scale):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {
      "w": scale * jax.random.normal(k, (m, n)) / jnp.sqrt(m),
      "b": jnp.zeros((n,)),
    }
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def _dense_apply(params, x, activation):
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
    return _dense_init(key, sizes, self.init_scale)

  def batch(self, key):
    return _sample_rows(key, (self.inputs, self.targets), self.batch_size)

  def loss(self, params, batch):
    x, y = batch
    return _loss(_dense_apply(params, x, self.activation), y, self.objective)


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
    head = _dense_init(keys[-1], (self.channels[-1], self.num_classes), 1.0)
    return {"convs": convs, "head": head}

  def batch(self, key):
    return _sample_rows(key, (self.images, self.labels), self.batch_size)

  def loss(self, params, batch):
    x, y = batch
    for layer in params["convs"]:
      x = jax.nn.relu(_conv3x3(x, layer["w"]) + layer["b"])
    logits = _dense_apply(params["head"], jnp.mean(x, axis=(1, 2)), "relu")
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
      "mlp": _dense_init(
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
    return _loss(_dense_apply(params["mlp"], x, "tanh"), batch[:, -1], "xent")


@dataclasses.dataclass(frozen=True)
class Family:
  """A static architecture and a sampler of random problems with it.

  ``sample(key)`` is traceable, so ``jax.vmap(family.sample)(keys)`` makes a
  batch of tasks (one task whose arrays have a leading axis).
  """

  name: str
  dataset: str
  sample: Callable[[jax.Array], Task]


def _log_uniform(key, low, high, shape=()):
  return jnp.exp(
    jax.random.uniform(key, shape, minval=np.log(low), maxval=np.log(high))
  )


def _teacher_data(key, dim, classes, n, regression):
  """Gaussian inputs of random scale labelled by a random ReLU teacher."""
  x_key, scale_key, teacher_key, noise_key = jax.random.split(key, 4)
  scale = _log_uniform(scale_key, 0.1, 10.0)
  x = jax.random.normal(x_key, (n, dim))
  teacher = _dense_init(teacher_key, (dim, 64, classes), 2.0)
  y = _dense_apply(teacher, x, "relu")
  if regression:
    y = y + 0.1 * jnp.std(y) * jax.random.normal(noise_key, y.shape)
    return scale * x, y / jnp.std(y) * _log_uniform(scale_key, 0.3, 3.0)
  return scale * x, jnp.argmax(y, -1).astype(jnp.int32)


def mlp_teacher_family(
  hidden: tuple[int, ...], activation: str, batch_size: int, regression: bool
) -> Family:
  """MLPs on data labelled by a random teacher network (dim 16, 8 outputs)."""

  def sample(key):
    data_key, scale_key = jax.random.split(key)
    x, y = _teacher_data(data_key, 16, 8, 2048, regression)
    return MLPTask(
      x,
      y,
      _log_uniform(scale_key, 0.5, 2.0),
      hidden,
      activation,
      batch_size,
      "mse" if regression else "xent",
      8,
    )

  kind = "regression" if regression else "classification"
  name = f"teacher_{kind}_mlp_{'x'.join(map(str, hidden))}_{activation}_b{batch_size}"
  return Family(name, "random_teacher", sample)


def logistic_family(dim: int, classes: int, batch_size: int) -> Family:
  """Logistic regression on overlapping Gaussian clusters of random scale."""

  def sample(key):
    center_key, label_key, x_key, scale_key, sep_key = jax.random.split(key, 5)
    centers = jax.random.normal(center_key, (classes, dim)) * _log_uniform(
      sep_key, 0.3, 3.0
    )
    labels = jax.random.randint(label_key, (2048,), 0, classes)
    x = centers[labels] + jax.random.normal(x_key, (2048, dim))
    x = x * _log_uniform(scale_key, 0.1, 10.0)
    return MLPTask(x, labels, jnp.zeros(()), (), "relu", batch_size, "xent", classes)

  return Family(
    f"logistic_d{dim}_k{classes}_b{batch_size}", "gaussian_clusters", sample
  )


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits

  data = load_digits()
  return data.data.astype(np.float32) / 16.0, data.target.astype(np.int32)


def digits_family(hidden: tuple[int, ...], activation: str, batch_size: int) -> Family:
  """MLPs on a random half of scikit-learn's digits, inputs rescaled at random."""
  images, labels = _digits()

  def sample(key):
    subset_key, scale_key, init_key = jax.random.split(key, 3)
    idx = jax.random.permutation(subset_key, images.shape[0])[:1024]
    x = jnp.asarray(images)[idx] * _log_uniform(scale_key, 0.3, 3.0)
    return MLPTask(
      x,
      jnp.asarray(labels)[idx],
      _log_uniform(init_key, 0.5, 2.0),
      hidden,
      activation,
      batch_size,
      "xent",
      10,
    )

  name = f"digits_mlp_{'x'.join(map(str, hidden))}_{activation}_b{batch_size}"
  return Family(name, "digits", sample)


def quadratic_family(dim: int, batch_size: int) -> Family:
  """Quadratics with condition number up to 1e4 and random curvature scale."""

  def sample(key):
    cond_key, eig_key, rot_key, start_key, scale_key, noise_key = jax.random.split(
      key, 6
    )
    log_cond = jax.random.uniform(cond_key, (), minval=0.0, maxval=np.log(1e4))
    eigenvalues = jnp.exp(-log_cond * jax.random.uniform(eig_key, (dim,)))
    eigenvalues = eigenvalues * _log_uniform(scale_key, 0.1, 10.0)
    rotation, _ = jnp.linalg.qr(jax.random.normal(rot_key, (dim, dim)))
    return QuadraticTask(
      eigenvalues,
      rotation,
      jax.random.normal(start_key, (dim,)),
      _log_uniform(noise_key, 0.01, 1.0),
      batch_size,
    )

  return Family(f"quadratic_d{dim}_b{batch_size}", "quadratic", sample)


def conv_family(channels: tuple[int, ...], batch_size: int) -> Family:
  """Convnets on 8x8 synthetic images: noisy, shifted copies of class templates."""

  def sample(key):
    template_key, label_key, shift_key, noise_key, init_key = jax.random.split(key, 5)
    templates = jax.random.normal(template_key, (4, 8, 8))
    templates = templates + jnp.roll(templates, 1, 1) + jnp.roll(templates, 1, 2)
    labels = jax.random.randint(label_key, (1024,), 0, 4)
    shifts = jax.random.randint(shift_key, (1024, 2), -2, 3)
    images = jax.vmap(lambda t, s: jnp.roll(t, s, (0, 1)))(templates[labels], shifts)
    images = images + 1.5 * jax.random.normal(noise_key, images.shape)
    return ConvTask(
      images[..., None],
      labels,
      _log_uniform(init_key, 0.5, 2.0),
      channels,
      batch_size,
      4,
    )

  return Family(
    f"conv_{'x'.join(map(str, channels))}_b{batch_size}", "synthetic_images", sample
  )


def char_family(context: int, hidden: int, batch_size: int, vocab: int = 16) -> Family:
  """Character models on text from a random sparse second-order Markov chain."""

  def sample(key):
    chain_key, text_key, init_key = jax.random.split(key, 3)
    logits = 3.0 * jax.random.normal(chain_key, (vocab, vocab, vocab))

    def step(prev, k):
      c = jax.random.categorical(k, logits[prev[0], prev[1]])
      return (prev[1], c), c

    _, text = jax.lax.scan(step, (0, 0), jax.random.split(text_key, 4096))
    return CharTask(
      text.astype(jnp.int32),
      _log_uniform(init_key, 0.5, 2.0),
      context,
      8,
      hidden,
      vocab,
      batch_size,
    )

  return Family(
    f"markov_text_c{context}_h{hidden}_b{batch_size}", "markov_text", sample
  )


def training_families() -> tuple[Family, ...]:
  """The meta-training distribution of the shipped controller.

  Widths 16 to 256, depths 0 to 4, ReLU and tanh, batch sizes 16 to 64,
  input scales over two decades, convex and non-convex problems.
  """
  return (
    quadratic_family(32, 16),
    logistic_family(16, 4, 64),
    mlp_teacher_family((64, 64), "relu", 64, regression=False),
    mlp_teacher_family((256,), "relu", 32, regression=True),
    mlp_teacher_family((32, 32, 32, 32), "tanh", 32, regression=False),
    digits_family((64,), "relu", 64),
    conv_family((8, 8), 16),
    char_family(4, 64, 32),
  )
