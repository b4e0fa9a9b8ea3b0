"""The meta-trained GARO controllers shipped with the package.

``garo_optax.garo()`` and ``garo_optax.garo_adamw()`` use theirs by default
(as ``controller="pretrained"`` does), with the bounds and the home learning
rate they were meta-trained under (:data:`BOUNDS`; each applies unless given).
How they were trained, the commands that regenerate them and their
evaluation are in ``README.md`` here.
"""

import functools
import pathlib
from typing import NamedTuple

import jax
import numpy as np

from garo_optax import _controller

_HERE = pathlib.Path(__file__).parent
# The weights of each transformation's controller.
FILES = {
  "garo": _HERE / "controller.npz",
  "garo_adamw": _HERE / "controller_adamw.npz",
}
WEIGHTS = FILES["garo"]


class Bounds(NamedTuple):
  """The options a pretrained controller's transformation uses unless they
  are given: those it was meta-trained with, but for garo's ``home_steps``."""

  max_learning_rate: float | None
  max_effective_learning_rate: float | None
  home_learning_rate: float
  home_steps: float


# Those of the meta-training configurations (``RECIPES``),
# but for garo's home_steps. garo: the learning rate is lowered so that
# learning_rate / (1 - momentum) never exceeds 1, and the learning-rate head's
# bias moves from the starting rate's to 0.01's (garo's default rate) with a
# time constant of 30 steps, so that the starting rate matters little after a
# hundred steps. Its controller was trained with 100 (``TRAINED_HOME_STEPS``);
# 30 was chosen on the choice tasks afterwards
# (benchmarks/results/home_steps/). garo_adamw: the same around AdamW's usual
# 1e-3 with 100 steps, its training's, the rate kept below 0.1.
TRAINED_HOME_STEPS = 100.0
# The meta-training configuration each shipped controller was trained with.
RECIPES = {"garo": "default", "garo_adamw": "adamw_scales"}
BOUNDS = {
  "garo": Bounds(None, 1.0, 0.01, 30.0),
  "garo_adamw": Bounds(0.1, None, 1e-3, 100.0),
}
MAX_EFFECTIVE_LEARNING_RATE = BOUNDS["garo"].max_effective_learning_rate
HOME_LEARNING_RATE = BOUNDS["garo"].home_learning_rate
HOME_STEPS = BOUNDS["garo"].home_steps


@functools.cache
def load(optimizer: str = "garo") -> _controller.ControllerParams:
  """The shipped controller of ``optimizer`` (``"garo"`` or ``"garo_adamw"``),
  read once, as NumPy arrays.

  NumPy leaves become constants of any function that closes over them, as
  device arrays would, without holding a device buffer for the process's
  life.
  """
  if optimizer not in FILES:
    raise ValueError(f"optimizer must be one of {tuple(FILES)}, got {optimizer!r}.")
  # The first call may come while tracing (garo() built inside jit).
  with jax.ensure_compile_time_eval():
    return jax.tree.map(
      np.asarray, _controller.load_controller(FILES[optimizer], optimizer=optimizer)
    )
