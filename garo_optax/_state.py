"""GARO's optimizer state, and reading the hyperparameters off it."""

from typing import Any, NamedTuple

import jax
import optax

from garo_optax import _features, _groups, _safeguard


class GaroState(NamedTuple):
  """State of :func:`garo`."""

  count: jax.Array  # shape=(), int32: number of steps applied
  hidden: jax.Array  # shape=(H,) or (G, H) per group, float32
  # shape=(G, 3), float32: running offsets of the hyperparameters from the
  # values they start from (log ratios for the rates, differences for momentum)
  offsets: jax.Array
  mu: optax.Updates  # momentum buffers, shaped like the params
  # Values applied at the last step: float32 scalars, or ByGroup mappings.
  hyperparams: dict[str, Any]
  feature_state: _features.FeatureState  # running statistics for the features
  safeguard: _safeguard.SafeguardState  # learning-rate cap and what sets it
  skipped: jax.Array  # shape=(), int32: steps skipped on non-finite input
  skipped_in_a_row: jax.Array  # shape=(), int32: since the last applied step
  diverged: jax.Array  # shape=(), bool: skipped DEAD_AFTER steps in a row: dead


class GaroAdamWState(NamedTuple):
  """State of :func:`garo_adamw`."""

  count: jax.Array  # shape=(), int32: number of steps applied
  hidden: jax.Array  # shape=(H,) or (G, H) per group, float32
  # shape=(G, 3), float32: running offsets of the hyperparameters from the
  # values they start from (log ratios for the rates, differences for b1)
  offsets: jax.Array
  mu: optax.Updates  # first moments, shaped like the params
  nu: optax.Updates  # second moments, shaped like the params
  # shape=(G,), float32: the total weight of the gradients in each group's
  # first moments (1 - b1^t for a constant b1), which corrects their bias
  mu_weight: jax.Array
  # Values applied at the last step: float32 scalars, or ByGroup mappings.
  hyperparams: dict[str, Any]
  feature_state: _features.FeatureState  # running statistics for the features
  safeguard: _safeguard.SafeguardState  # learning-rate cap and what sets it
  skipped: jax.Array  # shape=(), int32: steps skipped on non-finite input
  skipped_in_a_row: jax.Array  # shape=(), int32: since the last applied step
  diverged: jax.Array  # shape=(), bool: skipped DEAD_AFTER steps in a row: dead


STATES = (GaroState, GaroAdamWState)


def hyperparams(state: Any) -> dict[str, Any]:
  """The hyperparameters GARO applied at its last step.

  Args:
    state: a :class:`GaroState` or :class:`GaroAdamWState`, or any optimizer
      state that contains exactly one (e.g. the state of an ``optax.chain``).

  Returns:
    ``{"learning_rate": ..., "momentum": ..., "weight_decay": ...}`` for
    :func:`garo`, ``{"learning_rate": ..., "b1": ..., "weight_decay": ...}``
    for :func:`garo_adamw`; each value is a scalar for global granularity and
    a ``{group name: scalar}`` dict otherwise. Before the first update these
    are the starting values. (In the state itself, and so through
    ``optax.tree.get``, per-group values are a read-only :class:`ByGroup`
    mapping backed by one array.)

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
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, STATES))
    if isinstance(x, STATES)
  ]
  if len(found) != 1:
    raise ValueError(
      "Expected one GaroState or GaroAdamWState inside the optimizer state, "
      f"found {len(found)}."
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
