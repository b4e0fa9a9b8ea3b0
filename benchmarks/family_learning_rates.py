"""Which AdamW learning rate trains a meta-training family best?

The controller learns, from its training families, which rates pay. For each
family named (:func:`garo_optax.meta.tasks.families`), this samples one task
per seed and trains it with ``optax.adamw`` at each learning rate for
``--steps`` steps, and reports the mean minibatch loss of the last tenth of
the steps. Writes ``results/family_learning_rates.{json,md}``.

Usage::

  python -m benchmarks.family_learning_rates \\
      --families markov_text_transformer_w32_d2_h2_c16_v32_b8 \\
      markov_text_transformer_w128_d1_h4_c16_v32_b8 \\
      markov_text_transformer_w96_d2_h4_c16_v32_b8
"""

import argparse
import pathlib

import jax
import numpy as np
import optax

from benchmarks import _machine
from garo_optax.meta import tasks

RESULTS = pathlib.Path(__file__).parent / "results"


def final_losses(family: tasks.Family, lr: float, seeds, steps: int) -> list[float]:
  """AdamW at ``lr`` on one task of ``family`` per seed: the mean minibatch
  loss over the last tenth of ``steps``."""
  tx = optax.adamw(lr)
  out = []
  for seed in seeds:
    task = family.sample(jax.random.key(seed))

    @jax.jit
    def run(key, task=task):
      params = task.init(key)

      def step(carry, k):
        p, s = carry
        loss, grads = jax.value_and_grad(task.loss)(p, task.batch(k))
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

      carry = (params, tx.init(params))
      return jax.lax.scan(step, carry, jax.random.split(key, steps))[1]

    losses = np.asarray(run(jax.random.key(100 + seed)))
    out.append(float(losses[-max(1, steps // 10) :].mean()))
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--families", nargs="+", required=True)
  p.add_argument("--distribution", default="wide", choices=tasks.NAMES)
  p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--out", default=str(RESULTS / "family_learning_rates"))
  args = p.parse_args(argv)
  by_name = {f.name: f for f in tasks.families(args.distribution)}
  unknown = [n for n in args.families if n not in by_name]
  if unknown:
    p.error(f"not families of {args.distribution!r}: {', '.join(unknown)}")
  seeds = range(args.seeds)
  results = {
    name: {
      f"{lr:g}": final_losses(by_name[name], lr, seeds, args.steps)
      for lr in args.learning_rates
    }
    for name in args.families
  }
  record = {
    "machine": _machine.describe(),
    "steps": args.steps,
    "seeds": list(seeds),
    "results": results,
  }
  _machine.write(args.out, record, to_markdown(record))


def to_markdown(record) -> str:
  rates = list(next(iter(record["results"].values())))
  lines = [
    f"# AdamW on meta-training families, {record['steps']} steps",
    "",
    f"Machine: {record['machine']}. Mean minibatch loss over the last tenth of "
    f"the steps, per seed ({', '.join(map(str, record['seeds']))}).",
    "",
    "| family | " + " | ".join(f"adamw({lr})" for lr in rates) + " |",
    "|---|" + "---|" * len(rates),
  ]
  for name, row in record["results"].items():
    cells = [" / ".join(f"{x:.3g}" for x in row[lr]) for lr in rates]
    lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
