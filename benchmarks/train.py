"""One training run of a (task, optimizer) pair as a single jitted scan."""

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks import tasks
from benchmarks.optimizers import Optimizer
from benchmarks.tasks import Task


class Curves(NamedTuple):
  """What one run records, at steps ``0, every, 2 * every, ..., steps``."""

  steps: np.ndarray  # (E + 1,) int: step of each record
  train_loss: np.ndarray  # (E + 1,) float: full-batch train loss
  metric: np.ndarray  # (E + 1,) float: the task's test metric
  # GARO's hyperparameters at each record after step 0 (empty otherwise):
  # {"learning_rate": (E,) array, or {group: (E,) array} per leaf, ...}.
  hyperparams: dict[str, Any]
  seconds_per_step: float  # wall time of the run (evaluations included) / steps


@functools.cache
def _compiled_start(task_name: str) -> tuple[Callable[..., Any], dict[str, Any]]:
  """Compiles ``start(seed, data) -> (params, train loss, metric)`` at step 0.

  Shared by every optimizer, so the model's initialization and the step-0
  evaluation are compiled once per task, not once per (task, optimizer).
  Returns the compiled function and the task's ``data`` argument.
  """
  task = tasks.get(task_name)

  def start(seed, data):
    params = task.init(jax.random.fold_in(jax.random.key(seed), 0))
    return (
      params,
      task.loss(params, data["train_eval"]),
      task.metric(params, data["test"]),
    )

  data = _data(task)
  return jax.jit(start).lower(jnp.int32(0), data).compile(), data


def _data(task: Task) -> dict[str, Any]:
  return {"train": task.train, "train_eval": task.train_eval, "test": task.test}


def compile_run(
  task: Task, optimizer: Optimizer, steps: int, every: int
) -> Callable[[float, int], Curves]:
  """Compiles ``run(learning_rate, seed) -> Curves`` (one compilation).

  The seed draws the initial params and the minibatches. The whole run is one
  jitted ``lax.scan`` over ``steps // every`` chunks, each a scan of ``every``
  optimizer steps followed by the full-batch train loss and the test metric.

  Args:
    task: a task of the registry.
    optimizer: the optimizer; it gets the loss as ``value`` every step.
    steps: number of training steps, a multiple of ``every``.
    every: steps between two evaluations.

  Returns:
    The compiled run.
  """
  if steps % every:
    raise ValueError(f"steps ({steps}) must be a multiple of every ({every}).")
  start, data = _compiled_start(task.name)

  def run(learning_rate, seed, params, data):
    tx = optax.with_extra_args_support(optimizer.make(learning_rate))
    state = tx.init(params)

    def step(carry, key):
      params, state = carry
      loss, grads = jax.value_and_grad(task.loss)(
        params, task.sample(key, data["train"])
      )
      updates, state = tx.update(grads, state, params, value=loss)
      return (optax.apply_updates(params, updates), state), None

    def chunk(carry, keys):
      carry, _ = jax.lax.scan(step, carry, keys)
      params, state = carry
      eval_params = optimizer.eval_params(state, params)
      return carry, (
        task.loss(eval_params, data["train_eval"]),
        task.metric(eval_params, data["test"]),
        garo_optax.hyperparams(state) if optimizer.is_garo else {},
      )

    data_key = jax.random.fold_in(jax.random.key(seed), 1)
    keys = jax.random.split(data_key, steps).reshape(steps // every, every)
    return jax.lax.scan(chunk, (params, state), keys)[1]

  params = start(jnp.int32(0), data)[0]
  compiled = (
    jax.jit(run)
    .lower(jnp.float32(optimizer.learning_rate), jnp.int32(0), params, data)
    .compile()
  )

  def run_compiled(learning_rate: float, seed: int) -> Curves:
    params, first_loss, first_metric = start(jnp.int32(seed), data)
    begin = time.perf_counter()
    out = jax.block_until_ready(
      compiled(jnp.float32(learning_rate), jnp.int32(seed), params, data)
    )
    seconds = time.perf_counter() - begin
    losses, metrics, hyperparams = jax.tree.map(np.asarray, out)
    return Curves(
      steps=np.arange(0, steps + 1, every),
      train_loss=np.concatenate([[first_loss], losses]),
      metric=np.concatenate([[first_metric], metrics]),
      hyperparams=hyperparams,
      seconds_per_step=seconds / steps,
    )

  return run_compiled
