"""The meta-trained GARO controller shipped with the package.

``garo_optax.garo()`` uses it by default (as ``controller="pretrained"`` does),
with the bound on the effective step it was meta-trained under
(``MAX_EFFECTIVE_LEARNING_RATE``, unless ``max_effective_learning_rate`` is
given) and its home learning rate (``HOME_LEARNING_RATE`` and ``HOME_STEPS``,
unless given). How it was trained, the command that regenerates it and its
evaluation are in ``README.md`` here.
"""

import functools
import pathlib

import jax
import numpy as np

from garo_optax import _controller

WEIGHTS = pathlib.Path(__file__).with_name("controller.npz")
# garo's max_effective_learning_rate during meta-training: the learning rate
# is lowered so that learning_rate / (1 - |momentum|) never exceeds it.
MAX_EFFECTIVE_LEARNING_RATE = 1.0
# garo's home_learning_rate and home_steps for this controller, set after
# meta-training (which did not use them): the learning-rate head's bias moves
# from the starting rate's to 0.01's (garo's default rate) with a time
# constant of 100 steps, so that the starting rate matters less after a few
# hundred steps. A run that starts at 0.01 is the same as without them, up to
# float rounding.
HOME_LEARNING_RATE = 0.01
HOME_STEPS = 100.0
# Features the controller does not read: their input weights were zeroed after
# meta-training (``python -m garo_optax.meta.train --meta-steps 0
# --drop-features ...``). The step-to-step change of the gradient norm is
# mostly minibatch noise, to which the trained controller reacted by braking.
DROPPED_FEATURES = ("log_grad_norm_change",)


@functools.cache
def load() -> _controller.ControllerParams:
  """The shipped controller's weights (read once), as NumPy arrays.

  NumPy leaves become constants of any function that closes over them, as
  device arrays would, without holding a device buffer for the process's
  life.
  """
  # The first call may come while tracing (garo() built inside jit).
  with jax.ensure_compile_time_eval():
    return jax.tree.map(np.asarray, _controller.load_controller(WEIGHTS))
