"""How the controller learns: unrolled training, meta-loss and its gradient.

Three estimators of the gradient of the meta-loss with respect to the
controller's weights, each over a batch of tasks (one task pytree with a
leading axis, see :mod:`garo_optax.meta.tasks`):

* :func:`truncated_gradient`: backprop through ``lax.scan`` over a truncation
  of the inner training (exact for that truncation, biased towards short
  horizons when truncations are chained).
* :func:`es_gradient`: antithetic evolution strategies over whole unrolls
  (unbiased for the Gaussian-smoothed meta-loss, no backprop).
* :func:`pes_gradient`: persistent evolution strategies (Vicol et al., 2021):
  antithetic ES over truncations whose perturbations accumulate along the
  inner run, unbiased for horizons longer than one truncation.

The inner loop and the meta-loss they estimate the gradient of are in
:mod:`garo_optax.meta.inner`.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import garo_optax
from garo_optax.meta import inner, problems


def _truncation_meta_loss(controller, task, state, learning_rate, num_steps, config):
  """Meta-loss of one truncation of one run (scored against the run's start)
  and the run's new state."""
  end, losses, hyper = inner.inner_unroll(
    controller, task, state, learning_rate, num_steps, config
  )
  num_backoffs = inner.backoffs(end) - inner.backoffs(state)
  return inner.run_meta_loss(
    losses, hyper, state.initial_loss, config, num_backoffs
  ), end


def _batched_meta_loss(controller, task, state, learning_rate, num_steps, config):
  """Meta-loss of a truncation for each run of a batch; new states."""
  return jax.vmap(_truncation_meta_loss, in_axes=(None, 0, 0, 0, None, None))(
    controller, task, state, learning_rate, num_steps, config
  )


def truncated_gradient(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  state: inner.InnerState,
  learning_rate: jax.Array,
  num_steps: int,
  config: inner.InnerConfig = inner.DEFAULT_CONFIG,
) -> tuple[jax.Array, garo_optax.ControllerParams, inner.InnerState]:
  """Truncated backprop: the exact gradient of one truncation's meta-loss.

  Args:
    controller: the controller's weights.
    task: a batch of tasks (leading axis ``B``).
    state: their inner runs (leading axis ``B``), from :func:`inner.inner_init`
      under ``jax.vmap`` or from a previous truncation.
    learning_rate: starting learning rate of each run, shape ``(B,)``.
    num_steps: length of the truncation.
    config: how GARO is built.

  Returns:
    ``(inner.meta_loss, gradient, state)``: the mean meta-loss of the truncation,
    its gradient, and the runs advanced by ``num_steps`` (to be continued with
    the gradient stopped, as truncated backprop does).
  """

  def loss_fn(controller):
    losses, new_state = _batched_meta_loss(
      controller, task, state, learning_rate, num_steps, config
    )
    return jnp.mean(losses), new_state

  (loss, new_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(controller)
  return loss, grad, jax.lax.stop_gradient(new_state)


def _perturbations(key, controller, num_pairs, sigma):
  """``num_pairs`` Gaussian perturbations of the controller's weights.

  The biases of the GRU's candidate stay unperturbed (and so, under ES, at
  their initial zero): with them zero, a zero input keeps the hidden state at
  zero, which is what makes GARO's first step plain SGD for any controller.
  """
  leaves, treedef = jax.tree.flatten(controller)
  keys = jax.random.split(key, len(leaves))
  epsilon = treedef.unflatten(
    [
      sigma * jax.random.normal(k, (num_pairs, *x.shape), x.dtype)
      for k, x in zip(keys, leaves, strict=True)
    ]
  )
  hidden = controller.hidden_size
  gru = epsilon.gru._replace(
    input_bias=epsilon.gru.input_bias.at[:, 2 * hidden :].set(0.0),
    hidden_bias=jnp.zeros_like(epsilon.gru.hidden_bias),
  )
  return epsilon._replace(gru=gru)


def _antithetic(controller, epsilon):
  """The ``2P`` controllers ``θ + ε_i`` then ``θ - ε_i``, stacked: one vmap
  over all of them is one compiled unroll."""
  return jax.tree.map(lambda c, e: jnp.concatenate([c + e, c - e]), controller, epsilon)


def _twice(x):
  """``x`` stacked after itself, for the ``+`` and ``-`` members of each pair."""
  return jnp.concatenate([x, x])


SHAPINGS = ("none", "sign")


def _es_combine(loss_plus, loss_minus, epsilon, sigma, shaping="none"):
  """``mean_i w_i ε_i / (2σ²)``, the antithetic ES gradient, with
  ``w_i = L⁺_i − L⁻_i``; with ``shaping="sign"``, ``w_i`` is the sign of that
  difference (fitness shaping: each pair, one problem, casts one vote, so
  that the problems whose losses move most, the ones on the edge of
  divergence above all, do not outweigh the others; a pair whose runs both
  diverged casts none)."""
  if shaping not in SHAPINGS:
    raise ValueError(f"shaping must be one of {SHAPINGS}, got {shaping!r}")
  difference = loss_plus - loss_minus
  if shaping == "sign":
    difference = jnp.sign(difference)
  weight = difference / (2.0 * sigma**2)
  return jax.tree.map(
    lambda e: jnp.tensordot(weight, e, axes=1) / weight.shape[0], epsilon
  )


def es_gradient(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  keys: jax.Array,
  learning_rate: jax.Array,
  num_steps: int,
  key: jax.Array,
  *,
  sigma: float,
  config: inner.InnerConfig = inner.DEFAULT_CONFIG,
  shaping: str = "none",
) -> tuple[jax.Array, garo_optax.ControllerParams]:
  """Antithetic ES over whole unrolls, one pair of perturbations per task.

  Both members of a pair train the same task from the same initial params on
  the same minibatches (common random numbers), so their difference measures
  the perturbation and little else.

  Args:
    controller: the controller's weights.
    task: a batch of ``P`` tasks (leading axis ``P``).
    keys: ``P`` keys for the runs' initial params and minibatches.
    learning_rate: starting learning rate of each run, shape ``(P,)``.
    num_steps: length of each inner run.
    key: key for the perturbations.
    sigma: standard deviation of the perturbations.
    config: how GARO is built.
    shaping: ``"none"`` or ``"sign"`` (see ``_es_combine``).

  Returns:
    ``(inner.meta_loss, gradient)``: the mean meta-loss of the pairs and the ES
    estimate of the gradient of the smoothed meta-loss.
  """
  num_pairs = keys.shape[0]
  epsilon = _perturbations(key, controller, num_pairs, sigma)
  losses = jax.vmap(inner.unroll_meta_loss, in_axes=(0, 0, 0, 0, None, None))(
    _antithetic(controller, epsilon),
    jax.tree.map(_twice, task),
    _twice(keys),
    _twice(learning_rate),
    num_steps,
    config,
  )
  loss_plus, loss_minus = losses[:num_pairs], losses[num_pairs:]
  return jnp.mean(losses), _es_combine(loss_plus, loss_minus, epsilon, sigma, shaping)


class PESState(NamedTuple):
  """The persistent runs of :func:`pes_gradient`, one antithetic pair per task."""

  plus: inner.InnerState  # leading axis P
  minus: inner.InnerState  # leading axis P
  accumulated: Any  # sum of this run's perturbations, shaped (P, *controller)


def pes_init(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  keys: jax.Array,
  learning_rate: jax.Array,
  config: inner.InnerConfig = inner.DEFAULT_CONFIG,
  total_steps: jax.Array | None = None,
) -> PESState:
  """Starts the ``P`` pairs of persistent runs (``total_steps``: garo's, per
  pair, 0 or ``None`` for none)."""
  if total_steps is None:
    total_steps = jnp.zeros(learning_rate.shape, jnp.float32)
  state = jax.vmap(inner.inner_init, in_axes=(None, 0, 0, 0, None, 0))(
    controller, task, keys, learning_rate, config, total_steps
  )
  zeros = jax.tree.map(
    lambda c: jnp.zeros((keys.shape[0], *c.shape), c.dtype), controller
  )
  return PESState(state, state, zeros)


def pes_gradient(
  controller: garo_optax.ControllerParams,
  task: problems.Task,
  pes_state: PESState,
  learning_rate: jax.Array,
  num_steps: int,
  key: jax.Array,
  *,
  sigma: float,
  config: inner.InnerConfig = inner.DEFAULT_CONFIG,
  shaping: str = "none",
) -> tuple[jax.Array, garo_optax.ControllerParams, PESState]:
  """Persistent ES: one truncation of ``num_steps`` for each pair of runs.

  A fresh perturbation is drawn every truncation and added to the running sum
  of the perturbations the pair has seen since its runs started; weighting the
  truncation's loss difference by that sum (instead of by the fresh
  perturbation alone) credits the truncation's loss to the perturbations of
  earlier truncations too, which removes truncated ES's short-horizon bias.
  Restart a pair's runs with :func:`pes_init` when they reach the horizon.

  Returns:
    ``(inner.meta_loss, gradient, pes_state)``.
  """
  epsilon = _perturbations(key, controller, learning_rate.shape[0], sigma)
  accumulated = jax.tree.map(jnp.add, pes_state.accumulated, epsilon)

  num_pairs = learning_rate.shape[0]
  losses, states = jax.vmap(_truncation_meta_loss, in_axes=(0, 0, 0, 0, None, None))(
    _antithetic(controller, epsilon),
    jax.tree.map(_twice, task),
    jax.tree.map(lambda a, b: jnp.concatenate([a, b]), pes_state.plus, pes_state.minus),
    _twice(learning_rate),
    num_steps,
    config,
  )
  loss_plus, loss_minus = losses[:num_pairs], losses[num_pairs:]
  plus = jax.tree.map(lambda x: x[:num_pairs], states)
  minus = jax.tree.map(lambda x: x[num_pairs:], states)
  mean = jnp.mean(losses)
  grad = _es_combine(loss_plus, loss_minus, accumulated, sigma, shaping)
  return mean, grad, PESState(plus, minus, accumulated)
