"""How fast each way of writing GARO's statistics runs, in-graph.

GARO's step needs three sums over all leaves, ``Σg²``, ``Σm²`` and ``Σg·m``
(``garo_optax/_statistics.py``). On XLA:CPU they are most of what its step
costs beyond SGD+momentum's (``benchmarks/step_time.py``), so this benchmark
times the sums alone, written in the ways one would try:

- ``garo``: what GARO does, a variadic ``lax.reduce`` per few leaves of one
  size, the leaves added entry by entry first;
- ``per_leaf``: one variadic ``lax.reduce`` per leaf (a large leaf in halves);
- ``tree_sums``: ``optax.tree.norm`` and ``optax.tree.vdot``, three separate
  reductions per leaf;
- ``dots``: ``jnp.vdot`` three times per leaf;
- ``rows``: one variadic reduction per leaf into two rows, which XLA:CPU
  shares among threads (``garo`` does so with the leaves from
  ``_statistics._ROWS_SIZE`` entries on, in eight rows);

and, as a yardstick, ``elementwise``: one fused elementwise pass over the same
two buffers that writes one (``0.9 m + g``), what a momentum update costs.

The harness is ``step_time``'s: ``K`` steps in a ``lax.fori_loop`` inside one
``jit``, with the gradients and momenta each scaled by a per-step factor (so
that nothing can be hoisted out of the loop; the scaling is fused into every
kernel that reads them), median over rounds that interleave the formulations.

Usage::

  python -m benchmarks.statistics_kernels     # 1e7 params in 1, 100 and 1000 leaves
  python -m benchmarks.statistics_kernels --params 1e8 --formulations garo elementwise
"""

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from benchmarks import step_time
from garo_optax import _groups, _statistics

Sums = Callable[[list[jax.Array], list[jax.Array]], jax.Array]


def _garo(grads, mus):
  groups = _groups.make_groups(grads, "global")
  return _statistics.group_statistics(grads, mus, groups)[0]


def _per_leaf(grads, mus):
  rows = [
    jnp.stack(_statistics.local_sums(g, m)) for g, m in zip(grads, mus, strict=True)
  ]
  return jnp.sum(jnp.stack(rows), axis=0)


def _tree_sums(grads, mus):
  return jnp.stack(
    [
      optax.tree.norm(grads, squared=True),
      optax.tree.norm(mus, squared=True),
      optax.tree.vdot(grads, mus),
    ]
  )


def _dots(grads, mus):
  vdot = lambda a, b: jnp.vdot(a, b, precision=jax.lax.Precision.HIGHEST)
  rows = [
    jnp.stack([vdot(g, g), vdot(m, m), vdot(g, m)])
    for g, m in zip(grads, mus, strict=True)
  ]
  return jnp.sum(jnp.stack(rows), axis=0)


def _rows(grads, mus):
  out = []
  for g, m in zip(grads, mus, strict=True):
    rows = 2 if g.size % 2 == 0 else 1
    g, m = g.reshape(rows, -1), m.reshape(rows, -1)
    zero = jnp.zeros((), g.dtype)
    sums = jax.lax.reduce(
      (g * g, m * m, g * m),
      (zero, zero, zero),
      lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)),
      (1,),
    )
    out.append(jnp.stack([jnp.sum(s) for s in sums]))
  return jnp.sum(jnp.stack(out), axis=0)


FORMULATIONS: dict[str, Sums] = {
  "garo": _garo,
  "per_leaf": _per_leaf,
  "tree_sums": _tree_sums,
  "dots": _dots,
  "rows": _rows,
}
YARDSTICK = "elementwise"


def compile_formulation(name: str, grads, mus, steps: int):
  """``steps`` in-graph evaluations of formulation ``name``, compiled.

  Returns ``(compiled, compile_s)``; ``compiled(grads, mus)`` returns the sum
  of the statistics over the steps (or, for the yardstick, the last pass).
  """

  def run(grads, mus):
    def body(i, carry):
      scale = 1e-3 * i.astype(jnp.float32)
      g = [x * (1.0 + scale) for x in grads]
      m = [x * (1.0 - scale) for x in mus]
      if name == YARDSTICK:
        return [0.9 * y + x for x, y in zip(g, m, strict=True)]
      return carry + FORMULATIONS[name](g, m)

    init = [jnp.zeros_like(m) for m in mus] if name == YARDSTICK else jnp.zeros(3)
    return jax.lax.fori_loop(0, steps, body, init)

  start = time.perf_counter()
  compiled = jax.jit(run).lower(grads, mus).compile()
  return compiled, time.perf_counter() - start


def benchmark(num_params, num_leaves, dtype, steps, repeats, names):
  params = step_time.make_params(num_params, num_leaves, dtype)
  grads = [x.reshape(-1) for x in jax.tree.leaves(params)]
  keys = jax.random.split(jax.random.key(1), len(grads))
  mus = [
    jax.random.normal(k, g.shape, g.dtype) for k, g in zip(keys, grads, strict=True)
  ]
  prepared = {n: compile_formulation(n, grads, mus, steps) for n in names}
  times = step_time.time_interleaved(
    {n: (compiled, lambda: (grads, mus)) for n, (compiled, _) in prepared.items()},
    repeats,
  )
  rows = {}
  for n, (_, compile_s) in prepared.items():
    wall, cpu = times[n]
    rows[n] = {
      "step_ms": 1e3 * wall / steps,
      "cpu_ms": 1e3 * cpu / steps,
      "compile_s": compile_s,
    }
  return {
    **step_time.run_config(num_params, num_leaves, dtype, steps, repeats),
    "formulations": rows,
  }


def to_markdown(results: list[dict], machine: dict[str, str]) -> str:
  lines = [
    "# GARO's statistics, written several ways",
    "",
    f"Machine: {machine['device']} ({machine['platform']}, "
    f"{machine['cpu_count']} CPUs visible), jax {machine['jax']}.",
    "",
    "The three sums `Σg²`, `Σm²`, `Σg·m` over all leaves, in-graph "
    "(`lax.fori_loop` inside one `jit`), median over interleaved rounds "
    "(`benchmarks/statistics_kernels.py` says what each row is). "
    f"`{YARDSTICK}` is one elementwise pass over the same buffers that writes "
    "one, the cost of a momentum update.",
    "",
  ]
  for r in results:
    rows = r["formulations"]
    lines += [
      f"## {r['num_params']:.3g} params in {r['num_leaves']} leaves "
      f"({r['dtype']}), {r['steps']} steps x {r['repeats']} repeats",
      "",
      "| formulation | time (ms) | CPU time (ms) | compile (s) | / garo | "
      f"/ {YARDSTICK} |",
      "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
      cells = [
        f"{row['step_ms']:.3f}",
        f"{row['cpu_ms']:.3f}",
        f"{row['compile_s']:.2f}",
      ]
      for peer in ("garo", YARDSTICK):
        cells.append(
          f"{row['step_ms'] / rows[peer]['step_ms']:.2f}x" if peer in rows else "-"
        )
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv=None):
  names = [*FORMULATIONS, YARDSTICK]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--params", type=float, default=1e7)
  parser.add_argument("--leaves", type=int, nargs="+", default=[1, 100, 1000])
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--formulations", nargs="+", default=names, choices=names)
  parser.add_argument(
    "--out",
    default=None,
    help="output path without suffix (default: results/statistics_kernels_<platform>)",
  )
  args = parser.parse_args(argv)
  step_time.run_and_save(
    benchmark, args, args.formulations, "statistics_kernels", to_markdown, argv
  )


if __name__ == "__main__":
  main()
