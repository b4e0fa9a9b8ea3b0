"""GARO as an optax gradient transformation."""

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax import (
  _controller,
  _features,
  _groups,
  _safeguard,
  _statistics,
  _xla,
)


class GaroState(NamedTuple):
  """State of :func:`garo`."""

  count: jax.Array  # shape=(), int32: number of steps applied
  hidden: jax.Array  # shape=(H,) or (G, H) per group, float32
  mu: optax.Updates  # momentum buffers, shaped like the params
  # Values applied at the last step: float32 scalars, or ByGroup mappings.
  hyperparams: dict[str, Any]
  feature_state: _features.FeatureState  # running statistics for the features
  safeguard: _safeguard.SafeguardState  # learning-rate cap and what sets it
  skipped: jax.Array  # shape=(), int32: steps skipped on non-finite input
  # shape=(), bool: the last step was skipped and the params are not finite
  # (or their squared norm overflows float32): the run is dead.
  diverged: jax.Array


def _is_pretrained(controller: Any) -> bool:
  """Whether ``controller`` asks for the shipped, meta-trained controller."""
  return controller is None or (
    isinstance(controller, str) and controller == "pretrained"
  )


def _resolve_controller(
  controller: Any, hidden_size: int, seed: int
) -> _controller.ControllerParams:
  if _is_pretrained(controller):
    from garo_optax import pretrained  # imported on use: it reads a file

    return pretrained.load()
  if isinstance(controller, str) and controller == "init":
    return _controller.init_controller(jax.random.key(seed), hidden_size=hidden_size)
  if isinstance(controller, _controller.ControllerParams):
    return controller
  if isinstance(controller, str | os.PathLike):
    if not os.path.exists(controller):
      raise FileNotFoundError(
        f"No controller file {os.fspath(controller)!r}: controller is None or "
        "'pretrained', 'init', the path of a file written by save_controller, "
        "or a ControllerParams."
      )
    return _controller.load_controller(controller)
  raise ValueError(
    f"Unknown controller {controller!r}: use None or 'pretrained' (the "
    "meta-trained one shipped with garo_optax), 'init' (a seeded, untrained "
    "near-SGD controller), the path of a file written by save_controller, or "
    "a ControllerParams (e.g. from load_controller)."
  )


def _check_params(params: Any) -> None:
  for path, leaf in jax.tree.leaves_with_path(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
        f"garo needs real floating-point params; {jax.tree_util.keystr(path)} "
        f"has dtype {dtype}."
      )


def _check_options(granularity: Any, hidden_size: Any, seed: Any, value: Any) -> None:
  """Checks the options that must be static, and the loss ``value``."""
  if isinstance(granularity, str) and granularity not in ("global", "per_leaf"):
    raise ValueError(
      f"Unknown granularity {granularity!r}: use 'global', 'per_leaf', a "
      "pytree of group labels shaped like the params, or a function of the "
      "params that returns one."
    )
  for name, x, low in (("hidden_size", hidden_size, 1), ("seed", seed, 0)):
    if x is None:
      continue
    if not isinstance(x, int | np.integer) or isinstance(x, bool):
      raise TypeError(
        f"{name} must be a Python int, got {x!r} (under "
        f"optax.inject_hyperparams, list {name!r} in static_args)."
      )
    if x < low:
      raise ValueError(f"{name} must be >= {low}, got {x}.")
  if value is not None and jnp.shape(value) != ():
    raise ValueError(
      "value must be the loss as a scalar (e.g. the mean over the batch), "
      f"got shape {jnp.shape(value)}."
    )


def _check_state(state: Any, groups: _groups.Groups, hidden_shape: tuple) -> None:
  """Checks that ``state`` was made by this transformation's ``init``."""
  if not isinstance(state, GaroState):
    raise TypeError(
      f"Expected a GaroState (from this transformation's init), got "
      f"{type(state).__name__}."
    )
  per_group = isinstance(state.hyperparams["learning_rate"], _groups.ByGroup)
  if per_group == groups.is_global or (
    per_group and state.hyperparams["learning_rate"].names != groups.names
  ):
    made_for = (
      f"groups {list(state.hyperparams['learning_rate'].names)}"
      if per_group
      else "granularity 'global'"
    )
    raise ValueError(
      f"The optimizer state was made for {made_for}, but this transformation "
      f"has {'granularity' if groups.is_global else 'groups'} "
      f"{'global' if groups.is_global else list(groups.names)}: make the state "
      "with this transformation's init."
    )
  if state.hidden.shape != hidden_shape:
    raise ValueError(
      f"The optimizer state holds a hidden state of shape {state.hidden.shape}, "
      f"but this transformation's controller needs {hidden_shape} (hidden size "
      f"{hidden_shape[-1]}): was the state made with another controller?"
    )


def _check_like(name: str, tree: Any, mu: Any) -> None:
  if jax.tree.structure(tree) != jax.tree.structure(mu):
    raise ValueError(
      f"The {name} tree does not match the optimizer state (was the state made "
      f"by tx.init for other params?). {name}: {jax.tree.structure(tree)}; "
      f"state: {jax.tree.structure(mu)}."
    )
  for (path, leaf), m in zip(
    jax.tree.leaves_with_path(tree), jax.tree.leaves(mu), strict=True
  ):
    if jnp.shape(leaf) != m.shape:
      raise ValueError(
        f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; the "
        f"optimizer state holds shape {m.shape} there."
      )


def _check_value(name: str, x: Any) -> None:
  """Checks a concrete starting hyperparameter (schedules and traced values,
  as under ``jit`` or ``optax.inject_hyperparams``, pass unchecked)."""
  if callable(x) or isinstance(x, jax.core.Tracer):
    return
  try:
    array = np.asarray(x)
  except Exception as e:
    raise TypeError(f"{name} must be a number or a schedule, got {x!r}.") from e
  if array.shape != () or not np.issubdtype(array.dtype, np.number):
    raise TypeError(
      f"{name} must be a scalar number, a {{group: number}} mapping or a "
      f"schedule (a function of the step count), got {x!r}."
    )
  value = float(array)
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {x!r}.")
  if name == "momentum" and not 0 <= value < 1:
    raise ValueError(f"momentum must be in [0, 1), got {x!r}.")
  if name == "learning_rate" and value <= 0:
    raise ValueError(f"learning_rate must be > 0, got {x!r}.")
  if name == "weight_decay" and value < 0:
    raise ValueError(f"weight_decay must be >= 0, got {x!r}.")


def _at_step(value: Any, count: jax.Array | int) -> Any:
  """A starting hyperparameter at step ``count``: a schedule is called, a
  ``{group: value}`` mapping has each of its values resolved."""
  if isinstance(value, Mapping):
    return {group: _at_step(x, count) for group, x in value.items()}
  return value(count) if callable(value) else value


def _per_group(name: str, value: Any, groups: _groups.Groups) -> jax.Array:
  """A starting hyperparameter, scalar or ``{group: value}``, as a (G,) array
  (NumPy unless a value is a JAX array: see ``_controller.array_namespace``)."""
  if not isinstance(value, Mapping):
    xp = _controller.array_namespace(value)
    return xp.full((len(groups.names),), value, xp.float32)
  if groups.is_global:
    raise ValueError(
      f"{name} is given per group, but granularity is 'global': use "
      "granularity='per_leaf' or group labels."
    )
  unknown = sorted(set(value) - set(groups.names))
  missing = sorted(set(groups.names) - set(value))
  if unknown or missing:
    raise ValueError(
      f"{name} must give one value per group. Unknown groups: {unknown}; "
      f"groups without a value: {missing}; the groups are {list(groups.names)}."
    )
  xp = _controller.array_namespace(*value.values())
  return xp.asarray([value[group] for group in groups.names], xp.float32)


def _by_group(values: jax.Array, groups: _groups.Groups) -> Any:
  """(G,) array -> a scalar (global) or a :class:`ByGroup` mapping."""
  if groups.is_global:
    return values[0]
  return _groups.ByGroup(groups.names, values)


def _as_array(values: Any, groups: _groups.Groups) -> jax.Array:
  """Inverse of :func:`_by_group`."""
  if groups.is_global:
    return jnp.reshape(values, (1,))
  return values.values


def garo(
  learning_rate: optax.ScalarOrSchedule | Mapping[str, Any] = 0.01,
  momentum: optax.ScalarOrSchedule | Mapping[str, Any] = 0.0,
  weight_decay: optax.ScalarOrSchedule | Mapping[str, Any] = 0.0,
  *,
  controller: _controller.ControllerParams | str | os.PathLike | None = None,
  hidden_size: int | None = None,
  seed: int | None = None,
  granularity: _groups.Granularity = "global",
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
    \eta_t &= \mathrm{softplus}(W_\eta h_t + b_\eta), \quad
    \mu_t = \tanh(W_\mu h_t + b_\mu), \quad
    \lambda_t = \mathrm{softplus}(W_\lambda h_t + b_\lambda) \\
    m_t &= \mu_t m_{t-1} + g_t + \lambda_t \theta_t, \quad
    u_t = -\eta_t m_t

  (``torch.optim.SGD`` semantics). The biases :math:`b` are set from
  ``learning_rate``, ``momentum`` and ``weight_decay``, and :math:`x_0 = 0`
  makes :math:`h_0 = 0`, so the first step is exactly SGD with those values;
  from there the controller adapts them.

  **Safeguard.** The momentum is never negative, and when the loss (if
  ``value`` is given) or the gradient norm blows up while the gradient turns
  against the last step, GARO backs off: that step is taken without momentum
  and the learning rate is capped, for the rest of the run, at a fraction of
  the rate applied before (half, or less the faster the blow-up grew). A run
  that does not blow up is never capped; ``state.safeguard.backoffs`` counts
  the back-offs.

  Non-finite gradients (or a non-finite ``value``) skip the step: the updates
  are zero, the state is held and ``skipped`` is incremented. So do gradients
  whose squared norm overflows float32 (``‖g‖ > 1.8e19``). A skipped step also
  checks the params: if they are not finite, ``diverged`` is set in the state
  (``optax.tree.get(state, "diverged")``): the run is dead and every further
  step will be skipped, so restore a checkpoint and restart with a lower
  ``learning_rate`` or a ``max_learning_rate``.

  Args:
    learning_rate: learning rate at the first step.
    momentum: momentum at the first step, in ``[0, 1)``.
    weight_decay: weight decay at the first step (coupled, as in SGD).
      Each of these three may also be a ``{group name: value}`` mapping when
      ``granularity`` is not ``"global"`` (e.g. no weight decay for biases).
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
    hidden_size: GRU width of the seeded controller (``"init"``).
    seed: seed of the seeded controller (``"init"``).
    granularity: ``"global"`` (one set of hyperparameters), ``"per_leaf"``, or
      group labels (a pytree of strings shaped like the params, or a function
      of the params returning one, as in :func:`optax.multi_transform`); every
      group is driven by the same controller weights.
    max_learning_rate: if set, the learning rate never exceeds it.
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
      ``backoffs`` and ``diverged`` (see above). Off (and free) by default.

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
    >>> updates["w"]
    Array([-0.1, -0.2, -0.3], dtype=float32)
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
  for name, value in starting.items():
    for x in value.values() if isinstance(value, Mapping) else (value,):
      _check_value(name, x)
  _check_options(granularity, hidden_size, seed, value=None)
  for name, bound in (
    ("max_learning_rate", max_learning_rate),
    ("max_effective_learning_rate", max_effective_learning_rate),
  ):
    if bound is not None and not bound > 0:
      raise ValueError(f"{name} must be > 0 (or None), got {bound!r}.")
  scheduled = callable(learning_rate) or (
    isinstance(learning_rate, Mapping) and any(map(callable, learning_rate.values()))
  )
  params_ = _resolve_controller(
    controller, 16 if hidden_size is None else hidden_size, seed or 0
  )
  hidden_size = params_.hidden_size
  if scheduled and (home_learning_rate is not None or home_steps):
    raise ValueError(
      "home_learning_rate moves a constant starting learning rate; with a "
      "learning-rate schedule the schedule is the rate GARO works around."
    )
  if _is_pretrained(controller):
    from garo_optax import pretrained

    if max_effective_learning_rate is None:
      max_effective_learning_rate = pretrained.MAX_EFFECTIVE_LEARNING_RATE
    if home_learning_rate is None and not scheduled:
      home_learning_rate = pretrained.HOME_LEARNING_RATE
    if home_steps is None and not scheduled:
      home_steps = pretrained.HOME_STEPS
  if not scheduled and (home_learning_rate is None) != (home_steps is None):
    raise ValueError(
      "home_learning_rate and home_steps go together: give both (or neither)."
    )
  if home_learning_rate is not None and not home_learning_rate > 0:
    raise ValueError(f"home_learning_rate must be > 0, got {home_learning_rate}.")
  if home_steps is not None and not home_steps >= 0:
    raise ValueError(f"home_steps must be >= 0, got {home_steps}.")
  relaxes = bool(home_learning_rate is not None and home_steps)

  def setup(params, count):
    """Groups of ``params``, the starting learning rates ``(G,)`` at step
    ``count`` and the heads' biases ``(G, 3)``."""
    groups = _groups.make_groups(params, granularity)
    start = [
      _per_group(name, _at_step(starting[name], count), groups)
      for name in _controller.HEAD_NAMES
    ]
    return groups, start[0], _controller.head_bias(*start)

  def hidden_shape(groups):
    return (hidden_size,) if groups.is_global else (len(groups.names), hidden_size)

  def init_fn(params):
    _check_params(params)
    groups, _, bias = setup(params, 0)
    num_groups = len(groups.names)
    values = _controller.heads(bias)
    return GaroState(
      count=jnp.zeros((), jnp.int32),
      hidden=jnp.zeros(hidden_shape(groups), jnp.float32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      hyperparams={
        # A tree without leaves (optax.tree.map_params's placeholder params)
        # has no group names: plain arrays there keep its state a prefix of
        # every real state.
        name: _by_group(value, groups) if groups.leaf_groups else value
        for name, value in zip(_controller.HEAD_NAMES, values, strict=True)
      },
      feature_state=_features.init_feature_state(num_groups),
      safeguard=_safeguard.init_safeguard_state(num_groups),
      skipped=jnp.zeros((), jnp.int32),
      diverged=jnp.zeros((), jnp.bool_),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(
        "garo needs `params` in update (for weight decay and the controller's "
        "features): call tx.update(grads, state, params)."
      )
    _check_like("grads", updates, state.mu)
    _check_like("params", params, state.mu)
    _check_params(params)
    _check_options(granularity, hidden_size, seed, value)
    groups, start_lr, bias = setup(params, state.count)
    _check_state(state, groups, hidden_shape(groups))
    num_groups = len(groups.names)
    if relaxes:
      gap = _home_gap(bias, start_lr, home_learning_rate)
      bias = _relaxed_bias(bias, gap, state.count, home_steps)

    group_stats = _statistics.group_statistics(updates, state.mu, groups)
    skip = ~jnp.isfinite(jnp.sum(group_stats[:, 0]))
    if value is not None:
      skip = skip | ~jnp.isfinite(value)

    previous_lr = _as_array(state.hyperparams["learning_rate"], groups)
    features, feature_state = _features.compute_features(
      group_stats,
      state.feature_state,
      state.count,
      jnp.log(previous_lr) - jnp.log(_controller.heads(bias)[0]),
      value,
    )
    hidden, (lr, mom, wd) = _controller.controller_step(
      params_, features, state.hidden.reshape(num_groups, hidden_size), bias
    )
    # Negative momentum amplifies the oscillation of the stiffest directions,
    # the ones that diverge first (part of the safeguard).
    mom = jnp.maximum(mom, 0.0)
    if max_learning_rate is not None:
      lr = jnp.minimum(lr, max_learning_rate)
    if max_effective_learning_rate is not None:
      lr = jnp.minimum(lr, max_effective_learning_rate * (1.0 - mom))
    backoff, safeguard = _safeguard.safeguard(
      state.safeguard,
      state.count,
      group_stats,
      value,
      previous_lr,
    )
    lr = jnp.minimum(lr, safeguard.max_learning_rate)
    mom = jnp.where(backoff, 0.0, mom)
    lr, mom, wd = _xla.computed_once(lr, mom, wd)

    # Each group's scalars, indexed once rather than once per leaf (tracing a
    # model with many leaves is part of its compile time).
    step_size = jnp.where(skip, 0.0, -lr)
    if num_groups == 1:
      per_group = [(step_size[0], mom[0], wd[0])]
    else:
      per_group = [
        tuple(_xla.take(x, i) for x in (step_size, mom, wd))
        for i in _xla.group_indices(state.count, num_groups)
      ]

    def leaf_update(g, m, p, group):
      step_size, mom, wd = per_group[group]
      dtype = jnp.promote_types(p.dtype, jnp.float32)
      new_m = mom * m.astype(dtype) + g.astype(dtype) + wd * p.astype(dtype)
      new_m = jnp.where(skip, m, new_m.astype(m.dtype))
      step = step_size * new_m.astype(dtype)
      return step.astype(p.dtype), new_m

    leaf_groups = jax.tree.unflatten(jax.tree.structure(params), groups.leaf_groups)
    out = jax.tree.map(leaf_update, updates, state.mu, params, leaf_groups)
    new_updates, mu = _unzip(out, params)

    new_state = GaroState(
      count=optax.safe_increment(state.count),
      hidden=hidden.reshape(state.hidden.shape),
      mu=mu,
      hyperparams={
        name: _by_group(x, groups)
        for name, x in zip(_controller.HEAD_NAMES, (lr, mom, wd), strict=True)
      },
      feature_state=feature_state,
      safeguard=safeguard,
      skipped=state.skipped,
      diverged=jnp.zeros((), jnp.bool_),
    )
    # Only a skipped step looks at the params (no pass over them otherwise).
    params_finite = jax.lax.cond(
      skip, _is_finite, lambda _: jnp.ones((), jnp.bool_), params
    )
    held = state._replace(
      mu=mu, skipped=optax.safe_increment(state.skipped), diverged=~params_finite
    )
    new_state = optax.tree.where(skip, held, new_state)
    if callback is not None:
      jax.debug.callback(
        callback,
        new_state.count,
        {
          **new_state.hyperparams,
          "skipped": new_state.skipped,
          "backoffs": new_state.safeguard.backoffs,
          "diverged": new_state.diverged,
        },
      )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _home_gap(bias: jax.Array, start: jax.Array, home: float) -> jax.Array:
  """How far the learning-rate bias moves from ``start`` (the learning rates
  ``(G,)`` at step 0, whose heads' biases are ``bias``) to ``home``."""
  gap = _controller.head_bias(home, 0.0, 0.0)[0] - bias[:, 0]
  # Exactly none where the start is the home rate, however the two biases
  # round: such a run is the run without a home rate (up to how XLA fuses,
  # and so rounds, the rest of the step).
  xp = _controller.array_namespace(bias, start)
  return xp.where(start == home, xp.float32(0.0), gap)


def _relaxed_bias(
  bias: jax.Array, gap: jax.Array, count: jax.Array, steps: float
) -> jax.Array:
  """The heads' biases ``(G, 3)`` at step ``count``, the learning rate's moved
  by ``gap`` (:func:`_home_gap`) times ``1 - exp(-count / steps)``."""
  moved = -jnp.expm1(-count.astype(jnp.float32) / steps)
  # A concatenation, not `bias.at[:, 0].add`: XLA:CPU expands a scatter into a
  # while loop nested in the training loop's body, and simplifying that loop
  # made the 1000-leaf model of `benchmarks/step_time.py` compile in 18-20 s
  # instead of 15-16 s (alternating runs).
  return jnp.concatenate([bias[:, :1] + (gap * moved)[:, None], bias[:, 1:]], axis=1)


def _is_finite(params: Any) -> jax.Array:
  """Whether every entry of ``params`` is finite and their squared norm fits
  in float32 (one statistics pass over them)."""
  groups = _groups.make_groups(params, "global")
  return jnp.all(jnp.isfinite(_statistics.group_statistics(params, params, groups)))


def _unzip(pairs: Any, like: Any) -> tuple[Any, Any]:
  """Splits a tree of (a, b) pairs shaped like ``like`` into two trees."""
  treedef = jax.tree.structure(like)
  pairs = treedef.flatten_up_to(pairs)
  return treedef.unflatten([a for a, _ in pairs]), treedef.unflatten(
    [b for _, b in pairs]
  )


def hyperparams(state: Any) -> dict[str, Any]:
  """The learning rate, momentum and weight decay GARO applied at its last step.

  Args:
    state: a :class:`GaroState`, or any optimizer state that contains exactly
      one (e.g. the state of an ``optax.chain``).

  Returns:
    ``{"learning_rate": ..., "momentum": ..., "weight_decay": ...}``; each value
    is a scalar for global granularity and a ``{group name: scalar}`` dict
    otherwise. Before the first update these are the starting values. (In the
    state itself, and so through ``optax.tree.get``, per-group values are a
    read-only :class:`ByGroup` mapping backed by one array.)

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import garo_optax
    >>> tx = optax.chain(optax.clip_by_global_norm(1.0), garo_optax.garo())
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> sorted(garo_optax.hyperparams(state))
    ['learning_rate', 'momentum', 'weight_decay']
  """
  found = [
    x
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, GaroState))
    if isinstance(x, GaroState)
  ]
  if len(found) != 1:
    raise ValueError(
      f"Expected one GaroState inside the optimizer state, found {len(found)}."
    )
  return {
    name: {group: _unwrap(x) for group, x in value.items()}
    if isinstance(value, _groups.ByGroup)
    else _unwrap(value)
    for name, value in found[0].hyperparams.items()
  }


def _unwrap(x: Any) -> Any:
  """The array in a Flax NNX ``Variable`` (an NNX optimizer state wraps each
  of its arrays in one); anything else as it is."""
  if hasattr(x, "get_value"):  # Flax 0.12 deprecates `.value`
    return x.get_value()
  return getattr(x, "value", x)
