"""The controller: a GRU and three heads that emit GARO's hyperparameters.

What is learned lives here (:class:`ControllerParams`, an explicit pytree so
that ``jax.grad`` with respect to it works); the problems it learns on and how
it learns live in :mod:`garo_optax.meta`.
"""

import os
import zipfile
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import _features, _gru

HEAD_NAMES = ("learning_rate", "momentum", "weight_decay")

FILE_FORMAT = "garo_optax.controller"
# Version 2: the features of garo_optax 0.3 (``_features.FEATURE_NAMES``) and
# running-mean outputs (``OUTPUT_DECAY``). Version 1 files were trained on the
# features of 0.2 and cannot drive this GARO.
FILE_VERSION = 2
# The transformations a controller drives; a file names the one it was
# trained for (files without the entry predate garo_adamw: garo).
OPTIMIZERS = ("garo", "garo_adamw")
# Decay of the running mean the applied hyperparameters follow the heads with,
# and the most that mean falls and rises in one step: log learning rate,
# momentum, log weight decay. A factor of 10 in the learning rate takes 47
# steps, a change of momentum from 0 to 0.9 takes 45. (A slower rise of the
# learning rate was tried and not adopted: benchmarks/results/meta_v2/rise_cap/.)
OUTPUT_DECAY = 0.9
MAX_OFFSET_STEP = (0.05, 0.02, 0.05)
# The rise's bound, its own name so that an experiment can set it apart (the
# commands of benchmarks/results/meta_v2/rise_cap/ do, before GARO's first
# update: it is read when _transform._decide is first traced).
MAX_OFFSET_RISE = MAX_OFFSET_STEP
# The largest float32 below 1: momentum stays in [0, 1).
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


class ControllerParams(NamedTuple):
  """Weights of a GARO controller with ``F`` features and ``H`` hidden units.

  The heads have no bias of their own: ``_hyperparams.head_bias`` derives it
  from the
  starting hyperparameters given to :func:`garo_optax.garo`, so any controller,
  trained or not, starts as plain SGD at those values.
  """

  gru: _gru.GRUParams
  head_kernel: jax.Array  # shape=(H, 3): columns [learning_rate | momentum | wd]

  @property
  def hidden_size(self) -> int:
    return self.head_kernel.shape[-2]

  @property
  def num_features(self) -> int:
    """How many features it reads: the first ``F`` of
    ``_features.FEATURE_NAMES``."""
    return self.gru.input_kernel.shape[-2]


def init_controller(
  key: jax.Array,
  *,
  hidden_size: int = 16,
  head_scale: float = 0.1,
  num_features: int = _features.BASE_NUM_FEATURES,
) -> ControllerParams:
  """A seeded, untrained controller that stays close to SGD.

  Args:
    key: a PRNG key.
    hidden_size: number of GRU units.
    head_scale: standard deviation of each head's output for a hidden state of
      unit norm; small values keep the hyperparameters near their start.
    num_features: how many features it reads, the first of
      ``FEATURE_NAMES``: ``BASE_NUM_FEATURES`` (7), or ``NUM_FEATURES`` (8)
      to read the size of the steps against the weights too.

  Returns:
    The controller's weights, in float32.

  Examples:
    >>> import jax
    >>> import garo_optax
    >>> controller = garo_optax.init_controller(jax.random.key(0), hidden_size=8)
    >>> controller.head_kernel.shape
    (8, 3)
  """
  check_num_features(num_features)
  gru_key, head_key = jax.random.split(key)
  # A Python float, so that the kernel stays float32 when x64 is enabled.
  head_kernel = float(head_scale / np.sqrt(hidden_size)) * jax.random.normal(
    head_key, (hidden_size, len(HEAD_NAMES)), jnp.float32
  )
  return ControllerParams(
    gru=_gru.init_gru(gru_key, num_features, hidden_size),
    head_kernel=head_kernel,
  )


def heads(pre_activation: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maps the heads' pre-activations ``(..., 3)`` to (lr, momentum, wd)."""
  return (
    jax.nn.softplus(pre_activation[..., 0]),
    jnp.tanh(pre_activation[..., 1]),
    jax.nn.softplus(pre_activation[..., 2]),
  )


def _offsets(pre_activation: jax.Array, bias: jax.Array) -> jax.Array:
  """How far the heads' values at ``pre_activation`` are from those at ``bias``:
  ``(..., 3)``, log ratios for the learning rate and the weight decay, the
  difference for the momentum."""
  lr, mom, wd = heads(pre_activation)
  lr_ref, mom_ref, wd_ref = heads(bias)
  return jnp.stack(
    [jnp.log(lr) - jnp.log(lr_ref), mom - mom_ref, jnp.log(wd) - jnp.log(wd_ref)],
    axis=-1,
  )


def _apply_offsets(
  offsets: jax.Array, bias: jax.Array, coupled: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The hyperparameters at ``offsets`` from the reference values.

  With ``coupled`` (heavy ball, whose momentum sums the gradients), the
  learning-rate offset moves the effective step ``learning_rate / (1 -
  momentum)``: a change of momentum leaves the effective step as it was (the
  learning rate moves by ``1 - momentum``), so the controller can trade noise
  averaging against step size in one head. Without it (Adam's first moment,
  a running mean whose step does not grow with its decay) the offset moves
  the learning rate itself. Momentum is kept in ``[0, 1)``.
  """
  lr, mom_ref, wd = heads(bias)
  mom = jnp.clip(mom_ref + offsets[..., 1], 0.0, _BELOW_ONE)
  lr = lr * jnp.exp(offsets[..., 0])
  if coupled:
    lr = lr * ((1.0 - mom) / (1.0 - mom_ref))
  return lr, mom, wd * jnp.exp(offsets[..., 2])


def controller_step(
  controller: ControllerParams,
  features: jax.Array,
  hidden: jax.Array,
  offsets: jax.Array,
  bias: jax.Array,
  *,
  coupled: bool = True,
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
  """Advances the GRU and reads the hyperparameters off the new hidden state.

  The heads' values are not applied as they are: the applied values follow
  them through a running mean (decay ``OUTPUT_DECAY``, moving at most
  ``MAX_OFFSET_STEP`` a step) of their offsets from
  the reference values the biases stand for (log ratios for the learning rate
  and the weight decay, differences for the momentum). The hyperparameters
  change smoothly, as a schedule does, however noisy a step's reading is, and
  a zero offset (step 0, or zero head weights) is exactly the reference.

  Args:
    controller: the controller's weights.
    features: array ``(G, F)``, one row per group.
    hidden: array ``(G, H)``, the previous hidden state.
    offsets: array ``(G, 3)``, the previous running offsets.
    bias: array ``(3,)`` or ``(G, 3)`` from ``_hyperparams.head_biases``.
    coupled: whether the learning rate's offset moves heavy ball's effective
      step (``garo``) or the learning rate itself (``garo_adamw``); see
      :func:`_apply_offsets`.

  Returns:
    ``(hidden, offsets, (learning_rate, momentum, weight_decay))``, the
    hyperparameters each of shape ``(G,)``.
  """
  hidden = _gru.gru_cell(controller.gru, features, hidden)
  bias = jnp.broadcast_to(bias, offsets.shape)
  target = _offsets(hidden @ controller.head_kernel + bias, bias)
  step = jnp.clip(
    (1.0 - OUTPUT_DECAY) * (target - offsets),
    -np.asarray(MAX_OFFSET_STEP, np.float32),
    np.asarray(MAX_OFFSET_RISE, np.float32),
  )
  offsets = offsets + step
  return hidden, offsets, _apply_offsets(offsets, bias, coupled)


def _flatten(controller: ControllerParams) -> dict[str, np.ndarray]:
  arrays = {f"gru/{k}": v for k, v in controller.gru._asdict().items()}
  arrays["head_kernel"] = controller.head_kernel
  return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def save_controller(
  path: str | os.PathLike,
  controller: ControllerParams,
  *,
  optimizer: str = "garo",
) -> None:
  """Writes a controller to a ``.npz`` file (no pickle).

  The file holds ``format`` (``"garo_optax.controller"``), ``version`` (an
  integer, currently 2), ``optimizer`` (the transformation the controller was
  trained to drive), ``num_features``, ``hidden_size``, and one float32
  array per weight: ``gru/input_kernel`` ``(F, 3H)``, ``gru/input_bias``
  ``(3H,)``, ``gru/hidden_kernel`` ``(H, 3H)``, ``gru/hidden_bias`` ``(H,)``,
  ``head_kernel`` ``(H, 3)``. The same weights give the same bytes.

  Args:
    path: where to write; ``numpy`` appends ``.npz`` if it is missing.
    controller: the weights to save.
    optimizer: ``"garo"`` or ``"garo_adamw"``: what the controller drives.
  """
  _check_optimizer(optimizer)
  problem = _shape_problem(_flatten(controller))
  if problem:
    raise ValueError(f"Cannot save this controller: {problem}.")
  arrays = {
    "format": np.array(FILE_FORMAT),
    "version": np.array(FILE_VERSION),
    "optimizer": np.array(optimizer),
    "num_features": np.array(controller.num_features),
    "hidden_size": np.array(controller.hidden_size),
    **_flatten(controller),
  }
  path = os.fspath(path)
  if not path.endswith(".npz"):
    path += ".npz"
  # np.savez stamps each entry with the time of writing; a fixed stamp makes
  # the same weights the same bytes.
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    for name, array in arrays.items():
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      with archive.open(info, "w") as file:
        np.lib.format.write_array(file, np.asanyarray(array), allow_pickle=False)


# The numbers of features a controller may read (_features.FEATURE_NAMES).
NUM_FEATURES_READ = (_features.BASE_NUM_FEATURES, _features.NUM_FEATURES)


def check_num_features(num_features: Any) -> None:
  if num_features not in NUM_FEATURES_READ:
    raise ValueError(
      f"num_features must be one of {NUM_FEATURES_READ}, got {num_features!r}."
    )


def _expected_shapes(hidden_size: int, num_features: int) -> dict[str, tuple[int, ...]]:
  f, h = num_features, hidden_size
  return {
    "gru/input_kernel": (f, 3 * h),
    "gru/input_bias": (3 * h,),
    "gru/hidden_kernel": (h, 3 * h),
    "gru/hidden_bias": (h,),
    "head_kernel": (h, len(HEAD_NAMES)),
  }


def _shape_problem(arrays: dict[str, np.ndarray]) -> str | None:
  """What is wrong with the weights' names or shapes, or ``None``."""
  if "head_kernel" not in arrays:
    return "it has no array 'head_kernel'"
  if arrays["head_kernel"].ndim != 2:
    return (
      f"'head_kernel' has shape {arrays['head_kernel'].shape}, expected "
      f"(hidden_size, {len(HEAD_NAMES)})"
    )
  hidden_size = arrays["head_kernel"].shape[0]
  kernel = arrays.get("gru/input_kernel")
  num_features = kernel.shape[0] if kernel is not None and kernel.ndim == 2 else 0
  if num_features not in NUM_FEATURES_READ:
    return (
      f"'gru/input_kernel' reads {num_features} features; a controller reads "
      f"{' or '.join(map(str, NUM_FEATURES_READ))}"
    )
  for name, shape in _expected_shapes(hidden_size, num_features).items():
    if name not in arrays:
      return f"it has no array {name!r}"
    if arrays[name].shape != shape:
      return (
        f"{name!r} has shape {arrays[name].shape}, expected {shape} for "
        f"{num_features} features and hidden_size={hidden_size}"
      )
  return None


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The arrays of an ``.npz`` file; ``ValueError`` if it is not one."""
  with open(path, "rb") as file:  # a missing file raises FileNotFoundError
    try:
      data = np.load(file, allow_pickle=False)
      if isinstance(data, np.lib.npyio.NpzFile):
        with data:
          return {name: data[name] for name in data.files}
    # What NumPy and zipfile raise for other bytes. NumPy's own message would
    # suggest unpickling the file, which must never be done with weights.
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error):
      raise _invalid(
        path,
        "it is not an .npz archive of plain arrays (as save_controller writes)",
      ) from None
  raise _invalid(path, "it holds a single array, not an .npz archive")


def _invalid(path: str | os.PathLike, reason: str) -> ValueError:
  return ValueError(
    f"{os.fspath(path)!r} is not a valid GARO controller file: {reason}."
  )


def _integer_entry(
  arrays: dict[str, np.ndarray], name: str, path: str | os.PathLike
) -> int:
  if name not in arrays:
    raise _invalid(path, f"it has no {name!r} entry")
  value = arrays[name]
  if value.shape != () or not np.issubdtype(value.dtype, np.integer):
    raise _invalid(path, f"its {name!r} entry is not an integer")
  return int(value)


def _check_optimizer(optimizer: Any) -> None:
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")


def load_controller(
  path: str | os.PathLike, *, optimizer: str | None = None
) -> ControllerParams:
  """Reads a controller written by :func:`save_controller`.

  Args:
    path: the ``.npz`` file.
    optimizer: if given (``"garo"`` or ``"garo_adamw"``), the file must hold a
      controller trained for that transformation: a controller learns the
      hyperparameters of one update rule, and its readings mean nothing to
      another.

  Returns:
    The controller's weights, in float32.

  Raises:
    FileNotFoundError: there is no file at ``path``.
    ValueError: the file is not a valid GARO controller file: not an ``.npz``
      archive of plain arrays, no ``format`` or ``version`` entry, another
      format version or number of features than this garo_optax's, a
      controller trained for another transformation than ``optimizer``,
      missing weights, weights of the wrong shape, or weights that are not
      finite.
  """
  if optimizer is not None:
    _check_optimizer(optimizer)
  arrays = _read_npz(path)
  if "format" not in arrays:
    raise _invalid(path, "it has no 'format' entry")
  file_format = arrays["format"]
  if file_format.shape != () or file_format.dtype.kind != "U":
    raise _invalid(path, "its 'format' entry is not a string")
  if str(file_format) != FILE_FORMAT:
    raise _invalid(path, f"its format is {str(file_format)!r}, not {FILE_FORMAT!r}")
  version = _integer_entry(arrays, "version", path)
  if version != FILE_VERSION:
    raise _invalid(
      path,
      f"it has format version {version}; this garo_optax reads version "
      f"{FILE_VERSION} (controllers of version 1, garo_optax 0.2, read other "
      "features: retrain with garo_optax.meta.train)",
    )
  trained_for = str(arrays.get("optimizer", np.array("garo")))
  if optimizer is not None and trained_for != optimizer:
    raise _invalid(
      path,
      f"it holds a controller trained for {trained_for}, not {optimizer}: a "
      "controller learns one update rule's hyperparameters (load it with "
      "load_controller(path) to use it anyway)",
    )
  num_features = _integer_entry(arrays, "num_features", path)
  if num_features not in NUM_FEATURES_READ:
    raise _invalid(
      path,
      f"it was trained on {num_features} features; this garo_optax's "
      f"controllers read {' or '.join(map(str, NUM_FEATURES_READ))}",
    )
  problem = _shape_problem(arrays)
  if problem:
    raise _invalid(path, problem)
  if arrays["gru/input_kernel"].shape[0] != num_features:
    raise _invalid(
      path,
      f"its 'num_features' entry says {num_features} but 'gru/input_kernel' "
      f"reads {arrays['gru/input_kernel'].shape[0]}",
    )
  shapes = _expected_shapes(arrays["head_kernel"].shape[0], num_features)
  for name in shapes:
    if arrays[name].dtype.kind != "f":
      raise _invalid(path, f"{name!r} has dtype {arrays[name].dtype}, not float")
    if not np.all(np.isfinite(arrays[name])):
      raise _invalid(path, f"{name!r} has NaN or infinite entries")
  weights = {name: jnp.asarray(arrays[name], jnp.float32) for name in shapes}
  gru = _gru.GRUParams(**{k: weights[f"gru/{k}"] for k in _gru.GRUParams._fields})
  return ControllerParams(gru=gru, head_kernel=weights["head_kernel"])


def is_pretrained(controller: Any) -> bool:
  """Whether ``controller`` asks for the shipped, meta-trained controller."""
  return controller is None or (
    isinstance(controller, str) and controller == "pretrained"
  )


def resolve_controller(
  controller: Any, hidden_size: int, seed: int, optimizer: str = "garo"
) -> ControllerParams:
  """The weights the ``controller`` argument of ``optimizer`` (``"garo"`` or
  ``"garo_adamw"``) names (see their docs)."""
  if is_pretrained(controller):
    from garo_optax import pretrained  # imported on use: it reads a file

    return pretrained.load(optimizer)
  if isinstance(controller, str) and controller == "init":
    return init_controller(jax.random.key(seed), hidden_size=hidden_size)
  if isinstance(controller, ControllerParams):
    return controller
  if isinstance(controller, str | os.PathLike):
    if not os.path.exists(controller):
      raise FileNotFoundError(
        f"No controller file {os.fspath(controller)!r}: controller is None or "
        "'pretrained', 'init', the path of a file written by save_controller, "
        "or a ControllerParams."
      )
    return load_controller(controller, optimizer=optimizer)
  raise ValueError(
    f"Unknown controller {controller!r}: use None or 'pretrained' (the "
    "meta-trained one shipped with garo_optax), 'init' (a seeded, untrained "
    "near-SGD controller), the path of a file written by save_controller, or "
    "a ControllerParams (e.g. from load_controller)."
  )
