"""An MLP classifier on scikit-learn's 8x8 digits."""

from sklearn.datasets import load_digits

from benchmarks.tasks._common import MLP, classification_task
from benchmarks.tasks._task import Task


def task() -> Task:
  data = load_digits()
  return classification_task(
    "mlp_digits",
    "MLP 64-64-10 (ReLU) on digits, batch 64.",
    MLP(features=(64, 10)),
    data.data,
    data.target,
    batch_size=64,
    steps=2000,
  )
