"""Meta-training configurations: data files in the package, read into a Config.

A configuration says everything a meta-training run does apart from its
seed: the task families, the granularities, the estimator and its horizons,
the range of starting learning rates, the controller's size and the bounds
GARO is built with. ``configs/<name>.json`` holds the named ones;
:func:`load` reads one by name or path, :func:`override` changes fields from
``key=value`` strings (the command line's ``--set``).
"""

import dataclasses
import json
import os
import pathlib
from typing import Any

from garo_optax import _controller
from garo_optax.meta import estimators, tasks

CONFIGS = pathlib.Path(__file__).with_name("configs")


@dataclasses.dataclass(frozen=True)
class Config:
  """One meta-training recipe: every field is given by its JSON file."""

  # Task families: a name of garo_optax.meta.tasks.families.
  families: str
  # Every family is trained at global granularity; every `per_leaf_stride`-th
  # one (by index) at per-leaf granularity too (0: never).
  per_leaf_stride: int
  # Slots (family, granularity) drawn per meta-step, and antithetic pairs of
  # runs per slot.
  slots_per_step: int
  pairs: int
  # "pes": persistent ES over truncations of `unroll` steps of runs of
  # `min_horizon`..`max_horizon` steps (log-uniform); "es": antithetic ES
  # over whole runs of `unroll` steps.
  estimator: str
  unroll: int
  min_horizon: int
  max_horizon: int
  # Share of the runs given their length as garo's total_steps.
  total_steps_share: float
  # "none", or "sign": each antithetic pair weighs its perturbation by the
  # sign of its loss difference, not the difference (fitness shaping).
  fitness_shaping: str
  # ES perturbation scale, Adam's learning rate, and meta-steps.
  sigma: float
  meta_lr: float
  meta_steps: int
  # Starting learning rates of the inner runs (log-uniform).
  min_lr: float
  max_lr: float
  # null, or [low, high]: every problem's params are rescaled by a factor
  # drawn log-uniform in that range (garo_optax.meta.tasks.reparametrized),
  # so that the learning rate that suits a problem spreads over it.
  param_scales: tuple[float, float] | None
  # The seeded controller training starts from, and how many features it
  # reads (the first of garo_optax._features.FEATURE_NAMES: 7, or 8 with the
  # steps' size against the weights).
  hidden_size: int
  head_scale: float
  num_features: int
  # The transformation the controller drives: "garo" or "garo_adamw".
  optimizer: str
  # How it is built in the inner runs (the shipped controller's defaults;
  # max_effective_learning_rate is garo's only).
  max_learning_rate: float | None
  max_effective_learning_rate: float | None
  home_learning_rate: float | None
  home_steps: float | None
  # The meta-loss floors log(loss_t / loss_0) at minus this.
  log_floor: float
  # Weight in the meta-loss of the schedules' roughness beyond readable
  # (garo_optax.meta.inner.roughness; 0: not scored).
  smoothness: float
  # Meta-loss charged for each back-off of the safeguard in a truncation
  # (garo_optax.meta.inner.run_meta_loss; 0: none). At 1 its controllers were
  # less safe, not more (benchmarks/results/meta_v2/backoff_penalty/).
  backoff_penalty: float
  # Weight in the meta-loss of a truncation's highest log(loss_t / loss_0)
  # above 0 (0: only the mean counts). At 1 its controllers were no safer
  # (benchmarks/results/meta_v2/peak_penalty/).
  peak_penalty: float
  checkpoint_every: int
  # The meta-seeds the recipe is run with (the model card reports them all).
  seeds: tuple[int, ...]

  def __post_init__(self):
    if self.estimator not in ("pes", "es"):
      raise ValueError(f"estimator must be 'pes' or 'es', got {self.estimator!r}")
    if self.fitness_shaping not in estimators.SHAPINGS:
      raise ValueError(
        f"fitness_shaping must be one of {estimators.SHAPINGS}, got "
        f"{self.fitness_shaping!r}"
      )
    if self.unroll < 2:
      # The meta-loss's roughness term compares consecutive steps' rates.
      raise ValueError(f"unroll must be at least 2 steps, got {self.unroll}")
    if self.estimator == "pes" and not (
      self.unroll <= self.min_horizon <= self.max_horizon
    ):
      raise ValueError(
        "PES needs unroll <= min_horizon <= max_horizon, got "
        f"{self.unroll}, {self.min_horizon}, {self.max_horizon}"
      )
    _controller.check_num_features(self.num_features)
    if self.optimizer not in ("garo", "garo_adamw"):
      raise ValueError(
        f"optimizer must be 'garo' or 'garo_adamw', got {self.optimizer!r}"
      )
    if self.optimizer == "garo_adamw" and self.max_effective_learning_rate:
      raise ValueError("max_effective_learning_rate is garo's: use max_learning_rate")
    if (self.home_learning_rate is None) != (self.home_steps is None):
      raise ValueError("home_learning_rate and home_steps go together")
    if self.param_scales is not None:
      tasks.check_scales(self.param_scales)
    weights = {
      "smoothness": self.smoothness,
      "backoff_penalty": self.backoff_penalty,
      "peak_penalty": self.peak_penalty,
    }
    negative = {k: v for k, v in weights.items() if v < 0}
    if negative:
      raise ValueError(f"weights of the meta-loss must be >= 0, got {negative}")
    if not 0 < self.min_lr <= self.max_lr:
      raise ValueError(f"need 0 < min_lr <= max_lr, got {self.min_lr}, {self.max_lr}")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def _from_dict(values: dict[str, Any], source: str) -> Config:
  fields = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(
      f"{source}: unknown field(s) {', '.join(unknown)}; the fields are "
      f"{', '.join(sorted(fields))}"
    )
  missing = sorted(fields - set(values))
  if missing:
    raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
  scales = values["param_scales"]
  return Config(
    **{
      **values,
      "seeds": tuple(values["seeds"]),
      "param_scales": None if scales is None else tuple(scales),
    }
  )


def names() -> tuple[str, ...]:
  """The names of the configurations in the package."""
  return tuple(sorted(p.stem for p in CONFIGS.glob("*.json")))


def load(name_or_path: str | os.PathLike) -> Config:
  """The configuration named ``name_or_path`` (see :func:`names`), or read
  from that JSON file."""
  path = CONFIGS / f"{name_or_path}.json"
  if not path.exists():
    path = pathlib.Path(name_or_path)
    if not path.exists():
      raise FileNotFoundError(
        f"No configuration {os.fspath(name_or_path)!r}: use one of "
        f"{', '.join(names())} or the path of a JSON file."
      )
  return _from_dict(json.loads(path.read_text()), os.fspath(path))


def override(config: Config, assignments: list[str]) -> Config:
  """``config`` with ``key=value`` assignments applied (values read as JSON,
  or as strings where they are not JSON)."""
  values = dataclasses.asdict(config)
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    if not sep:
      raise ValueError(f"expected key=value, got {assignment!r}")
    try:
      values[key] = json.loads(text)
    except json.JSONDecodeError:
      values[key] = text
  return _from_dict(values, "--set")
