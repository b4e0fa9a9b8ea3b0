"""The controller's input features, built from the gradient statistics.

The statistics of each group are the sums ``[Σg², Σm², Σg·m]`` of its leaves
(``_statistics.py``). The features built from them are invariant to the scale
of the gradients, clipped to ``[-FEATURE_CLIP, FEATURE_CLIP]``, and exactly
zero at step 0, so a GRU with a zero candidate bias keeps its hidden state at
zero on the first step (and GARO starts as plain SGD).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from garo_optax._statistics import NUM_STATISTICS

NUM_FEATURES = 6
FEATURE_NAMES = (
  "log_grad_norm_change",
  "cos_grad_momentum",
  "relative_loss_change",
  "log_learning_rate_ratio",
  "time",
  "log_grad_norm_trend",
)
FEATURE_CLIP = 5.0
# Decays of the running means the features are measured against: a fast one
# for step-to-step changes and a slow one for the trend of the gradient norm.
EMA_DECAY = 0.9
SLOW_EMA_DECAY = 0.99

TINY = float(jnp.finfo(jnp.float32).tiny)
# Sums of squares of huge gradients overflow float32; clipping them to the
# largest float keeps inf out of the running means, where it would stay.
MAX = float(jnp.finfo(jnp.float32).max)


class FeatureState(NamedTuple):
  """Running statistics the features are measured against."""

  log_grad_norm: jax.Array  # shape=(G,), float32: running mean of log‖g‖
  slow_log_grad_norm: jax.Array  # shape=(G,), float32: slow running mean
  loss: jax.Array  # shape=(), float32: running mean of the loss


def init_feature_state(num_groups: int) -> FeatureState:
  zeros = jnp.zeros((num_groups,), jnp.float32)
  return FeatureState(
    log_grad_norm=zeros, slow_log_grad_norm=zeros, loss=jnp.zeros((), jnp.float32)
  )


def _finite_clip(x: jax.Array) -> jax.Array:
  x = jnp.nan_to_num(x, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP)
  return jnp.clip(x, -FEATURE_CLIP, FEATURE_CLIP)


def running_mean(
  current: jax.Array, running: jax.Array, first: jax.Array, decay: float = EMA_DECAY
):
  """The running mean before and after seeing ``current``.

  On the first step the running mean starts at ``current``, so the change
  ``current - previous`` is exactly zero there.
  """
  previous = jnp.where(first, current, running)
  return previous, decay * previous + (1.0 - decay) * current


def compute_features(
  statistics: jax.Array,
  feature_state: FeatureState,
  count: jax.Array,
  previous_learning_rate: jax.Array,
  reference_learning_rate: jax.Array,
  value: jax.Array | None,
) -> tuple[jax.Array, FeatureState]:
  """Builds the controller's inputs from the statistics of each group.

  Args:
    statistics: array ``(G, NUM_STATISTICS)``, the sums of each group.
    feature_state: the running statistics.
    count: the number of steps taken so far (0 on the first step).
    previous_learning_rate: array ``(G,)``, the rates applied at the last step.
    reference_learning_rate: array ``(G,)``, the rates the controller works
      around at this step (the starting rate, moved home, or a schedule's).
    value: the loss, or ``None`` (then the loss feature is zero).

  Returns:
    A tuple ``(features, new_feature_state)`` with ``features`` of shape
    ``(G, NUM_FEATURES)``.
  """
  first = count == 0
  log_learning_rate_ratio = jnp.log(previous_learning_rate) - jnp.log(
    reference_learning_rate
  )
  # Exactly zero on the first step, however the starting rate rounds on its
  # way through the learning-rate head.
  log_learning_rate_ratio = jnp.where(first, 0.0, log_learning_rate_ratio)
  grad_sq, mu_sq, grad_dot_mu = (statistics[:, i] for i in range(NUM_STATISTICS))
  log_grad_norm = 0.5 * jnp.log(jnp.clip(grad_sq, TINY, MAX))
  previous_grad, running_grad = running_mean(
    log_grad_norm, feature_state.log_grad_norm, first
  )
  previous_slow, running_slow = running_mean(
    log_grad_norm, feature_state.slow_log_grad_norm, first, SLOW_EMA_DECAY
  )
  grad_change = log_grad_norm - previous_grad
  grad_trend = log_grad_norm - previous_slow
  # A zero momentum buffer (step 0) gives 0 / tiny = 0.
  cos = grad_dot_mu / jnp.maximum(jnp.sqrt(grad_sq) * jnp.sqrt(mu_sq), TINY)

  if value is None:
    loss_change = jnp.zeros_like(grad_change)
    running_loss = feature_state.loss
  else:
    value = jnp.asarray(value, jnp.float32)
    previous_loss, running_loss = running_mean(value, feature_state.loss, first)
    relative = (value - previous_loss) / jnp.maximum(jnp.abs(previous_loss), TINY)
    loss_change = jnp.broadcast_to(relative, grad_change.shape)

  time = jnp.broadcast_to(
    jnp.log1p(count.astype(jnp.float32)) / 10.0, grad_change.shape
  )
  features = jnp.stack(
    [grad_change, cos, loss_change, log_learning_rate_ratio, time, grad_trend],
    axis=-1,
  )
  new_state = FeatureState(
    log_grad_norm=running_grad, slow_log_grad_norm=running_slow, loss=running_loss
  )
  return _finite_clip(features), new_state
