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
# garo's max_effective_learning_rate, home_learning_rate and home_steps for
# this controller: those of its meta-training (``garo_optax/meta/configs/
# default.json``). The learning rate is lowered so that learning_rate /
# (1 - momentum) never exceeds 1, and the learning-rate head's bias moves from
# the starting rate's to 0.01's (garo's default rate) with a time constant of
# 100 steps, so that the starting rate matters less after a few hundred steps.
MAX_EFFECTIVE_LEARNING_RATE = 1.0
HOME_LEARNING_RATE = 0.01
HOME_STEPS = 100.0


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
