"""Chooses among meta-trained controllers on the validation tasks.

Meta-training writes a controller at every checkpoint (``python -m
garo_optax.meta.train ... --snapshots DIR``); this evaluates some of them, and
the final controllers of other meta-seeds, on every suite task that is not
held out (``benchmarks.tasks.VALIDATION`` and ``META_TRAIN``, never
``HELD_OUT``) as ``python -m benchmarks.pretrained`` does, and ranks them::

  python -m benchmarks.select_controller runs/meta_v2/seed0_snapshots/step*.npz \\
      --out benchmarks/results/meta_v2/validation.json

The ranking is by the geometric mean over the validation tasks of the final
loss over the best tuned baseline's, runs from every starting learning rate
counted (a controller that is good from 0.01 only does not rank first), among
the controllers whose schedules are readable on every one of those tasks
(:func:`readable`) and that keep their transformation's promise: for ``garo``,
the safeguard's on the stiff choice problem (:func:`peak_loss_over_first`);
for ``garo_adamw``, to train the transformers people train about as well as
AdamW does (:func:`loss_over_adamw`). A controller that chatters, blows up or
stalls those transformers ranks after all of them, whatever its score. The
JSON's ``ships`` names the first. Snapshots of one run (``step<N>.npz`` files
in one folder) are that run's checkpoints: the
JSON's ``best_per_run`` and the last table name the best checkpoint of each
run, ranked the same way, which is what a meta-seed of the recipe yields::

  python -m benchmarks.select_controller --optimizer garo_adamw \
      runs/adamw/seed{0,1,2}/step*.npz --out checkpoints.json

``--scored`` adds the controllers of earlier ``--out`` files (scored on the
same tasks) to the ranking without running them again::

  python -m benchmarks.select_controller retrained/seed{0,1,2}.npz \
      --scored selection.json --out selection_all.json
"""

import argparse
import functools
import json
import pathlib
import re
from typing import Any

import jax
import numpy as np
import optax

import garo_optax
from benchmarks import (
  blowup_trace,
  char_transformer,
  optimizers,
  pretrained,
  tasks,
)
from benchmarks import embed_scale as embed_scale_lib
from garo_optax import pretrained as shipped
from garo_optax.meta import inner

# A readable schedule: at the default starting rate, the median change from one
# step to the next of the log learning rate at most MAX_LOG_LEARNING_RATE_STEP
# and of the momentum (AdamW's b1) at most MAX_MOMENTUM_STEP, on every task.
# A schedule that reacts to each minibatch's noise is hard to read and to trust
# (the recipe's meta-loss charges for steps beyond these: inner.roughness).
MAX_LOG_LEARNING_RATE_STEP = inner.SMOOTH_LOG_LEARNING_RATE
MAX_MOMENTUM_STEP = inner.SMOOTH_MOMENTUM


def readable(summary) -> bool:
  """Whether the controller's schedules change smoothly on every task."""
  return bool(
    summary["max_log_learning_rate_step"] <= MAX_LOG_LEARNING_RATE_STEP
    and summary["max_momentum_step"] <= MAX_MOMENTUM_STEP
  )


# The safeguard's promise, on the stiff choice problem: from GARO's default
# rate, with the loss given, no minibatch loss of SAFETY_TASK (a regression on
# unstandardised targets, where every controller raises the rate past the edge
# of stability) rises above the first, over SAFETY_SEEDS runs of SAFETY_STEPS
# steps at each granularity (python -m benchmarks.blowup_trace --task
# diabetes_raw shows such runs step by step).
SAFETY_TASK = "diabetes_raw"
SAFETY_SEEDS = 5
SAFETY_STEPS = 300
SAFETY_GRANULARITIES = ("global", "per_leaf")


def peak_loss_over_first(
  controller, seeds: int = SAFETY_SEEDS, steps: int = SAFETY_STEPS
) -> dict[str, float]:
  """``granularity -> `` the highest minibatch loss over the first, over the
  runs of ``garo`` with ``controller`` (as the shipped one is built) on
  ``SAFETY_TASK``."""
  task = tasks.get(SAFETY_TASK)
  peaks = {}
  for granularity in SAFETY_GRANULARITIES:
    candidate = optimizers.garo_variant(
      "candidate",
      "the controller under selection",
      controller=controller,
      granularity=granularity,
      **optimizers.shipped_defaults("garo"),
    )
    peaks[granularity] = max(
      blowup_trace.summary(record)["peak_over_first"]
      for record in blowup_trace.trace(task, candidate, range(seeds), steps)
    )
  return peaks


# garo_adamw's promise, on the transformers people train: from AdamW's usual
# rate, on transformer language models whose token embeddings start small, as
# Flax and GPT-2 start them (benchmarks.embed_scale's two architectures on
# generated Markov text, embeddings at 0.02 and 0.1; no held-out data), the mean
# loss over the last tenth of TRANSFORMER_STEPS steps, averaged over
# TRANSFORMER_SEEDS seeds, ends within TRANSFORMER_SLACK times adamw(1e-3)'s
# on each. A controller that cuts the rate on the plateau such models start on,
# or raises it to where they stall, loses to AdamW there by ten times or more
# (results/embed_scale.md); one that trains them ends level with it.
TRANSFORMER_EMBED_SCALES = (0.02, 0.1)
TRANSFORMER_SEEDS = 2
TRANSFORMER_STEPS = 1000
TRANSFORMER_SLACK = 1.25


@functools.cache
def _adamw_transformer_loss(spec, embed_scale: float, seeds: int, steps: int):
  return np.mean(
    [
      embed_scale_lib.train(spec, embed_scale, optax.adamw, seed, steps, False)[0]
      for seed in range(seeds)
    ]
  )


def loss_over_adamw(
  controller, seeds: int = TRANSFORMER_SEEDS, steps: int = TRANSFORMER_STEPS
) -> dict[str, float]:
  """``transformer -> `` the mean final loss of ``garo_adamw`` with
  ``controller`` (built as the shipped one is) over ``adamw(1e-3)``'s, on
  each transformer of the check."""
  make = char_transformer.controller_optimizer(controller)[1][0]
  ratios = {}
  for spec in embed_scale_lib.ARCHITECTURES:
    for scale in TRANSFORMER_EMBED_SCALES:
      loss = np.mean(
        [
          embed_scale_lib.train(spec, scale, make, seed, steps, True)[0]
          for seed in range(seeds)
        ]
      )
      name = f"{embed_scale_lib.architecture_name(spec)} embed {scale:g}"
      ratios[name] = float(loss / _adamw_transformer_loss(spec, scale, seeds, steps))
  return ratios


def safe(record) -> bool:
  """Whether the controller keeps its transformation's promise: for
  ``garo``, no run on the stiff problem rose above its first loss; for
  ``garo_adamw``, every transformer of the check ended within
  ``TRANSFORMER_SLACK`` of AdamW (``True`` when not checked)."""
  peaks = record.get("peak_loss_over_first") or {}
  ratios = record.get("transformer_loss_over_adamw") or {}
  return all(peak <= 1.0 for peak in peaks.values()) and all(
    ratio <= TRANSFORMER_SLACK for ratio in ratios.values()
  )


def rank(record) -> tuple[bool, float]:
  """The sort key of a controller's record: readable and safe ones first,
  then by score (lower first)."""
  return (not (record["readable"] and safe(record)), record["score"])


def score(summary) -> float:
  """Geometric mean over tasks and starting learning rates of the final loss
  over the best tuned baseline's, both floored as the suite does
  (:func:`benchmarks.pretrained.start_scores`)."""
  return pretrained.start_scores(summary["tasks"])["geomean_ratio_all_starts"]


def run_of(path: str) -> str:
  """The run a controller file comes from: a snapshot's folder, or the file."""
  p = pathlib.Path(path)
  return str(p.parent) if re.fullmatch(r"step\d+\.npz", p.name) else str(p)


def best_per_run(scores: dict[str, Any]) -> dict[str, str]:
  """``run -> its controller of lowest score`` (:func:`run_of`), runs in
  order of first appearance; the earliest checkpoint wins a tie. A score may
  be any sort key (:func:`rank`'s)."""
  best: dict[str, str] = {}
  for path, value in scores.items():
    run = run_of(path)
    if run not in best or value < scores[best[run]]:
      best[run] = path
  return best


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("controllers", nargs="*", help="controller .npz files")
  p.add_argument(
    "--scored",
    nargs="+",
    default=[],
    metavar="JSON",
    help="earlier --out files whose controllers are ranked too, not run again",
  )
  p.add_argument(
    "--optimizer",
    choices=tuple(pretrained.STARTS),
    default="garo",
    help="the transformation the controllers drive",
  )
  p.add_argument(
    "--max-lr",
    type=float,
    default=None,
    help="max_learning_rate to run them with (default: the shipped controller's)",
  )
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument(
    "--tasks",
    nargs="+",
    default=list(tasks.VALIDATION + tasks.META_TRAIN),
    help="tasks to choose on (never held-out ones)",
  )
  p.add_argument("--out", default=None, help="JSON of every controller's summary")
  args = p.parse_args(argv)
  names = args.tasks
  tasks.check_names(names)
  held_out = [n for n in names if tasks.split(n) == "held_out"]
  if held_out:
    raise ValueError(f"{', '.join(held_out)} are held out: choices never see them.")
  if not args.controllers and not args.scored:
    p.error("give controller files, --scored results, or both")
  results = {}
  for path in args.scored:
    with open(path) as f:
      for controller, record in json.load(f).items():
        if not isinstance(record, dict) or "score" not in record:
          continue  # best_per_run, ships
        if sorted(record["tasks"]) != sorted(names):
          raise ValueError(
            f"{path} scored {controller} on other tasks: {', '.join(record['tasks'])}."
          )
        results[controller] = {**record, "readable": readable(record)}
  seeds = list(range(args.seeds))
  if args.controllers:
    base = pretrained.baselines(
      names, seeds, "benchmarks/results/pretrained/selection_baselines.json"
    )
  bounds = shipped.BOUNDS[args.optimizer]
  for path in args.controllers:
    controller = jax.tree.map(
      np.asarray, garo_optax.load_controller(path, optimizer=args.optimizer)
    )
    # Built as the transformation builds its shipped controller (its
    # training's bound and home rate).
    runs = pretrained.garo_runs(
      controller,
      names,
      seeds,
      [0],
      bounds.max_effective_learning_rate,
      bounds.home_learning_rate,
      bounds.home_steps,
      args.optimizer,
      bounds.max_learning_rate if args.max_lr is None else args.max_lr,
    )
    summary = pretrained.summarise(runs, base, pretrained.STARTS[args.optimizer][1])
    results[path] = {"score": score(summary), "readable": readable(summary), **summary}
    print(f"{path}: score {results[path]['score']:.3g}", flush=True)
  # Only readable controllers can ship, so only theirs are checked.
  check, field = {
    "garo": (peak_loss_over_first, "peak_loss_over_first"),
    "garo_adamw": (loss_over_adamw, "transformer_loss_over_adamw"),
  }[args.optimizer]
  for path, record in results.items():
    if record["readable"] and field not in record:
      record[field] = check(path)
      print(f"{path}: {field} {record[field]}", flush=True)
  verdict = {True: "yes", False: "no"}
  print(
    "| controller | score | readable | safe | ratio at default lr | lr spread "
    "| median Δ log lr | median Δ momentum |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for path, r in sorted(results.items(), key=lambda kv: rank(kv[1])):
    checked = (
      verdict[safe(r)]
      if "peak_loss_over_first" in r or "transformer_loss_over_adamw" in r
      else "—"
    )
    print(
      f"| {path} | {r['score']:.3g} | {verdict[r['readable']]} | {checked} | "
      f"{r['geomean_ratio_to_best_tuned']:.3g} | {r['max_lr_spread']:.3g} | "
      f"{r['max_log_learning_rate_step']:.3g} | {r['max_momentum_step']:.3g} |"
    )
  best = best_per_run({path: rank(r) for path, r in results.items()})
  if len(best) < len(results):
    print("\n| run | best checkpoint | score | readable and safe |")
    print("|---|---|---|---|")
    for run, path in best.items():
      r = results[path]
      print(
        f"| {run} | {pathlib.Path(path).name} | {r['score']:.3g} | "
        f"{verdict[r['readable'] and safe(r)]} |"
      )
  ships = min(best.values(), key=lambda path: rank(results[path]))
  print(f"\nships: {ships}")
  if args.out:
    record = dict(results)
    if len(best) < len(results):
      record["best_per_run"] = best
    record["ships"] = ships
    with open(args.out, "w") as f:
      json.dump(record, f, indent=1)


if __name__ == "__main__":
  main()
