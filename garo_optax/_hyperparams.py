"""The hyperparameters as a user gives them, and as GARO applies them.

A starting hyperparameter is a number, a ``{group: value}`` mapping or a
schedule (a function of the step count). Here they become each group's
values ``(G,)``, then the heads' biases ``(G, 3)`` (with the learning rate's
moved towards a home rate, for a constant one), and the controller's outputs
are bounded. Per-group values live in the state as :class:`ByGroup`
mappings, one array each.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _groups

# Pre-activation of the weight-decay head when the requested decay is zero:
# softplus(-20) ≈ 2e-9, below float32 rounding of any gradient it is added to.
WEIGHT_DECAY_FLOOR_BIAS = -20.0


def check_value(name: str, x: Any) -> None:
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
  if name in ("momentum", "b1", "b2") and not 0 <= value < 1:
    raise ValueError(f"{name} must be in [0, 1), got {x!r}.")
  if name == "eps" and value < 0:
    raise ValueError(f"eps must be >= 0, got {x!r}.")
  if name == "learning_rate" and value <= 0:
    raise ValueError(f"learning_rate must be > 0, got {x!r}.")
  if name == "weight_decay" and value < 0:
    raise ValueError(f"weight_decay must be >= 0, got {x!r}.")


def check_starting(starting: dict[str, Any]) -> None:
  """Checks every starting hyperparameter, those of each group included."""
  for name, value in starting.items():
    for x in value.values() if isinstance(value, Mapping) else (value,):
      check_value(name, x)


def is_scheduled(value: Any) -> bool:
  """Whether a starting hyperparameter is (or holds) a schedule."""
  if isinstance(value, Mapping):
    return any(map(callable, value.values()))
  return callable(value)


def at_step(value: Any, count: jax.Array | int) -> Any:
  """A starting hyperparameter at step ``count``: a schedule is called, a
  ``{group: value}`` mapping has each of its values resolved."""
  if isinstance(value, Mapping):
    return {group: at_step(x, count) for group, x in value.items()}
  return value(count) if callable(value) else value


def array_namespace(*values: Any) -> Any:
  """``numpy`` if no value is a JAX array (or tracer), else ``jax.numpy``.

  Derived constants (biases from starting values) are computed with NumPy
  when they can be: they reach XLA as literals rather than as ops it would
  first hoist out of a training loop and later fold.
  """
  return jnp if any(isinstance(x, jax.Array) for x in values) else np


def _softplus_inverse(x, xp=jnp):
  # log(expm1(x)), written to stay accurate for large x.
  return x + xp.log(-xp.expm1(-x))


def head_bias(
  learning_rate: jax.typing.ArrayLike,
  momentum: jax.typing.ArrayLike,
  weight_decay: jax.typing.ArrayLike,
) -> jax.Array | np.ndarray:
  """Head biases that make the heads emit the given values when ``h = 0``.

  Returns:
    Array of shape ``(..., 3)`` (the broadcast shape of the arguments, then 3):
    ``softplus⁻¹(learning_rate)``, ``atanh(momentum)``,
    ``softplus⁻¹(weight_decay)`` (or ``WEIGHT_DECAY_FLOOR_BIAS`` when
    ``weight_decay`` is zero). A float32 NumPy array when no argument is a
    JAX array.
  """
  xp = array_namespace(learning_rate, momentum, weight_decay)
  learning_rate = xp.asarray(learning_rate, xp.float32)
  momentum = xp.asarray(momentum, xp.float32)
  weight_decay = xp.asarray(weight_decay, xp.float32)
  wd_bias = xp.where(
    weight_decay > 0,
    _softplus_inverse(xp.where(weight_decay > 0, weight_decay, 1.0), xp),
    xp.float32(WEIGHT_DECAY_FLOOR_BIAS),
  )
  return xp.stack(
    xp.broadcast_arrays(
      _softplus_inverse(learning_rate, xp), xp.arctanh(momentum), wd_bias
    ),
    axis=-1,
  )


def per_group(name: str, value: Any, groups: _groups.Groups) -> jax.Array:
  """A starting hyperparameter, scalar or ``{group: value}``, as a (G,) array
  (NumPy unless a value is a JAX array: see :func:`array_namespace`)."""
  if not isinstance(value, Mapping):
    xp = array_namespace(value)
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
  xp = array_namespace(*value.values())
  return xp.asarray([value[group] for group in groups.names], xp.float32)


def by_group(values: jax.Array, groups: _groups.Groups) -> Any:
  """(G,) array -> a scalar (global) or a :class:`ByGroup` mapping."""
  if groups.is_global:
    return values[0]
  return _groups.ByGroup(groups.names, values)


def as_array(values: Any, groups: _groups.Groups) -> jax.Array:
  """Inverse of :func:`by_group`."""
  if groups.is_global:
    return jnp.reshape(values, (1,))
  return values.values


class Home(NamedTuple):
  """Where the learning-rate head's bias moves to, and how fast."""

  learning_rate: float
  steps: float


def home(
  learning_rate: Any,
  home_learning_rate: float | None,
  home_steps: float | None,
  defaults: Home | None,
) -> Home | None:
  """The home move of the learning rate, or ``None`` when there is none.

  Args:
    learning_rate: the starting learning rate as given to ``garo``.
    home_learning_rate: the home rate given to ``garo`` (or ``None``).
    home_steps: its time constant given to ``garo`` (or ``None``).
    defaults: the controller's own, used where ``garo`` was given none.

  Raises:
    ValueError: a home rate with a schedule (the schedule is the rate GARO
      works around), one of the two options without the other, or values out
      of range.
  """
  if is_scheduled(learning_rate):
    if home_learning_rate is not None or home_steps:
      raise ValueError(
        "home_learning_rate moves a constant starting learning rate; with a "
        "learning-rate schedule the schedule is the rate GARO works around."
      )
    return None
  if defaults is not None:
    if home_learning_rate is None:
      home_learning_rate = defaults.learning_rate
    if home_steps is None:
      home_steps = defaults.steps
  if (home_learning_rate is None) != (home_steps is None):
    raise ValueError(
      "home_learning_rate and home_steps go together: give both (or neither)."
    )
  if home_learning_rate is not None and not home_learning_rate > 0:
    raise ValueError(f"home_learning_rate must be > 0, got {home_learning_rate}.")
  if home_steps is not None and not home_steps >= 0:
    raise ValueError(f"home_steps must be >= 0, got {home_steps}.")
  if home_learning_rate is None or not home_steps:
    return None
  return Home(home_learning_rate, home_steps)


def head_biases(
  starting: dict[str, Any],
  groups: _groups.Groups,
  count: jax.Array | int,
  home_move: Home | None = None,
) -> jax.Array:
  """The heads' biases ``(G, 3)`` at step ``count``: those of the starting
  values (schedules at ``count``), the learning rate's moved home.

  ``starting`` maps the heads' names to the starting values, in the heads'
  order: learning rate, momentum (``b1`` for ``garo_adamw``), weight decay.
  """
  start = [
    per_group(name, at_step(value, count), groups) for name, value in starting.items()
  ]
  bias = head_bias(*start)
  if home_move is None:
    return bias
  gap = _home_gap(bias, start[0], home_move.learning_rate)
  return _relaxed_bias(bias, gap, count, home_move.steps)


def _home_gap(bias: jax.Array, start: jax.Array, home_rate: float) -> jax.Array:
  """How far the learning-rate bias moves from ``start`` (the learning rates
  ``(G,)`` at step 0, whose heads' biases are ``bias``) to ``home_rate``."""
  gap = head_bias(home_rate, 0.0, 0.0)[0] - bias[:, 0]
  # Exactly none where the start is the home rate, however the two biases
  # round: such a run is the run without a home rate (up to how XLA fuses,
  # and so rounds, the rest of the step).
  xp = array_namespace(bias, start)
  return xp.where(start == home_rate, xp.float32(0.0), gap)


def _relaxed_bias(
  bias: jax.Array, gap: jax.Array, count: jax.Array, steps: float
) -> jax.Array:
  """The heads' biases ``(G, 3)`` at step ``count``, the learning rate's moved
  by ``gap`` (:func:`_home_gap`) times ``1 - exp(-count / steps)``."""
  moved = -jnp.expm1(-jnp.asarray(count, jnp.float32) / steps)
  # A concatenation, not `bias.at[:, 0].add`: XLA:CPU expands a scatter into a
  # while loop nested in the training loop's body, which made a model of 1000
  # leaves compile slower (benchmarks/README.md, "Compile time").
  return jnp.concatenate([bias[:, :1] + (gap * moved)[:, None], bias[:, 1:]], axis=1)


def check_bounds(**bounds: float | None) -> None:
  """Each bound is ``None`` or positive."""
  for name, bound in bounds.items():
    if bound is not None and not bound > 0:
      raise ValueError(f"{name} must be > 0 (or None), got {bound!r}.")


# The largest float32 below 1: momentum stays in [0, 1).
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def bounded(
  learning_rate: jax.Array,
  momentum: jax.Array,
  max_learning_rate: jax.Array | float | None,
  max_effective_learning_rate: float | None,
) -> tuple[jax.Array, jax.Array]:
  """The controller's learning rate and momentum within their bounds.

  Momentum is never negative: negative momentum amplifies the oscillation of
  the stiffest directions, the ones that diverge first. The learning rate is
  lowered to ``max_learning_rate`` and so that ``learning_rate / (1 -
  momentum)``, heavy ball's effective step, stays below
  ``max_effective_learning_rate``.
  """
  momentum = jnp.clip(momentum, 0.0, _BELOW_ONE)
  if max_learning_rate is not None:
    learning_rate = jnp.minimum(learning_rate, max_learning_rate)
  if max_effective_learning_rate is not None:
    learning_rate = jnp.minimum(
      learning_rate, max_effective_learning_rate * (1.0 - momentum)
    )
  return learning_rate, momentum
