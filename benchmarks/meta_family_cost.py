"""Cost of the meta-training families: one vmapped inner step, and its compile.

For each family of a distribution (:func:`garo_optax.meta.tasks.families`),
samples ``--runs`` tasks (as the meta-trainer trains 4 antithetic pairs, 8
runs) and times ``--steps`` steps of GARO training them, vmapped, in one
jitted ``lax.scan``: minibatch, ``value_and_grad`` of the loss, GARO's update
(``value=loss``) and apply. Reports the wall time per step (median over
``--repeats``, after compiling) and the process's CPU time per step (all
threads; other processes on a shared machine disturb it less), the compile
time of that scan (trace, lower and compile), the params per run, and the
mean minibatch loss of the runs at the first and last step (GARO at 0.01
with the shipped controller: a sanity check, not a result). Prints a
markdown table.

Usage::

  nice -n 10 python -m benchmarks.meta_family_cost               # "default"
  nice -n 10 python -m benchmarks.meta_family_cost --families tiny
  nice -n 10 python -m benchmarks.meta_family_cost --only conv_8x8_b16

``results/meta_family_cost_cpu.md`` is ``--repeats 7`` on two CPUs.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks._machine import cpu_model
from garo_optax.meta import tasks


def measure(family: tasks.Family, runs: int, steps: int, repeats: int) -> dict:
  """Params per run, batch size, step time (ms), compile time (s) and the
  mean loss at the first and last step of ``family``."""
  tx = garo_optax.garo(0.01)
  keys = jax.random.split(jax.random.key(0), runs)

  @jax.jit
  def start(keys):
    batch = jax.vmap(family.sample)(keys)
    params = jax.vmap(lambda task, key: task.init(key))(batch, keys)
    return batch, params, jax.vmap(tx.init)(params)

  def train(batch, params, opt_state, keys):
    def one(task, params, opt_state, key):
      def step(carry, i):
        params, opt_state = carry
        minibatch = task.batch(jax.random.fold_in(key, i))
        loss, grads = jax.value_and_grad(task.loss)(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return (optax.apply_updates(params, updates), opt_state), loss

      carry, losses = jax.lax.scan(step, (params, opt_state), jnp.arange(steps))
      return carry, losses

    return jax.vmap(one)(batch, params, opt_state, keys)

  batch, params, opt_state = jax.block_until_ready(start(keys))
  tic = time.perf_counter()
  compiled = jax.jit(train).lower(batch, params, opt_state, keys).compile()
  compile_s = time.perf_counter() - tic
  (_, _), losses = jax.block_until_ready(compiled(batch, params, opt_state, keys))
  times, cpu_times = [], []
  for _ in range(repeats):
    tic, cpu_tic = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(batch, params, opt_state, keys))
    times.append(time.perf_counter() - tic)
    cpu_times.append(time.process_time() - cpu_tic)
  losses = np.asarray(losses)
  return {
    "params": sum(x.size for x in jax.tree.leaves(params)) // runs,
    "leaves": len(jax.tree.leaves(params)),
    "batch": batch.batch_size,
    "step_ms": 1e3 * statistics.median(times) / steps,
    "cpu_ms": 1e3 * statistics.median(cpu_times) / steps,
    "compile_s": compile_s,
    "first_loss": float(np.mean(losses[:, 0])),
    "last_loss": float(np.mean(losses[:, -1])),
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--families", default="default", choices=tasks.NAMES)
  parser.add_argument("--only", nargs="*", help="these families' names only")
  parser.add_argument("--runs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  families = tasks.families(args.families)
  if args.only:
    families = [f for f in families if f.name in args.only]
  device = jax.devices()[0]
  machine = device.platform
  if machine == "cpu":
    machine = f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs visible"
  print(
    f"`{args.families}` families: {args.runs} runs vmapped, {args.steps} steps "
    f"in a jitted scan, median of {args.repeats}; {machine}, jax "
    f"{jax.__version__}.\n"
  )
  print(
    "| family | dataset | params | leaves | batch | step (ms) | CPU time (ms) "
    "| compile (s) | loss, first step | loss, last step |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  total_ms = total_s = 0.0
  for family in families:
    r = measure(family, args.runs, args.steps, args.repeats)
    total_ms += r["step_ms"]
    total_s += r["compile_s"]
    print(
      f"| {family.name} | {family.dataset} | {r['params']} | {r['leaves']} "
      f"| {r['batch']} | {r['step_ms']:.2f} | {r['cpu_ms']:.2f} | {r['compile_s']:.1f} "
      f"| {r['first_loss']:.3g} | {r['last_loss']:.3g} |",
      flush=True,
    )
  print(
    f"\n{len(families)} families: {total_ms:.2f} ms for one step of each, "
    f"{total_s:.0f} s compiling."
  )


if __name__ == "__main__":
  main(sys.argv[1:])
