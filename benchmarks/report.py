"""Metrics, summary, markdown and plots of the training-quality suite."""

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

from benchmarks import optimizers as optimizers_lib
from benchmarks import train
from garo_optax._controller import HEAD_NAMES

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository
# Before taking loss ratios, losses are floored at this fraction of the task's
# initial loss: below it a task counts as solved (float32 reaches exact zeros).
RELATIVE_LOSS_FLOOR = 1e-6


def _stats(values: Sequence[float]) -> dict[str, float]:
  """Median and range; NaN counts as +inf (a diverged run is the worst)."""
  values = np.nan_to_num(np.asarray(values, np.float64), nan=np.inf)
  return {
    "median": float(np.median(values)),
    "min": float(np.min(values)),
    "max": float(np.max(values)),
  }


def run_record(
  optimizer: optimizers_lib.Optimizer,
  learning_rate: float,
  tuning: dict[str, Any] | None,
  compile_seconds: float,
  seeds: Sequence[int],
  runs: Sequence[train.Curves],
) -> dict[str, Any]:
  """The JSON-ready record of one optimizer's runs on one task."""
  return {
    "description": optimizer.description,
    "learning_rate": learning_rate,
    "tuning": tuning,
    "compile_seconds": compile_seconds,
    "seeds": list(seeds),
    "eval_steps": runs[0].steps.tolist(),
    "train_loss": [r.train_loss.tolist() for r in runs],
    "metric": [r.metric.tolist() for r in runs],
    "hyperparams": [_tolist(r.hyperparams) for r in runs]
    if optimizer.is_garo
    else None,
    "seconds_per_step": [r.seconds_per_step for r in runs],
    "final_train_loss": _stats([r.train_loss[-1] for r in runs]),
    "final_metric": _stats([r.metric[-1] for r in runs]),
    "ms_per_step": _stats([1e3 * r.seconds_per_step for r in runs]),
  }


def _tolist(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _tolist(v) for k, v in tree.items()}
  return np.asarray(tree).tolist()


def _steps_to_target(record: dict[str, Any], target: float) -> dict[str, Any]:
  """First evaluated step at which the train loss is <= target, per seed."""
  per_seed = []
  for losses in record["train_loss"]:
    hits = [s for s, v in zip(record["eval_steps"], losses, strict=True) if v <= target]
    per_seed.append(hits[0] if hits else None)
  reached = [s for s in per_seed if s is not None]
  # The median counts a seed that never reaches the target as infinitely slow.
  median = float(np.median([math.inf if s is None else s for s in per_seed]))
  return {
    "per_seed": per_seed,
    "median": median if math.isfinite(median) else None,
    "reached": len(reached),
  }


def geomean(values: Sequence[float]) -> float:
  """Geometric mean; NaN for no values."""
  return float(np.exp(np.mean(np.log(values)))) if len(values) else math.nan


def _median(record: dict[str, Any], key: str) -> float:
  """A median of a run record; ``None`` (a non-finite value, once written as
  JSON) is +inf, as a diverged run is the worst."""
  value = record[key]["median"]
  return math.inf if value is None else value


def _variant_summary(
  results: dict[str, Any],
  variant: str,
  names: Sequence[str],
  references: Sequence[str] = optimizers_lib.REFERENCES,
):
  """Wins against ``references`` and loss ratio to the best tuned baseline."""
  wins = {}
  for reference in references:
    loss_wins = metric_wins = total = 0
    for name in names:
      task = results["tasks"][name]
      opts = task["optimizers"]
      if variant not in opts or reference not in opts:
        continue
      total += 1
      mine, theirs = opts[variant], opts[reference]
      loss_wins += _median(mine, "final_train_loss") < _median(
        theirs, "final_train_loss"
      )
      sign = -1 if task["higher_is_better"] else 1
      metric_wins += sign * _median(mine, "final_metric") < sign * _median(
        theirs, "final_metric"
      )
    wins[reference] = {"loss": loss_wins, "metric": metric_wins, "tasks": total}
  ratios = {}
  for name in names:
    opts = results["tasks"][name]["optimizers"]
    tuned = [
      _median(opts[t], "final_train_loss") for t in optimizers_lib.TUNED if t in opts
    ]
    if variant in opts and tuned:
      mine = opts[variant]
      floor = RELATIVE_LOSS_FLOOR * np.median([c[0] for c in mine["train_loss"]])
      ratios[name] = max(_median(mine, "final_train_loss"), floor) / max(
        min(tuned), floor
      )
  return {
    "wins": wins,
    "loss_ratio_to_best_tuned": ratios,
    "geomean_loss_ratio_to_best_tuned": geomean(list(ratios.values())),
  }


def _held_out(results: dict[str, Any]) -> list[str]:
  return [n for n, t in results["tasks"].items() if t["split"] == "held_out"]


def best_peer(results: dict[str, Any]) -> str | None:
  """The tuning-free peer of lowest geometric mean over the held-out tasks of
  final loss / best tuned (see ``optimizers.PEERS``); None without one."""
  held_out = _held_out(results)
  means = {
    n: _variant_summary(results, n, held_out)["geomean_loss_ratio_to_best_tuned"]
    for n in results["config"]["optimizers"]
    if n in optimizers_lib.PEERS
  }
  means = {n: m for n, m in means.items() if not math.isnan(m)}
  return min(means, key=means.get) if means else None


def _references(results: dict[str, Any]) -> tuple[str, ...]:
  """What every untuned optimizer is compared with: adam, sgd, the best peer."""
  peer = best_peer(results)
  return optimizers_lib.REFERENCES + ((peer,) if peer else ())


_REFERENCE_NAMES = {"adam": "adam(1e-3)", "sgd": "sgd(0.01)"}


def _beats(reference: str) -> str:
  """A column title: beating ``reference`` (a peer among them is the best)."""
  if reference in optimizers_lib.PEERS:
    return f"beats `{reference}` (best peer)"
  return f"beats {_REFERENCE_NAMES.get(reference, reference)}"


def _compared(results: dict[str, Any]) -> str:
  """The references in words: adam, sgd and the best peer, named."""
  peer = best_peer(results)
  if peer is None:
    return "`optax.adam(1e-3)` and `optax.sgd(0.01)`"
  peers = [n for n in results["config"]["optimizers"] if n in optimizers_lib.PEERS]
  return (
    "`optax.adam(1e-3)`, `optax.sgd(0.01)` and the best tuning-free peer, "
    f"`{peer}` (of `{'`, `'.join(peers)}`: the one of lowest geometric mean over "
    "the held-out tasks)"
  )


def summarize(results: dict[str, Any]) -> dict[str, Any]:
  """Adds targets, steps to target, the best peer and the per-variant summary,
  in place.

  The target loss of a task is the median final train loss of ``adam``
  (``optax.adam(1e-3)``); without ``adam`` in the run there is no target.
  """
  for task in results["tasks"].values():
    adam = task["optimizers"].get("adam")
    target = adam["final_train_loss"]["median"] if adam else None
    task["target_loss"] = (
      target if target is not None and math.isfinite(target) else None
    )
    for record in task["optimizers"].values():
      record["steps_to_target"] = (
        _steps_to_target(record, task["target_loss"])
        if task["target_loss"] is not None
        else None
      )
  names, held_out = list(results["tasks"]), _held_out(results)
  results["best_peer"] = best_peer(results)
  references = _references(results)
  results["summary"] = {
    variant: {
      "all": _variant_summary(results, variant, names, references),
      "held_out": _variant_summary(results, variant, held_out, references),
    }
    for variant in results["config"]["optimizers"]
    if optimizers_lib.OPTIMIZERS[variant].is_garo
  }
  return results


def _fmt(x: float | None, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "—"
  if math.isinf(x):
    return "diverged" if x > 0 else "-inf"
  return f"{x:.{digits}g}"


def _fmt_stats(stats: dict[str, float]) -> str:
  return f"{_fmt(stats['median'])} [{_fmt(stats['min'])}, {_fmt(stats['max'])}]"


def _provenance(results: dict[str, Any]) -> str:
  """Which commands made the results, in how long, on what."""
  config, m = results["config"], results["machine"]
  runs = config.get("runs") or [
    {
      **config,
      "wall_seconds": results["wall_seconds"],
      "cpu_seconds": results["cpu_seconds"],
    }
  ]
  made = ", then ".join(
    f"`{run['command']}` ({len(run['optimizers'])} optimizers, "
    f"{run['wall_seconds'] / 60:.1f} min wall time, "
    f"{run['cpu_seconds'] / 60:.1f} min of process CPU time)"
    for run in runs
  )
  return (
    f"Generated by {made}: {len(results['tasks'])} tasks x "
    f"{len(config['optimizers'])} optimizers x {len(config['seeds'])} seeds on "
    f"{m['cpu']} ({m['cores']} cores), jax {m['jax']}, optax {m['optax']}."
    + (
      " Each later command added or replaced its optimizers' rows."
      if len(runs) > 1
      else ""
    )
  )


def _summary_lines(results: dict[str, Any], plots: str) -> list[str]:
  """How the suite ran, the summary tables and the loss plot."""
  config, tasks = results["config"], results["tasks"]
  references = _references(results)
  lines = [
    f"# GARO training-quality suite ({config['mode']})",
    "",
    _provenance(results),
    "",
    "For each GARO variant: on how many tasks its median final train loss "
    f"(and test metric) beats {_compared(results)}; and "
    "the geometric mean over tasks of its final train loss divided by the "
    "best tuned baseline's (`sgd_momentum_tuned` or `adam_tuned`; < 1 is "
    f"better than tuned; losses below {RELATIVE_LOSS_FLOOR:g} of the task's "
    "initial loss count as that). Held-out tasks are never seen by "
    "meta-training nor used for any other choice; "
    + (
      f"validation tasks ({', '.join(config['validation_tasks'])}) set the "
      "safeguard's thresholds."
      if config.get("validation_tasks")
      else ""
    ),
    "",
    "| GARO variant | tasks | "
    + "".join(f"{_beats(r)}: loss, metric | " for r in references)
    + "final loss / best tuned (geo-mean) |",
    "|---|---|" + "---|" * (len(references) + 1),
  ]
  for variant, parts in results["summary"].items():
    for part, label in (("all", "all"), ("held_out", "held-out")):
      s = parts[part]
      cells = []
      for ref in references:
        w = s["wins"][ref]
        cells.append(f"{w['loss']}/{w['tasks']}, {w['metric']}/{w['tasks']}")
      lines.append(
        f"| `{variant}` | {label} | {' | '.join(cells)} | "
        f"{_fmt(s['geomean_loss_ratio_to_best_tuned'])} |"
      )
  names = list(tasks)
  lines += [
    "",
    "Per task, final train loss / best tuned baseline's:",
    "",
    "| GARO variant | " + " | ".join(names) + " |",
    "|---|" + "---|" * len(names),
  ]
  for variant, parts in results["summary"].items():
    ratios = parts["all"]["loss_ratio_to_best_tuned"]
    cells = [_fmt(ratios.get(n)) for n in names]
    lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
  lines += ["", f"![Loss curves]({plots}suite_loss_curves.png)", ""]
  if config["skipped_optimizers"]:
    lines += ["Skipped (not available in this build):", ""]
    lines += [f"- `{k}`: {v}" for k, v in config["skipped_optimizers"].items()]
    lines.append("")
  return lines


def summary_markdown(results: dict[str, Any], plots: str = "") -> str:
  """The summary for the README: how it ran, the summary tables, one plot.

  Args:
    results: the suite's results.
    plots: the folder of the plots and the full report, relative to where the
      markdown is read (the README copies it into the repository's root).

  Returns:
    Markdown.
  """
  lines = _summary_lines(results, plots)
  lines += headline_markdown(results, everyone=True).split("\n")[2:]
  lines.append(
    "Details (every optimizer, spreads over seeds, steps to target, tuning "
    "grids, time per step, GARO's hyperparameters): "
    f"[suite_report.md]({plots}suite_report.md)."
  )
  return "\n".join(lines) + "\n"


def headline_markdown(results: dict[str, Any], everyone: bool = False) -> str:
  """Untuned optimizers on the held-out tasks: GARO's variants, the best other
  one, the best tuning-free peer, ``adam`` and ``sgd`` (the README's table);
  with ``everyone``, every untuned optimizer of the run."""
  held_out, references = _held_out(results), _references(results)
  untuned = [
    n for n in results["config"]["optimizers"] if n not in optimizers_lib.TUNED
  ]
  rows = {n: _variant_summary(results, n, held_out, references) for n in untuned}
  order = sorted(untuned, key=lambda n: rows[n]["geomean_loss_ratio_to_best_tuned"])
  if not everyone:
    garo = [n for n in order if n.startswith("garo")]
    others = [n for n in order if n not in garo]
    keep = {*garo, *others[:1], *references}
    order = [n for n in order if n in keep]
  lines = [
    "# Untuned optimizers on the held-out tasks",
    "",
    f"{len(held_out)} held-out tasks ({', '.join(held_out)}), medians over "
    f"{len(results['config']['seeds'])} seeds; final train loss over the best "
    "grid-tuned SGD+momentum or Adam's, geometric mean (< 1 is better than "
    "tuned), and the tasks on which the median final loss beats "
    f"{_compared(results)}.",
    "",
    "| optimizer (no tuning) | final loss / best tuned (geo-mean) | "
    + " | ".join(_beats(r) for r in references)
    + " |",
    "|---|---|" + "---|" * len(references),
  ]
  for name in order:
    wins = rows[name]["wins"]
    cells = [
      "—" if name == r else f"{wins[r]['loss']}/{wins[r]['tasks']}" for r in references
    ]
    description = next(
      t["optimizers"][name]["description"]
      for t in results["tasks"].values()
      if name in t["optimizers"]
    )
    lines.append(
      f"| `{name}`: {description} | "
      f"{_fmt(rows[name]['geomean_loss_ratio_to_best_tuned'])} | "
      + " | ".join(cells)
      + " |"
    )
  return "\n".join(lines) + "\n"


def report_markdown(results: dict[str, Any]) -> str:
  """The full report: the summary, then every table and plot."""
  config, tasks = results["config"], results["tasks"]
  names = list(tasks)
  lines = _summary_lines(results, "")
  lines += [
    "Medians over seeds; [min, max] is the spread. Losses are full-batch "
    "train losses at the end of training.",
    "",
  ]

  for title, key in (
    ("Final train loss", "final_train_loss"),
    ("Test metric", "final_metric"),
  ):
    lines += [f"## {title} (median over seeds)", ""]
    if key == "final_metric":
      lines += [
        "Metric per task: "
        + "; ".join(
          f"{n}: {tasks[n]['metric_name']} "
          f"({'higher' if tasks[n]['higher_is_better'] else 'lower'} is better)"
          for n in names
        )
        + ".",
        "",
      ]
    lines += [
      "| optimizer | " + " | ".join(names) + " |",
      "|---|" + "---|" * len(names),
    ]
    for opt in config["optimizers"]:
      cells = [_fmt(tasks[n]["optimizers"][opt][key]["median"]) for n in names]
      lines.append(f"| `{opt}` | " + " | ".join(cells) + " |")
    lines.append("")

  lines += [
    "## Tuned baselines",
    "",
    "Learning rate picked by final train loss on tuning seed "
    f"{config['tuning_seed']} (not an evaluation seed), over a half-decade "
    "log grid that grows while the best point is at an edge.",
    "",
    "| task | optimizer | grid | chosen lr | interior |",
    "|---|---|---|---|---|",
  ]
  for n in names:
    for opt in config["optimizers"]:
      tuning = tasks[n]["optimizers"][opt]["tuning"]
      if tuning:
        lines.append(
          f"| {n} | `{opt}` | {_fmt(tuning['grid'][0])} … "
          f"{_fmt(tuning['grid'][-1])} ({len(tuning['grid'])} points) | "
          f"{_fmt(tuning['chosen'])} | {'yes' if tuning['interior'] else 'NO'} |"
        )
  lines.append("")

  lines += ["## Per task", ""]
  for n in names:
    t = tasks[n]
    lines += [
      f"### {n} ({t['split'].replace('_', '-')})",
      "",
      f"{t['description']} {t['steps']} steps; train loss evaluated every "
      f"{t['every']} steps. Target loss (adam(1e-3)'s median final): "
      f"{_fmt(t['target_loss'], 4)}.",
      "",
      f"| optimizer | lr | final train loss | {t['metric_name']} | "
      "steps to target (seeds reaching) | ms/step |",
      "|---|---|---|---|---|---|",
    ]
    for opt in config["optimizers"]:
      r = t["optimizers"][opt]
      steps = r["steps_to_target"]
      reach = (
        f"{_fmt(steps['median'], 6)} ({steps['reached']}/{len(r['seeds'])})"
        if steps
        else "—"
      )
      lines.append(
        f"| `{opt}` | {_fmt(r['learning_rate'])} | "
        f"{_fmt_stats(r['final_train_loss'])} | {_fmt_stats(r['final_metric'])} | "
        f"{reach} | {_fmt(r['ms_per_step']['median'])} |"
      )
    lines.append("")
  lines += [
    "ms/step is the wall time of a whole jitted training run (evaluations excluded) "
    "divided by its steps, after compilation.",
    "",
  ]
  if _garo_tasks(results):
    lines += ["![GARO hyperparameters](suite_garo_hyperparams.png)", ""]
  return "\n".join(lines)


def _median_curve(curves: Sequence[Sequence[float]]) -> np.ndarray:
  return np.median(np.nan_to_num(np.asarray(curves), nan=np.inf), axis=0)


# Baselines: thin dashed lines; GARO variants: thick solid or dotted lines.
_BASELINE_COLORS = (
  "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown",
  "tab:pink", "tab:olive", "tab:cyan", "navy", "goldenrod", "silver", "teal",
  "lime",
)  # fmt: skip
_GARO_STYLES = {
  "garo_init": {"color": "black", "ls": "-"},
  "garo_per_leaf": {"color": "black", "ls": ":"},
  "garo_pretrained": {"color": "tab:red", "ls": "-"},
  "garo_total_steps": {"color": "tab:red", "ls": "--"},
  "garo_seed0": {"color": "salmon", "ls": ":"},
  "garo_seed1": {"color": "salmon", "ls": "-."},
  "garo_seed2": {"color": "salmon", "ls": "--"},
}


def _style(name: str) -> dict[str, Any]:
  """Line style of an optimizer, the same in every plot."""
  if name in _GARO_STYLES:
    return {**_GARO_STYLES[name], "lw": 2.2}
  baselines = [n for n in optimizers_lib.OPTIMIZER_NAMES if n not in _GARO_STYLES]
  color = _BASELINE_COLORS[baselines.index(name) % len(_BASELINE_COLORS)]
  return {"color": color, "ls": "--", "lw": 1.1}


def _plot_losses(results: dict[str, Any], path: pathlib.Path) -> None:
  names = list(results["tasks"])
  cols = min(4, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
  for ax, name in zip(axes.flat, names, strict=False):
    task = results["tasks"][name]
    for opt, record in task["optimizers"].items():
      ax.plot(
        record["eval_steps"],
        _median_curve(record["train_loss"]),
        label=opt,
        **_style(opt),
      )
    ax.set_yscale("log")
    ax.set_title(f"{name} ({task['split'].replace('_', '-')})", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (median)")
  for ax in axes.flat[len(names) :]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(
    handles,
    labels,
    loc="lower center",
    ncol=min(7, len(labels)),
    fontsize=9,
    frameon=False,
  )
  fig.tight_layout(rect=(0, 0.04 + 0.03 * (len(labels) > 7), 1, 1))
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _garo_tasks(results: dict[str, Any]) -> list[str]:
  """The tasks on which a GARO variant ran (and recorded hyperparameters)."""
  return [
    name
    for name, task in results["tasks"].items()
    if any(r["hyperparams"] for r in task["optimizers"].values())
  ]


def _plot_hyperparams(results: dict[str, Any], path: pathlib.Path) -> None:
  """GARO's lr, momentum (b1) and weight decay over training, per task."""
  names = _garo_tasks(results)
  fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.4 * len(names)), squeeze=False)
  for row, name in zip(axes, names, strict=True):
    variants = [
      (opt, r)
      for opt, r in results["tasks"][name]["optimizers"].items()
      if r["hyperparams"]
    ]
    for opt, record in variants:
      style = {**_style(opt), "lw": 1.0}
      steps = record["eval_steps"][1:]
      for ax, head in zip(row, HEAD_NAMES, strict=True):
        if head not in record["hyperparams"][0]:
          head = "b1"  # garo_adamw's second head
        # All seeds; per-leaf variants: every group of the first seed.
        series = (
          [hp[head] for hp in record["hyperparams"]]
          if not isinstance(record["hyperparams"][0][head], dict)
          else list(record["hyperparams"][0][head].values())
        )
        for j, values in enumerate(series):
          ax.plot(steps, values, alpha=0.8, label=opt if j == 0 else None, **style)
    for ax, head in zip(row, HEAD_NAMES, strict=True):
      ax.set_title(
        f"{name}: {'momentum or b1' if head == 'momentum' else head}", fontsize=9
      )
      ax.set_yscale("log" if head != "momentum" else "linear")
    row[0].legend(fontsize=8)
  axes[-1, 0].set_xlabel("step")
  fig.tight_layout()
  fig.savefig(path, dpi=60)
  plt.close(fig)


def _jsonable(x: Any) -> Any:
  """Strict JSON, floats to 6 significant digits; non-finite ones become null."""
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, float | np.floating):
    return float(f"{x:.6g}") if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def read(path: pathlib.Path) -> dict[str, Any]:
  """Reads suite_results.json back as the suite returned it: the non-finite
  numbers written as null are NaN in curves and +inf in medians and spreads."""
  results = json.loads(pathlib.Path(path).read_text())
  for task in results["tasks"].values():
    for record in task["optimizers"].values():
      for key in ("train_loss", "metric"):
        record[key] = [[math.nan if v is None else v for v in c] for c in record[key]]
      for key in ("final_train_loss", "final_metric", "ms_per_step"):
        record[key] = {k: math.inf if v is None else v for k, v in record[key].items()}
  return results


def write(results: dict[str, Any], out: pathlib.Path) -> None:
  """Writes suite_results.json, suite_summary.md, suite_report.md, and plots."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / "suite_results.json", "w") as f:
    json.dump(_jsonable(results), f, allow_nan=False)
  _plot_losses(results, out / "suite_loss_curves.png")
  if _garo_tasks(results):
    _plot_hyperparams(results, out / "suite_garo_hyperparams.png")
  (out / "suite_report.md").write_text(report_markdown(results))
  # benchmarks/README.md embeds the summary.
  home = ROOT / "benchmarks"
  inside = out.resolve().is_relative_to(home)
  plots = f"{out.resolve().relative_to(home).as_posix()}/" if inside else ""
  (out / "suite_summary.md").write_text(summary_markdown(results, plots))
  (out / "suite_headline.md").write_text(headline_markdown(results))
