"""An ill-conditioned quadratic: noise-free least squares, condition 1e3."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.tasks._common import SPLIT_SEED, supervised_task
from benchmarks.tasks._task import Task

DIM = 64
NUM_TRAIN = 1024
NUM_TEST = 256


def task() -> Task:
  rng = np.random.default_rng(SPLIT_SEED)
  # Feature scales from 1 to 10^-1.5: Hessian eigenvalues from ~1 to ~1e-3.
  scales = np.logspace(0, -1.5, DIM)
  x = (rng.normal(size=(NUM_TRAIN + NUM_TEST, DIM)) * scales).astype(np.float32)
  # Noise-free targets: the minimum loss is 0, so loss ratios are meaningful.
  y = x @ rng.normal(size=DIM).astype(np.float32)
  train = {"x": jnp.asarray(x[:NUM_TRAIN]), "y": jnp.asarray(y[:NUM_TRAIN])}
  test = {"x": jnp.asarray(x[NUM_TRAIN:]), "y": jnp.asarray(y[NUM_TRAIN:])}

  def loss(params, batch):
    return 0.5 * jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

  return supervised_task(
    "quadratic",
    f"Least squares, {DIM} dims, Hessian condition ~1e3, batch 32.",
    init=lambda key: {"w": jax.random.normal(key, (DIM,))},
    loss=loss,
    train=train,
    test=test,
    metric=lambda params, batch: 2 * loss(params, batch),
    metric_name="test_mse",
    higher_is_better=False,
    steps=2000,
    batch_size=32,
  )
