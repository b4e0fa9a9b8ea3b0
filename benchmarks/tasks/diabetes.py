"""An MLP regression on scikit-learn's diabetes data (10 features)."""

from sklearn.datasets import load_diabetes

from benchmarks.tasks._common import MLP, regression_task
from benchmarks.tasks._task import Task


def task() -> Task:
  data = load_diabetes()
  return regression_task(
    "diabetes",
    "MLP 10-32-1 (ReLU) regression on diabetes, standardized target, batch 32.",
    MLP(features=(32, 1)),
    data.data,
    data.target,
    batch_size=32,
    steps=1500,
  )
