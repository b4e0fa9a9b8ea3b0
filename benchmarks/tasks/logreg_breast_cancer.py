"""Logistic regression on scikit-learn's breast-cancer data (30 features)."""

from sklearn.datasets import load_breast_cancer

from benchmarks.tasks._common import MLP, classification_task
from benchmarks.tasks._task import Task


def task() -> Task:
  data = load_breast_cancer()
  return classification_task(
    "logreg_breast_cancer",
    "Logistic regression (softmax over 2 classes), breast cancer, batch 32.",
    MLP(features=(2,)),
    data.data,
    data.target,
    batch_size=32,
    steps=1500,
  )
