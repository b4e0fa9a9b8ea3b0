"""GARO as optax gradient transformations: arguments in, a short pipeline out.

Each step is statistics (``_statistics``) → features (``_features``) →
controller (``_controller``) → bounds (``_hyperparams``, ``_safeguard``) → the
update rule: SGD with momentum for :func:`garo` (:func:`_momentum_step`),
AdamW for :func:`garo_adamw` (:func:`_adamw_step`). The pipeline is
:func:`transformation`; a :class:`Rule` is what sets the two apart. Features,
controller, bounds and safeguard are one jitted function of arrays
(:func:`_decide`), shared by every transformation with the same static options.
"""

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax import (
  _checks,
  _controller,
  _features,
  _groups,
  _hyperparams,
  _safeguard,
  _statistics,
  _xla,
)
from garo_optax._state import GaroAdamWState, GaroState

# Skipped steps in a row after which a run counts as dead (``diverged``).
DEAD_AFTER = 10


def garo(
  learning_rate: optax.ScalarOrSchedule | Mapping[str, Any] = 0.01,
  momentum: optax.ScalarOrSchedule | Mapping[str, Any] = 0.0,
  weight_decay: optax.ScalarOrSchedule | Mapping[str, Any] = 0.0,
  *,
  controller: _controller.ControllerParams | str | os.PathLike | None = None,
  hidden_size: int | None = None,
  seed: int | None = None,
  granularity: _groups.Granularity = "global",
  total_steps: int | None = None,
  max_learning_rate: float | None = None,
  max_effective_learning_rate: float | None = None,
  home_learning_rate: float | None = None,
  home_steps: float | None = None,
  mu_dtype: Any | None = None,
  callback: Callable[[jax.Array, dict[str, Any]], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""GARO: SGD whose hyperparameters come from a recurrent controller.

  Each step, GARO measures the gradients (one pass over all leaves), turns the
  measurements into scale-invariant features :math:`x_t`, advances a GRU and
  reads the learning rate, momentum and weight decay off its hidden state:

  .. math::

    h_t &= \mathrm{GRU}(x_t, h_{t-1}), \quad h_{-1} = 0 \\
    \hat\eta_t &= \mathrm{softplus}(W_\eta h_t + b_\eta), \quad
    \hat\mu_t = \tanh(W_\mu h_t + b_\mu), \quad
    \hat\lambda_t = \mathrm{softplus}(W_\lambda h_t + b_\lambda) \\
    o_t &= o_{t-1} + \mathrm{clip}\big(0.1\,(\hat o_t - o_{t-1}),
    \pm o_{\max}\big), \quad
    \hat o_t = \big(\log(\hat\eta_t / \eta^0_t),\ \hat\mu_t - \mu^0_t,\
    \log(\hat\lambda_t / \lambda^0_t)\big) \\
    \mu_t &= \mathrm{clip}(\mu^0_t + o_{t,\mu}, 0, 1), \quad
    \frac{\eta_t}{1 - \mu_t} = \frac{\eta^0_t}{1 - \mu^0_t}\, e^{o_{t,\eta}},
    \quad \lambda_t = \lambda^0_t\, e^{o_{t,\lambda}} \\
    m_t &= \mu_t m_{t-1} + g_t + \lambda_t \theta_t, \quad
    u_t = -\eta_t m_t

  (``torch.optim.SGD`` semantics). The biases :math:`b` are set from
  ``learning_rate``, ``momentum`` and ``weight_decay`` (:math:`\eta^0_t`,
  :math:`\mu^0_t`, :math:`\lambda^0_t`: the starting values, or a schedule's
  at step :math:`t`), and the applied values follow the heads' through a
  running mean :math:`o_t` of their offsets from those (log ratios for the
  rates, a difference for the momentum) that moves at most
  ``_controller.MAX_OFFSET_STEP`` a step (:math:`o_{\max}`: a factor of 10
  in the learning rate takes 47 steps, momentum from 0 to 0.9 takes 45), so
  they change smoothly, as a schedule does. The learning-rate offset moves
  heavy ball's effective step :math:`\eta_t / (1 - \mu_t)`: raising the
  momentum lowers the learning rate so that the effective step stays where
  it was.
  :math:`x_0 = 0` makes :math:`h_0 = 0` and :math:`o_0 = 0`, so the first
  step is exactly SGD with the given values; from there the controller adapts
  them.

  **Safeguard.** The momentum is never negative, and when the loss (if
  ``value`` is given) or the gradient norm blows up while the gradient turns
  against the last step, GARO backs off: that step takes the last one back
  (as a line search does: the params return to where they were before it),
  the momentum restarts, and the learning rate is capped at a fraction of the
  rate applied before (half, or less the faster the blow-up grew). With the
  loss given, a rise that the last step cannot have caused (a hard batch at
  a small rate) is noise, not a blow-up. The cap lifts slowly: after
  the k-th back-off it doubles every ``100 k`` steps, up to 0.7 times the
  lowest rate that blew up, so that a deep cut made early (at the stiff start
  of training) does not slow the rest of the run, and a rate that blew up
  is not tried again. The controller does not read the cap: its features
  hold the rate it chose, so a back-off lowers the rate applied without
  turning the controller's own course down. One step's jump of the gradient
  norm that nothing else confirms (a hard batch near zero loss) is a spike,
  not a blow-up: its step is taken without momentum and with the gradient
  scaled to the usual norm, and the rate is left alone; a jump again at the
  next step backs off. A run that does not blow up is never capped;
  ``state.safeguard.backoffs`` counts the back-offs, ``state.safeguard.spikes``
  the spikes.

  Non-finite gradients (or a non-finite ``value``) skip the step: the updates
  are zero, the state is held and ``skipped`` is incremented. So do gradients
  whose squared norm overflows float32 (``‖g‖ > 1.8e19``). After
  ``DEAD_AFTER`` skipped steps in a row (non-finite params, or a loss that
  stays non-finite, make every step skip), ``diverged`` is set in the state
  (``optax.tree.get(state, "diverged")``): the run is dead, so restore a
  checkpoint and restart with a lower ``learning_rate`` or a
  ``max_learning_rate``. An applied step clears it.

  Args:
    learning_rate: learning rate at the first step, or a schedule (a function
      of the step count, as for :func:`optax.sgd`): the rate the controller
      works around at each step, its value at step 0 the first step's.
    momentum: momentum at the first step, in ``[0, 1)``, or a schedule.
    weight_decay: weight decay at the first step (coupled, as in SGD), or a
      schedule. Each of these three may also be a ``{group name: value}``
      mapping when ``granularity`` is not ``"global"`` (e.g. no weight decay
      for biases).
    controller: the controller's weights: ``None`` (the default) or
      ``"pretrained"`` for the meta-trained one shipped in
      :mod:`garo_optax.pretrained` (which also sets
      ``max_effective_learning_rate``, ``home_learning_rate`` and
      ``home_steps`` to its values, unless given), ``"init"`` for a seeded,
      untrained controller that stays near SGD, the path (``str`` or
      ``os.PathLike``) of a file written by
      :func:`~garo_optax.save_controller`, read with
      :func:`~garo_optax.load_controller`, or a
      :class:`~garo_optax.ControllerParams`.
    hidden_size: GRU width of the seeded controller (``"init"``; default 16).
    seed: seed of the seeded controller (``"init"``; default 0). These two
      default to ``None`` so that ``optax.inject_hyperparams`` leaves them
      static.
    granularity: ``"global"`` (one set of hyperparameters), ``"per_leaf"``, or
      group labels (a pytree of strings shaped like the params, or a function
      of the params returning one, as in :func:`optax.multi_transform`); every
      group is driven by the same controller weights.
    total_steps: the number of steps the run will take, if known. The
      controller then sees the run's progress, ``count / total_steps`` (held
      at 1 after the last step), and can anneal towards the end as a decay
      schedule's ``decay_steps`` does; without it (``None``, the default) it
      adapts from what it measures alone.
    max_learning_rate: if set, the controller never raises the learning rate
      above ``max(max_learning_rate, r)``, where ``r`` is the rate it works
      around (the one you give, moving to the home rate): a starting rate
      above the bound is applied as given, not cut.
    max_effective_learning_rate: if set, the effective step size of heavy-ball
      momentum, ``learning_rate / (1 - momentum)``, never exceeds it (the
      learning rate is lowered to meet the bound).
    home_learning_rate: if set (with ``home_steps``), the learning rate the
      controller works around: the learning-rate head's bias moves from that
      of ``learning_rate`` to that of ``home_learning_rate`` as
      :math:`1 - e^{-t / \text{home\_steps}}`, so ``learning_rate`` is where
      GARO starts (step 0 is still SGD at it) and matters less and less after
      ``home_steps`` steps. The pretrained controller (the default) uses
      ``pretrained.HOME_LEARNING_RATE`` and ``pretrained.HOME_STEPS`` unless
      given; ``home_steps=0`` turns this off.
    home_steps: the time constant of that move, in steps.
    mu_dtype: dtype of the momentum buffers; ``None`` uses each param's dtype.
    callback: optional host function called as ``callback(step, info)`` from
      inside ``jit`` on every update, for logging: ``info`` holds the applied
      ``learning_rate``, ``momentum`` and ``weight_decay``, and ``skipped``,
      ``backoffs``, ``spikes`` and ``diverged`` (see above). Off (and free)
      by default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; its ``update`` requires
    ``params`` and accepts the loss as ``value``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import garo_optax
    >>> params = {"w": jnp.ones(3)}
    >>> tx = garo_optax.garo(learning_rate=0.1)
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([1.0, 2.0, 3.0])}
    >>> updates, state = tx.update(grads, state, params, value=jnp.array(1.0))
    >>> [round(float(u), 6) for u in updates["w"]]
    [-0.1, -0.2, -0.3]
    >>> round(float(optax.tree.get(state, "learning_rate")), 6)
    0.1

  References:
    Cho et al., `Learning Phrase Representations using RNN Encoder-Decoder for
    Statistical Machine Translation <https://arxiv.org/abs/1406.1078>`_, 2014.

    Metz et al., `Practical tradeoffs between memory, compute, and performance
    in learned optimizers <https://arxiv.org/abs/2203.11860>`_, 2022.
  """
  starting = {
    "learning_rate": learning_rate,
    "momentum": momentum,
    "weight_decay": weight_decay,
  }
  _hyperparams.check_bounds(
    max_learning_rate=max_learning_rate,
    max_effective_learning_rate=max_effective_learning_rate,
  )
  return transformation(
    SGD_RULE,
    starting,
    controller=controller,
    hidden_size=hidden_size,
    seed=seed,
    granularity=granularity,
    total_steps=total_steps,
    max_learning_rate=max_learning_rate,
    max_effective_learning_rate=max_effective_learning_rate,
    home_learning_rate=home_learning_rate,
    home_steps=home_steps,
    mu_dtype=mu_dtype,
    callback=callback,
  )


def garo_adamw(
  learning_rate: optax.ScalarOrSchedule | Mapping[str, Any] = 1e-3,
  b1: optax.ScalarOrSchedule | Mapping[str, Any] = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: optax.ScalarOrSchedule | Mapping[str, Any] = 1e-4,
  *,
  controller: _controller.ControllerParams | str | os.PathLike | None = None,
  hidden_size: int | None = None,
  seed: int | None = None,
  granularity: _groups.Granularity = "global",
  total_steps: int | None = None,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  max_learning_rate: float | None = None,
  home_learning_rate: float | None = None,
  home_steps: float | None = None,
  mu_dtype: Any | None = None,
  callback: Callable[[jax.Array, dict[str, Any]], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""GARO over AdamW: AdamW whose learning rate, ``b1`` and weight decay
  come from a recurrent controller.

  The controller works as :func:`garo`'s does (the same features, GRU,
  running-mean outputs and safeguard), with weights of its own, meta-trained
  on AdamW's update; it drives that update instead of heavy ball's:

  .. math::

    m_t &= \beta_{1,t}\, m_{t-1} + (1 - \beta_{1,t})\, g_t, \quad
    w_t = \beta_{1,t}\, w_{t-1} + (1 - \beta_{1,t}), \quad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
    u_t &= -\eta_t \left(\frac{m_t / w_t}{\sqrt{v_t / (1 - \beta_2^t)}
    + \epsilon} + \lambda_t \theta_t\right)

  where :math:`\eta_t`, :math:`\beta_{1,t}` and :math:`\lambda_t` come from
  the controller's heads (``softplus``, ``tanh``, ``softplus``), each
  following its head through a running mean of its offset from the starting
  value, as in :func:`garo`. The learning-rate offset moves the learning
  rate itself: Adam's first moment is a running mean, and its step does not
  grow with ``b1``. :math:`w_t` is the weight of the gradients in
  :math:`m_t`, which corrects its bias for a ``b1`` that changes (for a
  constant one it is optax's :math:`1 - \beta_1^t`). ``b2`` and ``eps`` stay
  fixed. With a zero hidden state (step 0, or zero head weights) the update
  is :func:`optax.adamw` at the given values.

  The safeguard, the skipping of non-finite steps and ``diverged`` are
  :func:`garo`'s, with one difference: one step's jump of the gradient norm
  is neither a blow-up nor a spike to clip (AdamW's step does not grow with
  the gradient, and near zero loss the norm of a minibatch gradient spikes).
  A back-off takes AdamW's last step back, weight decay included, and keeps
  the moments as they were: those of the point it returns to.

  Args:
    learning_rate: learning rate at the first step, or a schedule (a function
      of the step count): the rate the controller works around.
    b1: decay of the first moment at the first step, in ``[0, 1)``, or a
      schedule.
    b2: decay of the second moment, in ``[0, 1)`` (fixed).
    eps: added to the root of the second moment (fixed).
    weight_decay: decoupled weight decay at the first step (multiplied by the
      learning rate, as in :func:`optax.adamw`), or a schedule. These three
      may also be ``{group name: value}`` mappings when ``granularity`` is not
      ``"global"``.
    controller: the controller's weights: ``None`` (the default) or
      ``"pretrained"`` for the meta-trained one shipped in
      :mod:`garo_optax.pretrained` for this transformation (which also sets
      ``max_learning_rate``, ``home_learning_rate`` and ``home_steps`` to its
      values, unless given), ``"init"`` for a seeded, untrained controller
      that stays near AdamW, the path of a file written by
      :func:`~garo_optax.save_controller` with ``optimizer="garo_adamw"``,
      or a :class:`~garo_optax.ControllerParams`.
    hidden_size: GRU width of the seeded controller (``"init"``; default 16).
    seed: seed of the seeded controller (``"init"``; default 0).
    granularity: ``"global"``, ``"per_leaf"``, or group labels, as for
      :func:`garo`.
    total_steps: the number of steps the run will take, if known, as for
      :func:`garo`: the controller then sees the run's progress and can
      anneal towards the end as a decay schedule's ``decay_steps`` does.
    mask: as for :func:`optax.adamw`: a tree of booleans shaped like the
      params (or a function of the params returning one), ``True`` where
      weight decay applies; ``None`` decays every param.
    max_learning_rate: if set, the controller never raises the learning rate
      above ``max(max_learning_rate, r)``, where ``r`` is the rate it works
      around (the one you give, moving to the home rate): a starting rate
      above the bound is applied as given, not cut.
    home_learning_rate: if set (with ``home_steps``), the learning rate the
      controller works around after ``home_steps`` steps, as for
      :func:`garo`.
    home_steps: the time constant of that move, in steps.
    mu_dtype: dtype of the first moments; ``None`` uses each param's dtype.
      (The second moments are kept in each param's dtype, as in optax.)
    callback: optional host function called as ``callback(step, info)`` from
      inside ``jit`` on every update, as for :func:`garo`; ``info`` holds the
      applied ``learning_rate``, ``b1`` and ``weight_decay``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; its ``update`` requires
    ``params`` and accepts the loss as ``value``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import garo_optax
    >>> params = {"w": jnp.ones(3)}
    >>> tx = garo_optax.garo_adamw(learning_rate=0.1, weight_decay=0.0)
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([1.0, -2.0, 3.0])}
    >>> updates, state = tx.update(grads, state, params, value=jnp.array(1.0))
    >>> [round(float(u), 4) for u in updates["w"]]
    [-0.1, 0.1, -0.1]
    >>> sorted(garo_optax.hyperparams(state))
    ['b1', 'learning_rate', 'weight_decay']

  References:
    Loshchilov and Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.
  """
  for name, x in (("b2", b2), ("eps", eps)):
    if callable(x) or isinstance(x, Mapping):
      raise TypeError(f"{name} must be a number (it stays fixed), got {x!r}.")
    _hyperparams.check_value(name, x)
  _hyperparams.check_bounds(max_learning_rate=max_learning_rate)
  rule = Rule(
    name="garo_adamw",
    state_type=GaroAdamWState,
    coupled=False,
    init_buffers=_adam_buffers,
    step=_adamw_step(b2, eps, mask),
    # AdamW's step does not grow with the gradient (see _safeguard.safeguard).
    jump_test=False,
  )
  return transformation(
    rule,
    {"learning_rate": learning_rate, "b1": b1, "weight_decay": weight_decay},
    controller=controller,
    hidden_size=hidden_size,
    seed=seed,
    granularity=granularity,
    total_steps=total_steps,
    max_learning_rate=max_learning_rate,
    max_effective_learning_rate=None,
    home_learning_rate=home_learning_rate,
    home_steps=home_steps,
    mu_dtype=mu_dtype,
    callback=callback,
  )


def _adam_buffers(params, num_groups, mu_dtype):
  return {
    "mu": optax.tree.zeros_like(params, dtype=mu_dtype),
    "nu": optax.tree.zeros_like(params),
    "mu_weight": jnp.zeros((num_groups,), jnp.float32),
  }


def _decay_mask(mask, params) -> list[bool]:
  """Whether weight decay applies, leaf by leaf (static)."""
  num_leaves = len(jax.tree.leaves(params))
  if mask is None:
    return [True] * num_leaves
  tree = mask(params) if callable(mask) else mask
  try:
    flags = jax.tree.structure(params).flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise ValueError(
      "mask must be a tree of booleans shaped like the params (or a function "
      f"of the params returning one): {e}"
    ) from None
  if not all(isinstance(x, bool) for x in flags):
    raise TypeError(
      "mask's leaves must be Python booleans (True where weight decay applies)."
    )
  return flags


def _adamw_step(b2: float, eps: float, mask):
  """AdamW's step at each group's learning rate, b1 and weight decay."""

  def step(updates, state, params, groups, lr, b1, wd, skip, revert):
    # A back-off (``revert``) takes back the last step and holds the moments
    # as a skipped step does: they are the last step's, from the gradient at
    # the point it returns to.
    hold = skip | revert
    b1 = jnp.where(hold, 1.0, b1)
    decay2, rise2 = jnp.where(hold, 1.0, b2), jnp.where(hold, 0.0, 1.0 - b2)
    mu_weight = b1 * state.mu_weight + (1.0 - b1)
    count = optax.safe_increment(state.count)
    # The reversal's is the last step's (the count goes on: a reverted step
    # counts, and the second moment's correction runs one step ahead of its
    # updates after one, 1% at step 50 with b2 = 0.999).
    nu_correction = 1.0 - b2 ** jnp.where(revert, state.count, count)
    previous_lr, previous_wd = (
      _hyperparams.as_array(state.hyperparams[name], groups)
      for name in ("learning_rate", "weight_decay")
    )
    # θ' = θ - lr' (d + wd' θ) is undone by lr' (d + wd' θ') / (1 - lr' wd').
    per_group = scalars_by_group(
      state.count,
      groups,
      jnp.where(revert, previous_lr, -lr),
      b1,
      jnp.where(revert, previous_wd, wd),
      mu_weight,
      jnp.where(revert, 1.0 / jnp.maximum(1.0 - previous_lr * previous_wd, 1e-6), 1.0),
    )
    decays = jax.tree.unflatten(jax.tree.structure(params), _decay_mask(mask, params))

    def leaf_update(g, m, v, p, group, decays):
      step_size, b1, wd, weight, undecay = per_group[group]
      dtype = jnp.promote_types(p.dtype, jnp.float32)
      # A skipped step holds the moments through their decays (1, and a zero
      # gradient), not by selecting the old buffers: a select on a buffer the
      # step also reads kept XLA:CPU from fusing the update into one loop, and
      # cost 1.7 times the step (benchmarks/results/step_time_cpu.md).
      g = jnp.where(hold, 0.0, g.astype(dtype))
      new_m = b1 * m.astype(dtype) + (1.0 - b1) * g
      new_v = decay2 * v.astype(dtype) + rise2 * g * g
      direction = (new_m / weight) / (
        jnp.sqrt(new_v / nu_correction.astype(dtype)) + eps
      )
      if decays:
        direction = (direction + wd * p.astype(dtype)) * undecay
      # Zero on a skipped step (the step size is), whatever the params are.
      step = jnp.where(skip, 0.0, step_size * direction)
      return step.astype(p.dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

    out = jax.tree.map(
      leaf_update,
      updates,
      state.mu,
      state.nu,
      params,
      leaf_groups_tree(params, groups),
      decays,
    )
    new_updates, mu, nu = unzip(out, params, 3)
    return new_updates, {"mu": mu, "nu": nu, "mu_weight": mu_weight}

  return step


class Rule(NamedTuple):
  """What sets one GARO transformation apart: the update rule the controller
  drives, and its state.

  Attributes:
    name: the transformation's name (in errors, and in controller files).
    state_type: its state, a ``NamedTuple`` with ``GaroState``'s fields and
      the rule's own buffers.
    coupled: whether the learning rate's offset moves heavy ball's effective
      step (``_controller.controller_step``).
    jump_test: whether the safeguard counts one step's jump of the gradient
      norm, and growing reversals of the gradient along the momentum, as a
      blow-up (``_safeguard.safeguard``): the step must be along the
      momentum and grow with the gradient, as heavy ball's does.
    init_buffers: ``(params, num_groups, mu_dtype) -> {field: value}``, the
      rule's buffers at step 0.
    restart_after_revert: whether the step after a back-off starts again
      without momentum, its statistics seeing none: heavy ball's back-off
      steps back along its buffer and holds it (a step that also wrote a
      new buffer cost 1.4 times on XLA:CPU), so the buffer still holds the
      direction taken back. AdamW's holds moments that are those of the
      point it returns to.
    step: ``(updates, state, params, groups, learning_rate, momentum,
      weight_decay, skip, revert) -> (updates, {field: value})``: the step's
      updates and the new buffers (held where ``skip``). The learning rate is
      zero on a skipped step. On a back-off (``revert``, never with ``skip``)
      the updates take back the last step, taken at the state's
      hyperparameters, and do not use the gradient.
  """

  name: str
  state_type: type
  coupled: bool
  init_buffers: Callable[..., dict[str, Any]]
  step: Callable[..., tuple[Any, dict[str, Any]]]
  jump_test: bool = True
  restart_after_revert: bool = False


def transformation(
  rule: Rule,
  starting: dict[str, Any],
  *,
  controller,
  hidden_size,
  seed,
  granularity,
  total_steps,
  max_learning_rate,
  max_effective_learning_rate,
  home_learning_rate,
  home_steps,
  mu_dtype,
  callback,
) -> optax.GradientTransformationExtraArgs:
  """The GARO pipeline around ``rule``: statistics, features, controller,
  bounds, safeguard, then the rule's step. ``starting`` maps the
  hyperparameters' names to their starting values, in the heads' order."""
  _hyperparams.check_starting(starting)
  _checks.check_options(granularity, hidden_size, seed)
  _checks.check_total_steps(total_steps)
  names = tuple(starting)
  weights = _controller.resolve_controller(
    controller, 16 if hidden_size is None else hidden_size, seed or 0, rule.name
  )
  hidden_size = weights.hidden_size
  # Only a controller that reads the steps' size against the weights pays
  # for the pass over the step and the weights it takes.
  reads_update_ratio = weights.num_features > _features.BASE_NUM_FEATURES
  defaults = None
  if _controller.is_pretrained(controller):
    from garo_optax import pretrained

    bounds = pretrained.BOUNDS[rule.name]
    defaults = _hyperparams.Home(bounds.home_learning_rate, bounds.home_steps)
    if max_effective_learning_rate is None:
      max_effective_learning_rate = bounds.max_effective_learning_rate
    if max_learning_rate is None:
      max_learning_rate = bounds.max_learning_rate
  home = _hyperparams.home(
    starting["learning_rate"], home_learning_rate, home_steps, defaults
  )

  def init_fn(params):
    _checks.check_params(params)
    groups = _groups.make_groups(params, granularity)
    values = _controller.heads(_hyperparams.head_biases(starting, groups, 0))
    return rule.state_type(
      count=jnp.zeros((), jnp.int32),
      hidden=jnp.zeros(_hidden_shape(groups, hidden_size), jnp.float32),
      offsets=jnp.zeros((len(groups.names), len(names)), jnp.float32),
      hyperparams={
        # A tree without leaves (optax.tree.map_params's placeholder params)
        # has no group names: plain arrays there keep its state a prefix of
        # every real state.
        name: _hyperparams.by_group(x, groups) if groups.leaf_groups else x
        for name, x in zip(names, values, strict=True)
      },
      feature_state=_features.init_feature_state(
        len(groups.names), weights.num_features
      ),
      safeguard=_safeguard.init_safeguard_state(len(groups.names)),
      skipped=jnp.zeros((), jnp.int32),
      skipped_in_a_row=jnp.zeros((), jnp.int32),
      diverged=jnp.zeros((), jnp.bool_),
      **rule.init_buffers(params, len(groups.names), mu_dtype),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    groups = _checked_groups(rule, updates, state, params, granularity)
    _checks.check_loss(value)
    _checks.check_state(state, groups, _hidden_shape(groups, hidden_size))
    bias = _hyperparams.head_biases(starting, groups, state.count, home)
    # The rate the controller works around: the starting one, moving home.
    base_lr = _controller.heads(bias)[0]

    statistics = _statistics.group_statistics(updates, state.mu, groups)
    # After a step back, a rule that held its buffer to step along it (heavy
    # ball's) restarts: the statistics, and the step, see no momentum.
    after_revert = rule.restart_after_revert & state.safeguard.reverted
    if rule.restart_after_revert:
      statistics = statistics.at[:, 1:].set(
        jnp.where(after_revert, 0.0, statistics[:, 1:])
      )
    previous_lr = _hyperparams.as_array(state.hyperparams["learning_rate"], groups)
    decision = _decide(
      weights,
      statistics,
      value,
      state.count,
      state.feature_state,
      state.hidden.reshape(len(groups.names), hidden_size),
      state.offsets,
      state.safeguard,
      previous_lr,
      _hyperparams.as_array(state.hyperparams[names[1]], groups),
      bias,
      base_lr,
      after_revert,
      # As a float (what the progress feature reads): any number of steps,
      # however large, is a valid argument.
      None if total_steps is None else jnp.asarray(total_steps, jnp.float32),
      max_learning_rate,
      max_effective_learning_rate,
      coupled=rule.coupled,
      jump_test=rule.jump_test,
    )
    lr, mom, wd = decision.hyperparams
    skip, revert, feature_state = decision.skip, decision.revert, decision.feature_state
    hidden, offsets, safeguard = decision.hidden, decision.offsets, decision.safeguard
    if rule.jump_test:  # a spike's gradient is clipped (_safeguard.safeguard)
      updates = jax.tree.map(lambda g: g * decision.clip[0].astype(g.dtype), updates)
    new_updates, buffers = rule.step(
      updates,
      state,
      params,
      groups,
      jnp.where(skip, 0.0, lr),
      mom,
      wd,
      skip,
      revert,
    )

    if reads_update_ratio:
      # One pass over the step and the weights, as over the gradients.
      sums = _statistics.group_statistics(new_updates, params, groups)
      feature_state = _features.record_update(feature_state, state.count, sums)
    new_state = state._replace(
      count=optax.safe_increment(state.count),
      hidden=hidden.reshape(state.hidden.shape),
      offsets=offsets,
      hyperparams={
        name: _hyperparams.by_group(x, groups)
        for name, x in zip(names, (lr, mom, wd), strict=True)
      },
      feature_state=feature_state,
      safeguard=safeguard,
      skipped_in_a_row=jnp.zeros((), jnp.int32),
      diverged=jnp.zeros((), jnp.bool_),
      **buffers,
    )
    # A dead run is told from a bad batch by time, not by reading the params:
    # a check of the params in the step (even under lax.cond) made XLA:CPU
    # copy them every step (benchmarks/results/safeguard_before_after/).
    in_a_row = optax.safe_increment(state.skipped_in_a_row)
    held = state._replace(
      skipped=optax.safe_increment(state.skipped),
      skipped_in_a_row=in_a_row,
      diverged=in_a_row >= DEAD_AFTER,
      **buffers,
    )
    new_state = optax.tree.where(skip, held, new_state)
    if callback is not None:
      jax.debug.callback(callback, new_state.count, _log(new_state))
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _Decision(NamedTuple):
  """What the controller and the safeguard decide at one step (:func:`_decide`)."""

  hyperparams: tuple[jax.Array, jax.Array, jax.Array]  # each (G,), as applied
  clip: jax.Array | None  # (G,), the spike's clip (garo's rule only)
  skip: jax.Array
  revert: jax.Array
  hidden: jax.Array
  offsets: jax.Array
  feature_state: _features.FeatureState
  safeguard: _safeguard.SafeguardState


@functools.partial(jax.jit, static_argnames=("coupled", "jump_test"))
def _decide(
  weights,
  statistics,
  value,
  count,
  feature_state,
  hidden,
  offsets,
  safeguard_state,
  previous_lr,
  previous_momentum,
  bias,
  base_lr,
  after_revert,
  total_steps,
  max_learning_rate,
  max_effective_learning_rate,
  *,
  coupled,
  jump_test,
) -> _Decision:
  """Features, controller, bounds and safeguard: one step's hyperparameters
  and whether it is skipped or taken back, from the groups' statistics.

  A function of arrays and a few static options, jitted once for every GARO
  transformation with those options: called outside ``jit`` (a first
  ``tx.update`` in a notebook) it compiles as one program rather than op by
  op, and inside ``jit`` it is traced once per shape. The module constants it
  reads (``_controller.MAX_OFFSET_RISE``, the safeguard's thresholds) are read
  when it is first traced in a process: an experiment sets them before that.
  """
  skip = ~jnp.isfinite(jnp.sum(statistics[:, 0]))
  if value is not None:
    skip = skip | ~jnp.isfinite(value)
  features, new_feature_state = _features.compute_features(
    statistics,
    feature_state,
    count,
    previous_lr,
    base_lr,
    value,
    total_steps,
    weights.num_features,
  )
  hidden, offsets, (lr, mom, wd) = _controller.controller_step(
    weights, features, hidden, offsets, bias, coupled=coupled
  )
  lr, mom = _hyperparams.bounded(
    lr,
    mom,
    None
    if max_learning_rate is None
    # Never below the rate worked around: a rate the user gives (or a
    # schedule's) is applied as given; only the controller's rise is cut.
    else jnp.maximum(max_learning_rate, base_lr),
    max_effective_learning_rate,
  )
  backoff, restart, clip, safeguard_state = _safeguard.safeguard(
    safeguard_state,
    count,
    statistics,
    value,
    None if value is None else (feature_state.loss, new_feature_state.loss),
    previous_lr,
    previous_momentum,
    jump_test=jump_test,
  )
  chosen_lr = lr
  lr, mom = _safeguard.apply(lr, mom, restart | after_revert, safeguard_state)
  if jump_test:  # a spike's gradient is clipped (_safeguard.safeguard)
    lr, mom, wd, clip = _xla.computed_once(
      lr, mom, wd, jnp.broadcast_to(clip, lr.shape)
    )
  else:
    lr, mom, wd = _xla.computed_once(lr, mom, wd)
    clip = None
  skip, revert = _xla.flags_computed_once(skip, backoff & ~skip)
  new_feature_state = _features.record_cut(new_feature_state, chosen_lr, lr)
  return _Decision(
    (lr, mom, wd),
    clip,
    skip,
    revert,
    hidden,
    offsets,
    new_feature_state,
    safeguard_state,
  )


def _hidden_shape(groups: _groups.Groups, hidden_size: int) -> tuple[int, ...]:
  return (hidden_size,) if groups.is_global else (len(groups.names), hidden_size)


def _checked_groups(rule, updates, state, params, granularity) -> _groups.Groups:
  """The groups of ``params``, once ``update``'s arguments are checked."""
  if params is None:
    raise ValueError(
      f"{rule.name} needs `params` in update (for weight decay and the "
      "controller's features): call tx.update(grads, state, params)."
    )
  if not isinstance(state, rule.state_type):
    raise TypeError(
      f"Expected a {rule.state_type.__name__} (from this transformation's "
      f"init), got {type(state).__name__}."
    )
  _checks.check_like("grads", updates, state.mu)
  _checks.check_like("params", params, state.mu)
  _checks.check_params(params)
  return _groups.make_groups(params, granularity)


def scalars_by_group(count, groups, *values: jax.Array) -> list[tuple]:
  """Each group's entries of the ``(G,)`` arrays ``values``: one tuple per
  group, indexed once rather than once per leaf (tracing a model with many
  leaves is part of its compile time)."""
  if len(groups.names) == 1:
    return [tuple(x[0] for x in values)]
  return [
    tuple(_xla.take(x, i) for x in values)
    for i in _xla.group_indices(count, len(groups.names))
  ]


def leaf_groups_tree(params, groups):
  """Each leaf's group index, in a tree shaped like ``params``."""
  return jax.tree.unflatten(jax.tree.structure(params), groups.leaf_groups)


def _momentum_step(updates, state, params, groups, lr, mom, wd, skip, revert):
  """Heavy-ball SGD with coupled weight decay, each group at its values.

  ``m = mom · m + g + wd · θ`` and ``u = -lr · m`` leaf by leaf, in one
  pass; a skipped step keeps ``m``. A back-off (``revert``) takes back the
  last step instead, ``u = lr' · m`` at the last step's rate ``lr'`` (the
  buffer is that step's direction), and keeps ``m``: the gradient at the point
  that blew up is not used, and the next step restarts without momentum
  (``_safeguard.SafeguardState.reverted``).
  """
  previous_lr = _hyperparams.as_array(state.hyperparams["learning_rate"], groups)
  hold = skip | revert
  # The step is a multiple of the buffer it stores: one fused loop on XLA:CPU
  # (a step that also read the old buffer beside the new one cost 1.4 times).
  per_group = scalars_by_group(
    state.count, groups, jnp.where(revert, previous_lr, -lr), mom, wd
  )

  def leaf_update(g, m, p, group):
    step_size, mom, wd = per_group[group]
    dtype = jnp.promote_types(p.dtype, jnp.float32)
    new_m = mom * m.astype(dtype) + g.astype(dtype) + wd * p.astype(dtype)
    new_m = jnp.where(hold, m, new_m.astype(m.dtype))
    step = step_size * new_m.astype(dtype)
    return step.astype(p.dtype), new_m

  out = jax.tree.map(
    leaf_update, updates, state.mu, params, leaf_groups_tree(params, groups)
  )
  new_updates, mu = unzip(out, params)
  return new_updates, {"mu": mu}


def _momentum_buffers(params, num_groups, mu_dtype):
  del num_groups
  return {"mu": optax.tree.zeros_like(params, dtype=mu_dtype)}


SGD_RULE = Rule(
  name="garo",
  state_type=GaroState,
  coupled=True,
  init_buffers=_momentum_buffers,
  step=_momentum_step,
  restart_after_revert=True,
)


def _log(state: GaroState) -> dict[str, Any]:
  """What ``callback`` receives: the applied values and the run's health."""
  return {
    **state.hyperparams,
    "skipped": state.skipped,
    "backoffs": state.safeguard.backoffs,
    "spikes": state.safeguard.spikes,
    "diverged": state.diverged,
  }


def unzip(tuples: Any, like: Any, n: int = 2) -> tuple[Any, ...]:
  """Splits a tree of ``n``-tuples shaped like ``like`` into ``n`` trees."""
  treedef = jax.tree.structure(like)
  tuples = treedef.flatten_up_to(tuples)
  return tuple(treedef.unflatten([x[i] for x in tuples]) for i in range(n))
