"""Compile time of a whole training step: the loss, its gradients and the update.

A training loop compiles one jitted step: the model's forward and backward
passes and the optimizer's update in one program, with GARO given the loss
(``value=loss``, as the README recommends) and the loss returned for logging.
What XLA does with GARO's update depends on what surrounds it (it fuses the
update's scalar ops into the kernels that read them), so this times that
program, not the update alone
(``benchmarks.step_time`` times the update alone). The model is an MLP of
width 32 on a batch of 32 with ``leaves / 2`` dense layers; each optimizer's
step is traced, lowered and compiled ``--repeats`` times (fresh each time) and
the median is reported, with its ratio to AdamW's in the same run. With
``--penalty``, the loss also adds an L2 penalty, a term per leaf.

With ``--eager``, it also times what a notebook's first ``tx.update`` outside
``jit`` costs: in a fresh process, after ``init`` and a jitted loss and
gradients, one call of the update, which JAX runs op by op, compiling each
new op as it goes.

Usage::

  python -m benchmarks.compile_time                    # 10, 100 and 200 leaves
  python -m benchmarks.compile_time --leaves 100 --penalty --out results/x
  python -m benchmarks.compile_time --leaves 2 10 --eager --out results/y
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

import garo_optax
from benchmarks import _machine

RESULTS = pathlib.Path(__file__).parent / "results"
WIDTH = 32
BATCH = 32


def optimizers() -> dict[str, optax.GradientTransformation]:
  """The optimizers compared, at their usual starting values."""
  return {
    "sgd_momentum": optax.sgd(0.01, momentum=0.9),
    "adamw": optax.adamw(1e-3),
    "garo": garo_optax.garo(0.01),
    "garo_per_leaf": garo_optax.garo(0.01, granularity="per_leaf"),
    "garo_adamw": garo_optax.garo_adamw(1e-3),
  }


def mlp(leaves: int, penalty: bool = False):
  """``(params, loss_fn, batch)`` of an MLP with ``leaves / 2`` dense layers
  of width ``WIDTH`` (tanh), on squared error (plus ``1e-4`` times the sum of
  the squared params with ``penalty``)."""
  layers = leaves // 2
  keys = jax.random.split(jax.random.key(0), layers + 1)
  params = {
    f"layer_{i:03d}": {
      "kernel": jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH**0.5,
      "bias": jnp.zeros(WIDTH),
    }
    for i, k in enumerate(keys[:layers])
  }
  x = jax.random.normal(keys[-1], (BATCH, WIDTH))
  batch = (x, jnp.sin(x))

  def loss_fn(params, batch):
    h, y = batch
    for layer in params.values():
      h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
    loss = jnp.mean((h - y) ** 2)
    if penalty:
      loss += 1e-4 * sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
    return loss

  return params, loss_fn, batch


def train_step(tx, loss_fn, takes_value: bool):
  """A training loop's step: the loss, its gradients, the update (given the
  loss when ``takes_value``), the new params; the loss is returned."""

  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    extra = {"value": loss} if takes_value else {}
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, loss

  return step


def compile_seconds(name: str, leaves: int, penalty: bool = False) -> float:
  """Seconds to trace, lower and compile one optimizer's training step."""
  tx = optimizers()[name]  # fresh: nothing cached from an earlier compile
  params, loss_fn, batch = mlp(leaves, penalty)
  step = train_step(tx, loss_fn, takes_value=name.startswith("garo"))
  state = tx.init(params)
  start = time.perf_counter()
  jax.jit(step).lower(params, state, batch).compile()
  return time.perf_counter() - start


# Run in a fresh process by eager_seconds: argv is (optimizer, leaves).
_EAGER_UPDATE = """
import sys, time
import jax
from benchmarks import compile_time
name, leaves = sys.argv[1], int(sys.argv[2])
tx = compile_time.optimizers()[name]
params, loss_fn, batch = compile_time.mlp(leaves)
loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
state = jax.block_until_ready(tx.init(params))
extra = {"value": loss} if name.startswith("garo") else {}
start = time.perf_counter()
jax.block_until_ready(tx.update(grads, state, params, **extra))
print(time.perf_counter() - start)
"""


def eager_seconds(name: str, leaves: int) -> float:
  """Seconds of one optimizer's first update outside ``jit``, in a fresh
  process (after ``init`` and a jitted loss and gradients)."""
  root = pathlib.Path(__file__).resolve().parents[1]
  path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
  run = subprocess.run(
    [sys.executable, "-c", _EAGER_UPDATE, name, str(leaves)],
    env={**os.environ, "PYTHONPATH": path},
    capture_output=True,
    text=True,
    check=False,
  )
  if run.returncode:
    raise RuntimeError(f"{name}'s first update failed:\n{run.stderr[-3000:]}")
  return float(run.stdout.split()[-1])


def measure(leaves: list[int], repeats: int, penalty: bool = False, timer=None) -> dict:
  """``{leaves: {optimizer: median seconds}}`` of ``timer(name, leaves)``
  (default: a training step's compile time), repeats interleaved across the
  optimizers so that a busy spell of a shared machine slows them alike."""
  if timer is None:
    timer = lambda name, n: compile_seconds(name, n, penalty)
  names = list(optimizers())
  results = {}
  for n in leaves:
    times = {name: [] for name in names}
    for _ in range(repeats):
      for name in names:
        times[name].append(timer(name, n))
    results[str(n)] = {name: statistics.median(t) for name, t in times.items()}
  return results


def _table(results: dict, names: list[str]) -> list[str]:
  lines = [
    "| leaves | " + " | ".join(names) + " |",
    "|---" * (len(names) + 1) + "|",
  ]
  for n, row in results.items():
    cells = [f"{row[name]:.2f} s ({row[name] / row['adamw']:.2f}x)" for name in names]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return lines


def markdown(record: dict) -> str:
  lines = [
    "# Compile time of a training step",
    "",
    f"Machine: {record['machine']}. Command: `{record['command']}`.",
    "",
    "Seconds to trace, lower and compile one jitted training step (an MLP's "
    f"loss{' with an L2 penalty' if record['penalty'] else ''}, gradients and "
    "update; GARO given `value=loss`), median over "
    f"{record['repeats']} compiles, and the ratio to AdamW's.",
    "",
    *_table(record["results"], record["optimizers"]),
  ]
  if "eager" in record:
    lines += [
      "",
      "Seconds of the first update outside `jit` in a fresh process (after "
      "`init` and a jitted loss and gradients; JAX runs it op by op, compiling "
      f"each new op), median over {record['repeats']} processes, and the ratio "
      "to AdamW's:",
      "",
      *_table(record["eager"], record["optimizers"]),
    ]
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--leaves", type=int, nargs="+", default=[10, 100, 200])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
    "--penalty", action="store_true", help="add an L2 penalty (a term per leaf)"
  )
  parser.add_argument(
    "--eager",
    action="store_true",
    help="also time the first update outside jit, in a fresh process",
  )
  parser.add_argument("--out", default=str(RESULTS / "compile_time"))
  args = parser.parse_args(argv)
  if any(n < 2 or n % 2 for n in args.leaves):
    parser.error("--leaves must be even numbers of at least 2 (kernel and bias)")
  record = {
    "machine": _machine.describe(),
    "command": " ".join(
      ["python -m benchmarks.compile_time", *(sys.argv[1:] if argv is None else argv)]
    ),
    "garo_optax": garo_optax.__version__,
    "repeats": args.repeats,
    "penalty": args.penalty,
    "optimizers": list(optimizers()),
    "results": measure(args.leaves, args.repeats, args.penalty),
  }
  if args.eager:
    record["eager"] = measure(args.leaves, args.repeats, timer=eager_seconds)
  _machine.write(args.out, record, markdown(record))


if __name__ == "__main__":
  main()
