"""The safeguard: GARO backs off when the loss or the gradients blow up.

A controller that raises the learning rate or swings the momentum can turn a
problem on which SGD at the starting rate is stable (large curvature,
regression targets that are not standardised, badly scaled inputs) into a
diverging one. The safeguard watches for that, as the guard of Prémont-Schwarz
et al. (2022) falls back to a hand-designed step when the learned one does
worse, and works like a backtracking line search:

- **Blow-up.** The running mean of the loss (when ``value`` is given) rises
  above ``LOSS_FACTOR`` times its lowest value, and by more than ``NOISE_Z``
  standard deviations of the minibatch losses, or the running mean of the
  global log gradient norm rises above its lowest by ``log(GRAD_NORM_FACTOR)``,
  or one step's gradient norm jumps to ``GRAD_JUMP_FACTOR`` times that running
  mean (a step past the edge of stability on a steep valley, Rosenbrock's,
  blows up within three steps: the running mean would see it too late); and
  the gradient turns against the last step (``Σg·m < 0``), as the
  stiffest direction does when a step overshoots. Rises below ``RELEVANT``
  times the first loss (or gradient norm) are noise near a minimum, unless the
  norm rises two steps in a row (``GRAD_RISE_FACTOR``): a norm that grows
  several times a step from near zero (a rate crossing the edge of stability
  late in a run) leaves its running mean orders of magnitude behind.
- **Overshoot.** A step past the edge of stability turns the gradient against
  itself and makes it larger (along a direction of curvature λ, a step of
  rate η multiplies the gradient's component by ``1 - ηλ``): when the
  running mean of the gradient's reversal along the last step's direction
  outgrows that of the gradient along it before the step, with their cosine
  below ``-REVERSAL_COSINE`` on average, that is a blow-up too, caught a few
  steps in, while the loss is still near where it was (a minibatch's noise
  is nearly orthogonal to the step, and its running means stay apart). Off
  for AdamW's step (``jump_test``).
- **Spike.** A jump of one step's gradient norm that no other test sees,
  after a step whose norm did not jump, is a minibatch's spike (a hard
  example near zero loss) or the first step of a sudden blow-up: the step is
  taken without momentum and with the gradient scaled down to the running
  mean's norm (as adaptive gradient clipping does), and the cap is left as it
  was. A blow-up jumps again at the next step, after a step that was itself a
  jump, and backs off then; after a spike the norm is back near its running
  mean. Counted as back-offs (up to 0.6.0), spikes cut the rate on every hard
  batch: near zero loss on small classification problems the cap fell by up
  to 100 times each time, to zero.
- **Noise.** With the loss given, a blow-up that the last step cannot have
  caused is the minibatches' noise: the gradient along the last step (heavy
  ball's ``-lr·m``), ``lr·|Σg·m|``, is of the order of the loss when a step
  overshoots, but tiny when the rate is and a batch is hard. Below ``CAUSE``
  times the loss's rise, a jump is a spike (clipped, below) however often it
  comes, and nothing backs off: near zero loss, two hard batches in a row
  backed off again and again, and took the rate to 1e-26 (``wine_mlp`` from
  a rate of 1). Off for AdamW's step (``jump_test``).
- **Back-off.** The step takes back the last one (the params return to where
  they were before it; the gradient at the point that blew up is not used)
  and restarts without momentum, and every group's learning rate is capped
  at a fraction of the rate applied before: ``BACKOFF``, or less the faster
  the blow-up grew (down to ``MIN_BACKOFF``). The lowest values are reset to
  the current ones, so a further back-off needs a further rise. Taking the
  step back is what a line search does, and what rescues a start far past
  stability: on raw regression targets from a rate of 1 the first step throws
  the loss up 30,000-fold, and capped steps from there overflow; taken back,
  the run ends within 2x of where a start from 0.01 does
  (``tests/test_safeguard.py::test_start_far_past_stability_is_taken_back``).
- **Recovery.** The cap lifts as a line search's trial step grows again: after
  the k-th back-off it doubles every ``k * RECOVERY_STEPS`` steps, up to
  ``RECOVER_TO`` times the lowest rate that blew up, never beyond: a problem
  that stays stiff is not blown up again by the same rate.

The sums come from the one statistics pass: the safeguard reads nothing more,
and taking a step back needs no buffer of its own (the update rule recomputes
the last step from its state: ``_transform``).
A run that never blows up is never capped, and the first step, which cannot
see a rise, is always plain SGD. The thresholds were set on the stiff problems
of ``benchmarks/tasks/stiff.py`` and the quiet ones of
``benchmarks/tasks/validation.py`` (``python -m benchmarks.stiff``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _features

# The cap before any back-off: finite, so that a state stays finite.
NO_CAP = float(jnp.finfo(jnp.float32).max)
# Decay of the running mean of the global gradient norm, the same as the
# features' running means (the loss's is theirs): a one-step spike to k times
# the mean moves it by a tenth of k.
DECAY = _features.EMA_DECAY
# A rise of the loss's running mean to LOSS_FACTOR times its lowest value
# (its lowest plus LOSS_FACTOR - 1 times its magnitude, for negative losses).
LOSS_FACTOR = 2.0
# A rise of the running mean of log‖g‖ above its lowest by log(GRAD_NORM_FACTOR).
GRAD_NORM_FACTOR = 10.0
# One step's gradient norm at GRAD_JUMP_FACTOR times the running mean of the
# log norm (a sudden blow-up, which the running means see too late).
GRAD_JUMP_FACTOR = 8.0
# Below RELEVANT times the first norm (see RELEVANT), a jump counts only if the
# last step's norm was GRAD_RISE_FACTOR times the running mean already.
GRAD_RISE_FACTOR = 2.0
# A rise of the loss's running mean by less than NOISE_Z standard deviations
# of the minibatch loss is not a blow-up; the spread is a slower running mean
# of the squared deviations, over steps that raised no suspicion.
NOISE_Z = 3.0
VARIANCE_DECAY = 0.99
# Rises that stay below RELEVANT times the first step's loss, or gradient norms
# below RELEVANT times the first one, are noise near a minimum, not a blow-up.
RELEVANT = 0.01
# The cap after a back-off, as a fraction of the learning rate applied before:
# at most BACKOFF, less the faster the loss or gradients grew (see safeguard),
# but not below MIN_BACKOFF.
BACKOFF = 0.5
MIN_BACKOFF = 0.01
# After the k-th back-off the cap doubles every k * RECOVERY_STEPS steps: the
# stiffness that blew up may pass (it often comes from the start, or from one
# stretch of a curved valley), and a problem that stays stiff blows up again
# ever more rarely. None keeps the cap for the rest of the run.
RECOVERY_STEPS: float | None = 100.0
# The cap lifts to at most RECOVER_TO times the lowest rate that blew up.
RECOVER_TO = 0.7
# A step past the edge of stability turns the gradient against the last step
# and makes it larger: along a direction of curvature λ, gradient descent at
# rate η multiplies the gradient's component by 1 - ηλ, below -1 once ηλ > 2,
# and heavy ball's diverging mode does the same. The safeguard compares the
# gradient along the last step's direction after it with what it was before
# (see safeguard), both as running means of decay REVERSAL_DECAY: a running
# mean, not one step's ratio, because near a minimum one minibatch's gradient
# can be many times the last one's and point anywhere.
REVERSAL_DECAY = 0.5
# A rise of the loss counts only if the gradient along the last step,
# lr·|Σg·m|, is at least CAUSE times the rise (heavy ball's step; see
# safeguard): a rise that a step at a tiny rate cannot have caused is noise.
CAUSE = 0.1
# The running mean of the cosine between the gradient and the last step's
# direction must also be below -REVERSAL_COSINE: the directions that blow up
# dominate both, where a minibatch's noise is nearly orthogonal to the step.
REVERSAL_COSINE = 0.5


class SafeguardState(NamedTuple):
  """What the safeguard remembers between steps."""

  max_learning_rate: jax.Array  # shape=(G,), float32: cap; NO_CAP until a back-off
  # shape=(G,), float32: the most the cap recovers to; NO_CAP until a back-off
  max_recovered_learning_rate: jax.Array
  log_grad_norm: jax.Array  # shape=(), float32: the last step's global log‖g‖
  running_log_grad_norm: jax.Array  # shape=(), float32: its running mean
  lowest_log_grad_norm: jax.Array  # shape=(), float32: lowest running mean
  loss: jax.Array  # shape=(), float32: the last step's loss
  loss_variance: jax.Array  # shape=(), float32: running mean of its spread²
  lowest_loss: jax.Array  # shape=(), float32: its lowest value
  first_log_grad_norm: jax.Array  # shape=(), float32: log‖g‖ at the first step
  first_loss: jax.Array  # shape=(), float32: the loss at the first step
  backoffs: jax.Array  # shape=(), int32: number of back-offs so far
  # shape=(G, 2), float32: the last step's Σg² and Σg·m (of the momentum before it)
  last_sums: jax.Array
  # shape=(3,), float32: running means of -Σg·m, of the gradient along m
  # before the step that m made, and of -cos(g, m) (see safeguard)
  reversal: jax.Array
  spiked: jax.Array  # shape=(), bool: whether the last step was a spike
  # shape=(), bool: whether the last step took the one before it back (heavy
  # ball's buffer then still holds that step's direction: _transform)
  reverted: jax.Array
  spikes: jax.Array  # shape=(), int32: number of spikes so far


def init_safeguard_state(num_groups: int) -> SafeguardState:
  zero = jnp.zeros((), jnp.float32)
  return SafeguardState(
    max_learning_rate=jnp.full((num_groups,), NO_CAP, jnp.float32),
    max_recovered_learning_rate=jnp.full((num_groups,), NO_CAP, jnp.float32),
    log_grad_norm=zero,
    running_log_grad_norm=zero,
    lowest_log_grad_norm=zero,
    loss=zero,
    loss_variance=zero,
    lowest_loss=zero,
    first_log_grad_norm=zero,
    first_loss=zero,
    backoffs=jnp.zeros((), jnp.int32),
    last_sums=jnp.zeros((num_groups, 2), jnp.float32),
    reversal=jnp.zeros((3,), jnp.float32),
    spiked=jnp.zeros((), jnp.bool_),
    reverted=jnp.zeros((), jnp.bool_),
    spikes=jnp.zeros((), jnp.int32),
  )


def _lowest(first, lowest, running):
  return jnp.where(first, running, jnp.minimum(lowest, running))


def _recovered(cap: jax.Array, backoffs: jax.Array) -> jax.Array:
  """The cap one step later: doubled every ``backoffs * RECOVERY_STEPS``
  steps, until it is lifted."""
  if RECOVERY_STEPS is None:
    return cap
  rate = float(np.log(2.0)) / (
    RECOVERY_STEPS * jnp.maximum(backoffs, 1).astype(jnp.float32)
  )
  grown = cap * jnp.exp(rate)
  return jnp.where(grown < NO_CAP / 2, grown, NO_CAP)


def safeguard(
  state: SafeguardState,
  count: jax.Array,
  statistics: jax.Array,
  loss: jax.Array | None,
  loss_means: tuple[jax.Array, jax.Array] | None,
  previous_learning_rate: jax.Array,
  previous_momentum: jax.Array,
  jump_test: bool = True,
) -> tuple[jax.Array, SafeguardState]:
  """Whether this step backs off, and the safeguard's next state.

  Args:
    state: the safeguard's state.
    count: steps taken so far (0 on the first step, which never backs off).
    statistics: ``(G, 3)``, the groups' sums (``_statistics``).
    loss: this step's loss, or ``None`` when no loss is given.
    loss_means: the running mean of the loss before and after this step
      (``_features.FeatureState.loss``), or ``None`` with no loss.
    previous_learning_rate: ``(G,)``, the learning rates applied at the last
      step.
    previous_momentum: ``(G,)``, the momenta applied at the last step.
    jump_test: whether one step's jump of the gradient norm
      (``GRAD_JUMP_FACTOR``; a spike, or a blow-up when the last step jumped
      too) and growing reversals (``REVERSAL_DECAY``) count. Off for AdamW's
      update, whose step does not grow with the
      gradient and is not along its momentum: there a jump says little about
      the step before it, and the spikes of a minibatch gradient near zero
      loss would cut the learning rate again and again.

  Returns:
    ``(backoff, restart, clip, new_state)``: ``backoff`` a boolean scalar,
    whether this step backs off (and takes back the last step); ``restart``,
    whether it backs off or is a spike (taken without momentum); ``clip`` the
    factor (1, or less on a spike) to scale this step's gradient by; the new
    state's ``max_learning_rate`` is the cap to apply at this step.
  """
  first = count == 0
  grad_sq = jnp.clip(jnp.sum(statistics[:, 0]), _features.TINY, _features.MAX)
  log_grad_norm = 0.5 * jnp.log(grad_sq)
  _, running_grad = _features.running_mean(
    log_grad_norm, state.running_log_grad_norm, first, DECAY
  )
  lowest_grad = _lowest(first, state.lowest_log_grad_norm, running_grad)
  first_grad = jnp.where(first, log_grad_norm, state.first_log_grad_norm)
  relevant = first_grad + jnp.log(RELEVANT)
  # A jump matters when the running mean is above RELEVANT times the first
  # norm, or when this step's norm is and the last step's was already
  # GRAD_RISE_FACTOR times the running mean it moved: a norm growing several
  # times a step from near zero leaves its running mean orders of magnitude
  # behind, where one minibatch's spike near a minimum does not rise two
  # steps in a row.
  rising = (log_grad_norm > relevant) & (
    state.log_grad_norm - state.running_log_grad_norm > jnp.log(GRAD_RISE_FACTOR)
  )
  jumped = (
    (log_grad_norm - state.running_log_grad_norm > jnp.log(GRAD_JUMP_FACTOR))
    & ((running_grad > relevant) | rising)
    & jump_test
  )
  # Growing reversals. The last step was -lr·m along the momentum buffer m:
  # the gradient along m is Σg·m after that step and, as m = μ·m' + g' (the
  # last step's momentum μ and gradient g'), μ·Σg'·m' + Σg'² before it
  # (weight decay's share left out). When the running mean of its reversal
  # exceeds that of what it was, the last steps were past the edge of
  # stability (ηλ > 2 along the directions that dominate m). Two minibatches'
  # gradients near a minimum are nearly orthogonal: their running means stay
  # apart.
  along_before = jnp.sum(
    previous_momentum * state.last_sums[:, 1] + state.last_sums[:, 0]
  )
  # The running means start at the second step, the first with a last step.
  decay = jnp.where(count <= 1, 0.0, REVERSAL_DECAY)
  against = -jnp.sum(statistics[:, 2])
  mu_sq = jnp.sum(statistics[:, 1])
  norms = jnp.sqrt(grad_sq) * jnp.sqrt(jnp.clip(mu_sq, 0.0, _features.MAX))
  cosine = jnp.where(norms > 0, against / jnp.maximum(norms, _features.TINY), 0.0)
  reversal = decay * state.reversal + (1.0 - decay) * jnp.stack(
    [against, along_before, cosine]
  )
  reversed_ = (
    (reversal[0] > reversal[1])
    & (reversal[1] > 0)
    & (reversal[2] > REVERSAL_COSINE)
    & (log_grad_norm > relevant)
    & ~first
  )
  blew_up = (running_grad - lowest_grad > jnp.log(GRAD_NORM_FACTOR)) & (
    running_grad > relevant
  )
  if jump_test:
    blew_up = blew_up | reversed_
  # Whether the last step's norm jumped too (GRAD_JUMP_FACTOR times the
  # running mean before it, which is this step's running mean less DECAY's
  # share of it): a blow-up going on, not a spike (see below).
  continuing = state.log_grad_norm - state.running_log_grad_norm > DECAY * jnp.log(
    GRAD_JUMP_FACTOR
  )
  # How far past a stable step size the last one was: on a quadratic, the
  # gradient along its stiffest direction grows by |ηλ - 1| per step of
  # gradient descent at rate η (the loss by its square), and
  # η / (1 + |ηλ - 1|) ≤ 1 / λ is stable. After a spike, from the running
  # mean's norm, the norm of the spike's clipped step.
  growth = jnp.exp(
    log_grad_norm
    - jnp.where(state.spiked, state.running_log_grad_norm, state.log_grad_norm)
  )
  loss_state = (state.loss, state.loss_variance)
  noise = jnp.zeros((), jnp.bool_)  # see below (with the loss given)
  lowest_loss, first_loss = state.lowest_loss, state.first_loss
  if loss is not None:
    loss = jnp.asarray(loss, jnp.float32)
    previous, running_loss = loss_means
    previous = jnp.where(first, loss, previous)
    first_loss = jnp.where(first, loss, first_loss)
    lowest_loss = _lowest(first, lowest_loss, running_loss)
    # A rise within NOISE_Z spreads of the minibatch losses seen before this
    # step is noise, however large against the loss itself (small batches
    # near a minimum).
    scale = jnp.maximum(jnp.abs(lowest_loss), RELEVANT * jnp.abs(first_loss))
    rise = jnp.maximum(
      (LOSS_FACTOR - 1.0) * scale, NOISE_Z * jnp.sqrt(state.loss_variance)
    )
    suspect = running_loss > lowest_loss + 0.5 * (LOSS_FACTOR - 1.0) * scale
    blew_up = blew_up | (running_loss > lowest_loss + rise)
    if jump_test:
      # A rise the last step cannot have caused is the minibatches' noise (a
      # hard batch, or two in a row): the last step was -lr·m, and the
      # gradient along it, lr·|Σg·m|, is of the order of the loss when a step
      # overshoots (several times the loss on a quadratic), and at most
      # lr·‖g‖·‖m‖, tiny at a tiny rate, when a batch is hard.
      along = jnp.abs(jnp.sum(previous_learning_rate * statistics[:, 2]))
      noise = along < CAUSE * jnp.maximum(loss, running_loss) - CAUSE * lowest_loss
      noise = noise & ~first
      blew_up = blew_up & ~noise
    change = (loss - state.loss) / jnp.maximum(jnp.abs(state.loss), _features.TINY)
    growth = jnp.maximum(growth, jnp.sqrt(jnp.maximum(1.0 + change, 0.0)))
    # The spread is that of steps that raise no suspicion: a blow-up in the
    # making does not widen the band it is tested against.
    variance = jnp.where(
      suspect,
      state.loss_variance,
      VARIANCE_DECAY * state.loss_variance
      + (1.0 - VARIANCE_DECAY) * jnp.square(loss - previous),
    )
    loss_state = (loss, jnp.minimum(variance, _features.MAX))
  # A jump no other test sees is a spike (see the module's docstring): it is
  # clipped, not backed off from, unless the last step jumped too.
  spike = jumped & ~blew_up & (~continuing | noise) & ~first
  blew_up = blew_up | (jumped & ~spike)
  # Past a stable step the gradient turns against the last step's direction
  # (the stiffest direction overshoots).
  backoff = blew_up & ~first & (jnp.sum(statistics[:, 2]) < 0)
  # The spike's gradient scaled to the norm of the running mean before it.
  clip = jnp.where(
    spike, jnp.exp(jnp.minimum(state.running_log_grad_norm - log_grad_norm, 0.0)), 1.0
  )
  if loss is not None:
    # The next back-off needs another rise by as much from here.
    lowest_loss = jnp.where(backoff, jnp.maximum(running_loss, loss), lowest_loss)
  cut = jnp.clip(1.0 / (1.0 + growth), MIN_BACKOFF, BACKOFF)
  new_state = SafeguardState(
    max_learning_rate=jnp.where(
      backoff,
      jnp.minimum(state.max_learning_rate, cut * previous_learning_rate),
      jnp.minimum(
        _recovered(state.max_learning_rate, state.backoffs),
        state.max_recovered_learning_rate,
      ),
    ),
    max_recovered_learning_rate=jnp.where(
      backoff,
      jnp.minimum(
        state.max_recovered_learning_rate, RECOVER_TO * previous_learning_rate
      ),
      state.max_recovered_learning_rate,
    ),
    log_grad_norm=log_grad_norm,
    running_log_grad_norm=running_grad,
    lowest_log_grad_norm=jnp.where(
      backoff, jnp.maximum(running_grad, log_grad_norm), lowest_grad
    ),
    loss=loss_state[0],
    loss_variance=loss_state[1],
    lowest_loss=lowest_loss,
    first_log_grad_norm=first_grad,
    first_loss=first_loss,
    backoffs=state.backoffs + backoff.astype(jnp.int32),
    # Those of the step taken: a spike's gradient is clipped.
    last_sums=statistics[:, jnp.array([0, 2])].astype(jnp.float32)
    * jnp.stack([jnp.square(clip), clip]),
    # The next back-off needs reversals after this one.
    reversal=jnp.where(backoff, 0.0, jnp.clip(reversal, -_features.MAX, _features.MAX)),
    spiked=spike,
    spikes=state.spikes + spike.astype(jnp.int32),
    reverted=backoff,
  )
  return backoff, backoff | spike, clip, new_state


def apply(
  learning_rate: jax.Array,
  momentum: jax.Array,
  restart: jax.Array,
  state: SafeguardState,
) -> tuple[jax.Array, jax.Array]:
  """The learning rate under the cap, and no momentum on a back-off or a
  spike's step."""
  return (
    jnp.minimum(learning_rate, state.max_learning_rate),
    jnp.where(restart, 0.0, momentum),
  )
