"""The meta-gradient of one slot's meta-step, compiled once per slot.

A slot is a task family trained at one granularity. :func:`family_step`
draws fresh problems and starting learning rates and returns the ES gradient
over whole unrolls; :func:`family_pes_step` advances a slot's persistent runs
by one truncation (PES), first restarting the runs that are done on fresh
problems with fresh horizons; :func:`initial_pes_state` makes the
placeholder runs that start out due for a (staggered) restart.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax.meta import estimators


class Horizons(NamedTuple):
  """How long the persistent runs of PES are (static).

  Each run's length is drawn when it starts: log-uniform between
  ``min_truncations`` and ``max_truncations`` truncations. A share
  ``total_steps_share`` of the runs is given its length as garo's
  ``total_steps``; the others train without it.
  """

  min_truncations: int
  max_truncations: int
  total_steps_share: float


def _log_uniform(key, shape, low, high):
  """Log-uniform draws in ``[low, high]``."""
  log_x = jax.random.uniform(key, shape, minval=jnp.log(low), maxval=jnp.log(high))
  return jnp.exp(log_x)


@functools.cache
def family_step(family, pairs, unroll, config, shaping="none"):
  """The jitted ES gradient on fresh problems of one family (whole runs)."""

  @jax.jit
  def step(controller, key, sigma, min_lr, max_lr):
    task_key, run_key, lr_key, es_key = jax.random.split(key, 4)
    task = jax.vmap(family.sample)(jax.random.split(task_key, pairs))
    learning_rate = _log_uniform(lr_key, (pairs,), min_lr, max_lr)
    return estimators.es_gradient(
      controller,
      task,
      jax.random.split(run_key, pairs),
      learning_rate,
      unroll,
      es_key,
      sigma=sigma,
      config=config,
      shaping=shaping,
    )

  return step


def _where_rows(condition, new, old):
  """``new`` where ``condition`` (one flag per leading row), else ``old``;
  PRNG keys too."""

  def pick(new, old):
    is_key = jax.dtypes.issubdtype(old.dtype, jax.dtypes.prng_key)
    if is_key:
      new, old = jax.random.key_data(new), jax.random.key_data(old)
    flags = condition.reshape(condition.shape + (1,) * (old.ndim - 1))
    out = jnp.where(flags, new, old)
    return jax.random.wrap_key_data(out) if is_key else out

  return jax.tree.map(pick, new, old)


@functools.cache
def family_pes_step(family, pairs, unroll, horizons: Horizons, config, shaping="none"):
  """The jitted PES gradient of one truncation of one slot's persistent runs.

  ``state`` holds, per pair, the problem's key, the starting learning rate,
  the truncations left before a restart (a pair with none left restarts
  first), the share of its next run's drawn length it runs (below 1 for the
  staggered first runs, then 1), garo's ``total_steps`` for the run (0 for
  none) and the :class:`estimators.PESState`.
  """

  @jax.jit
  def step(controller, state, key, sigma, min_lr, max_lr):
    task_key, run_key, lr_key, es_key, length_key, total_key = jax.random.split(key, 6)
    restart = state["left"] <= 0
    task_keys = jnp.where(
      restart[:, None],
      jax.random.key_data(jax.random.split(task_key, pairs)),
      state["task_key"],
    )
    task = jax.vmap(family.sample)(jax.random.wrap_key_data(task_keys))
    learning_rate = jnp.where(
      restart,
      _log_uniform(lr_key, (pairs,), min_lr, max_lr),
      state["learning_rate"],
    )
    drawn = _log_uniform(
      length_key, (pairs,), horizons.min_truncations, horizons.max_truncations
    )
    length = jnp.maximum(jnp.round(drawn * state["stagger"]), 1.0).astype(jnp.int32)
    given = jax.random.uniform(total_key, (pairs,)) < horizons.total_steps_share
    total_steps = jnp.where(
      restart,
      jnp.where(given, (length * unroll).astype(jnp.float32), 0.0),
      state["total_steps"],
    )
    fresh = estimators.pes_init(
      controller,
      task,
      jax.random.split(run_key, pairs),
      learning_rate,
      config,
      total_steps,
    )
    pes_state = _where_rows(restart, fresh, state["pes"])
    loss, grad, pes_state = estimators.pes_gradient(
      controller,
      task,
      pes_state,
      learning_rate,
      unroll,
      es_key,
      sigma=sigma,
      config=config,
      shaping=shaping,
    )
    new_state = {
      "task_key": task_keys,
      "learning_rate": learning_rate,
      "left": jnp.where(restart, length, state["left"]) - 1,
      "stagger": jnp.where(restart, 1.0, state["stagger"]),
      "total_steps": total_steps,
      "pes": pes_state,
    }
    return loss, grad, new_state

  return step


def initial_pes_state(family, index, controller, pairs, config):
  """Placeholder runs of one slot, all due for a restart.

  Their first runs are staggered: pair ``j`` of slot ``index`` runs the share
  ``((index + j) mod pairs + 1) / pairs`` of its drawn length, so that every
  meta-step mixes truncations from the start of runs with truncations near
  their end.
  """
  key = jax.random.key(0)
  task = jax.eval_shape(jax.vmap(family.sample), jax.random.split(key, pairs))
  shapes = jax.eval_shape(
    lambda c, t, k, lr: estimators.pes_init(c, t, k, lr, config, jnp.zeros((pairs,))),
    controller,
    task,
    jax.random.split(key, pairs),
    jnp.ones((pairs,)),
  )

  def zeros(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(
        jnp.zeros(x.shape + jax.random.key_data(key).shape, jnp.uint32)
      )
    return jnp.zeros(x.shape, x.dtype)

  stagger = ((index + np.arange(pairs)) % pairs + 1) / pairs
  return {
    "task_key": jnp.zeros((pairs, *jax.random.key_data(key).shape), jnp.uint32),
    "learning_rate": jnp.ones((pairs,), jnp.float32),
    "left": jnp.zeros((pairs,), jnp.int32),
    "stagger": jnp.asarray(stagger, jnp.float32),
    "total_steps": jnp.zeros((pairs,), jnp.float32),
    "pes": jax.tree.map(zeros, shapes),
  }
