"""What ``garo`` refuses, checked before any computation, with why."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _groups


def check_params(params: Any) -> None:
  """Every leaf of ``params`` is a real floating-point array."""
  for path, leaf in jax.tree.leaves_with_path(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
        f"garo needs real floating-point params; {jax.tree_util.keystr(path)} "
        f"has dtype {dtype}."
      )


def check_options(granularity: Any, hidden_size: Any, seed: Any) -> None:
  """Checks the options that must be static."""
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


def check_total_steps(total_steps: Any) -> None:
  """``total_steps`` is ``None``, a positive integer, or a traced scalar
  (``optax.inject_hyperparams``, meta-training)."""
  if total_steps is None or isinstance(total_steps, jax.core.Tracer):
    return
  if isinstance(total_steps, jax.Array | np.ndarray):
    if total_steps.shape != ():
      raise ValueError(f"total_steps must be a scalar, got shape {total_steps.shape}.")
    total_steps = total_steps.item()
  if isinstance(total_steps, bool) or not isinstance(
    total_steps, int | np.integer | float
  ):
    raise TypeError(
      f"total_steps must be a number of steps or None, got {total_steps!r}."
    )
  if not (np.isfinite(total_steps) and total_steps >= 1):
    raise ValueError(
      f"total_steps must be a positive number of steps, got {total_steps}."
    )


def check_loss(value: Any) -> None:
  """The loss ``value`` given to ``update`` is a scalar (or ``None``)."""
  if value is not None and jnp.shape(value) != ():
    raise ValueError(
      "value must be the loss as a scalar (e.g. the mean over the batch), "
      f"got shape {jnp.shape(value)}."
    )


def check_state(state: Any, groups: _groups.Groups, hidden_shape: tuple) -> None:
  """Checks that ``state`` was made by this transformation's ``init``."""
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


def check_like(name: str, tree: Any, mu: Any) -> None:
  """``tree`` has the structure and shapes of the momentum buffers ``mu``."""
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
