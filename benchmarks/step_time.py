"""Step time and memory of GARO's update against optax's optimizers.

Times update + apply **in-graph**: ``K`` steps in a ``lax.fori_loop`` inside one
``jit`` with donated params and state, warmed up, median over repeats, so the
numbers are the device's, not Python's. The repeats of all optimizers are
interleaved, so that a busy spell of a shared machine slows them alike. Also
reports the compile times (of that loop, as the targets are stated, and of one
jitted step, as a training loop that calls a jitted step compiles it), the
optimizer-state bytes read off the state pytree, and, as a bandwidth
yardstick, the time of a device copy of the params.

The gradients are one fixed buffer per leaf multiplied by a per-step scalar, so
that nothing that depends on them can be hoisted out of the loop. The
``optimization_barrier`` around them does not materialise them on XLA:CPU,
which removes barriers before fusion: the scaling is fused into every kernel
that reads the gradient. Each such kernel then reads one gradient buffer from
memory, as it would read a backward pass's output, and no optimizer pays for
writing it.

Usage::

  python -m benchmarks.step_time                      # 1e7 params, 100 and 1000 leaves
  python -m benchmarks.step_time --params 2.56e8 --leaves 100 --steps 20
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks._machine import cpu_model

RESULTS = pathlib.Path(__file__).parent / "results"

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
  "garo": lambda: garo_optax.garo(),
  "garo_per_leaf": lambda: garo_optax.garo(granularity="per_leaf"),
  "garo_adamw": lambda: garo_optax.garo_adamw(),
  "sgd": lambda: optax.sgd(0.01),
  "sgd_momentum_wd": lambda: optax.chain(
    optax.add_decayed_weights(1e-4), optax.sgd(0.01, momentum=0.9)
  ),
  "adamw": lambda: optax.adamw(1e-3),
}


def make_params(num_params: int, num_leaves: int, dtype) -> dict[str, jax.Array]:
  """``num_leaves`` 2-D leaves of (nearly) equal size, ``num_params`` in all."""
  sizes = np.full(num_leaves, num_params // num_leaves)
  sizes[: num_params % num_leaves] += 1
  keys = jax.random.split(jax.random.key(0), num_leaves)
  params = {}
  for i, (size, key) in enumerate(zip(sizes, keys, strict=True)):
    cols = 128 if size % 128 == 0 else 1
    params[f"leaf_{i:04d}"] = (
      jax.random.normal(key, (int(size) // cols, cols), dtype) * 0.02
    )
  return params


def _machine() -> dict[str, str]:
  device = jax.devices()[0]
  description = getattr(device, "device_kind", device.platform)
  if device.platform == "cpu":
    description = cpu_model() or description
  return {
    "platform": device.platform,
    "device": description,
    "device_count": str(jax.device_count()),
    "cpu_count": str(len(os.sched_getaffinity(0))),
    "jax": jax.__version__,
    "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
    "optax": optax.__version__,
    "garo_optax": garo_optax.__version__,
  }


def _tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _time_once(fn, args_fn) -> tuple[float, float]:
  """Wall and process-CPU seconds of one call ``fn(*args_fn())``.

  The CPU time (all threads of this process) is steadier than the wall time
  on a shared machine, where other processes take cores away.
  """
  args = args_fn()
  jax.block_until_ready(args)
  start, start_cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start, time.process_time() - start_cpu


def _time(fn, args_fn, repeats: int) -> tuple[float, float]:
  """Median wall and process-CPU seconds of ``fn(*args_fn())``."""
  times = [_time_once(fn, args_fn) for _ in range(repeats)]
  return tuple(statistics.median(t) for t in zip(*times, strict=True))


def step_loop(tx, steps: int, *, barrier: bool = True):
  """``run(params, state, grads)``: ``steps`` updates and applies of ``tx`` in
  one ``fori_loop``, step ``i`` on ``grads`` scaled by ``1 + 1e-3 i``, so that
  nothing that depends on them can be hoisted out of the loop; with
  ``barrier``, the scaled gradients go through an ``optimization_barrier``."""

  def run(params, state, grads):
    def body(i, carry):
      params, state = carry
      scale = 1.0 + 1e-3 * i.astype(jnp.float32)
      step_grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
      if barrier:
        # Meant to materialise them, as a backward pass leaves them; XLA:CPU
        # removes the barrier before fusion (see the module docstring).
        step_grads = jax.lax.optimization_barrier(step_grads)
      updates, state = tx.update(step_grads, state, params)
      return optax.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, steps, body, (params, state))

  return run


def compile_optimizer(tx, params, grads, steps: int):
  """``steps`` in-graph steps of ``tx``, compiled, and its compile time.

  Returns ``(compiled, fresh, row)``: ``compiled(*fresh())`` runs the steps
  from a fresh copy of the params and state; ``row`` has the compile time and
  the state bytes.
  """
  run = step_loop(tx, steps)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  # The loop first, as this benchmark timed it before it timed one step too.
  compiled, compile_s = compile_timed(run, params, state, grads)
  _, compile_step_s = compile_timed(step, params, state, grads)

  def fresh():
    return jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state), grads

  compiled(*fresh())  # warm-up
  row = {
    "compile_s": compile_s,
    "compile_step_s": compile_step_s,
    "state_bytes": _tree_bytes(state),
  }
  return compiled, fresh, row


def compile_timed(fn, params, state, grads):
  """``jit(fn)`` compiled, and the seconds to trace, lower and compile it."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=(0, 1)).lower(params, state, grads).compile()
  return compiled, time.perf_counter() - start


def time_optimizers(
  txs: dict[str, optax.GradientTransformation], params, grads, steps, repeats
) -> dict[str, dict[str, float]]:
  """Compile time, per-step time and state bytes of each optimizer."""
  prepared = {
    name: compile_optimizer(tx, params, grads, steps) for name, tx in txs.items()
  }
  times = time_interleaved(
    {name: (compiled, fresh) for name, (compiled, fresh, _) in prepared.items()},
    repeats,
  )
  rows = {}
  for name, (_, _, row) in prepared.items():
    wall, cpu = times[name]
    rows[name] = {"step_ms": 1e3 * wall / steps, "cpu_ms": 1e3 * cpu / steps, **row}
  return rows


def time_interleaved(runs: dict[str, tuple], repeats: int) -> dict[str, tuple]:
  """Median wall and process-CPU seconds of each ``fn(*args_fn())`` in ``runs``.

  The repeats are interleaved (each round times every run once, in a rotating
  order), so that a slow spell of a shared machine falls on all of them alike
  rather than on whichever ran then; the medians are over rounds.
  """
  times = {name: [] for name in runs}
  names = list(runs)
  for r in range(repeats):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      times[name].append(_time_once(*runs[name]))
  return {
    name: tuple(statistics.median(t) for t in zip(*ts, strict=True))
    for name, ts in times.items()
  }


def time_copy(params, steps: int, repeats: int) -> float:
  """Seconds for one device copy of all params (reads N, writes N).

  Timed as the optimizers are, ``steps`` copies in one ``fori_loop``. Each
  is a product with a runtime 1.0: XLA removes an ``x + 0`` or ``x * 1``, and
  with donated buffers such a "copy" moved no bytes at all. Where the caches
  hold much of the params (1e7 float32 params are 40 MB, against 34 MB of
  cache on the 2-core CPU these results come from), the copy runs partly from
  them, while an optimizer's several buffers do not fit: the fraction of the
  copy's bandwidth is then a lower bound on the fraction of memory bandwidth.
  """

  def run(params, one):
    scale = lambda _, p: jax.tree.map(lambda x: x * one.astype(x.dtype), p)
    return jax.lax.fori_loop(0, steps, scale, params)

  one = jnp.float32(1.0)
  copy = jax.jit(run, donate_argnums=0).lower(params, one).compile()
  fresh = lambda: (jax.tree.map(jnp.copy, params), one)
  copy(*fresh())  # warm-up
  return _time(copy, fresh, repeats)[0] / steps


def benchmark(num_params, num_leaves, dtype, steps, repeats, names):
  params = make_params(num_params, num_leaves, dtype)
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 1e-3, params)
  param_bytes = _tree_bytes(params)
  txs = {name: OPTIMIZERS[name]() for name in names}
  rows = time_optimizers(txs, params, grads, steps, repeats)
  for row in rows.values():
    row["state_over_param_bytes"] = row["state_bytes"] / param_bytes
  copy_s = time_copy(params, steps, repeats)
  return {
    **run_config(num_params, num_leaves, dtype, steps, repeats),
    "param_bytes": param_bytes,
    "copy_ms": 1e3 * copy_s,
    "copy_bandwidth_gbs": 2 * param_bytes / copy_s / 1e9,
    "optimizers": rows,
  }


def run_config(num_params, num_leaves, dtype, steps, repeats) -> dict:
  """What a result was measured on, as its JSON records it."""
  return {
    "num_params": num_params,
    "num_leaves": num_leaves,
    "dtype": jnp.dtype(dtype).name,
    "steps": steps,
    "repeats": repeats,
  }


def _ratios(result, name: str, metric: str = "step_ms") -> dict[str, float]:
  rows = result["optimizers"]
  return {
    peer: rows[name][metric] / rows[peer][metric]
    for peer in rows
    if peer != name and not peer.startswith("garo")
  }


# Bytes each optimizer must move per step, in parameter buffers (DESIGN.md §4,
# update fused with apply): SGD reads g, θ and writes θ; momentum adds m read
# and written; AdamW adds a second moment; GARO reads g and m once more for its
# statistics and then runs the SGD+momentum update (garo_adamw: AdamW's).
MIN_BUFFERS = {
  "sgd": 3,
  "sgd_momentum_wd": 5,
  "adamw": 7,
  "garo": 7,
  "garo_per_leaf": 7,
  "garo_adamw": 9,
}


def to_markdown(results: list[dict], machine: dict[str, str]) -> str:
  lines = [
    "# Step time: GARO against optax",
    "",
    f"Machine: {machine['device']} ({machine['platform']}, "
    f"{machine['cpu_count']} CPUs visible), jax {machine['jax']}, "
    f"optax {machine['optax']}, garo_optax {machine['garo_optax']}.",
    "",
    "Update + apply, in-graph (`lax.fori_loop` inside one `jit`, donated "
    "buffers), median over repeats interleaved across the optimizers: wall "
    "time, and on CPU also the "
    "process's CPU time (all threads), which other processes on a shared "
    "machine disturb less. Compile times (trace, lower and compile) are of "
    "that loop and of one jitted step. `bandwidth` is the bytes the optimizer "
    "must move (parameter buffers listed in `benchmarks/step_time.py`) per "
    "step time, as a fraction of a device copy's.",
    "",
  ]
  for r in results:
    lines += [
      f"## {r['num_params']:.3g} params in {r['num_leaves']} leaves "
      f"({r['dtype']}), {r['steps']} steps x {r['repeats']} repeats",
      "",
      f"Device copy of the params: {r['copy_ms']:.3f} ms "
      f"({r['copy_bandwidth_gbs']:.1f} GB/s).",
      "",
      "| optimizer | step (ms) | CPU time (ms) | compile, loop (s) | "
      "compile, one step (s) | state / params bytes | bandwidth vs copy |",
      "|---|---|---|---|---|---|---|",
    ]
    for name, row in r["optimizers"].items():
      moved = MIN_BUFFERS[name] * r["param_bytes"] / (row["step_ms"] / 1e3) / 1e9
      lines.append(
        f"| {name} | {row['step_ms']:.3f} | {row['cpu_ms']:.3f} | "
        f"{row['compile_s']:.2f} | {row['compile_step_s']:.2f} | "
        f"{row['state_over_param_bytes']:.4f} | "
        f"{moved / r['copy_bandwidth_gbs']:.0%} |"
      )
    lines.append("")
    for name in r["optimizers"]:
      if name.startswith("garo"):
        parts = []
        for metric, label in (
          ("step_ms", "step"),
          ("cpu_ms", "CPU time"),
          ("compile_s", "compile (loop)"),
          ("compile_step_s", "compile (one step)"),
        ):
          ratios = _ratios(r, name, metric)
          parts.append(
            f"{label} " + ", ".join(f"x{v:.2f} {peer}" for peer, v in ratios.items())
          )
        lines.append(f"- {name}: " + "; ".join(parts))
    lines.append("")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--params", type=float, default=1e7)
  parser.add_argument("--leaves", type=int, nargs="+", default=[100, 1000])
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument(
    "--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS)
  )
  parser.add_argument(
    "--out",
    default=None,
    help="output path without suffix (default: results/step_time_<platform>)",
  )
  args = parser.parse_args(argv)
  run_and_save(benchmark, args, args.optimizers, "step_time", to_markdown, argv)


def run_and_save(benchmark, args, names, name: str, to_markdown, argv) -> None:
  """Runs ``benchmark`` for each of ``args.leaves``, printing each table, and
  writes ``results/<name>_<platform>.json`` (machine, date, command line,
  results) and ``.md``, or ``args.out`` with those suffixes."""
  machine = _machine()
  results = []
  for num_leaves in args.leaves:
    dtype = jnp.dtype(args.dtype)
    result = benchmark(
      int(args.params), num_leaves, dtype, args.steps, args.repeats, names
    )
    results.append(result)
    table = to_markdown([result], machine)
    print(table[table.index("\n## ") + 1 :])  # without the title and machine
  stem = pathlib.Path(args.out or RESULTS / f"{name}_{machine['platform']}")
  stem.parent.mkdir(parents=True, exist_ok=True)
  payload = {
    "machine": machine,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "command": f"python -m benchmarks.{name} "
    + " ".join(sys.argv[1:] if argv is None else argv),
    "results": results,
  }
  stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
  stem.with_suffix(".md").write_text(to_markdown(results, machine))
  print(f"Wrote {stem}.json and .md")


if __name__ == "__main__":
  main()
