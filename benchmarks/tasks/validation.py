"""Problems for choices about GARO's safeguard, kept apart from the suite.

The safeguard must back off on blow-ups (``stiff.py``) and not on the noise
of small batches near a minimum. Its thresholds were chosen on these problems
and on the suite's meta-training tasks, never on its held-out ones: two
datasets the suite does not use (scikit-learn's wine, and synthetic noisy
labels) with small batches.
"""

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


def all_tasks(steps: int = 2000) -> tuple[Task, ...]:
  return (wine_logreg(steps), wine_mlp(steps), noisy_logreg(steps))
