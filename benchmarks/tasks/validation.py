"""Problems for choices about GARO's safeguard, kept apart from the suite.

The safeguard must back off on blow-ups (``stiff.py``) and not on the noise
of small batches near a minimum. Its thresholds were chosen on these problems
and on the suite's meta-training tasks, never on its held-out ones: two
datasets the suite does not use (scikit-learn's wine, and synthetic noisy
labels) with small batches. ``wine_factorization`` is deterministic and grows
stiffer along the way, as the held-out Rosenbrock does, for the choices of
meta-training.
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_wine

from benchmarks.tasks._common import MLP, SPLIT_SEED, classification_task
from benchmarks.tasks._task import Task


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


def wine_factorization(steps: int = 2000) -> Task:
  """Rank-4 factorisation ``U Vᵀ`` of the standardised wine data (178 x 13),
  full batch: nonconvex, deterministic, stiffer as the factors grow."""
  x = load_wine().data.astype(np.float32)
  target = jnp.asarray((x - x.mean(0)) / x.std(0))

  def loss(params, batch):
    del batch
    return 0.5 * jnp.sum(jnp.square(params["u"] @ params["v"].T - target))

  def init(key):
    u_key, v_key = jax.random.split(key)
    scale = 0.1 / np.sqrt(RANK)
    return {
      "u": scale * jax.random.normal(u_key, (target.shape[0], RANK)),
      "v": scale * jax.random.normal(v_key, (target.shape[1], RANK)),
    }

  return Task(
    name="wine_factorization",
    description="Rank-4 factorisation of the standardised wine data, full batch.",
    init=init,
    loss=loss,
    sample=lambda key, train: None,
    train=None,
    train_eval=None,
    test=None,
    metric=lambda params, batch: loss(params, None),
    metric_name="loss",
    higher_is_better=False,
    steps=steps,
  )


def all_tasks(steps: int = 2000) -> tuple[Task, ...]:
  return (wine_logreg(steps), wine_mlp(steps), noisy_logreg(steps))
