"""Where ``garo_adamw``'s controller takes the learning rate on a transformer
whose token embeddings start small.

People start a transformer's embeddings small (GPT-2 at a standard deviation
of 0.02, Flax's ``nn.Embed`` at ``1 / sqrt(width)``); the transformers of the
``"default"`` meta-training families start them at 1. For each architecture,
embedding scale and seed this samples a transformer language model on Markov
text (:class:`garo_optax.meta.problems.TransformerTask`, the families' kind)
and trains it with ``optax.adamw(1e-3)``, ``garo_adamw(1e-3)`` and
``garo_adamw`` driven by each controller file given (built with the shipped
bounds and home rate), and reports the mean minibatch loss over the last tenth
of the steps and the learning rate at the end. Writes
``results/embed_scale.{json,md}``::

  python -m benchmarks.embed_scale \
      --controllers benchmarks/results/meta_adamw_embed/seed1/step400.npz
"""

import argparse
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks import _machine
from benchmarks.char_transformer import controller_optimizer
from garo_optax.meta import problems, tasks

RESULTS = pathlib.Path(__file__).parent / "results"
# width, depth, heads, context, vocab, batch size: one of the "default"
# families' transformers, and a wider one with a longer context, closer to
# the transformers people train.
ARCHITECTURES = ((64, 1, 2, 8, 32, 8), (128, 2, 4, 64, 32, 16))
# The embeddings' starting scales compared (GPT-2's, about Flax's, the families').
SCALES = (0.02, 0.1, 1.0)


def architecture_name(spec) -> str:
  width, depth, heads, context, vocab, batch_size = spec
  return f"w{width}_d{depth}_h{heads}_c{context}_v{vocab}_b{batch_size}"


@functools.cache
def _runner(make, steps: int, is_garo: bool):
  """``run(task, key)``: the losses and learning rates of ``steps`` steps of
  ``make(1e-3)``; the task is an argument, so one compilation serves every
  embedding scale and seed of an architecture."""
  tx = optax.with_extra_args_support(make(1e-3))

  @jax.jit
  def run(task, key):
    params = task.init(key)

    def step(carry, k):
      p, s = carry
      loss, grads = jax.value_and_grad(task.loss)(p, task.batch(k))
      updates, s = tx.update(grads, s, p, value=loss)
      rate = garo_optax.hyperparams(s)["learning_rate"] if is_garo else 0.0
      return (optax.apply_updates(p, updates), s), (loss, rate)

    carry = (params, tx.init(params))
    return jax.lax.scan(step, carry, jax.random.split(key, steps))[1]

  return run


def train(spec, embed_scale: float, make, seed: int, steps: int, is_garo: bool):
  """One run: ``(mean loss over the last tenth, learning rate at the end)``
  (``None`` for AdamW)."""
  width, depth, heads, context, vocab, batch_size = spec
  chain_key, text_key, key = jax.random.split(jax.random.key(seed), 3)
  task = problems.TransformerTask(
    text=tasks.markov_text(chain_key, text_key, vocab),
    init_scale=jnp.float32(1.0),
    context=context,
    width=width,
    depth=depth,
    heads=heads,
    vocab=vocab,
    batch_size=batch_size,
    embed_scale=jnp.float32(embed_scale),
  )
  losses, rates = (np.asarray(x) for x in _runner(make, steps, is_garo)(task, key))
  rate = float(rates[-1]) if is_garo else None
  return float(losses[-max(1, steps // 10) :].mean()), rate


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--controllers", nargs="*", default=[], metavar="FILE")
  p.add_argument("--embed-scales", type=float, nargs="+", default=list(SCALES))
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--out", default=str(RESULTS / "embed_scale"))
  args = p.parse_args(argv)
  # name -> (make, whether it has a controller)
  optimizers = {
    "adamw(1e-3)": (optax.adamw, False),
    "garo_adamw(1e-3)": (garo_optax.garo_adamw, True),
  }
  for path in args.controllers:
    name, (make, _) = controller_optimizer(path)
    optimizers[name] = (make, True)
  results = {}
  for spec in ARCHITECTURES:
    for scale in args.embed_scales:
      row = {}
      for name, (make, is_garo) in optimizers.items():
        runs = [
          train(spec, scale, make, seed, args.steps, is_garo)
          for seed in range(args.seeds)
        ]
        row[name] = {
          "loss": [r[0] for r in runs],
          "learning_rate": [r[1] for r in runs],
        }
        print(architecture_name(spec), scale, name, row[name], flush=True)
      results[f"{architecture_name(spec)} embed {scale:g}"] = row
  record = {
    "machine": _machine.describe(),
    "steps": args.steps,
    "seeds": list(range(args.seeds)),
    "results": results,
  }
  _machine.write(args.out, record, to_markdown(record))


def to_markdown(record) -> str:
  lines = [
    f"# Transformers whose embeddings start small, {record['steps']} steps",
    "",
    f"Machine: {record['machine']}. Each cell: the mean minibatch loss over the "
    "last tenth of the steps, and the learning rate at the end (— for AdamW's "
    "fixed one), per seed "
    f"({', '.join(map(str, record['seeds']))}).",
    "",
    "| transformer, embedding scale | optimizer | loss | learning rate at the end |",
    "|---|---|---|---|",
  ]
  for problem, row in record["results"].items():
    for name, r in row.items():
      rates = " / ".join("—" if x is None else f"{x:.2g}" for x in r["learning_rate"])
      losses = " / ".join(f"{x:.3g}" for x in r["loss"])
      lines.append(f"| {problem} | `{name}` | {losses} | {rates} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
