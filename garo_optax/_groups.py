"""Which leaves share one set of hyperparameters (GARO's granularity)."""

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Granularity = str | Any | Callable[[Any], Any]


class Groups(NamedTuple):
  """A static partition of a pytree's leaves into named groups."""

  names: tuple[str, ...]  # sorted, as jax orders the keys of a dict
  leaf_groups: tuple[int, ...]  # group index of each leaf, in flattening order
  is_global: bool  # one group, reported as scalars rather than by name


def _path_name(path) -> str:
  """``"Dense_0/kernel"`` for the path of a leaf."""
  parts = []
  for key in path:
    # Flax NNX keeps each array in a Variable whose one child is `.value`.
    if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
      continue
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts) or "."


def make_groups(params: Any, granularity: Granularity) -> Groups:
  """Partitions the leaves of ``params`` into groups.

  Args:
    params: the parameters (or any tree with their structure).
    granularity: ``"global"`` (one group), ``"per_leaf"`` (one group per leaf,
      named by its path such as ``"Dense_0/kernel"``), a pytree of string
      labels with the structure of ``params`` (as for
      :func:`optax.multi_transform`), or a function of ``params`` returning one.

  Returns:
    The groups.

  Raises:
    ValueError: unknown granularity, or labels that do not match ``params``.
  """
  leaves_with_path, treedef = jax.tree.flatten_with_path(params)
  if isinstance(granularity, str):
    if granularity == "global":
      return Groups(("global",), (0,) * len(leaves_with_path), True)
    if granularity == "per_leaf":
      labels = [_path_name(path) for path, _ in leaves_with_path]
    else:
      raise ValueError(
        f"Unknown granularity {granularity!r}: use 'global', 'per_leaf', a "
        "pytree of group labels shaped like the params, or a function of the "
        "params that returns one."
      )
  else:
    tree = granularity(params) if callable(granularity) else granularity
    try:
      labels = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
      raise ValueError(
        "The group labels must be a pytree with the structure of the params "
        f"(one label per leaf). Params: {treedef}; labels: "
        f"{jax.tree.structure(tree)}."
      ) from e
    bad = [label for label in labels if not isinstance(label, str)]
    if bad:
      raise ValueError(f"Group labels must be strings, got {bad[0]!r}.")
  names = tuple(sorted(set(labels)))
  index = {name: i for i, name in enumerate(names)}
  return Groups(names, tuple(index[label] for label in labels), False)


def group_sums(per_leaf: jax.Array, groups: Groups) -> jax.Array:
  """Adds up rows ``(R, K)`` into per-group rows ``(G, K)``.

  Row ``i`` belongs to group ``groups.leaf_groups[i]``: one row per leaf, or
  any rows so labelled (``_statistics`` has a row per batch of leaves). The
  grouping is static, so this is a sum, a fixed permutation (one row per
  group) or a product with a constant 0/1 matrix: no scatter.
  """
  if groups.is_global:
    return jnp.sum(per_leaf, axis=0, keepdims=True)
  leaf_groups = np.asarray(groups.leaf_groups)
  if len(groups.names) == len(leaf_groups):  # one leaf per group
    if np.array_equal(leaf_groups, np.arange(len(leaf_groups))):
      return per_leaf
    return per_leaf[np.argsort(leaf_groups)]
  one_hot = np.arange(len(groups.names))[:, None] == leaf_groups[None, :]
  return jnp.asarray(one_hot, per_leaf.dtype) @ per_leaf


@jax.tree_util.register_pytree_with_keys_class
class ByGroup(Mapping):
  """Per-group values, read-only like a ``{group name: scalar}`` dict.

  Stored as one array so that a model with thousands of groups carries three
  small arrays in its optimizer state rather than thousands of scalars; the
  names are static (pytree auxiliary data).
  """

  def __init__(self, names: tuple[str, ...], values: jax.Array):
    self.names = tuple(names)
    self.values = values  # shape=(G,)

  def __getitem__(self, name: str) -> jax.Array:
    try:
      return self.values[self.names.index(name)]
    except ValueError:
      raise KeyError(
        f"Unknown group {name!r}; the groups are {list(self.names)}."
      ) from None

  def __iter__(self) -> Iterator[str]:
    return iter(self.names)

  def __len__(self) -> int:
    return len(self.names)

  def __repr__(self) -> str:
    return f"ByGroup({dict(self)!r})"

  def tree_flatten_with_keys(self):
    return ((jax.tree_util.GetAttrKey("values"), self.values),), self.names

  @classmethod
  def tree_unflatten(cls, names, children):
    return cls(names, *children)


def _register_flax_serialization() -> None:
  """Lets ``flax.serialization`` checkpoint states holding :class:`ByGroup`."""
  try:
    from flax import serialization
  except ImportError:
    return
  serialization.register_serialization_state(
    ByGroup,
    lambda x: {"values": serialization.to_state_dict(x.values)},
    lambda x, state: ByGroup(
      x.names, serialization.from_state_dict(x.values, state["values"])
    ),
    override=True,
  )


_register_flax_serialization()
