"""How low heavy ball gets on a task when its effective step is bounded.

``garo(max_effective_learning_rate=S)`` keeps ``lr / (1 - |momentum|) <= S``.
No controller can do better under that bound than the best heavy ball that
keeps it, so this sets a floor under GARO's final loss on a task for each
bound. For every bound ``S`` and momentum ``β`` of a small grid it trains SGD
with momentum ``β`` at ``lr = S (1 - β)`` (on the bound) for the task's full
step count on ``--seeds`` seeds, prints the best mean final train loss and
writes it, with the machine, to ``benchmarks/results/effective_step_<task>.json``.

Usage::

  python -m benchmarks.effective_step                # rosenbrock, bounds 0.5 and 1
  python -m benchmarks.effective_step --task conv_digits --bounds 0.5 1 2
"""

import argparse
import json

import jax
import numpy as np
import optax

from benchmarks import step_time, tasks
from benchmarks import train as train_lib
from benchmarks.optimizers import Optimizer

MOMENTA = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)


def best_on_bound(
  task: tasks.Task,
  bound: float,
  seeds: int = 3,
  momenta=MOMENTA,
  steps: int | None = None,
) -> tuple[float, float]:
  """``(mean final loss, momentum)`` of the best heavy ball on ``bound``.

  A momentum whose runs diverge on any seed counts as an infinite loss.
  """
  steps = steps or task.steps
  results = []
  for momentum in momenta:
    opt = Optimizer(
      f"sgd_momentum{momentum}",
      "heavy ball on the bound",
      lambda lr, m=momentum: optax.sgd(lr, momentum=m),
      bound * (1.0 - momentum),
    )
    run = train_lib.compile_run(task, opt, steps, steps)
    finals = [float(run(opt.learning_rate, s).train_loss[-1]) for s in range(seeds)]
    loss = float(np.mean(finals)) if np.all(np.isfinite(finals)) else float("inf")
    results.append((loss, momentum))
  return min(results)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", default="rosenbrock", choices=tasks.TASK_NAMES)
  p.add_argument("--bounds", type=float, nargs="+", default=[0.5, 1.0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=None, help="default: the task's")
  p.add_argument("--out", default=None, help="JSON path (default: see above)")
  args = p.parse_args(argv)
  task = tasks.get(args.task)
  steps = args.steps or task.steps
  print(f"{args.task}, {steps} steps, jax {jax.__version__}")
  rows = []
  for bound in args.bounds:
    loss, momentum = best_on_bound(task, bound, args.seeds, steps=steps)
    rows.append(
      {
        "bound": bound,
        "final_train_loss": loss,
        "momentum": momentum,
        "learning_rate": bound * (1 - momentum),
      }
    )
    print(
      f"effective step <= {bound:g}: best mean final train loss {loss:.3g} "
      f"(momentum {momentum:g}, lr {bound * (1 - momentum):.3g})"
    )
  path = args.out or step_time.RESULTS / f"effective_step_{args.task}.json"
  result = {
    "task": args.task,
    "steps": steps,
    "seeds": args.seeds,
    "momenta": list(MOMENTA),
    "machine": step_time._machine(),
    "results": rows,
  }
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  print(f"Wrote {path}")


if __name__ == "__main__":
  main()
