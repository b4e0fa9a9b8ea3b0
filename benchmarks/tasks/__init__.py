"""The benchmark tasks, their registry, and the meta-train / held-out split.

Each task is a small module with a ``task()`` factory returning a
:class:`Task`. Data is loaded or generated offline (scikit-learn's bundled
datasets, MNIST-1D generated locally, Tiny Shakespeare shipped in
``benchmarks/data``).

``META_TRAIN`` tasks may be used to meta-train GARO's controller;
``VALIDATION`` tasks are for every other choice (the safeguard's thresholds,
meta-training's configuration, which meta-seed's controller ships); ``HELD_OUT``
tasks must never be seen by meta-training or any other choice: they use datasets and
architectures that meta-training does not, and are what the suite's
evaluation of a trained controller is about. See ``README.md`` here.
"""

import functools
from collections.abc import Callable

from benchmarks.tasks import (
  char_lm,
  conv_digits,
  diabetes,
  logreg_breast_cancer,
  mlp_digits,
  mlp_mnist1d,
  quadratic,
  rosenbrock,
  stiff,
  validation,
)
from benchmarks.tasks._task import Task as Task

_FACTORIES: dict[str, Callable[[], Task]] = {
  "quadratic": quadratic.task,
  "rosenbrock": rosenbrock.task,
  "logreg_breast_cancer": logreg_breast_cancer.task,
  "diabetes": diabetes.task,
  "mlp_digits": mlp_digits.task,
  "mlp_mnist1d": mlp_mnist1d.task,
  "conv_digits": conv_digits.task,
  "char_lm": char_lm.task,
  "diabetes_raw": stiff.diabetes_raw,
  "wine_logreg": validation.wine_logreg,
  "wine_mlp": validation.wine_mlp,
  "noisy_logreg": validation.noisy_logreg,
  "wine_factorization": validation.wine_factorization,
  "helical_valley": validation.helical_valley,
  "sine_regression": validation.sine_regression,
  "addition_lm": validation.addition_lm,
}

TASK_NAMES: tuple[str, ...] = tuple(_FACTORIES)
META_TRAIN: tuple[str, ...] = ("quadratic", "mlp_digits")
VALIDATION: tuple[str, ...] = (
  "diabetes_raw",
  "wine_logreg",
  "wine_mlp",
  "noisy_logreg",
  "wine_factorization",
  "helical_valley",
  "sine_regression",
  "addition_lm",
)
HELD_OUT: tuple[str, ...] = tuple(
  n for n in TASK_NAMES if n not in META_TRAIN + VALIDATION
)


def split(name: str) -> str:
  """``"meta_train"``, ``"validation"`` or ``"held_out"``."""
  if name in META_TRAIN:
    return "meta_train"
  return "validation" if name in VALIDATION else "held_out"


def check_names(names: list[str] | tuple[str, ...]) -> None:
  """Raises a ValueError naming the valid tasks if any name is unknown."""
  unknown = [n for n in names if n not in _FACTORIES]
  if unknown:
    raise ValueError(
      f"Unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASK_NAMES)}."
    )


@functools.cache
def get(name: str) -> Task:
  """The task called ``name`` (built once: data is loaded on first use)."""
  check_names([name])
  return _FACTORIES[name]()
