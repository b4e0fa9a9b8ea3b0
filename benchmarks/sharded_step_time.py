"""Step time of GARO against AdamW and SGD+momentum, with sharded params.

Runs the same in-graph measurement on a mesh of all devices (8 simulated CPU
devices unless ``XLA_FLAGS`` says otherwise) and on a one-device mesh, so the
ratios against AdamW can be compared with and without sharding. Each leaf is
split over both mesh axes (``P("data", "model")``), so each device holds
1/devices of the params and of the optimizer state.

Measured: update + apply, ``--steps`` of them in a ``lax.fori_loop`` inside one
``jit`` with donated params and state, after a warm-up, median over
``--repeats``. The gradients are a fixed buffer per leaf scaled by a per-step
scalar, so every step reads a gradient buffer and nothing can be hoisted out of
the loop. The meshes use explicit axes (``--axis-types explicit``, shardings in
the types, as with ``jax.set_mesh``) or auto ones (``--axis-types auto``,
shardings given to ``jit``); either way the script checks that every state
buffer shaped like a param is sharded like it.

Usage::

  python -m benchmarks.sharded_step_time [--params 1e7] [--leaves 100 1000]
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  )

import argparse
import datetime
import json
import pathlib
import platform
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import garo_optax
from benchmarks import step_time
from benchmarks._machine import cpu_model

RESULTS = pathlib.Path(__file__).parent / "results"
OPTIMIZERS = {
  "garo": lambda: garo_optax.garo(),
  "garo_per_leaf": lambda: garo_optax.garo(granularity="per_leaf"),
  "sgd_momentum": lambda: optax.sgd(0.01, momentum=0.9),
  "adamw": lambda: optax.adamw(1e-3),
}
# garo_per_leaf stops at 100 leaves: with 1000 leaves (1000 groups) its
# 8-device compile had not finished after 20 minutes on a 2-core machine.
MAX_LEAVES = {"garo_per_leaf": 100}
SPEC = P("data", "model")
COLLECTIVES = (
  "all-reduce",
  "all-gather",
  "reduce-scatter",
  "all-to-all",
  "collective-permute",
)


def make_params(num_params: int, num_leaves: int, mesh_shape) -> dict:
  """``num_leaves`` equal 2-D leaves whose shards are multiples of (8, 128)."""
  rows_multiple, cols = 8 * mesh_shape[0], 128 * mesh_shape[1]
  rows = max(
    rows_multiple, round(num_params / num_leaves / cols / rows_multiple) * rows_multiple
  )
  rng = np.random.default_rng(0)
  return {
    f"leaf_{i:04d}": rng.standard_normal((rows, cols), np.float32) * 0.02
    for i in range(num_leaves)
  }


def machine() -> dict[str, str]:
  return {
    "cpu": cpu_model(),
    "cpus_visible": str(len(os.sched_getaffinity(0))),
    # Other work on the machine slows every optimizer alike; the ratios hold
    # better than the times.
    "load_average_1min": f"{os.getloadavg()[0]:.1f}",
    "platform": jax.devices()[0].platform,
    "device_count": str(jax.device_count()),
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "garo_optax": garo_optax.__version__,
  }


def sharded_like_params(state, params) -> bool:
  """Whether every state buffer shaped like the (equal) leaves is sharded so."""
  leaf = jax.tree.leaves(params)[0]
  return all(
    x.sharding.is_equivalent_to(leaf.sharding, x.ndim)
    for x in jax.tree.leaves(state)
    if x.shape == leaf.shape
  )


def compile_optimizer(tx, params, grads, steps: int):
  """``(compiled, state, compile seconds)`` for ``steps`` in-graph updates."""

  # Buffers shaped like the (equal) leaves sharded like them, the rest
  # replicated: explicit axes would infer this, auto ones need to be told.
  leaf = jax.tree.leaves(params)[0]
  replicated = NamedSharding(leaf.sharding.mesh, P())
  state_sharding = jax.tree.map(
    lambda x: leaf.sharding if x.shape == leaf.shape else replicated,
    jax.eval_shape(tx.init, params),
  )
  state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  if not sharded_like_params(state, params):
    raise RuntimeError("an optimizer state buffer is not sharded like its param")
  run = step_time.step_loop(tx, steps, barrier=False)
  compiled, compile_s = step_time.compile_timed(run, params, state, grads)
  return compiled, state, compile_s


def count_collectives(hlo: str) -> dict[str, int]:
  """How many collectives of each kind an HLO module contains."""
  ops = re.findall(r"= .*? ({})(?:-start)?\(".format("|".join(COLLECTIVES)), hlo)
  return {op: ops.count(op) for op in COLLECTIVES if op in ops}


def benchmark(mesh, params, names, steps, repeats) -> dict:
  """Times every optimizer on ``mesh``, taking turns so that load drifts hit all."""
  with jax.set_mesh(mesh):
    sharding = NamedSharding(mesh, SPEC)
    params = jax.device_put(params, sharding)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    runs = {
      name: compile_optimizer(OPTIMIZERS[name](), params, grads, steps)
      for name in names
    }
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
    times = {name: [] for name in names}
    for _ in range(repeats + 1):  # the first round is a warm-up
      for name, (compiled, state, _) in runs.items():
        args = jax.block_until_ready(copy((params, state)))
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args, grads))
        times[name].append(time.perf_counter() - start)
  rows = {
    name: {
      "step_ms": 1e3 * statistics.median(times[name][1:]) / steps,
      "compile_s": compile_s,
      "collectives_per_step": count_collectives(compiled.as_text()),
    }
    for name, (compiled, _, compile_s) in runs.items()
  }
  leaf = next(iter(params.values()))
  return {
    "devices": mesh.size,
    "mesh": dict(mesh.shape),
    "axis_types": sorted({str(t) for t in mesh.axis_types}),
    "spec": str(SPEC),
    "num_params": sum(x.size for x in jax.tree.leaves(params)),
    "num_leaves": len(params),
    "leaf_shape": list(leaf.shape),
    "leaf_shard_shape": list(sharding.shard_shape(leaf.shape)),
    "steps": steps,
    "repeats": repeats,
    "optimizers": rows,
    "ratio_to_adamw": {
      name: row["step_ms"] / rows["adamw"]["step_ms"] for name, row in rows.items()
    },
  }


def to_markdown(results: list[dict], info: dict, command: str) -> str:
  names = [n for n in OPTIMIZERS if any(n in r["optimizers"] for r in results)]
  peers = [n for n in names if n != "adamw"]

  def cell(result, name, show):
    row = result["optimizers"].get(name)
    return "-" if row is None else show(row)

  lines = [
    "# Sharded step time: GARO against AdamW and SGD+momentum",
    "",
    f"{info['cpu']}, {info['cpus_visible']} CPUs visible, "
    f"{info['device_count']} simulated {info['platform']} devices "
    f"(`{info['xla_flags']}`); jax {info['jax']}, optax {info['optax']}, "
    f"garo_optax {info['garo_optax']}.",
    "",
    f"Command: `{command}`",
    "",
    "Update + apply in one `jit` (`lax.fori_loop`, donated buffers), median "
    f"over repeats. Mesh axes: {results[0]['axis_types'][0].lower()}. "
    "Each leaf sharded `P('data', 'model')` on the mesh; the "
    "1-device rows run the same program on a 1x1 mesh. Simulated devices "
    "share the same CPU cores, so the 8-device times measure the cost of "
    "partitioning, not a speed-up. `-`: not run (see `MAX_LEAVES` in the "
    "script).",
    "",
    "| params | leaves | devices | per-device leaf | "
    + " | ".join(f"{n} (ms)" for n in names)
    + " | "
    + " | ".join(f"{n} / adamw" for n in peers)
    + " |",
    "|---|---|---|---|" + "---|" * (len(names) + len(peers)),
  ]
  for r in results:
    lines.append(
      f"| {r['num_params']:.3g} | {r['num_leaves']} | {r['devices']} | "
      f"{tuple(r['leaf_shard_shape'])} | "
      + " | ".join(cell(r, n, lambda row: f"{row['step_ms']:.2f}") for n in names)
      + " | "
      + " | ".join(
        f"{r['ratio_to_adamw'][n]:.2f}" if n in r["ratio_to_adamw"] else "-"
        for n in peers
      )
      + " |"
    )
  for title, show in (
    ("Compile time (s)", lambda row: f"{row['compile_s']:.1f}"),
    (
      "Collectives per step in the compiled loop",
      lambda row: (
        ", ".join(f"{n} {op}" for op, n in row["collectives_per_step"].items())
        or "none"
      ),
    ),
  ):
    lines += [
      "",
      f"{title}:",
      "",
      "| leaves | devices | " + " | ".join(names) + " |",
      "|---|---|" + "---|" * len(names),
    ]
    lines += [
      f"| {r['num_leaves']} | {r['devices']} | "
      + " | ".join(cell(r, n, show) for n in names)
      + " |"
      for r in results
    ]
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--params", type=float, default=1e7)
  parser.add_argument("--leaves", type=int, nargs="+", default=[100, 1000])
  parser.add_argument(
    "--mesh", type=int, nargs=2, default=(4, 2), metavar=("DATA", "MODEL")
  )
  parser.add_argument(
    "--axis-types",
    choices=("explicit", "auto"),
    default="explicit",
    help="mesh axis types: explicit (shardings in the types, "
    "jax.set_mesh) or auto (shardings given to jit)",
  )
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS)
  )
  parser.add_argument(
    "--out", default="sharded_step_time", help="file stem under benchmarks/results/"
  )
  args = parser.parse_args(argv)
  if "adamw" not in args.optimizers:
    parser.error("the ratios need adamw among --optimizers")

  axes = ("data", "model")
  axis_types = (getattr(AxisType, args.axis_types.capitalize()),) * 2
  meshes = [
    jax.make_mesh(tuple(args.mesh), axes, axis_types=axis_types),
    jax.make_mesh((1, 1), axes, axis_types=axis_types, devices=jax.devices()[:1]),
  ]
  info = machine()
  results = []
  for num_leaves in args.leaves:
    params = make_params(int(args.params), num_leaves, args.mesh)
    names = [n for n in args.optimizers if num_leaves <= MAX_LEAVES.get(n, num_leaves)]
    for mesh in meshes:
      result = benchmark(mesh, params, names, args.steps, args.repeats)
      results.append(result)
      print(
        json.dumps({k: result[k] for k in ("devices", "num_leaves", "ratio_to_adamw")})
      )
      print(
        {name: round(row["step_ms"], 3) for name, row in result["optimizers"].items()},
        flush=True,
      )

  command = "python -m benchmarks.sharded_step_time " + " ".join(
    sys.argv[1:] if argv is None else argv
  )
  RESULTS.mkdir(parents=True, exist_ok=True)
  payload = {
    "machine": info,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "command": command.strip(),
    "results": results,
  }
  (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n")
  markdown = to_markdown(results, info, command.strip())
  (RESULTS / f"{args.out}.md").write_text(markdown)
  print(markdown)


if __name__ == "__main__":
  main()
