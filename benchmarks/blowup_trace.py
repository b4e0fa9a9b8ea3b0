"""Step by step: where a GARO run blows up, and when its safeguard backs off.

Trains a suite task with GARO variants of the suite (``benchmarks.optimizers``)
from their default starting rate, with the loss given, seeded as the suite
seeds its runs, and records every step's loss, gradient norm, applied
learning rate and momentum, the safeguard's back-offs and its cap. For each
run it reports the highest loss over the first one, the steps around the
first back-off (how far the loss had risen before the safeguard answered, and
what the step after it was) and where the learning rate ends against the cap:
far below it, the controller cut the rate on its own after the back-off.

Usage::

  python -m benchmarks.blowup_trace --task rosenbrock \\
      --optimizers garo_pretrained garo_seed0 garo_seed2 \\
      --out benchmarks/results/blowup_trace/rosenbrock
"""

import argparse
import json
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks import _machine, optimizers, tasks
from garo_optax import _safeguard

RESULTS = pathlib.Path(__file__).parent / "results" / "blowup_trace"
# Steps shown before and after the first back-off.
BEFORE, AFTER = 8, 3


def trace(
  task, optimizer, seeds: Sequence[int], steps: int
) -> list[dict[str, np.ndarray]]:
  """Every step's loss, gradient norm, learning rate and momentum (the
  largest over groups), update norm, back-offs so far and the safeguard's cap
  (the lowest over groups), of one run per seed (the run compiled once: the
  seed's params and batch keys are its arguments)."""
  kwargs = {"total_steps": steps} if optimizer.uses_total_steps else {}
  tx = optimizer.make(optimizer.learning_rate, **kwargs)

  def step(carry, key):
    params, state = carry
    loss, grads = jax.value_and_grad(task.loss)(params, task.sample(key, task.train))
    updates, state = tx.update(grads, state, params, value=loss)
    hyperparams = garo_optax.hyperparams(state)
    record = {
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "update_norm": optax.tree.norm(updates),
      "learning_rate": _largest(hyperparams["learning_rate"]),
      "momentum": _largest(hyperparams.get("momentum", hyperparams.get("b1"))),
      "backoffs": optax.tree.get(state, "backoffs"),
      "cap": jnp.min(optax.tree.get(state, "safeguard").max_learning_rate),
    }
    return (optax.apply_updates(params, updates), state), record

  run = jax.jit(lambda p, keys: jax.lax.scan(step, (p, tx.init(p)), keys)[1])
  records = []
  for seed in seeds:
    params = task.init(jax.random.fold_in(jax.random.key(seed), 0))
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), steps)
    records.append({k: np.asarray(v, np.float64) for k, v in run(params, keys).items()})
  return records


def _largest(value) -> jax.Array:
  """A hyperparameter's value, the largest over groups when there are several."""
  return jnp.max(jnp.stack([jnp.asarray(x) for x in jax.tree.leaves(value)]))


def summary(record: dict[str, np.ndarray]) -> dict:
  """The run's peak loss over its first, its final loss, the learning rate and
  the cap it ends with, and the steps around its first back-off (if any)."""
  loss = record["loss"]
  finite = np.isfinite(loss)
  out = {
    "first_loss": float(loss[0]),
    "final_loss": float(loss[-1]),
    "peak_over_first": float(np.max(np.where(finite, loss, np.inf)) / loss[0]),
    "backoffs": int(record["backoffs"][-1]),
    "final_learning_rate": float(record["learning_rate"][-1]),
    # None: never capped (the safeguard's NO_CAP).
    "final_cap": float(record["cap"][-1])
    if record["cap"][-1] < _safeguard.NO_CAP
    else None,
  }
  backed_off = np.flatnonzero(np.diff(record["backoffs"], prepend=0) > 0)
  if backed_off.size:
    first = int(backed_off[0])
    window = range(max(0, first - BEFORE), min(len(loss), first + AFTER + 1))
    out["first_backoff_step"] = first
    out["around_first_backoff"] = [
      {"step": t, **{k: float(v[t]) for k, v in record.items()}} for t in window
    ]
  return out


def run(
  task_name: str, optimizer_names: Sequence[str], seeds: Sequence[int], steps=None
) -> dict:
  task = tasks.get(task_name)
  steps = steps or task.steps
  return {
    "command": "python -m benchmarks.blowup_trace --task "
    f"{task_name} --optimizers {' '.join(optimizer_names)} --seeds {len(seeds)}"
    + (f" --steps {steps}" if steps != task.steps else ""),
    "machine": f"{jax.devices()[0].device_kind}, {_machine.cpu_model()} "
    f"({os.cpu_count()} CPUs), jax {jax.__version__}",
    "task": task_name,
    "steps": steps,
    "runs": {
      name: {
        str(seed): summary(record)
        for seed, record in zip(
          seeds, trace(task, optimizers.OPTIMIZERS[name], seeds, steps), strict=True
        )
      }
      for name in optimizer_names
    },
  }


def markdown(results: dict) -> str:
  lines = [
    f"# Blow-ups and back-offs on {results['task']}",
    "",
    f"Generated by `{results['command']}` ({results['steps']} steps, loss "
    f"given) on {results['machine']}.",
    "",
    "| optimizer | seed | final loss | peak loss / first | back-offs | "
    f"first back-off at | loss there / {BEFORE} steps before | final learning "
    "rate | final cap |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, runs in results["runs"].items():
    for seed, r in runs.items():
      row = [name, seed, f"{r['final_loss']:.3g}", f"{r['peak_over_first']:.3g}"]
      row.append(str(r["backoffs"]))
      if "first_backoff_step" in r:
        around = {x["step"]: x for x in r["around_first_backoff"]}
        at = r["first_backoff_step"]
        earliest = around[min(around)]
        row += [str(at), f"{around[at]['loss'] / earliest['loss']:.3g}"]
      else:
        row += ["", ""]
      cap = r.get("final_cap")
      row += [f"{r['final_learning_rate']:.3g}", "" if cap is None else f"{cap:.3g}"]
      lines.append("| " + " | ".join(row) + " |")
  lines += [
    "",
    "The steps around each first back-off (loss, gradient norm, learning "
    "rate, momentum, update norm, cap) are in the JSON file. A final learning "
    "rate far below the final cap is the controller's own cut.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", default="rosenbrock", choices=tasks.TASK_NAMES)
  p.add_argument("--optimizers", nargs="+", required=True)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--out", default=str(RESULTS / "rosenbrock"))
  args = p.parse_args(argv)
  optimizers.check_names(args.optimizers)
  if not all(optimizers.OPTIMIZERS[n].is_garo for n in args.optimizers):
    p.error("every optimizer must be a GARO variant (it has a safeguard)")
  results = run(args.task, args.optimizers, range(args.seeds), args.steps)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  # NAME.json and NAME.md, dots in NAME kept (rosenbrock_0.5.1).
  out.parent.joinpath(out.name + ".json").write_text(
    json.dumps(results, indent=1) + "\n"
  )
  text = markdown(results)
  out.parent.joinpath(out.name + ".md").write_text(text)
  print(text)


if __name__ == "__main__":
  main()
