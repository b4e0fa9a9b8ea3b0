"""Problems for choices about GARO's safeguard, kept apart from the suite.

The safeguard must back off on blow-ups (``stiff.py``) and not on the noise
of small batches near a minimum. Its thresholds were chosen on these problems
and on the suite's meta-training tasks, never on its held-out ones: two
datasets the suite does not use (scikit-learn's wine, and synthetic noisy
labels) with small batches. Three deterministic problems are for the choices
of meta-training: ``wine_factorization`` grows stiffer along the way,
``helical_valley`` is a narrow curved valley, and ``sine_regression`` is a
small network fitted by full-batch gradient descent. ``addition_lm`` is a
transformer of the width people train, on text the suite does not use:
Adam's learning rate that trains a small network fast is too high for it.
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_wine

from benchmarks.tasks._common import MLP, SPLIT_SEED, classification_task
from benchmarks.tasks._task import Task
from benchmarks.tasks.char_lm import Transformer, language_model_task


def wine_logreg(steps: int = 2000) -> Task:
  data = load_wine()
  return classification_task(
    "wine_logreg",
    "Logistic regression (3 classes) on wine, batch 16.",
    MLP(features=(3,)),
    data.data,
    data.target,
    batch_size=16,
    steps=steps,
  )


def wine_mlp(steps: int = 2000) -> Task:
  data = load_wine()
  return classification_task(
    "wine_mlp",
    "MLP 13-32-3 (ReLU) on wine, batch 8.",
    MLP(features=(32, 3)),
    data.data,
    data.target,
    batch_size=8,
    steps=steps,
  )


def noisy_logreg(steps: int = 2000) -> Task:
  """Logistic regression on 20 Gaussian features whose labels are flipped by
  noise as large as the signal."""
  rng = np.random.default_rng(SPLIT_SEED)
  x = rng.normal(size=(600, 20))
  y = (x @ rng.normal(size=20) + 2.0 * rng.normal(size=600) > 0).astype(np.int32)
  return classification_task(
    "noisy_logreg",
    "Logistic regression on 20 Gaussian features, noisy labels, batch 16.",
    MLP(features=(2,)),
    x,
    y,
    batch_size=16,
    steps=steps,
  )


RANK = 4


def _full_batch_task(name, description, init, loss, steps) -> Task:
  """A deterministic task: every step sees the whole problem; the metric is
  the loss."""
  return Task(
    name=name,
    description=description,
    init=init,
    loss=lambda params, batch: loss(params),
    sample=lambda key, train: None,
    train=None,
    train_eval=None,
    test=None,
    metric=lambda params, batch: loss(params),
    metric_name="loss",
    higher_is_better=False,
    steps=steps,
  )


def wine_factorization(steps: int = 2000) -> Task:
  """Rank-4 factorisation ``U Vᵀ`` of the standardised wine data (178 x 13),
  full batch: nonconvex, deterministic, stiffer as the factors grow."""
  x = load_wine().data.astype(np.float32)
  target = jnp.asarray((x - x.mean(0)) / x.std(0))

  def init(key):
    u_key, v_key = jax.random.split(key)
    scale = 0.1 / np.sqrt(RANK)
    return {
      "u": scale * jax.random.normal(u_key, (target.shape[0], RANK)),
      "v": scale * jax.random.normal(v_key, (target.shape[1], RANK)),
    }

  return _full_batch_task(
    "wine_factorization",
    "Rank-4 factorisation of the standardised wine data, full batch.",
    init,
    lambda params: 0.5 * jnp.sum(jnp.square(params["u"] @ params["v"].T - target)),
    steps,
  )


def helical_valley(steps: int = 2000) -> Task:
  """Fletcher and Powell's helical valley (x 0.01): a narrow valley that
  winds around the x3 axis, from near (-1, 0, 0). Deterministic; its
  curvature across the valley is 100 times that along it."""

  def loss(params):
    x1, x2, x3 = params["x"][0], params["x"][1], params["x"][2]
    theta = jnp.arctan2(x2, x1) / (2.0 * jnp.pi)
    radius = jnp.sqrt(x1**2 + x2**2)
    return 0.01 * (100.0 * ((x3 - 10.0 * theta) ** 2 + (radius - 1.0) ** 2) + x3**2)

  return _full_batch_task(
    "helical_valley",
    "Helical valley in 3 dims (x 0.01), from near (-1, 0, 0).",
    lambda key: {"x": jnp.array([-1.0, 0.0, 0.0]) + 0.1 * jax.random.normal(key, (3,))},
    loss,
    steps,
  )


def sine_regression(steps: int = 2000) -> Task:
  """A tanh MLP 1-32-32-1 fitting ``sin(2x) + 0.3x`` on 64 points of
  [-3, 3], full batch: gradient descent on a smooth nonconvex loss, where
  momentum pays and too large a step oscillates without diverging."""
  x = jnp.linspace(-3.0, 3.0, 64)[:, None]
  y = jnp.sin(2.0 * x) + 0.3 * x
  model = MLP(features=(32, 32, 1), activation=jnp.tanh)

  def init(key):
    return model.init(key, x)

  def loss(params):
    return jnp.mean(jnp.square(model.apply(params, x) - y))

  return _full_batch_task(
    "sine_regression",
    "MLP 1-32-32-1 (tanh) fitting sin(2x) + 0.3x on 64 points, full batch.",
    init,
    loss,
    steps,
  )


ADDITION_CONTEXT = 64
ADDITION_BATCH_SIZE = 16


def addition_lm(steps: int = 1500) -> Task:
  """A transformer (2 blocks, width 128, 4 heads) on lines of sums written
  out, ``"347+129=476"``, with operands uniform in 0..999: the operands'
  digits are noise, the sums' are a function of them. Context 64, batch 16;
  the metric is the test loss in nats per character."""
  rng = np.random.default_rng(SPLIT_SEED)
  a, b = rng.integers(0, 1000, (2, 12_000))
  text = "".join(f"{x}+{y}={x + y}\n" for x, y in zip(a, b, strict=True))
  vocab, ids = np.unique(np.frombuffer(text.encode(), np.uint8), return_inverse=True)
  return language_model_task(
    "addition_lm",
    "Transformer (2 blocks, width 128, 4 heads) on written-out sums of numbers "
    f"below 1000, context {ADDITION_CONTEXT}, batch {ADDITION_BATCH_SIZE}.",
    ids,
    Transformer(len(vocab), width=128, context=ADDITION_CONTEXT),
    batch_size=ADDITION_BATCH_SIZE,
    rng=rng,
    steps=steps,
  )


def all_tasks(steps: int = 2000) -> tuple[Task, ...]:
  return (wine_logreg(steps), wine_mlp(steps), noisy_logreg(steps))
