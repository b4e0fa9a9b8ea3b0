"""An MLP classifier on MNIST-1D, generated locally (no download)."""

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset

from benchmarks.tasks._common import MLP, classification_task
from benchmarks.tasks._task import Task


def task() -> Task:
  # make_dataset is deterministic given its arguments (fixed seed inside).
  data = make_dataset(get_dataset_args())
  return classification_task(
    "mlp_mnist1d",
    "MLP 40-128-128-10 (ReLU) on MNIST-1D (5000 examples), batch 128.",
    MLP(features=(128, 128, 10)),
    np.concatenate([data["x"], data["x_test"]]),
    np.concatenate([data["y"], data["y_test"]]),
    batch_size=128,
    steps=3000,
  )
