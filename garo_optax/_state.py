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
