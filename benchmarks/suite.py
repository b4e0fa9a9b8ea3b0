"""Training-quality suite: GARO against tuned and parameter-free optimizers.

Every (task, optimizer, seed) is one jitted training run (see
:mod:`benchmarks.train`); tuned baselines first pick their learning rate on a
tuning seed that is not an evaluation seed. Results are written as JSON, a
markdown report and PNG plots (see :mod:`benchmarks.report`).

Usage::

  python -m benchmarks.suite --quick        # 1/10 of the steps, 3 seeds
  python -m benchmarks.suite --full         # the committed results
  python -m benchmarks.suite --quick --tasks quadratic mlp_digits \\
      --optimizers sgd adam garo --seeds 2 --steps 200 --out /tmp/suite
  python -m benchmarks.suite --full --optimizers cocob --merge

``--merge`` runs only the named optimizers, on the tasks and seeds of the
results already in the output directory, and writes those results back with
the new optimizers' rows added or replacing theirs; the other rows are kept
as they are, and the summary says which command made which rows. ``--drop``
removes the rows of optimizers that no longer exist (a meta-seed's variant
once its controller ships as ``garo_pretrained``).
"""

import argparse
import math
import os
import pathlib
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import optax
from tqdm import tqdm

from benchmarks import optimizers as optimizers_lib
from benchmarks import report, train
from benchmarks import tasks as tasks_lib
from benchmarks._machine import cpu_model

RESULTS = pathlib.Path(__file__).parent / "results"
TUNING_SEED = 1000  # picks tuned learning rates; never an evaluation seed
MAX_WIDENING = 4  # grid points a tuned grid may grow by on each side
MODES = {
  # mode: (fraction of each task's steps, seeds, evaluations per run)
  "quick": (0.1, 3, 10),
  "full": (1.0, 5, 50),
}


def schedule(steps: int, evaluations: int) -> tuple[int, int]:
  """(steps, every): ``steps`` rounded down to a multiple of ``every``."""
  every = max(1, steps // evaluations)
  return steps - steps % every, every


def final_loss(curves: train.Curves) -> float:
  """The final full-batch train loss; a diverged run scores +inf."""
  loss = float(curves.train_loss[-1])
  return loss if math.isfinite(loss) else math.inf


def tune(run: Any, grid: Sequence[float]) -> dict[str, Any]:
  """Picks the learning rate of lowest final train loss on the tuning seed.

  The grid is a log grid; while the best point is at an edge, the grid grows
  past that edge by one point (at most ``MAX_WIDENING`` per side), so that the
  chosen point is interior whenever it can be.

  Args:
    run: a compiled run, ``run(learning_rate, seed) -> Curves``.
    grid: learning rates, increasing, equally spaced in log.

  Returns:
    ``{"grid", "final_train_loss", "chosen", "interior"}``.
  """
  ratio = grid[1] / grid[0]
  losses = {lr: final_loss(run(lr, TUNING_SEED)) for lr in grid}
  widened = {"low": 0, "high": 0}
  while True:
    lrs = sorted(losses)
    best = min(lrs, key=losses.get)
    side = "low" if best == lrs[0] else "high" if best == lrs[-1] else None
    if side is None or widened[side] == MAX_WIDENING:
      break
    widened[side] += 1
    lr = lrs[0] / ratio if side == "low" else lrs[-1] * ratio
    losses[lr] = final_loss(run(lr, TUNING_SEED))
  return {
    "grid": lrs,
    "final_train_loss": [losses[lr] for lr in lrs],
    "chosen": best,
    "interior": side is None,
  }


def machine() -> dict[str, Any]:
  """What ran the suite: CPU model, cores, library versions."""
  return {
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "platform": platform.platform(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "jax_devices": [str(d) for d in jax.devices()],
  }


def run_suite(
  mode: str = "quick",
  *,
  task_names: Sequence[str] | None = None,
  optimizer_names: Sequence[str] | None = None,
  num_seeds: int | None = None,
  steps: int | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """Runs every (task, optimizer, seed) and returns the results.

  Args:
    mode: ``"quick"`` or ``"full"`` (sets the default steps and seeds).
    task_names: tasks to run (default: all of ``benchmarks.tasks``).
    optimizer_names: optimizers to run (default: all of
      ``benchmarks.optimizers``); unavailable ones are skipped with a note.
    num_seeds: number of evaluation seeds ``0 .. num_seeds - 1``.
    steps: training steps of every task (default: the mode's share of each
      task's own step count).
    progress: show a tqdm progress bar.

  Returns:
    The results, JSON-ready, with their summary (see :mod:`benchmarks.report`).

  Raises:
    ValueError: unknown mode, task or optimizer names (the message lists the
      valid ones), or fewer than one seed or step.
  """
  if mode not in MODES:
    raise ValueError(f"Unknown mode {mode!r}; valid modes: {', '.join(MODES)}.")
  command = f"python -m benchmarks.suite --{mode}"
  for flag, value in (
    ("tasks", task_names),
    ("optimizers", optimizer_names),
    ("seeds", num_seeds),
    ("steps", steps),
  ):
    if value:
      words = value if isinstance(value, list | tuple) else [value]
      command += f" --{flag} " + " ".join(map(str, words))
  task_names = list(task_names or tasks_lib.TASK_NAMES)
  optimizer_names = list(optimizer_names or optimizers_lib.OPTIMIZER_NAMES)
  tasks_lib.check_names(task_names)
  optimizers_lib.check_names(optimizer_names)
  fraction, default_seeds, evaluations = MODES[mode]
  seeds = list(range(num_seeds or default_seeds))
  if not seeds or (steps is not None and steps < 1):
    raise ValueError("Need at least one seed and one step.")

  skipped = {}
  available = []
  for name in optimizer_names:
    reason = optimizers_lib.unavailable_reason(optimizers_lib.OPTIMIZERS[name])
    if reason is None:
      available.append(name)
    else:
      skipped[name] = reason
  begin, begin_cpu = time.perf_counter(), time.process_time()
  results: dict[str, Any] = {"tasks": {}}
  bar = tqdm(total=len(task_names) * len(available), disable=not progress, unit="run")
  for task_name in task_names:
    task = tasks_lib.get(task_name)
    task_steps, every = schedule(
      steps or max(1, int(fraction * task.steps)), evaluations
    )
    entry: dict[str, Any] = {
      "description": task.description,
      "split": tasks_lib.split(task_name),
      "metric_name": task.metric_name,
      "higher_is_better": task.higher_is_better,
      "steps": task_steps,
      "every": every,
      "optimizers": {},
    }
    for name in available:
      bar.set_description(f"{task_name} / {name}")
      optimizer = optimizers_lib.OPTIMIZERS[name]
      start = time.perf_counter()
      run = train.compile_run(task, optimizer, task_steps, every)
      compile_seconds = time.perf_counter() - start
      tuning = tune(run, optimizer.grid) if optimizer.grid else None
      learning_rate = tuning["chosen"] if tuning else optimizer.learning_rate
      runs = [run(learning_rate, seed) for seed in seeds]
      entry["optimizers"][name] = report.run_record(
        optimizer, learning_rate, tuning, compile_seconds, seeds, runs
      )
      bar.update()
    results["tasks"][task_name] = entry
  bar.close()
  results["config"] = {
    "command": command,
    "mode": mode,
    "seeds": seeds,
    "tuning_seed": TUNING_SEED,
    "evaluations_per_run": evaluations,
    "tasks": task_names,
    "optimizers": available,
    "skipped_optimizers": skipped,
    "meta_train_tasks": list(tasks_lib.META_TRAIN),
    "validation_tasks": list(tasks_lib.VALIDATION),
    "held_out_tasks": list(tasks_lib.HELD_OUT),
  }
  results["machine"] = machine()
  results["wall_seconds"] = time.perf_counter() - begin
  results["cpu_seconds"] = time.process_time() - begin_cpu
  return report.summarize(results)


def _in_order(rows: dict[str, Any]) -> dict[str, Any]:
  """``rows``, keyed by optimizer, in the suite's order of optimizers."""
  order = {name: i for i, name in enumerate(optimizers_lib.OPTIMIZER_NAMES)}
  return dict(sorted(rows.items(), key=lambda row: order.get(row[0], len(order))))


def _run_entry(results: dict[str, Any], command: str) -> dict[str, Any]:
  return {
    "command": command,
    "optimizers": results["config"]["optimizers"],
    "wall_seconds": results["wall_seconds"],
    "cpu_seconds": results["cpu_seconds"],
  }


def _check_drop(
  previous: Sequence[str], new: Sequence[str], drop: Sequence[str]
) -> None:
  """Raises ``ValueError`` unless every dropped optimizer has rows in the
  earlier results (``previous``) and none is run again (``new``)."""
  unknown = [name for name in drop if name not in previous]
  if unknown:
    raise ValueError(f"Cannot drop {', '.join(unknown)}: no such rows.")
  rerun = [name for name in drop if name in new]
  if rerun:
    raise ValueError(f"Cannot drop {', '.join(rerun)}: this run has their rows.")


def _machine_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """What differs between two runs' machines, of what their rows' timings
  and numbers depend on."""
  return [k for k in ("cpu", "cores", "jax", "optax") if a[k] != b[k]]


def merge(
  into: dict[str, Any],
  results: dict[str, Any],
  command: str,
  drop: Sequence[str] = (),
) -> dict[str, Any]:
  """``into`` with the rows of ``results`` added or replacing its own, in place.

  Args:
    into: earlier results (as :func:`report.read` returns them).
    results: a run of other optimizers on the same tasks, steps and seeds.
    command: the command that made ``results``, recorded in ``config["runs"]``.
    drop: optimizers of ``into`` whose rows are removed.

  Returns:
    ``into``, summarized again.

  Raises:
    ValueError: the two runs differ in their tasks, steps, seeds, machine or
      library versions, so that their rows would not compare, or ``drop``
      names an optimizer that ``into`` does not hold or ``results`` does.
  """
  config, new = into["config"], results["config"]
  _check_drop(config["optimizers"], new["optimizers"], drop)
  keys = ("mode", "seeds", "tuning_seed", "evaluations_per_run", "tasks")
  differences = [k for k in keys if config[k] != new[k]]
  differences += _machine_differences(into["machine"], results["machine"])
  for name, task in results["tasks"].items():
    mine = into["tasks"][name]
    if (task["steps"], task["every"]) != (mine["steps"], mine["every"]):
      differences.append(f"steps of {name}")
  if differences:
    raise ValueError(f"Cannot merge runs that differ in {', '.join(differences)}.")
  for name, task in results["tasks"].items():
    rows = into["tasks"][name]["optimizers"]
    rows = {k: v for k, v in rows.items() if k not in drop}
    into["tasks"][name]["optimizers"] = _in_order({**rows, **task["optimizers"]})
  runs = config.setdefault("runs", [_run_entry(into, config["command"])])
  runs.append(_run_entry(results, command))
  config["optimizers"] = list(
    _in_order(
      dict.fromkeys(
        [k for k in config["optimizers"] if k not in drop] + new["optimizers"]
      )
    )
  )
  skipped = config["skipped_optimizers"]
  for name in [*new["optimizers"], *drop]:
    skipped.pop(name, None)
  skipped.update(new["skipped_optimizers"])
  into["wall_seconds"] = sum(run["wall_seconds"] for run in runs)
  into["cpu_seconds"] = sum(run["cpu_seconds"] for run in runs)
  return report.summarize(into)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.suite", description=__doc__.split("\n")[0]
  )
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--quick", action="store_true", help="short runs, 3 seeds")
  mode.add_argument("--full", action="store_true", help="full runs, 5 seeds")
  parser.add_argument(
    "--tasks",
    nargs="+",
    metavar="TASK",
    help=f"tasks to run (default all): {', '.join(tasks_lib.TASK_NAMES)}",
  )
  parser.add_argument(
    "--optimizers",
    nargs="+",
    metavar="OPT",
    help=f"optimizers (default all): {', '.join(optimizers_lib.OPTIMIZER_NAMES)}",
  )
  parser.add_argument("--seeds", type=int, help="number of evaluation seeds")
  parser.add_argument("--steps", type=int, help="training steps of every task")
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    help="output directory (default benchmarks/results, or .../quick)",
  )
  parser.add_argument(
    "--merge",
    action="store_true",
    help="run only --optimizers, on the tasks and seeds of the output "
    "directory's suite_results.json, and add or replace their rows there",
  )
  parser.add_argument(
    "--drop",
    nargs="+",
    metavar="OPT",
    default=[],
    help="with --merge: remove these optimizers' rows from the results",
  )
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  mode_name = "full" if args.full else "quick"
  out = args.out or (RESULTS if args.full else RESULTS / "quick")
  previous = None
  if args.merge:
    if not args.optimizers or args.tasks or args.seeds:
      parser.error("--merge needs --optimizers; it runs the earlier tasks and seeds.")
    if not (out / "suite_results.json").exists():
      parser.error(f"--merge: no {out / 'suite_results.json'} to merge into.")
    previous = report.read(out / "suite_results.json")
    if previous["config"]["mode"] != mode_name:
      parser.error(f"--merge: {out} holds a --{previous['config']['mode']} run.")
    # Before the runs, which take minutes.
    _check_drop(previous["config"]["optimizers"], args.optimizers, args.drop)
    differences = _machine_differences(previous["machine"], machine())
    if differences:
      raise ValueError(
        f"Cannot merge runs that differ in {', '.join(differences)}: "
        f"{out / 'suite_results.json'} was made on "
        f"{', '.join(str(previous['machine'][k]) for k in differences)}."
      )
  elif args.drop:
    parser.error("--drop needs --merge.")
  try:
    tasks_lib.check_names(args.tasks or ())
    optimizers_lib.check_names(args.optimizers or ())
  except ValueError as e:
    parser.error(str(e))
  if (args.seeds is not None and args.seeds < 1) or (
    args.steps is not None and args.steps < 1
  ):
    parser.error("--seeds and --steps must be at least 1.")
  results = run_suite(
    mode_name,
    task_names=previous["config"]["tasks"] if previous else args.tasks,
    optimizer_names=args.optimizers,
    num_seeds=len(previous["config"]["seeds"]) if previous else args.seeds,
    steps=args.steps,
  )
  seconds = results["wall_seconds"]
  if previous:
    command = shlex.join(["python", "-m", "benchmarks.suite", *argv])
    results = merge(previous, results, command, args.drop)
  report.write(results, out)
  print(report.summary_markdown(results))
  print(f"Wrote {out} in {seconds:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
  main()
