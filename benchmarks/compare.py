"""GARO's suite results before and after a change, against the same baselines.

Two runs of ``python -m benchmarks.suite --full`` (say with the code before
and after a change; the one before may hold the GARO variants alone): every
GARO variant's final loss over the best tuned baseline's, per task and as
geometric means over the held-out tasks, the baselines taken from the run
after. Losses are deterministic for a given code and machine, so two runs
compare as one.

Usage::

  python -m benchmarks.compare BEFORE/suite_results.json AFTER/suite_results.json \\
      --out benchmarks/results/safeguard_before_after/suite.md
"""

import argparse
import copy
import json
import pathlib
from collections.abc import Sequence

from benchmarks import report


def compare(before: dict, after: dict, without: Sequence[str] = ()) -> dict:
  """Per variant: ``{"before"|"after": summary}`` over the held-out tasks that
  both runs have (less ``without``: tasks the change added, say), and over the
  held-out tasks of the run after."""
  variants = [
    v
    for v in after["summary"]
    if any(v in t["optimizers"] for t in before["tasks"].values())
  ]
  mixed = copy.deepcopy(after)
  for name, task in mixed["tasks"].items():
    for variant in variants:
      old = before["tasks"].get(name, {}).get("optimizers", {}).get(variant)
      if old is None:
        task["optimizers"].pop(variant)
      else:
        task["optimizers"][variant] = old
  held_out = after["config"]["held_out_tasks"]
  validation = after["config"].get("validation_tasks", [])
  shared = [t for t in held_out if t in before["tasks"] and t not in without]
  out = {
    "held_out": held_out,
    "shared_held_out": shared,
    "validation": validation,
    "variants": {},
  }
  for variant in variants:
    out["variants"][variant] = {
      label: {
        "shared": report._variant_summary(run, variant, shared),
        "all": report._variant_summary(run, variant, held_out),
        "validation": report._variant_summary(run, variant, validation),
      }
      for label, run in (("before", mixed), ("after", after))
    }
  return out


def markdown(comparison: dict, before: str, after: str) -> str:
  held_out, shared = comparison["held_out"], comparison["shared_held_out"]
  shown = held_out + comparison.get("validation", [])
  lines = [
    "# GARO before and after, against the same tuned baselines",
    "",
    f"Before: `{before}`; after: `{after}` (its tuned baselines for both).",
    "Final train loss / best tuned baseline's, medians over seeds (the suite's "
    "loss floor applies); geometric means over the shared held-out tasks "
    "(listed below) and over all the held-out tasks of the run after.",
    "",
    "| variant | | " + " | ".join(shown) + " | geo-mean, shared | geo-mean, all |",
    "|---|---|" + "---|" * (len(shown) + 2),
  ]
  for variant, runs in comparison["variants"].items():
    for label in ("before", "after"):
      ratios = {
        **runs[label]["all"]["loss_ratio_to_best_tuned"],
        **runs[label].get("validation", {}).get("loss_ratio_to_best_tuned", {}),
      }
      cells = [report._fmt(ratios.get(t)) for t in shown]
      lines.append(
        f"| `{variant}` | {label} | "
        + " | ".join(cells)
        + f" | {report._fmt(runs[label]['shared']['geomean_loss_ratio_to_best_tuned'])}"
        + f" | {report._fmt(runs[label]['all']['geomean_loss_ratio_to_best_tuned'])} |"
      )
  lines += [
    "",
    f"Shared held-out tasks: {', '.join(shared)}. Validation tasks (shown, not "
    f"in the means): {', '.join(comparison.get('validation', [])) or 'none'}.",
    "",
  ]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.compare", description=__doc__.split("\n")[0]
  )
  parser.add_argument("before", type=pathlib.Path, help="suite_results.json before")
  parser.add_argument("after", type=pathlib.Path, help="suite_results.json after")
  parser.add_argument(
    "--without",
    nargs="+",
    default=(),
    metavar="TASK",
    help="held-out tasks to leave out of the shared geometric mean",
  )
  parser.add_argument("--out", type=pathlib.Path, help="markdown file to write")
  args = parser.parse_args(argv)
  comparison = compare(
    json.loads(args.before.read_text()),
    json.loads(args.after.read_text()),
    args.without,
  )
  text = markdown(comparison, str(args.before), str(args.after))
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(comparison, indent=1))
  print(text)


if __name__ == "__main__":
  main()
