"""GARO over AdamW's direction: the controller drives AdamW's learning rate,
first-moment decay ``b1`` and decoupled weight decay.

The pipeline (statistics, features, controller, bounds, safeguard) is
``garo``'s (:func:`garo_optax._transform.transformation`); this module is the
update rule at its end and its state.
"""

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from garo_optax import _controller, _groups, _hyperparams, _transform
from garo_optax._state import GaroAdamWState


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

  The controller is :func:`garo`'s (the same features, GRU, running-mean
  outputs and safeguard); it drives AdamW's update instead of heavy ball's:

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
  :func:`garo`'s; a back-off step uses the gradient alone as its first moment
  (``b1 = 0``).

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
    max_learning_rate: if set, the learning rate never exceeds it.
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
  rule = _transform.Rule(
    name="garo_adamw",
    state_type=GaroAdamWState,
    coupled=False,
    init_buffers=_adam_buffers,
    step=_adamw_step(b2, eps, mask),
  )
  return _transform.transformation(
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

  def step(updates, state, params, groups, lr, b1, wd, skip):
    mu_weight = jnp.where(skip, state.mu_weight, b1 * state.mu_weight + (1.0 - b1))
    count = optax.safe_increment(state.count)
    nu_correction = 1.0 - b2**count
    per_group = _transform.scalars_by_group(state.count, groups, -lr, b1, wd, mu_weight)
    decays = jax.tree.unflatten(jax.tree.structure(params), _decay_mask(mask, params))

    def leaf_update(g, m, v, p, group, decays):
      step_size, b1, wd, weight = per_group[group]
      dtype = jnp.promote_types(p.dtype, jnp.float32)
      g = g.astype(dtype)
      new_m = b1 * m.astype(dtype) + (1.0 - b1) * g
      new_v = b2 * v.astype(dtype) + (1.0 - b2) * g * g
      direction = (new_m / weight) / (
        jnp.sqrt(new_v / nu_correction.astype(dtype)) + eps
      )
      if decays:
        direction = direction + wd * p.astype(dtype)
      new_m = jnp.where(skip, m, new_m.astype(m.dtype))
      new_v = jnp.where(skip, v, new_v.astype(v.dtype))
      # Zero on a skipped step (the step size is), however the direction is.
      step = jnp.where(skip, 0.0, step_size * direction)
      return step.astype(p.dtype), new_m, new_v

    out = jax.tree.map(
      leaf_update,
      updates,
      state.mu,
      state.nu,
      params,
      _transform.leaf_groups_tree(params, groups),
      decays,
    )
    new_updates, mu, nu = _transform.unzip(out, params, 3)
    return new_updates, {"mu": mu, "nu": nu, "mu_weight": mu_weight}

  return step
