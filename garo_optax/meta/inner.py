"""The inner loop: GARO with a given controller training a task, and its score.

The inner optimizer is ``garo`` or ``garo_adamw`` (:class:`InnerConfig`).

:func:`inner_init` and :func:`inner_unroll` train a task (or, under
``jax.vmap``, a batch of tasks) with GARO built from the controller being
learned; :func:`meta_loss` scores a run: the mean over its steps of
``log(loss_t / loss_0)``, floored (a task solved to its noise floor counts the
same however far below it goes) and capped, with non-finite losses at the cap
and every step above the initial loss penalised again: divergence costs more
than any progress can buy back. :func:`roughness` scores the schedules the
controller applied: how far they chatter beyond what reads as a schedule;
:func:`run_meta_loss` adds it, weighted by ``InnerConfig.smoothness``; it can
also charge the highest rise above the initial loss (``InnerConfig.peak_penalty``)
and each back-off of GARO's safeguard (``InnerConfig.backoff_penalty``).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import garo_optax
from garo_optax.meta import problems

# log(loss_t / loss_0) is clipped to [-LOG_FLOOR, LOG_CAP].
LOG_FLOOR = 10.0
LOG_CAP = 3.0
# Extra weight on log(loss_t / loss_0) where it is positive.
DIVERGENCE_PENALTY = 4.0
# A schedule reads as one when the median change from one step to the next is
# at most 0.05 for log(lr) and 0.01 for the momentum (garo_adamw's b1), the
# bounds benchmarks.select_controller holds shipped controllers to. The
# controller's running mean caps each step's change (``MAX_OFFSET_STEP``) but
# lets a controller that reacts to each minibatch move at that cap every step;
# the roughness term is what the meta-loss charges for that.
SMOOTH_LOG_LEARNING_RATE = 0.05
SMOOTH_MOMENTUM = 0.01


class InnerConfig(NamedTuple):
  """How GARO is built for the inner runs, and how they are scored (static)."""

  max_effective_learning_rate: float | None = None
  granularity: str = "global"
  # log(loss_t / loss_0) is floored at -log_floor in the meta-loss.
  log_floor: float = LOG_FLOOR
  # garo's home_learning_rate and home_steps (both or neither).
  home_learning_rate: float | None = None
  home_steps: float | None = None
  # The transformation the controller drives: "garo" or "garo_adamw".
  optimizer: str = "garo"
  max_learning_rate: float | None = None
  # Weight of `roughness` in the meta-loss (0: schedules are not scored).
  smoothness: float = 0.0
  # Meta-loss charged for each back-off of the safeguard (0: none).
  backoff_penalty: float = 0.0
  # Weight of the highest log(loss_t / loss_0) above 0 in a run or truncation.
  peak_penalty: float = 0.0


DEFAULT_CONFIG = InnerConfig()


class InnerState(NamedTuple):
  """One inner training run in progress."""

  params: Any
  opt_state: Any
  step: jax.Array  # shape=(), int32
  initial_loss: jax.Array  # shape=(), float32: loss before the first update
  key: jax.Array  # minibatch key of this run
  # shape=(), float32: garo's total_steps for this run, 0 for none
  total_steps: jax.Array


def _optimizer(controller, learning_rate, config: InnerConfig, total_steps):
  if not isinstance(total_steps, jax.core.Tracer) and not total_steps:
    total_steps = None  # 0: no horizon (a traced 0 gives garo's 0 progress)
  options = dict(
    controller=controller,
    granularity=config.granularity,
    total_steps=total_steps,
    max_learning_rate=config.max_learning_rate,
    home_learning_rate=config.home_learning_rate,
    home_steps=config.home_steps,
  )
  if config.optimizer == "garo_adamw":
    # b1, b2, eps and weight decay at optax.adamw's defaults: the controller
    # learns to move them from where AdamW users start.
    return garo_optax.garo_adamw(learning_rate, **options)
  return garo_optax.garo(
    learning_rate,
    max_effective_learning_rate=config.max_effective_learning_rate,
    **options,
  )


def inner_init(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  key: jax.Array,
  learning_rate: jax.Array,
  config: InnerConfig = DEFAULT_CONFIG,
  total_steps: jax.Array | float = 0.0,
) -> InnerState:
  """Starts an inner run: initial params, optimizer state, initial loss.

  ``total_steps`` is given to garo (its ``progress`` feature) when positive.
  """
  init_key, batch_key = jax.random.split(key)
  params = task.init(init_key)
  initial_loss = task.loss(params, task.batch(jax.random.fold_in(batch_key, 0)))
  total_steps = jnp.asarray(total_steps, jnp.float32)
  opt_state = _optimizer(controller, learning_rate, config, total_steps).init(params)
  return InnerState(
    params, opt_state, jnp.zeros((), jnp.int32), initial_loss, batch_key, total_steps
  )


def inner_unroll(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  state: InnerState,
  learning_rate: jax.Array,
  num_steps: int,
  config: InnerConfig = DEFAULT_CONFIG,
) -> tuple[InnerState, jax.Array, dict[str, jax.Array]]:
  """Trains ``num_steps`` steps of GARO with ``controller``.

  Returns:
    ``(state, losses, hyperparams)``: the minibatch loss before each update,
    shape ``(num_steps,)``, and the hyperparameters applied at each step.
  """
  tx = _optimizer(controller, learning_rate, config, state.total_steps)

  def step(state, _):
    batch = task.batch(jax.random.fold_in(state.key, state.step))
    loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    new = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new, (loss, garo_optax.hyperparams(opt_state))

  state, (losses, hyper) = jax.lax.scan(step, state, length=num_steps)
  return state, losses, hyper


def log_loss_ratio(
  losses: jax.Array, initial_loss: jax.Array, log_floor: float = LOG_FLOOR
) -> jax.Array:
  """``log(loss / initial_loss)``, clipped, with non-finite values at the cap."""
  ratio = jnp.log(losses) - jnp.log(initial_loss)
  ratio = jnp.where(jnp.isfinite(ratio), ratio, LOG_CAP)
  return jnp.clip(ratio, -log_floor, LOG_CAP)


def meta_loss(
  losses: jax.Array, initial_loss: jax.Array, log_floor: float = LOG_FLOOR
) -> jax.Array:
  """Meta-loss of one run: mean clipped log loss ratio, divergence penalised."""
  ratio = log_loss_ratio(losses, initial_loss, log_floor)
  return jnp.mean(ratio + DIVERGENCE_PENALTY * jax.nn.relu(ratio))


def median_step_changes(hyperparams: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
  """How much a run's schedules move from one step to the next.

  Args:
    hyperparams: the hyperparameters applied at each step, as
      :func:`inner_unroll` returns them (leaves of shape ``(steps,)``, one
      per group; at least 2 steps).

  Returns:
    ``(log_learning_rate_step, momentum_step)``: the medians over steps and
    groups of the absolute change of log(lr) and of the momentum (b1). The
    readability rule (``benchmarks.select_controller``) holds these to
    ``SMOOTH_LOG_LEARNING_RATE`` and ``SMOOTH_MOMENTUM``.
  """

  def median_change(tree, transform):
    x = transform(jnp.stack(jax.tree.leaves(tree), axis=-1))  # (steps, groups)
    if x.shape[0] < 2:
      raise ValueError(f"step-to-step changes need at least 2 steps, got {x.shape[0]}")
    return jnp.median(jnp.abs(jnp.diff(x, axis=0)))

  momentum = hyperparams["momentum" if "momentum" in hyperparams else "b1"]
  return (
    median_change(hyperparams["learning_rate"], jnp.log),
    median_change(momentum, lambda x: x),
  )


def roughness(hyperparams: dict[str, Any]) -> jax.Array:
  """How far a run's schedules move, step to step, beyond readable:
  ``relu(m_lr / SMOOTH_LOG_LEARNING_RATE - 1) + relu(m_mom / SMOOTH_MOMENTUM
  - 1)`` with ``(m_lr, m_mom)`` the :func:`median_step_changes`; 0 for
  schedules that read as schedules."""
  lr_step, momentum_step = median_step_changes(hyperparams)
  return jax.nn.relu(lr_step / SMOOTH_LOG_LEARNING_RATE - 1.0) + jax.nn.relu(
    momentum_step / SMOOTH_MOMENTUM - 1.0
  )


def backoffs(state: InnerState) -> jax.Array:
  """How many times the safeguard has backed off in the run so far."""
  return state.opt_state.safeguard.backoffs


def run_meta_loss(
  losses: jax.Array,
  hyperparams: dict[str, Any],
  initial_loss: jax.Array,
  config: InnerConfig = DEFAULT_CONFIG,
  num_backoffs: jax.Array | int = 0,
) -> jax.Array:
  """Meta-loss of a run (or a truncation of one, scored against the run's
  initial loss): :func:`meta_loss`, plus ``config.smoothness`` times the
  :func:`roughness` of its schedules, plus ``config.peak_penalty`` times its
  highest clipped ``log(loss_t / loss_0)`` above 0, plus
  ``config.backoff_penalty`` for each of the ``num_backoffs`` back-offs of
  the safeguard in it.

  A back-off ends a rise within a few steps, so the rise weighs little in the
  mean of the loss ratios. The two charges are meant to make it count: the
  back-off penalty makes a perturbation that causes a back-off lose its
  pair's vote under sign fitness shaping, and the peak penalty charges the
  rise itself, however few steps it lasts. Neither made the recipe's
  controllers keep the loss below its first on a stiff regression
  (``benchmarks/results/meta_v2/backoff_penalty/`` and ``peak_penalty/``);
  both are 0 in the packaged configurations.
  """
  loss = meta_loss(losses, initial_loss, config.log_floor)
  if config.peak_penalty:
    ratio = log_loss_ratio(losses, initial_loss, config.log_floor)
    loss = loss + config.peak_penalty * jax.nn.relu(jnp.max(ratio))
  if config.smoothness:
    loss = loss + config.smoothness * roughness(hyperparams)
  if config.backoff_penalty:
    loss = loss + config.backoff_penalty * jnp.asarray(num_backoffs, jnp.float32)
  return loss


def unroll_meta_loss(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  key: jax.Array,
  learning_rate: jax.Array,
  num_steps: int,
  config: InnerConfig = DEFAULT_CONFIG,
  total_steps: jax.Array | float = 0.0,
) -> jax.Array:
  """Meta-loss of a whole inner run of ``num_steps`` steps from scratch."""
  state = inner_init(controller, task, key, learning_rate, config, total_steps)
  end, losses, hyper = inner_unroll(
    controller, task, state, learning_rate, num_steps, config
  )
  return run_meta_loss(losses, hyper, state.initial_loss, config, backoffs(end))
