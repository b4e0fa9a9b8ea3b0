"""The chained Rosenbrock function, deterministic (full batch)."""

import jax
import jax.numpy as jnp

from benchmarks.tasks._task import Task

DIM = 8
# Scaled so that the Hessian's largest eigenvalue along the way is ~15 and
# sgd(0.01) is stable; the valley stays as narrow as in the classic function.
SCALE = 0.01


def _loss(params, batch):
  del batch
  x = params["x"]
  return SCALE * jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _init(key):
  start = jnp.tile(jnp.array([-1.2, 1.0]), DIM // 2)
  return {"x": start + 0.1 * jax.random.normal(key, (DIM,))}


def task() -> Task:
  return Task(
    name="rosenbrock",
    description=f"Chained Rosenbrock in {DIM} dims (x {SCALE}), from (-1.2, 1, ...).",
    init=_init,
    loss=_loss,
    sample=lambda key, train: None,
    train=None,
    train_eval=None,
    test=None,
    metric=lambda params, batch: jnp.sqrt(jnp.mean((params["x"] - 1.0) ** 2)),
    metric_name="rms_distance_to_minimum",
    higher_is_better=False,
    steps=3000,
  )
