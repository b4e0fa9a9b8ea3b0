"""The controller: a GRU and three heads that emit GARO's hyperparameters.

What is learned lives here (:class:`ControllerParams`, an explicit pytree so
that ``jax.grad`` with respect to it works); the problems it learns on and how
it learns live in :mod:`garo_optax.meta`.
"""

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _features, _gru

HEAD_NAMES = ("learning_rate", "momentum", "weight_decay")
# Pre-activation of the weight-decay head when the requested decay is zero:
# softplus(-20) ≈ 2e-9, below float32 rounding of any gradient it is added to.
WEIGHT_DECAY_FLOOR_BIAS = -20.0

FILE_FORMAT = "garo_optax.controller"
FILE_VERSION = 1


class ControllerParams(NamedTuple):
  """Weights of a GARO controller with ``F`` features and ``H`` hidden units.

  The heads have no bias of their own: :func:`head_bias` derives it from the
  starting hyperparameters given to :func:`garo_optax.garo`, so any controller,
  trained or not, starts as plain SGD at those values.
  """

  gru: _gru.GRUParams
  head_kernel: jax.Array  # shape=(H, 3): columns [learning_rate | momentum | wd]

  @property
  def hidden_size(self) -> int:
    return self.head_kernel.shape[-2]


def init_controller(
  key: jax.Array,
  *,
  hidden_size: int = 16,
  head_scale: float = 0.1,
) -> ControllerParams:
  """A seeded, untrained controller that stays close to SGD.

  Args:
    key: a PRNG key.
    hidden_size: number of GRU units.
    head_scale: standard deviation of each head's output for a hidden state of
      unit norm; small values keep the hyperparameters near their start.

  Returns:
    The controller's weights, in float32.

  Examples:
    >>> import jax
    >>> import garo_optax
    >>> controller = garo_optax.init_controller(jax.random.key(0), hidden_size=8)
    >>> controller.head_kernel.shape
    (8, 3)
  """
  gru_key, head_key = jax.random.split(key)
  # A Python float, so that the kernel stays float32 when x64 is enabled.
  head_kernel = float(head_scale / np.sqrt(hidden_size)) * jax.random.normal(
    head_key, (hidden_size, len(HEAD_NAMES)), jnp.float32
  )
  return ControllerParams(
    gru=_gru.init_gru(gru_key, _features.NUM_FEATURES, hidden_size),
    head_kernel=head_kernel,
  )


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


def heads(pre_activation: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maps the heads' pre-activations ``(..., 3)`` to (lr, momentum, wd)."""
  return (
    jax.nn.softplus(pre_activation[..., 0]),
    jnp.tanh(pre_activation[..., 1]),
    jax.nn.softplus(pre_activation[..., 2]),
  )


def controller_step(
  controller: ControllerParams,
  features: jax.Array,
  hidden: jax.Array,
  bias: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
  """Advances the GRU and reads the hyperparameters off the new hidden state.

  Args:
    controller: the controller's weights.
    features: array ``(G, F)``, one row per group.
    hidden: array ``(G, H)``, the previous hidden state.
    bias: array ``(3,)`` or ``(G, 3)`` from :func:`head_bias`.

  Returns:
    ``(hidden, (learning_rate, momentum, weight_decay))``, the hyperparameters
    each of shape ``(G,)``.
  """
  hidden = _gru.gru_cell(controller.gru, features, hidden)
  return hidden, heads(hidden @ controller.head_kernel + bias)


def _flatten(controller: ControllerParams) -> dict[str, np.ndarray]:
  arrays = {f"gru/{k}": v for k, v in controller.gru._asdict().items()}
  arrays["head_kernel"] = controller.head_kernel
  return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def save_controller(path: str | os.PathLike, controller: ControllerParams) -> None:
  """Writes a controller to a ``.npz`` file (no pickle).

  The file holds ``format`` (``"garo_optax.controller"``), ``version`` (an
  integer, currently 1), ``num_features``, ``hidden_size``, and one float32
  array per weight: ``gru/input_kernel`` ``(F, 3H)``, ``gru/input_bias``
  ``(3H,)``, ``gru/hidden_kernel`` ``(H, 3H)``, ``gru/hidden_bias`` ``(H,)``,
  ``head_kernel`` ``(H, 3)``.

  Args:
    path: where to write; ``numpy`` appends ``.npz`` if it is missing.
    controller: the weights to save.
  """
  _check_shapes(_flatten(controller), source="controller")
  np.savez(
    path,
    format=np.array(FILE_FORMAT),
    version=np.array(FILE_VERSION),
    num_features=np.array(_features.NUM_FEATURES),
    hidden_size=np.array(controller.hidden_size),
    **_flatten(controller),
  )


def _expected_shapes(hidden_size: int) -> dict[str, tuple[int, ...]]:
  f, h = _features.NUM_FEATURES, hidden_size
  return {
    "gru/input_kernel": (f, 3 * h),
    "gru/input_bias": (3 * h,),
    "gru/hidden_kernel": (h, 3 * h),
    "gru/hidden_bias": (h,),
    "head_kernel": (h, len(HEAD_NAMES)),
  }


def _check_shapes(arrays: dict[str, np.ndarray], *, source: str) -> None:
  hidden_size = arrays["head_kernel"].shape[0]
  for name, shape in _expected_shapes(hidden_size).items():
    if name not in arrays:
      raise ValueError(f"{source} has no array {name!r}.")
    if arrays[name].shape != shape:
      raise ValueError(
        f"{source}: {name!r} has shape {arrays[name].shape}, expected {shape} "
        f"for {_features.NUM_FEATURES} features and hidden_size={hidden_size}."
      )


def load_controller(path: str | os.PathLike) -> ControllerParams:
  """Reads a controller written by :func:`save_controller`.

  Args:
    path: the ``.npz`` file.

  Returns:
    The controller's weights, in float32.

  Raises:
    ValueError: the file is not a GARO controller, has another format version,
      or its arrays do not have the shapes this version of GARO needs.
  """
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  if arrays.get("format") != FILE_FORMAT:
    raise ValueError(f"{os.fspath(path)!r} is not a GARO controller file.")
  version = int(arrays["version"])
  if version != FILE_VERSION:
    raise ValueError(
      f"{os.fspath(path)!r} has controller format version {version}; this "
      f"garo_optax reads version {FILE_VERSION}."
    )
  if int(arrays["num_features"]) != _features.NUM_FEATURES:
    raise ValueError(
      f"{os.fspath(path)!r} was trained on {int(arrays['num_features'])} "
      f"features; this garo_optax computes {_features.NUM_FEATURES}."
    )
  if "head_kernel" not in arrays:
    raise ValueError(f"{os.fspath(path)!r} has no array 'head_kernel'.")
  _check_shapes(arrays, source=repr(os.fspath(path)))
  gru = _gru.GRUParams(
    **{k: jnp.asarray(arrays[f"gru/{k}"]) for k in _gru.GRUParams._fields}
  )
  return ControllerParams(gru=gru, head_kernel=jnp.asarray(arrays["head_kernel"]))
