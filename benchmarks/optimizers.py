"""The optimizers the suite compares, and which of them are available."""

import functools
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from optax import contrib

import garo_optax
from garo_optax import pretrained


class Optimizer(NamedTuple):
  """An optimizer of the suite.

  ``make(learning_rate)`` builds it; ``learning_rate`` is traced inside the
  jitted run, so one compilation serves every grid point and seed. Optimizers
  without a grid always get ``learning_rate``; tuned ones get the grid point
  that wins on a tuning seed (see :mod:`benchmarks.suite`).
  """

  name: str
  description: str
  make: Callable[[Any], optax.GradientTransformation]
  learning_rate: float  # the fixed value, or the grid's centre when tuned
  grid: tuple[float, ...] | None = None  # learning rates to tune over
  # Params to evaluate (schedule-free evaluates at its averaged iterate).
  eval_params: Callable[[Any, Any], Any] = lambda state, params: params
  is_garo: bool = False
  # Built as make(learning_rate, total_steps=<the run's steps>).
  uses_total_steps: bool = False


def _grid(low: float, high: float) -> tuple[float, ...]:
  """Half-decade log grid from ``low`` to ``high``."""
  num = round(2 * np.log10(high / low)) + 1
  return tuple(float(x) for x in np.logspace(np.log10(low), np.log10(high), num))


def garo_variant(
  name: str, description: str, uses_total_steps: bool = False, **garo_kwargs: Any
) -> Optimizer:
  """``garo_optax.garo(lr, **garo_kwargs)``, starting from a learning rate of
  0.01 (and told the run's length if ``uses_total_steps``)."""
  return Optimizer(
    name,
    description,
    functools.partial(garo_optax.garo, **garo_kwargs),
    0.01,
    is_garo=True,
    uses_total_steps=uses_total_steps,
  )


def garo_adamw_variant(
  name: str, description: str, uses_total_steps: bool = False, **kwargs: Any
) -> Optimizer:
  """:func:`garo_variant` for ``garo_optax.garo_adamw``, starting from AdamW's
  usual 1e-3."""
  return garo_variant(name, description, uses_total_steps)._replace(
    make=functools.partial(garo_optax.garo_adamw, **kwargs), learning_rate=1e-3
  )


def _reduce_on_plateau_sgd(learning_rate):
  return optax.chain(
    optax.sgd(learning_rate, momentum=0.9),
    # Losses averaged over 20 minibatches; halve after 5 such windows without
    # improvement.
    contrib.reduce_on_plateau(factor=0.5, patience=5, accumulation_size=20),
  )


def _schedule_free_eval(state, params):
  return contrib.schedule_free_eval_params(state, params)


# Controllers of the meta-training recipe, one per meta-seed
# (python -m garo_optax.meta.train --config default --seed N, with the code of
# 0.10.0): the shipped one is chosen among them, and the recipe's controllers
# with earlier code, on the tasks that are not held out (python -m
# benchmarks.select_controller, results/meta_v2/selection_0.10.0.json).
META_SEEDS_DIR = (
  pathlib.Path(__file__).parent / "results" / "meta_v2" / "retrained_0.10.0"
)
META_SEEDS = (0, 1, 2)
# The meta-seed whose controller ships (garo_optax/pretrained/controller.npz,
# the suite's garo_pretrained); the others are variants garo_seed<N>.
SHIPPED_META_SEED = 2


def shipped_defaults(optimizer: str) -> dict[str, Any]:
  """The options ``optimizer`` applies to its pretrained controller unless
  given (``garo_optax.pretrained.BOUNDS``): a controller from a file gets
  none of them, so another meta-seed's controller is run with these, as it
  would run if it shipped."""
  bounds = pretrained.BOUNDS[optimizer]._asdict()
  if optimizer == "garo_adamw":  # no heavy-ball effective step to bound
    del bounds["max_effective_learning_rate"]
  return bounds


def _meta_seed(seed: int) -> Optimizer:
  path = META_SEEDS_DIR / f"seed{seed}.npz"
  return garo_variant(
    f"garo_seed{seed}",
    f"garo_optax.garo(0.01, controller=<meta-seed {seed}'s controller>), "
    "with the shipped controller's defaults",
    controller=path,
    **shipped_defaults("garo"),
  )


# The same for garo_adamw (python -m garo_optax.meta.train --config
# adamw_scales --seed N --snapshots DIR, with the code of 0.12.0): a meta-seed's
# controller is its checkpoint that ranks first on the tasks that are not held
# out, among those that train the check's transformers
# (benchmarks.select_controller; results/meta_adamw_scales/README.md).
ADAMW_META_SEEDS_DIR = pathlib.Path(__file__).parent / "results" / "meta_adamw_scales"
ADAMW_META_SEED_FILES = {
  0: "seed0/step800.npz",
  1: "seed1/step400.npz",
  2: "seed2/step200.npz",
}
SHIPPED_ADAMW_META_SEED = 1


def _adamw_meta_seed(seed: int) -> Optimizer:
  return garo_adamw_variant(
    f"garo_adamw_seed{seed}",
    f"garo_optax.garo_adamw(1e-3, controller=<meta-seed {seed}'s controller>), "
    "with the shipped controller's defaults",
    controller=ADAMW_META_SEEDS_DIR / ADAMW_META_SEED_FILES[seed],
    **shipped_defaults("garo_adamw"),
  )


_ALL = (
  Optimizer("sgd", "optax.sgd(0.01), GARO's starting point", optax.sgd, 0.01),
  Optimizer(
    "sgd_momentum_tuned",
    "optax.sgd(lr, momentum=0.9), lr tuned on a grid",
    lambda lr: optax.sgd(lr, momentum=0.9),
    0.01,
    _grid(1e-3, 1.0),
  ),
  Optimizer("adam", "optax.adam(1e-3)", optax.adam, 1e-3),
  Optimizer(
    "adam_tuned",
    "optax.adam(lr), lr tuned on a grid",
    optax.adam,
    1e-3,
    _grid(1e-4, 1e-1),
  ),
  Optimizer("adamw", "optax.adamw(1e-3), weight_decay=1e-4", optax.adamw, 1e-3),
  Optimizer("prodigy", "optax.contrib.prodigy()", contrib.prodigy, 1.0),
  Optimizer("dadapt_adamw", "optax.contrib.dadapt_adamw()", contrib.dadapt_adamw, 1.0),
  Optimizer("dog", "optax.contrib.dog()", contrib.dog, 1.0),
  Optimizer(
    "mechanize",
    "optax.contrib.mechanize(optax.adam(1.0))",
    lambda lr: contrib.mechanize(optax.adam(lr)),
    1.0,
  ),
  Optimizer("cocob", "optax.contrib.cocob()", contrib.cocob, 1.0),
  Optimizer(
    "schedule_free_sgd",
    "optax.contrib.schedule_free_sgd(0.1), evaluated at its average",
    contrib.schedule_free_sgd,
    0.1,
    eval_params=_schedule_free_eval,
  ),
  Optimizer(
    "schedule_free_adamw",
    "optax.contrib.schedule_free_adamw() (lr 0.0025), evaluated at its average",
    contrib.schedule_free_adamw,
    0.0025,
    eval_params=_schedule_free_eval,
  ),
  Optimizer(
    "reduce_on_plateau",
    "sgd(0.1, momentum=0.9) + contrib.reduce_on_plateau(0.5, patience 5x20)",
    _reduce_on_plateau_sgd,
    0.1,
  ),
  garo_variant(
    "garo_init",
    'garo_optax.garo(0.01, controller="init"): seeded near-SGD controller',
    controller="init",
  ),
  garo_variant(
    "garo_per_leaf",
    'garo_optax.garo(0.01, granularity="per_leaf")',
    granularity="per_leaf",
  ),
  garo_variant(
    "garo_total_steps",
    "garo_optax.garo(0.01, total_steps=<the run's steps>)",
    uses_total_steps=True,
  ),
  garo_variant(
    "garo_pretrained",
    'garo_optax.garo(0.01, controller="pretrained"): meta-trained controller',
    controller="pretrained",
  ),
  # The shipped meta-seed's controller is garo_pretrained.
  *(_meta_seed(seed) for seed in META_SEEDS if seed != SHIPPED_META_SEED),
  garo_adamw_variant(
    "garo_adamw",
    "garo_optax.garo_adamw(1e-3): AdamW with the meta-trained controller",
  ),
  garo_adamw_variant(
    "garo_adamw_init",
    'garo_optax.garo_adamw(1e-3, controller="init"): seeded near-AdamW controller',
    controller="init",
  ),
  *(_adamw_meta_seed(seed) for seed in META_SEEDS if seed != SHIPPED_ADAMW_META_SEED),
)

OPTIMIZERS: dict[str, Optimizer] = {opt.name: opt for opt in _ALL}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZERS)
# Each GARO variant is compared with these (summary of the suite).
REFERENCES: tuple[str, ...] = ("adam", "sgd")
# Tuning-free peers: optimizers that set their own step size, and schedule-free
# ones, at optax's defaults (schedule_free_sgd at 0.1); each GARO variant is
# also compared with the best of them. Not reduce_on_plateau: a plateau
# scheduler over a hand-set SGD learning rate.
PEERS: tuple[str, ...] = (
  "prodigy",
  "dadapt_adamw",
  "dog",
  "mechanize",
  "cocob",
  "schedule_free_sgd",
  "schedule_free_adamw",
)
TUNED: tuple[str, ...] = tuple(opt.name for opt in _ALL if opt.grid)


def unavailable_reason(optimizer: Optimizer) -> str | None:
  """Why ``optimizer`` cannot be built here (None when it can).

  An optimizer that raises when it is built (``garo(controller="pretrained")``
  without its weights file, say) is skipped by the suite with this note.
  """
  try:
    tx = optimizer.make(optimizer.learning_rate)
    tx.init({"w": jax.numpy.zeros(2)})
  except Exception as e:
    return f"{type(e).__name__}: {e}"
  return None


def check_names(names: list[str] | tuple[str, ...]) -> None:
  """Raises a ValueError naming the valid optimizers if any name is unknown."""
  unknown = [n for n in names if n not in OPTIMIZERS]
  if unknown:
    raise ValueError(
      f"Unknown optimizer(s) {', '.join(unknown)}; valid optimizers: "
      f"{', '.join(OPTIMIZER_NAMES)}."
    )
