"""The controller's input features, built from the gradient statistics.

The statistics of each group are the sums ``[Σg², Σm², Σg·m]`` of its leaves
(``_statistics.py``). The features built from them are invariant to the scale
of the gradients (and the loss features to the scale of the loss), clipped to
``[-FEATURE_CLIP, FEATURE_CLIP]``, and exactly zero at step 0, so a GRU with a
zero candidate bias keeps its hidden state at zero on the first step (and
GARO starts as plain SGD).

Every feature is a trend or a running mean rather than a single step's
reading: a minibatch's gradient norm or loss is mostly noise, and a
controller that reads noise emits noisy hyperparameters.

A controller reads the first ``F`` features of :data:`FEATURE_NAMES`, ``F``
its number of inputs: the first :data:`BASE_NUM_FEATURES` (the features of
garo_optax 0.3 on), or all of them. The last, the size of the steps against
the weights they move (:func:`record_update`), is the one feature that tells
a large model from a small one: the rest read the gradient and the loss in
ways that do not change with the model's scale.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from garo_optax._statistics import NUM_STATISTICS

FEATURE_NAMES = (
  # log‖g‖ minus its slow running mean: is the gradient norm growing?
  "log_grad_norm_trend",
  # Running mean of cos(g, m): do successive gradients agree (> 0) or
  # oscillate (< 0)?
  "cos_grad_momentum",
  # Fast minus slow running mean of the loss, over the slow one's magnitude.
  "loss_trend",
  # Standard deviation of the minibatch losses around their running mean,
  # over its magnitude: how noisy the loss is.
  "loss_noise",
  # log(lr_{t-1} / lr_ref): how far the controller has moved the rate (the
  # rate it chose, before the safeguard's cap; see compute_features).
  "log_learning_rate_ratio",
  # log1p(t) / 10.
  "time",
  # t / total_steps when garo is given total_steps, else 0.
  "progress",
  # Running mean of log10(‖Δθ‖ / ‖θ‖) + 3 over the steps taken: how large
  # the steps are against the weights (0 at a ratio of 1e-3, and before the
  # first step).
  "log_update_ratio",
)
NUM_FEATURES = len(FEATURE_NAMES)
# The features every controller reads (those of garo_optax 0.3 to 0.11).
BASE_NUM_FEATURES = 7
# log10 of the step-to-weight ratio at which "log_update_ratio" is 0.
_UPDATE_RATIO_CENTER = -3.0
FEATURE_CLIP = 5.0
# Decays of the running means the features are measured against.
EMA_DECAY = 0.9
SLOW_EMA_DECAY = 0.99

TINY = float(jnp.finfo(jnp.float32).tiny)
# Sums of squares of huge gradients overflow float32; clipping them to the
# largest float keeps inf out of the running means, where it would stay.
MAX = float(jnp.finfo(jnp.float32).max)


class FeatureState(NamedTuple):
  """Running statistics the features are measured against."""

  slow_log_grad_norm: jax.Array  # shape=(G,), float32: running mean of log‖g‖
  cos: jax.Array  # shape=(G,), float32: running mean of cos(g, m)
  loss: jax.Array  # shape=(), float32: running mean of the loss
  slow_loss: jax.Array  # shape=(), float32: slow running mean of the loss
  loss_variance: jax.Array  # shape=(), float32: of the loss around `loss`
  # shape=(G,), float32: running mean of log10(‖Δθ‖ / ‖θ‖) + 3, 0 before the
  # first step; shape (0,) for a controller that does not read it
  update_ratio: jax.Array
  # shape=(G,), float32: log of the factor by which the safeguard's cap cut
  # the rate the controller chose at the last step (0: not cut)
  learning_rate_cut: jax.Array


def init_feature_state(
  num_groups: int, num_features: int = NUM_FEATURES
) -> FeatureState:
  """The running statistics before the first step, for a controller that
  reads ``num_features`` features (``update_ratio`` is empty when it does not
  read ``log_update_ratio``)."""
  zeros = jnp.zeros((num_groups,), jnp.float32)
  scalar = jnp.zeros((), jnp.float32)
  return FeatureState(
    slow_log_grad_norm=zeros,
    cos=zeros,
    loss=scalar,
    slow_loss=scalar,
    loss_variance=scalar,
    update_ratio=jnp.zeros(
      (num_groups if num_features > BASE_NUM_FEATURES else 0,), jnp.float32
    ),
    learning_rate_cut=zeros,
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


def progress(count: jax.Array, total_steps: int | jax.Array | None) -> jax.Array:
  """``count / total_steps`` in ``[0, 1]``, or 0 without a horizon."""
  if total_steps is None:
    return jnp.zeros((), jnp.float32)
  total = jnp.asarray(total_steps, jnp.float32)
  fraction = count.astype(jnp.float32) / jnp.maximum(total, 1.0)
  return jnp.where(total > 0, jnp.clip(fraction, 0.0, 1.0), 0.0)


def _loss_features(value, feature_state, first, shape):
  """``loss_trend``, ``loss_noise`` and the loss's running statistics."""
  if value is None:
    zeros = jnp.zeros(shape, jnp.float32)
    return zeros, zeros, feature_state
  value = jnp.asarray(value, jnp.float32)
  previous, fast = running_mean(value, feature_state.loss, first)
  _, slow = running_mean(value, feature_state.slow_loss, first, SLOW_EMA_DECAY)
  deviation = value - previous
  variance = jnp.where(first, 0.0, feature_state.loss_variance)
  variance = SLOW_EMA_DECAY * variance + (1.0 - SLOW_EMA_DECAY) * jnp.minimum(
    deviation**2, MAX
  )
  scale = jnp.maximum(jnp.abs(slow), TINY)
  # Exactly zero on the first step, however the two running means round.
  trend = jnp.where(first, 0.0, (fast - slow) / scale)
  noise = jnp.sqrt(variance) / scale
  state = feature_state._replace(loss=fast, slow_loss=slow, loss_variance=variance)
  return jnp.broadcast_to(trend, shape), jnp.broadcast_to(noise, shape), state


def compute_features(
  statistics: jax.Array,
  feature_state: FeatureState,
  count: jax.Array,
  previous_learning_rate: jax.Array,
  reference_learning_rate: jax.Array,
  value: jax.Array | None,
  total_steps: int | jax.Array | None = None,
  num_features: int = NUM_FEATURES,
) -> tuple[jax.Array, FeatureState]:
  """Builds the controller's inputs from the statistics of each group.

  Args:
    statistics: array ``(G, NUM_STATISTICS)``, the sums of each group.
    feature_state: the running statistics.
    count: the number of steps taken so far (0 on the first step).
    previous_learning_rate: array ``(G,)``, the rates applied at the last step
      (the rates the controller chose are these over
      ``exp(feature_state.learning_rate_cut)``).
    reference_learning_rate: array ``(G,)``, the rates the controller works
      around at this step (the starting rate, moved home, or a schedule's).
    value: the loss, or ``None`` (then the loss features are zero).
    total_steps: the run's length, or ``None`` (then ``progress`` is zero).
    num_features: how many features to build, the first of
      ``FEATURE_NAMES`` (the number the controller reads).

  Returns:
    A tuple ``(features, new_feature_state)`` with ``features`` of shape
    ``(G, num_features)``, in the order of ``FEATURE_NAMES``.
  """
  first = count == 0
  # The rate the controller chose, not the one the safeguard let through: a
  # back-off's cut, read as the controller's own, made the shipped controller
  # cut on after one and end 40 to 66 times below the cap
  # (benchmarks/results/safeguard_0.13.0/).
  log_learning_rate_ratio = (
    jnp.log(previous_learning_rate)
    - feature_state.learning_rate_cut
    - jnp.log(reference_learning_rate)
  )
  # Exactly zero on the first step, however the starting rate rounds on its
  # way through the learning-rate head.
  log_learning_rate_ratio = jnp.where(first, 0.0, log_learning_rate_ratio)
  grad_sq, mu_sq, grad_dot_mu = (statistics[:, i] for i in range(NUM_STATISTICS))
  log_grad_norm = 0.5 * jnp.log(jnp.clip(grad_sq, TINY, MAX))
  previous_slow, running_slow = running_mean(
    log_grad_norm, feature_state.slow_log_grad_norm, first, SLOW_EMA_DECAY
  )
  grad_trend = log_grad_norm - previous_slow
  # A zero momentum buffer (step 0) gives 0 / tiny = 0.
  cos = grad_dot_mu / jnp.maximum(jnp.sqrt(grad_sq) * jnp.sqrt(mu_sq), TINY)
  cos = jnp.nan_to_num(cos)
  _, running_cos = running_mean(cos, feature_state.cos, first)
  shape = grad_trend.shape
  loss_trend, loss_noise, feature_state = _loss_features(
    value, feature_state, first, shape
  )
  time = jnp.broadcast_to(jnp.log1p(count.astype(jnp.float32)) / 10.0, shape)
  columns = [
    grad_trend,
    running_cos,
    loss_trend,
    loss_noise,
    log_learning_rate_ratio,
    time,
    jnp.broadcast_to(progress(count, total_steps), shape),
  ]
  if num_features > BASE_NUM_FEATURES:
    columns.append(jnp.where(first, 0.0, feature_state.update_ratio))
  features = jnp.stack(columns, axis=-1)
  new_state = feature_state._replace(slow_log_grad_norm=running_slow, cos=running_cos)
  return _finite_clip(features), new_state


def record_cut(
  feature_state: FeatureState, chosen: jax.Array, applied: jax.Array
) -> FeatureState:
  """Records how far the safeguard cut the rate the controller chose.

  Args:
    feature_state: the running statistics.
    chosen: array ``(G,)``, the rates the controller chose (within the
      bounds) at this step.
    applied: array ``(G,)``, the rates applied: ``chosen`` under the
      safeguard's cap.

  Returns:
    ``feature_state`` with ``learning_rate_cut``, ``log(applied / chosen)``
    (at most 0).
  """
  # Exactly 0 where the cap let the chosen rate through, however the logs
  # round.
  cut = jnp.where(
    applied < chosen,
    jnp.log(jnp.maximum(applied, TINY)) - jnp.log(jnp.maximum(chosen, TINY)),
    0.0,
  )
  return feature_state._replace(learning_rate_cut=cut)


def record_update(
  feature_state: FeatureState, count: jax.Array, sums: jax.Array
) -> FeatureState:
  """Folds the step just taken into the running mean of ``log_update_ratio``.

  Args:
    feature_state: the running statistics.
    count: the number of steps taken before this one (0 on the first).
    sums: array ``(G, NUM_STATISTICS)``, ``_statistics.group_statistics`` of
      the step ``Δθ`` and the weights ``θ`` it was applied to: per group
      ``[Σ Δθ², Σ θ², Σ Δθ·θ]``.

  Returns:
    ``feature_state`` with ``update_ratio`` updated: on the first step the
    step's own reading, then a running mean (``EMA_DECAY``) of the readings.
  """
  step_sq, weight_sq = (jnp.clip(sums[:, i], TINY, MAX) for i in range(2))
  ratio = 0.5 * (jnp.log10(step_sq) - jnp.log10(weight_sq)) - _UPDATE_RATIO_CENTER
  _, running = running_mean(ratio, feature_state.update_ratio, count == 0)
  return feature_state._replace(update_ratio=_finite_clip(running))
