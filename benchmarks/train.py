"""One training run of a (task, optimizer) pair as a single jitted scan."""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks.optimizers import Optimizer
from benchmarks.tasks import Task
from garo_optax.meta import inner


class Curves(NamedTuple):
  """What one run records, at steps ``0, every, 2 * every, ..., steps``."""

  steps: np.ndarray  # (E + 1,) int: step of each record
  train_loss: np.ndarray  # (E + 1,) float: full-batch train loss
  metric: np.ndarray  # (E + 1,) float: the task's test metric
  # GARO's hyperparameters, averaged over the steps up to each record after
  # step 0 (empty for other optimizers):
  # {"learning_rate": (E,) array, or {group: (E,) array} per leaf, ...};
  # and "log_learning_rate_step", "momentum_step": (E,) medians over each
  # chunk of steps of the step-to-step change of log(lr) and of momentum.
  hyperparams: dict[str, Any]
  seconds_per_step: float  # wall time of the training (no evaluations) / steps


def _step_changes(hyperparams: dict[str, Any]) -> dict[str, jax.Array]:
  """Medians over a chunk's steps (and groups) of how much GARO's learning
  rate (in log) and momentum (garo_adamw's b1) change from one step to the
  next: what the recipe's meta-loss charges for beyond readable."""
  lr_step, momentum_step = inner.median_step_changes(hyperparams)
  return {"log_learning_rate_step": lr_step, "momentum_step": momentum_step}


class _TaskPrograms(NamedTuple):
  """Programs shared by every optimizer on a task, compiled once."""

  init: Callable[..., Any]  # (seed) -> params
  evaluate: Callable[..., Any]  # (stacked params, data) -> (losses, metrics)
  data: dict[str, Any]  # the data argument of the programs


_PROGRAMS: dict[tuple[str, int], _TaskPrograms] = {}


def _task_programs(task: Task, num_records: int) -> _TaskPrograms:
  """Compiles the task's initialization and evaluation of ``num_records`` params.

  Keeping them out of the training run means they are compiled once per task
  (by name), not once per (task, optimizer), and the run's time is training
  alone.
  """
  key = (task.name, num_records)
  if key not in _PROGRAMS:
    _PROGRAMS[key] = _compile_task_programs(task, num_records)
  return _PROGRAMS[key]


def _compile_task_programs(task: Task, num_records: int) -> _TaskPrograms:

  def init(seed):
    return task.init(jax.random.fold_in(jax.random.key(seed), 0))

  def evaluate(stacked, data):
    return jax.lax.map(
      lambda p: (task.loss(p, data["train_eval"]), task.metric(p, data["test"])),
      stacked,
    )

  data = {"train": task.train, "train_eval": task.train_eval, "test": task.test}
  stacked = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct((num_records, *x.shape), x.dtype),
    jax.eval_shape(init, 0),
  )
  return _TaskPrograms(
    init=jax.jit(init).lower(jnp.int32(0)).compile(),
    evaluate=jax.jit(evaluate).lower(stacked, data).compile(),
    data=data,
  )


def compile_run(
  task: Task, optimizer: Optimizer, steps: int, every: int
) -> Callable[[float, int], Curves]:
  """Compiles ``run(learning_rate, seed) -> Curves`` (one compilation).

  The seed draws the initial params and the minibatches. The training is one
  jitted ``lax.scan`` over ``steps // every`` chunks, each a scan of ``every``
  optimizer steps that records the params; the full-batch train loss and the
  test metric of the recorded params are computed afterwards, by a program
  shared by all optimizers of the task.

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
  programs = _task_programs(task, steps // every + 1)

  def run(learning_rate, seed, params, data):
    if optimizer.uses_total_steps:
      tx = optimizer.make(learning_rate, total_steps=steps)
    else:
      tx = optimizer.make(learning_rate)
    tx = optax.with_extra_args_support(tx)
    state = tx.init(params)

    def step(carry, key):
      params, state = carry
      loss, grads = jax.value_and_grad(task.loss)(
        params, task.sample(key, data["train"])
      )
      updates, state = tx.update(grads, state, params, value=loss)
      hyperparams = garo_optax.hyperparams(state) if optimizer.is_garo else {}
      return (optax.apply_updates(params, updates), state), hyperparams

    def chunk(carry, keys):
      carry, hyperparams = jax.lax.scan(step, carry, keys)
      params, state = carry
      mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), hyperparams)
      if optimizer.is_garo:
        mean = {**mean, **_step_changes(hyperparams)}
      return carry, (optimizer.eval_params(state, params), mean)

    data_key = jax.random.fold_in(jax.random.key(seed), 1)
    keys = jax.random.split(data_key, steps).reshape(steps // every, every)
    _, (recorded, hyperparams) = jax.lax.scan(chunk, (params, state), keys)
    first = optimizer.eval_params(state, params)
    recorded = jax.tree.map(
      lambda x, xs: jnp.concatenate([x[None], xs]), first, recorded
    )
    return recorded, hyperparams

  compiled = (
    jax.jit(run)
    .lower(
      jnp.float32(optimizer.learning_rate),
      jnp.int32(0),
      programs.init(jnp.int32(0)),
      programs.data,
    )
    .compile()
  )

  def run_compiled(learning_rate: float, seed: int) -> Curves:
    params = programs.init(jnp.int32(seed))
    begin = time.perf_counter()
    recorded, hyperparams = jax.block_until_ready(
      compiled(jnp.float32(learning_rate), jnp.int32(seed), params, programs.data)
    )
    seconds = time.perf_counter() - begin
    losses, metrics = programs.evaluate(recorded, programs.data)
    return Curves(
      steps=np.arange(0, steps + 1, every),
      train_loss=np.asarray(losses),
      metric=np.asarray(metrics),
      hyperparams=jax.tree.map(np.asarray, hyperparams),
      seconds_per_step=seconds / steps,
    )

  return run_compiled
