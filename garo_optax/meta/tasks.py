"""Problems the controller is meta-trained on: tasks and task families.

A task (:class:`garo_optax.meta.problems.Task`) is a problem instance; a
:class:`Family` is a static architecture plus a sampler of random instances
of it (data, scales, conditioning, label noise, initial-weight scale).
:func:`families` names the distributions of families: ``"default"``, the
broad one (linear and logistic models with badly scaled features, quadratics,
deterministic low-rank matrix factorisations, deep linear networks and
full-batch MLP regressions,
MLPs of depth 1 to 6 and width 16 to 1024 with and without layer norm,
autoencoders, regression with raw targets, classification with noisy labels,
convnets, a character MLP and small transformer language models; batch sizes
8 to 512); ``"tiny"``, two very cheap families for end-to-end tests of the
trainer; and ``"v1"``, the eight families of the first shipped controller.
All data is made offline: synthetic, or scikit-learn's bundled digits.

None of the evaluation suite's held-out or validation problems is here: no
breast cancer, diabetes, wine, Tiny Shakespeare, Rosenbrock, MNIST-1D, or
convnet on digits. Every held-out task differs from every meta-training task
in its data or in its architecture (``tests/test_meta_tasks.py`` checks the
dataset names and that digits only meets MLPs).
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

# Datasets the families draw from (the held-out suite must use none of them).
DATASETS = (
  "quadratic",
  "gaussian_clusters",
  "random_teacher",
  "badly_scaled_features",
  "low_rank_gaussian",
  "digits",
  "synthetic_images",
  "markov_text",
  "low_rank_matrix",
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
  # How often meta-training draws the family against the others (weight 1).
  weight: float = 1.0


# Range of the log-uniform initial-weight scale of the "default" families
# (the "v1" families draw it from 0.5 to 2).
INIT_SCALES = (0.3, 3.0)


def _log_uniform(key, low, high, shape=()):
  return jnp.exp(
    jax.random.uniform(key, shape, minval=np.log(low), maxval=np.log(high))
  )


def _hidden_name(hidden):
  return "x".join(map(str, hidden))


def _raw_targets(key, y):
  """``y`` standardised, then times a scale log-uniform in [1, 100] and plus an
  offset per output of ``scale * N(0, 3²)``: targets as unscaled and
  uncentred as raw measurements."""
  scale_key, offset_key = jax.random.split(key)
  scale = _log_uniform(scale_key, 1.0, 100.0)
  offset = 3.0 * scale * jax.random.normal(offset_key, y.shape[1:])
  return scale * (y - jnp.mean(y, 0)) / jnp.std(y) + offset


def _noisy_labels(key, labels, classes, max_fraction):
  """``labels`` with a random fraction of them, uniform in
  ``[0, max_fraction]``, replaced by uniformly random classes."""
  fraction_key, mask_key, class_key = jax.random.split(key, 3)
  fraction = jax.random.uniform(fraction_key, (), maxval=max_fraction)
  replace = jax.random.uniform(mask_key, labels.shape) < fraction
  random = jax.random.randint(class_key, labels.shape, 0, classes)
  return jnp.where(replace, random, labels)


def _teacher_data(key, dim, classes, n, regression):
  """Gaussian inputs of random scale labelled by a random ReLU teacher.

  Regression targets have a random scale (0.3 to 3) drawn with the same key
  as the inputs' scale, so the two move together (as the "v1" families drew
  them).
  """
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
  hidden: tuple[int, ...],
  activation: str,
  batch_size: int,
  regression: bool,
  *,
  layer_norm: bool = False,
  raw_targets: bool = False,
  label_noise: float = 0.0,
  init_scales: tuple[float, float] = (0.5, 2.0),
) -> Family:
  """MLPs on data labelled by a random teacher network (8 outputs).

  Inputs are 16 Gaussian features of a random scale (0.1 to 10). With
  ``raw_targets``, regression targets are unstandardised
  (:func:`_raw_targets`); with ``label_noise``, up to that fraction of the
  class labels is random.
  """
  if (raw_targets and not regression) or (label_noise and regression):
    raise ValueError("raw_targets is for regression, label_noise for classes")

  def sample(key):
    data_key, scale_key = jax.random.split(key)
    x, y = _teacher_data(data_key, 16, 8, 2048, regression)
    if raw_targets:
      y = _raw_targets(jax.random.fold_in(data_key, 1), y)
    if label_noise:
      y = _noisy_labels(jax.random.fold_in(data_key, 2), y, 8, label_noise)
    return problems.MLPTask(
      x,
      y,
      _log_uniform(scale_key, *init_scales),
      hidden,
      activation,
      batch_size,
      "mse" if regression else "xent",
      8,
      layer_norm,
    )

  kind = "regression" if regression else "classification"
  kind = ("raw_" if raw_targets else "noisy_" if label_noise else "") + kind
  ln = "_ln" if layer_norm else ""
  name = f"teacher_{kind}_mlp_{_hidden_name(hidden)}_{activation}{ln}_b{batch_size}"
  return Family(name, "random_teacher", sample)


def full_batch_teacher_family(
  hidden: tuple[int, ...], activation: str, num_examples: int
) -> Family:
  """Deterministic regression: an MLP trained on all ``num_examples`` points
  of a random teacher's data at every step (no minibatch noise), so the
  stability of a step size, and what momentum buys, are those of gradient
  descent on a curved, badly conditioned landscape."""

  def sample(key):
    data_key, scale_key = jax.random.split(key)
    x, y = _teacher_data(data_key, 16, 8, num_examples, True)
    return problems.MLPTask(
      x, y, _log_uniform(scale_key, *INIT_SCALES), hidden, activation, 0, "mse", 8
    )

  name = f"teacher_full_batch_regression_mlp_{_hidden_name(hidden)}_{activation}"
  return Family(f"{name}_n{num_examples}", "random_teacher", sample)


def deep_linear_family(depth: int, width: int, num_examples: int) -> Family:
  """Deep linear networks (``depth`` weight matrices, no activation) fitting a
  random linear map of badly scaled inputs on all ``num_examples`` points at
  every step, from a small initialisation (0.3 to 1 of LeCun's): a curved
  valley of equivalent factorisations whose curvature grows as the weights
  do."""

  def sample(key):
    feature_key, map_key, scale_key = jax.random.split(key, 3)
    _, x = _badly_scaled_features(feature_key, num_examples, width)
    x = x / jnp.std(x)
    y = x @ (jax.random.normal(map_key, (width, width)) / np.sqrt(width))
    return problems.MLPTask(
      x,
      y,
      _log_uniform(scale_key, 0.3, 1.0),
      (width,) * (depth - 1),
      "linear",
      0,
      "mse",
      width,
    )

  return Family(
    f"deep_linear_d{depth}_w{width}_n{num_examples}", "badly_scaled_features", sample
  )


def logistic_family(
  dim: int, classes: int, batch_size: int, label_noise: float = 0.0
) -> Family:
  """Logistic regression on overlapping Gaussian clusters of random scale;
  with ``label_noise``, up to that fraction of the labels is random."""

  def sample(key):
    center_key, label_key, x_key, scale_key, sep_key = jax.random.split(key, 5)
    centers = jax.random.normal(center_key, (classes, dim)) * _log_uniform(
      sep_key, 0.3, 3.0
    )
    labels = jax.random.randint(label_key, (2048,), 0, classes)
    x = centers[labels] + jax.random.normal(x_key, (2048, dim))
    x = x * _log_uniform(scale_key, 0.1, 10.0)
    if label_noise:
      labels = _noisy_labels(
        jax.random.fold_in(label_key, 1), labels, classes, label_noise
      )
    return problems.MLPTask(
      x, labels, jnp.zeros(()), (), "relu", batch_size, "xent", classes
    )

  noisy = "noisy_" if label_noise else ""
  return Family(
    f"{noisy}logistic_d{dim}_k{classes}_b{batch_size}", "gaussian_clusters", sample
  )


def _badly_scaled_features(key, n, dim):
  """Correlated Gaussian features ``z`` and their badly scaled copies
  ``x = z * scales``, the scales log-spread over 3 to 4 decades around 1."""
  z_key, mix_key, decade_key, scale_key = jax.random.split(key, 4)
  mixing = jnp.eye(dim) + 0.5 * jax.random.normal(mix_key, (dim, dim)) / np.sqrt(dim)
  z = jax.random.normal(z_key, (n, dim)) @ mixing
  decades = jax.random.uniform(decade_key, (), minval=3.0, maxval=4.0)
  scales = 10.0 ** (decades * (jax.random.uniform(scale_key, (dim,)) - 0.5))
  return z, z * scales


def badly_scaled_linear_family(dim: int, batch_size: int) -> Family:
  """Linear regression (zero init) on features whose scales spread over 3 to
  4 decades, with targets that depend on every feature alike in its own units
  (so the small features need large weights), plus noise: Hessians of
  condition number about 1e6 to 1e8."""

  def sample(key):
    feature_key, weight_key, noise_key, scale_key = jax.random.split(key, 4)
    z, x = _badly_scaled_features(feature_key, 2048, dim)
    y = z @ jax.random.normal(weight_key, (dim, 1)) / np.sqrt(dim)
    y = y + 0.1 * jax.random.normal(noise_key, y.shape)
    y = y * _log_uniform(scale_key, 0.3, 3.0)
    return problems.MLPTask(x, y, jnp.zeros(()), (), "relu", batch_size, "mse", 1)

  return Family(
    f"badly_scaled_linear_d{dim}_b{batch_size}", "badly_scaled_features", sample
  )


def badly_scaled_logistic_family(dim: int, classes: int, batch_size: int) -> Family:
  """Logistic regression (zero init) on features whose scales spread over 3
  to 4 decades, labels drawn from a random linear teacher of the unscaled
  features with a random temperature (so some labels are noisy)."""

  def sample(key):
    feature_key, weight_key, label_key, sharp_key = jax.random.split(key, 4)
    z, x = _badly_scaled_features(feature_key, 2048, dim)
    logits = z @ jax.random.normal(weight_key, (dim, classes)) / np.sqrt(dim)
    logits = logits * _log_uniform(sharp_key, 1.0, 10.0)
    labels = jax.random.categorical(label_key, logits).astype(jnp.int32)
    return problems.MLPTask(
      x, labels, jnp.zeros(()), (), "relu", batch_size, "xent", classes
    )

  return Family(
    f"badly_scaled_logistic_d{dim}_k{classes}_b{batch_size}",
    "badly_scaled_features",
    sample,
  )


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits

  data = load_digits()
  return data.data.astype(np.float32) / 16.0, data.target.astype(np.int32)


def digits_family(
  hidden: tuple[int, ...],
  activation: str,
  batch_size: int,
  *,
  layer_norm: bool = False,
  label_noise: float = 0.0,
  init_scales: tuple[float, float] = (0.5, 2.0),
) -> Family:
  """MLPs on a random half of scikit-learn's digits, inputs rescaled at random;
  with ``label_noise``, up to that fraction of the labels is random."""
  images, labels = _digits()

  def sample(key):
    subset_key, scale_key, init_key = jax.random.split(key, 3)
    idx = jax.random.permutation(subset_key, images.shape[0])[:1024]
    y = jnp.asarray(labels)[idx]
    if label_noise:
      y = _noisy_labels(jax.random.fold_in(subset_key, 1), y, 10, label_noise)
    x = jnp.asarray(images)[idx] * _log_uniform(scale_key, 0.3, 3.0)
    return problems.MLPTask(
      x,
      y,
      _log_uniform(init_key, *init_scales),
      hidden,
      activation,
      batch_size,
      "xent",
      10,
      layer_norm,
    )

  noisy = "noisy_" if label_noise else ""
  ln = "_ln" if layer_norm else ""
  name = f"{noisy}digits_mlp_{_hidden_name(hidden)}_{activation}{ln}_b{batch_size}"
  return Family(name, "digits", sample)


def autoencoder_family(
  hidden: tuple[int, ...],
  activation: str,
  batch_size: int,
  dataset: str,
  *,
  layer_norm: bool = False,
) -> Family:
  """MLP autoencoders (``hidden`` has a narrow middle layer), squared error of
  the reconstruction of their inputs.

  ``dataset`` is ``"digits"`` (a random half of scikit-learn's digits, 64
  pixels, rescaled at random) or ``"low_rank_gaussian"`` (32 features: a
  random linear map of 4 to 16 latent Gaussians, plus a little noise, of
  random scale).
  """

  def sample(key):
    data_key, scale_key, init_key = jax.random.split(key, 3)
    if dataset == "digits":
      images, _ = _digits()
      idx = jax.random.permutation(data_key, images.shape[0])[:1024]
      x = jnp.asarray(images)[idx]
    else:
      latent_key, map_key, rank_key, noise_key = jax.random.split(data_key, 4)
      rank = jax.random.randint(rank_key, (), 4, 17)
      latent = jax.random.normal(latent_key, (2048, 16)) * (jnp.arange(16) < rank)
      x = latent @ jax.random.normal(map_key, (16, 32)) / jnp.sqrt(rank)
      x = x + 0.05 * jax.random.normal(noise_key, x.shape)
    x = x * _log_uniform(scale_key, 0.3, 3.0)
    return problems.MLPTask(
      x,
      x,
      _log_uniform(init_key, *INIT_SCALES),
      hidden,
      activation,
      batch_size,
      "mse",
      x.shape[-1],
      layer_norm,
    )

  if dataset not in ("digits", "low_rank_gaussian"):
    raise ValueError(f"unknown dataset {dataset!r}")
  ln = "_ln" if layer_norm else ""
  name = f"{dataset}_autoencoder_{_hidden_name(hidden)}_{activation}{ln}_b{batch_size}"
  return Family(name, dataset, sample)


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


def factorization_family(rows: int, cols: int, rank: int) -> Family:
  """Deterministic factorisations of random matrices of rank ``rank`` with
  singular values spread over a decade and a scale drawn over two decades
  (on typical draws SGD at 0.01 converges and at 0.1 diverges)."""

  def sample(key):
    a_key, b_key, spread_key, scale_key, init_key = jax.random.split(key, 5)
    a, _ = jnp.linalg.qr(jax.random.normal(a_key, (rows, rank)))
    b, _ = jnp.linalg.qr(jax.random.normal(b_key, (cols, rank)))
    singular = jnp.exp(-jnp.log(10.0) * jax.random.uniform(spread_key, (rank,)))
    scale = _log_uniform(scale_key, 1.0, 100.0) * np.sqrt(rows * cols / rank)
    return problems.FactorizationTask(
      scale * (a * singular) @ b.T, _log_uniform(init_key, 0.1, 1.0), rank
    )

  return Family(f"factorization_{rows}x{cols}_r{rank}", "low_rank_matrix", sample)


def conv_family(
  channels: tuple[int, ...],
  batch_size: int,
  *,
  init_scales: tuple[float, float] = (0.5, 2.0),
) -> Family:
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
      _log_uniform(init_key, *init_scales),
      channels,
      batch_size,
      4,
    )

  return Family(
    f"conv_{_hidden_name(channels)}_b{batch_size}", "synthetic_images", sample
  )


def markov_text(chain_key, text_key, vocab, length=4096):
  """Text of ``length`` characters from a random sparse second-order Markov
  chain over ``vocab`` symbols."""
  logits = 3.0 * jax.random.normal(chain_key, (vocab, vocab, vocab))

  def step(prev, k):
    c = jax.random.categorical(k, logits[prev[0], prev[1]])
    return (prev[1], c), c

  _, text = jax.lax.scan(step, (0, 0), jax.random.split(text_key, length))
  return text.astype(jnp.int32)


def char_family(
  context: int,
  hidden: int,
  batch_size: int,
  vocab: int = 16,
  *,
  embed: int = 8,
  init_scales: tuple[float, float] = (0.5, 2.0),
) -> Family:
  """Character models on text from a random sparse second-order Markov chain."""

  def sample(key):
    chain_key, text_key, init_key = jax.random.split(key, 3)
    return problems.CharTask(
      markov_text(chain_key, text_key, vocab),
      _log_uniform(init_key, *init_scales),
      context,
      embed,
      hidden,
      vocab,
      batch_size,
    )

  name = f"markov_text_c{context}_h{hidden}_b{batch_size}"
  if (vocab, embed) != (16, 8):
    name = name.replace("_c", f"_v{vocab}_e{embed}_c", 1)
  return Family(name, "markov_text", sample)


def transformer_family(
  width: int,
  depth: int,
  heads: int,
  context: int,
  vocab: int,
  batch_size: int,
  *,
  embed_scales: tuple[float, float] | None = None,
  weight: float = 1.0,
) -> Family:
  """Causal transformer language models on text from a random sparse
  second-order Markov chain over ``vocab`` symbols.

  The token embeddings start with standard deviation 1, or, given
  ``embed_scales``, one drawn log-uniform in that range (GPT-2 starts them at
  0.02, Flax's ``nn.Embed`` at ``1 / sqrt(width)``). ``weight`` is the
  family's :attr:`Family.weight`.
  """

  def sample(key):
    chain_key, text_key, init_key = jax.random.split(key, 3)
    embed_scale = None
    if embed_scales is not None:
      embed_key = jax.random.fold_in(key, _EMBED_STREAM)
      embed_scale = _log_uniform(embed_key, *embed_scales)
    return problems.TransformerTask(
      markov_text(chain_key, text_key, vocab),
      _log_uniform(init_key, *INIT_SCALES),
      context,
      width,
      depth,
      heads,
      vocab,
      batch_size,
      embed_scale,
    )

  name = f"markov_text_transformer_w{width}_d{depth}_h{heads}_c{context}_v{vocab}"
  if embed_scales is not None:
    check_scales(embed_scales, "embed scales")
    name += f"_e{embed_scales[0]:g}-{embed_scales[1]:g}"
  return Family(f"{name}_b{batch_size}", "markov_text", sample, weight)


# fold_in's data for a transformer's embedding scale: a stream of its own, so
# the text and the other weights are those of the same key without it.
_EMBED_STREAM = 0xE5BED


def reparametrized(family: Family, scales: tuple[float, float]) -> Family:
  """``family`` with each problem's params rescaled
  (:class:`~garo_optax.meta.problems.ReparametrizedTask`) by a factor drawn
  log-uniform in ``scales``.

  The problems are the family's (drawn with the same key); only the scale of
  their params changes, so the learning rate that suits them spreads over
  ``scales`` while the step's size against the params at that rate does not:
  a controller that reads the latter (``log_update_ratio``) can find the
  rate.
  """
  check_scales(scales)
  low, high = scales

  def sample(key):
    scale = _log_uniform(jax.random.fold_in(key, _SCALE_STREAM), low, high)
    return problems.ReparametrizedTask(family.sample(key), scale)

  return Family(family.name, family.dataset, sample)


# fold_in's data for the reparametrization's scale: a stream of its own.
_SCALE_STREAM = 0x5CA1E


def check_scales(scales: Any, what: str = "param scales") -> None:
  """Raises unless ``scales`` is ``(low, high)`` with ``0 < low <= high``
  (the message names them ``what``)."""
  if not (len(scales) == 2 and 0 < scales[0] <= scales[1]):
    raise ValueError(f"{what} must be [low, high] with 0 < low <= high, got {scales}")


def _v1() -> tuple[Family, ...]:
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


def _tiny() -> tuple[Family, ...]:
  return (quadratic_family(8, 4), logistic_family(4, 2, 8))


def _default() -> tuple[Family, ...]:
  init = {"init_scales": INIT_SCALES}
  teacher = functools.partial(mlp_teacher_family, **init)
  digits = functools.partial(digits_family, **init)
  return (
    # Convex: quadratics, and linear models on badly scaled or noisy data.
    quadratic_family(16, 8),
    quadratic_family(128, 128),
    badly_scaled_linear_family(32, 32),
    badly_scaled_logistic_family(64, 10, 128),
    logistic_family(16, 4, 512, label_noise=0.4),
    # Deterministic and nonconvex: stiffer as the factors grow.
    factorization_family(32, 32, 4),
    factorization_family(64, 16, 8),
    deep_linear_family(4, 16, 256),
    full_batch_teacher_family((32, 32), "tanh", 256),
    full_batch_teacher_family((64,), "gelu", 512),
    # MLPs on a teacher's data: depth 1 to 6, width 16 to 1024.
    teacher((1024,), "relu", 32, regression=False),
    teacher((512, 256), "gelu", 8, regression=True, raw_targets=True),
    teacher((256, 256), "relu", 16, regression=False, layer_norm=True),
    teacher((128,) * 4, "relu", 32, regression=False, label_noise=0.4),
    teacher((64,) * 3, "tanh", 256, regression=True, raw_targets=True),
    teacher((64,) * 3, "gelu", 64, regression=True, layer_norm=True),
    teacher((32,) * 6, "tanh", 64, regression=False, layer_norm=True),
    teacher((16,) * 5, "gelu", 512, regression=False),
    # MLPs on digits.
    digits((1024,), "relu", 16),
    digits((128,) * 3, "gelu", 32, layer_norm=True),
    digits((64,) * 6, "tanh", 16),
    digits((64,), "relu", 128, label_noise=0.4),
    # Autoencoders.
    autoencoder_family((128, 16, 128), "gelu", 32, "digits"),
    autoencoder_family((64, 8, 64), "tanh", 128, "low_rank_gaussian", layer_norm=True),
    # Convnets on synthetic images.
    conv_family((8, 8), 16, **init),
    conv_family((16,), 8, **init),
    conv_family((8, 16, 16), 8, **init),
    # Language models on Markov text.
    char_family(8, 256, 64, 32, embed=16, **init),
    *(transformer_family(*spec) for spec in _TRANSFORMERS),
  )


# The "default" families' transformers: width, depth, heads, context, vocab,
# batch size.
_TRANSFORMERS = (
  (32, 1, 1, 16, 16, 8),
  (32, 2, 2, 16, 32, 8),
  (64, 1, 2, 8, 32, 8),
  (16, 1, 2, 32, 16, 8),
)


# Range of the embeddings' log-uniform initial standard deviation of the
# "embed_scales" families' transformers: GPT-2's 0.02 to the default's 1.
EMBED_SCALES = (0.02, 1.0)


def _small_embeddings(
  specs: tuple[tuple[int, ...], ...], weight: float = 1.0
) -> tuple[Family, ...]:
  # The default families with their transformers replaced by those of
  # `specs`, embeddings from EMBED_SCALES, of weight `weight`.
  transformers = {transformer_family(*spec).name for spec in _TRANSFORMERS}
  return (
    *(f for f in families("default") if f.name not in transformers),
    *(transformer_family(*s, embed_scales=EMBED_SCALES, weight=weight) for s in specs),
  )


def _embed_scales() -> tuple[Family, ...]:
  # On a transformer whose embeddings start small, as people's do, the
  # garo_adamw controller trained on the default families (embeddings at 1)
  # cuts the rate it starts from about 35-fold, where AdamW's fixed rate
  # trains well (benchmarks/results/embed_scale.md); here the same
  # transformers start with embeddings from EMBED_SCALES.
  return _small_embeddings(_TRANSFORMERS)


# The "scales" families' wider transformers (width, depth, heads, context,
# vocab, batch size), and the weight of every transformer of those families.
_WIDER_TRANSFORMERS = (
  (128, 1, 4, 32, 32, 8),
  (64, 2, 2, 32, 32, 8),
)
SCALES_TRANSFORMER_WEIGHT = 2.0


def _scales() -> tuple[Family, ...]:
  # The small transformers of the families above want AdamW near 1e-2; wider
  # ones, as people's, stall there and want 1e-3
  # (benchmarks/results/family_learning_rates.md). Here transformers of both
  # sizes start with embeddings from EMBED_SCALES and are drawn twice as often
  # as the other families, so a controller meets models of several scales.
  return _small_embeddings(
    _TRANSFORMERS + _WIDER_TRANSFORMERS, SCALES_TRANSFORMER_WEIGHT
  )


def _wide() -> tuple[Family, ...]:
  # On these, AdamW at 1e-2, fast on the small transformers above, stalls, as
  # on the transformers people train (benchmarks/results/family_learning_rates.md).
  return (
    *families("default"),  # the same objects: their compilations are shared
    transformer_family(128, 1, 4, 16, 32, 8),
    transformer_family(96, 2, 4, 16, 32, 8),
  )


_REGISTRY: dict[str, Callable[[], tuple[Family, ...]]] = {
  "default": _default,
  "embed_scales": _embed_scales,
  "scales": _scales,
  "wide": _wide,
  "tiny": _tiny,
  "v1": _v1,
}
NAMES = tuple(_REGISTRY)


@functools.cache
def families(name: str) -> tuple[Family, ...]:
  """The families of the distribution called ``name`` (one of :data:`NAMES`):
  ``"default"`` (the broad distribution), ``"embed_scales"`` (it with its
  transformers' embeddings starting at scales from :data:`EMBED_SCALES`),
  ``"scales"`` (those and two wider transformers, every transformer drawn
  :data:`SCALES_TRANSFORMER_WEIGHT` times as often as the other families),
  ``"wide"`` (it and two wider transformers), ``"tiny"`` (two cheap families, for
  end-to-end tests) or ``"v1"`` (the first shipped controller's eight).

  Cached, so that a family is the same object (the same closure, hence the
  same jit cache entries) on every call.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown families {name!r}; valid: {', '.join(NAMES)}")
  return _REGISTRY[name]()
