"""Gradient statistics and the controller's input features.

The statistics of a leaf are five sums, computed by a single variadic
reduction so that XLA reads the gradient, momentum and parameter buffers once:

  ``[Σg², Σm², Σg·m, Σθ², #non-finite g]``

The features built from them are invariant to the scale of the gradients,
clipped to ``[-FEATURE_CLIP, FEATURE_CLIP]``, and exactly zero at step 0, so a
GRU with a zero candidate bias keeps its hidden state at zero on the first
step (and GARO starts as plain SGD).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

NUM_STATISTICS = 5
NUM_FEATURES = 6
FEATURE_NAMES = (
    "log_grad_norm_change",
    "cos_grad_momentum",
    "relative_loss_change",
    "log_learning_rate_ratio",
    "time",
    "log_param_norm_change",
)
FEATURE_CLIP = 5.0
# Decay of the running means the features are measured against.
EMA_DECAY = 0.9

_TINY = float(jnp.finfo(jnp.float32).tiny)


class FeatureState(NamedTuple):
  """Running statistics the features are measured against."""

  log_grad_norm: jax.Array  # shape=(G,), float32: running mean of log‖g‖
  log_param_norm: jax.Array  # shape=(G,), float32: running mean of log‖θ‖
  loss: jax.Array  # shape=(), float32: running mean of the loss


def init_feature_state(num_groups: int) -> FeatureState:
  zeros = jnp.zeros((num_groups,), jnp.float32)
  return FeatureState(
      log_grad_norm=zeros, log_param_norm=zeros, loss=jnp.zeros((), jnp.float32)
  )


def _add(a, b):
  return tuple(x + y for x, y in zip(a, b, strict=True))


def leaf_statistics(
    grad: jax.Array, mu: jax.Array, param: jax.Array
) -> jax.Array:
  """The five sums of one leaf, in float32, from one pass over its buffers.

  Args:
    grad: the leaf's gradient.
    mu: its momentum buffer (same shape).
    param: its parameter (same shape).

  Returns:
    Array of shape ``(NUM_STATISTICS,)``: ``Σg², Σm², Σg·m, Σθ²`` and the number
    of non-finite gradient entries.
  """
  g = grad.astype(jnp.float32)
  m = mu.astype(jnp.float32)
  p = param.astype(jnp.float32)
  operands = (g * g, m * m, g * m, p * p, (~jnp.isfinite(g)).astype(jnp.float32))
  init = tuple(jnp.zeros((), jnp.float32) for _ in operands)
  sums = jax.lax.reduce(operands, init, _add, tuple(range(g.ndim)))
  return jnp.stack(sums)


def _finite_clip(x: jax.Array) -> jax.Array:
  x = jnp.nan_to_num(x, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP)
  return jnp.clip(x, -FEATURE_CLIP, FEATURE_CLIP)


def _running_mean(current: jax.Array, running: jax.Array, first: jax.Array):
  """The running mean before and after seeing ``current``.

  On the first step the running mean starts at ``current``, so the change
  ``current - previous`` is exactly zero there.
  """
  previous = jnp.where(first, current, running)
  return previous, EMA_DECAY * previous + (1.0 - EMA_DECAY) * current


def compute_features(
    statistics: jax.Array,
    feature_state: FeatureState,
    count: jax.Array,
    log_learning_rate_ratio: jax.Array,
    value: jax.Array | None,
) -> tuple[jax.Array, FeatureState]:
  """Builds the controller's inputs from the statistics of each group.

  Args:
    statistics: array ``(G, NUM_STATISTICS)``, the sums of each group.
    feature_state: the running statistics.
    count: the number of steps taken so far (0 on the first step).
    log_learning_rate_ratio: array ``(G,)``, ``log(lr_{t-1} / lr_0)``.
    value: the loss, or ``None`` (then the loss feature is zero).

  Returns:
    A tuple ``(features, new_feature_state)`` with ``features`` of shape
    ``(G, NUM_FEATURES)``.
  """
  first = count == 0
  grad_sq, mu_sq, grad_dot_mu, param_sq = (statistics[:, i] for i in range(4))
  log_grad_norm = 0.5 * jnp.log(jnp.maximum(grad_sq, _TINY))
  log_param_norm = 0.5 * jnp.log(jnp.maximum(param_sq, _TINY))
  previous_grad, running_grad = _running_mean(
      log_grad_norm, feature_state.log_grad_norm, first
  )
  previous_param, running_param = _running_mean(
      log_param_norm, feature_state.log_param_norm, first
  )
  grad_change = log_grad_norm - previous_grad
  param_change = log_param_norm - previous_param
  # A zero momentum buffer (step 0) gives 0 / tiny = 0.
  cos = grad_dot_mu / jnp.maximum(jnp.sqrt(grad_sq) * jnp.sqrt(mu_sq), _TINY)

  if value is None:
    loss_change = jnp.zeros_like(grad_change)
    running_loss = feature_state.loss
  else:
    value = jnp.asarray(value, jnp.float32)
    previous_loss, running_loss = _running_mean(value, feature_state.loss, first)
    relative = (value - previous_loss) / jnp.maximum(jnp.abs(previous_loss), _TINY)
    loss_change = jnp.broadcast_to(relative, grad_change.shape)

  time = jnp.broadcast_to(
      jnp.log1p(count.astype(jnp.float32)) / 10.0, grad_change.shape
  )
  features = jnp.stack(
      [grad_change, cos, loss_change, log_learning_rate_ratio, time, param_change],
      axis=-1,
  )
  new_state = FeatureState(
      log_grad_norm=running_grad, log_param_norm=running_param, loss=running_loss
  )
  return _finite_clip(features), new_state
