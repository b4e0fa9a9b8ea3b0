"""The meta-gradient of one task family's meta-step, compiled once per family.

:func:`family_step` draws fresh problems and starting learning rates and
returns the ES gradient over whole unrolls; :func:`family_pes_step` advances a
family's persistent runs by one truncation (PES), restarting those that are
done on fresh problems; :func:`initial_pes_state` makes the placeholder runs
that start out due for a (staggered) restart.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax.meta import estimators


def _starting_learning_rates(key, pairs, min_lr, max_lr):
  """``pairs`` starting learning rates, log-uniform in ``[min_lr, max_lr]``."""
  log_lr = jax.random.uniform(
    key, (pairs,), minval=jnp.log(min_lr), maxval=jnp.log(max_lr)
  )
  return jnp.exp(log_lr)


@functools.cache
def family_step(family, pairs, unroll, config):
  """The jitted ES gradient on fresh problems of one family."""

  @jax.jit
  def step(controller, key, sigma, min_lr, max_lr):
    task_key, run_key, lr_key, es_key = jax.random.split(key, 4)
    task = jax.vmap(family.sample)(jax.random.split(task_key, pairs))
    learning_rate = _starting_learning_rates(lr_key, pairs, min_lr, max_lr)
    return estimators.es_gradient(
      controller,
      task,
      jax.random.split(run_key, pairs),
      learning_rate,
      unroll,
      es_key,
      sigma=sigma,
      config=config,
    )

  return step


@functools.cache
def family_pes_step(family, pairs, unroll, truncations, config):
  """The jitted PES gradient of one truncation of one family's persistent runs.

  ``state`` holds, per pair, the problem's key, the starting learning rate,
  the truncations left before a restart (a pair with none left restarts on a
  fresh problem first; a negative count is a first run that many truncations
  short) and the :class:`estimators.PESState`.
  """

  @jax.jit
  def step(controller, state, key, sigma, min_lr, max_lr):
    task_key, run_key, lr_key, es_key = jax.random.split(key, 4)
    restart = state["left"] <= 0
    task_keys = jnp.where(
      restart[:, None],
      jax.random.key_data(jax.random.split(task_key, pairs)),
      state["task_key"],
    )
    task = jax.vmap(family.sample)(jax.random.wrap_key_data(task_keys))
    fresh_lr = _starting_learning_rates(lr_key, pairs, min_lr, max_lr)
    learning_rate = jnp.where(restart, fresh_lr, state["learning_rate"])
    fresh = estimators.pes_init(
      controller, task, jax.random.split(run_key, pairs), learning_rate, config
    )

    def pick(new, old):
      return jnp.where(restart.reshape((pairs,) + (1,) * (old.ndim - 1)), new, old)

    def pick_tree(new, old):
      if jax.dtypes.issubdtype(old.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(
          pick(jax.random.key_data(new), jax.random.key_data(old))
        )
      return pick(new, old)

    pes_state = jax.tree.map(pick_tree, fresh, state["pes"])
    loss, grad, pes_state = estimators.pes_gradient(
      controller,
      task,
      pes_state,
      learning_rate,
      unroll,
      es_key,
      sigma=sigma,
      config=config,
    )
    left = jnp.where(restart, truncations + state["left"], state["left"]) - 1
    new_state = {
      "task_key": task_keys,
      "learning_rate": learning_rate,
      "left": left,
      "pes": pes_state,
    }
    return loss, grad, new_state

  return step


def initial_pes_state(family, index, controller, pairs, truncations, config):
  """Placeholder runs of one family, all due for a (staggered) restart."""
  key = jax.random.key(0)
  task = jax.eval_shape(jax.vmap(family.sample), jax.random.split(key, pairs))
  shapes = jax.eval_shape(
    lambda c, t, k, lr: estimators.pes_init(c, t, k, lr, config),
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

  offsets = (index * pairs + np.arange(pairs)) % truncations
  return {
    "task_key": jnp.zeros((pairs, *jax.random.key_data(key).shape), jnp.uint32),
    "learning_rate": jnp.ones((pairs,), jnp.float32),
    "left": jnp.asarray(-offsets, jnp.int32),
    "pes": jax.tree.map(zeros, shapes),
  }
