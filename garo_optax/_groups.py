"""Which leaves share one set of hyperparameters (GARO's granularity)."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Granularity = str | Any | Callable[[Any], Any]


class Groups(NamedTuple):
  """A static partition of a pytree's leaves into named groups."""

  names: tuple[str, ...]  # sorted, as jax orders the keys of a dict
  leaf_groups: tuple[int, ...]  # group index of each leaf, in flattening order
  is_global: bool  # one group, reported as scalars rather than by name


def _path_name(path) -> str:
  parts = []
  for key in path:
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
