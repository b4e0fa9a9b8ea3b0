"""Problems the controller is meta-trained on: tasks and task families.

A task (:class:`garo_optax.meta.problems.Task`) is a problem instance; a
:class:`Family` is a static architecture plus a sampler of random instances
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax.meta import problems

Params = Any
Batch = Any

DATASETS = (
  "quadratic",
  "gaussian_clusters",
  "random_teacher",
  "digits",
  "synthetic_images",
  "markov_text",
)


@dataclasses.dataclass(frozen=True)
class Family:
  """A static architecture and a sampler of random problems with it.

  ``sample(key)`` is traceable, so ``jax.vmap(family.sample)(keys)`` makes a
  batch of tasks (one task whose arrays have a leading axis).
  """

  name: str
  dataset: str
  sample: Callable[[jax.Array], problems.Task]


def _log_uniform(key, low, high, shape=()):
  return jnp.exp(
    jax.random.uniform(key, shape, minval=np.log(low), maxval=np.log(high))
  )


def _teacher_data(key, dim, classes, n, regression):
  """Gaussian inputs of random scale labelled by a random ReLU teacher."""
  x_key, scale_key, teacher_key, noise_key = jax.random.split(key, 4)
  scale = _log_uniform(scale_key, 0.1, 10.0)
  x = jax.random.normal(x_key, (n, dim))
  teacher = problems.dense_init(teacher_key, (dim, 64, classes), 2.0)
  y = problems.dense_apply(teacher, x, "relu")
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
    return problems.MLPTask(
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
    return problems.MLPTask(
      x, labels, jnp.zeros(()), (), "relu", batch_size, "xent", classes
    )

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
    return problems.MLPTask(
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
    return problems.QuadraticTask(
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
    return problems.ConvTask(
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
    return problems.CharTask(
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


def families(name: str) -> tuple[Family, ...]:
  """The families of a named distribution: ``"default"`` or ``"tiny"``."""
  if name == "default":
    return training_families()
  if name == "tiny":
    return (quadratic_family(8, 4), logistic_family(4, 2, 8))
  raise ValueError(f"Unknown families {name!r}: use 'default' or 'tiny'")
