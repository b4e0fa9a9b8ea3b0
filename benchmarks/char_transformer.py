"""A character-level transformer of 2.4M parameters on Tiny Shakespeare:
``garo_adamw()`` against AdamW (untuned, and over a learning-rate grid),
``garo()`` and Prodigy.

Each optimizer trains the same model from the same initial params on the same
batches (per seed) for ``--steps`` steps; every ``--eval-every`` steps the
validation loss (nats per character, the last 10% of the text) is measured on
fixed windows. Writes ``results/char_transformer.{json,md,png}``: per
optimizer, the final validation loss per seed and its median, whether any
loss was non-finite, and for AdamW's grid the best point.

Usage::

  python -m benchmarks.char_transformer [--steps 3000] [--seeds 0 1 2]

A GPU run takes a few minutes. On two CPU cores one run (an optimizer at one
learning rate and seed) takes about a quarter of an hour, so the results are
written after every run: the same command, run again, adds the runs still
missing (more ``--seeds`` or ``--optimizers`` too) and keeps the others; a
change of the model or the steps starts anew. AdamW at 1e-3 and
``garo_adamw`` run first, seed by seed. ``--steps 4 --width 16`` runs it
small, as the tests do. ``garo_adamw_max_lr_3e-3`` (``garo_adamw`` with
its learning rate kept below 3e-3) runs only when named in ``--optimizers``.
``--controllers FILE ...`` adds ``garo_adamw`` driven by controllers that
meta-training wrote (built with the shipped controller's bounds and home
rate), one optimizer each, named ``garo_adamw[FILE]``.
"""

import argparse
import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import garo_optax
from benchmarks import _machine
from benchmarks.tasks.char_lm import Transformer
from garo_optax import pretrained as shipped

DATA = pathlib.Path(__file__).parent / "data" / "tinyshakespeare.txt"
RESULTS = pathlib.Path(__file__).parent / "results"
ADAMW_GRID = (3e-4, 1e-3, 3e-3, 1e-2)
# (configuration, optimizer name) -> its jitted run, across calls of main.
_COMPILED: dict[tuple, Any] = {}


def optimizers() -> dict[str, Any]:
  """``name -> (make(learning_rate), the learning rates it runs at)``: the
  benchmark's optimizers, then those that run only when named."""
  return {
    "garo_adamw": (lambda lr: garo_optax.garo_adamw(lr), (1e-3,)),
    "adamw": (lambda lr: optax.adamw(lr), ADAMW_GRID),
    "prodigy": (lambda lr: optax.contrib.prodigy(lr), (1.0,)),
    "garo": (lambda lr: garo_optax.garo(lr), (0.01,)),
    # garo_adamw with its learning rate kept below 3e-3: what its controller
    # does here with AdamW's rates that train this model.
    "garo_adamw_max_lr_3e-3": (
      lambda lr: garo_optax.garo_adamw(lr, max_learning_rate=3e-3),
      (1e-3,),
    ),
  }


# Run only when named with --optimizers.
OPT_IN = ("garo_adamw_max_lr_3e-3",)


def controller_optimizer(path: str) -> tuple[str, tuple[Any, tuple[float, ...]]]:
  """``garo_adamw`` driven by the controller file at ``path``, built as the
  transformation builds its shipped controller: ``(name, (make, rates))``."""
  bounds = shipped.BOUNDS["garo_adamw"]
  controller = garo_optax.load_controller(path, optimizer="garo_adamw")

  def make(lr):
    return garo_optax.garo_adamw(
      lr,
      controller=controller,
      max_learning_rate=bounds.max_learning_rate,
      home_learning_rate=bounds.home_learning_rate,
      home_steps=bounds.home_steps,
    )

  return f"garo_adamw[{path}]", (make, (1e-3,))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--eval-every", type=int, default=250)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--depth", type=int, default=3)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--context", type=int, default=128)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument(
    "--optimizers",
    nargs="*",
    default=None,
    choices=tuple(optimizers()),
    help="the optimizers to run (default: all but the opt-in ones; none: only "
    "--controllers)",
  )
  parser.add_argument(
    "--controllers",
    nargs="+",
    default=[],
    metavar="FILE",
    help="controller files (garo_adamw's) to run garo_adamw with as well",
  )
  parser.add_argument("--out", default=str(RESULTS / "char_transformer"))
  args = parser.parse_args(argv)
  if args.steps % args.eval_every:
    parser.error("--steps must be a multiple of --eval-every")

  raw = np.frombuffer(DATA.read_bytes(), np.uint8)
  vocab, ids = np.unique(raw, return_inverse=True)
  ids = ids.astype(np.int32)
  split = int(0.9 * len(ids))
  train_text, valid_text = jnp.asarray(ids[:split]), jnp.asarray(ids[split:])
  offsets = jnp.arange(args.context + 1)
  valid_starts = np.random.default_rng(0).integers(
    0, len(valid_text) - args.context - 1, 128
  )
  valid_windows = valid_text[jnp.asarray(valid_starts)[:, None] + offsets]
  model = Transformer(len(vocab), args.width, args.depth, args.heads, args.context)

  def loss_fn(params, windows):
    logits = model.apply(params, windows[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, windows[:, 1:]
    ).mean()

  def make_run(make):
    @jax.jit
    def run(seed, learning_rate):
      key = jax.random.key(seed)
      params = model.init(key, valid_windows[:1, :-1])
      tx = optax.with_extra_args_support(make(learning_rate))

      def step(carry, batch_key):
        params, state = carry
        starts = jax.random.randint(
          batch_key, (args.batch_size,), 0, len(train_text) - args.context - 1
        )
        loss, grads = jax.value_and_grad(loss_fn)(
          params, train_text[starts[:, None] + offsets]
        )
        updates, state = tx.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), (
          loss,
          _learning_rate(state),
        )

      def chunk(carry, keys):
        carry, (losses, lrs) = jax.lax.scan(step, carry, keys)
        return carry, (
          loss_fn(carry[0], valid_windows),
          jnp.mean(losses),
          jnp.mean(lrs),
        )

      keys = jax.random.split(jax.random.fold_in(key, 1), args.steps)
      keys = keys.reshape(-1, args.eval_every, *keys.shape[1:])
      _, curves = jax.lax.scan(chunk, (params, tx.init(params)), keys)
      return curves

    return run

  # Shapes only: the model is initialised inside each run.
  params = jax.eval_shape(model.init, jax.random.key(0), valid_windows[:1, :-1])
  out = pathlib.Path(args.out)
  config = {k: v for k, v in vars(args).items() if k not in RESUMABLE}
  record = _resumed(out.with_suffix(".json"), config)
  record.update(
    machine=_machine.describe(),
    command=" ".join(
      [
        "python -m benchmarks.char_transformer",
        *(sys.argv[1:] if argv is None else argv),
      ]
    ),
    num_params=int(sum(x.size for x in jax.tree.leaves(params))),
    config={**config, "seeds": args.seeds},
    eval_steps=list(range(args.eval_every, args.steps + 1, args.eval_every)),
  )
  results = record.setdefault("results", {})
  chosen = optimizers()
  names = (
    [n for n in chosen if n not in OPT_IN]
    if args.optimizers is None
    else list(args.optimizers)
  )
  for path in args.controllers:
    name, entry = controller_optimizer(path)
    chosen[name] = entry
    names.append(name)
  # AdamW at 1e-3 and garo_adamw first: the comparison that matters most is
  # there early in a long run.
  runs = sorted(
    ((n, lr) for n in names for lr in chosen[n][1]),
    key=lambda run: (run != ("adamw", 1e-3), run[0] != "garo_adamw"),
  )
  # The learning rate is traced: one compilation per optimizer and
  # configuration, kept for later calls in this process (a controller file's
  # only for this call: the file may change).
  compiled = {}
  built_in = set(optimizers())
  todo = [
    (seed, name, lr)
    for seed in args.seeds
    for name, lr in runs
    if seed not in results.get(f"{name}@{lr:g}", {}).get("seeds", [])
  ]
  for seed, name, lr in tqdm(todo, desc="runs"):
    key = (tuple(sorted(config.items())), name)
    cache = _COMPILED if name in built_in else compiled
    if key not in cache:
      cache[key] = make_run(chosen[name][0])
    run = cache[key]
    began = time.time()
    valid, train, lrs = (np.asarray(x) for x in run(seed, jnp.float32(lr)))
    r = results.setdefault(
      f"{name}@{lr:g}",
      {
        "optimizer": name,
        "learning_rate": lr,
        "seeds": [],
        "machines": [],
        "valid_loss": [],
        "train_loss": [],
        "final_valid_loss": [],
        "seconds": 0.0,
      },
    )
    r["seeds"].append(seed)
    r["machines"].append(record["machine"])
    r["valid_loss"].append(valid.tolist())
    r["train_loss"].append(train.tolist())
    r["final_valid_loss"].append(float(valid[-1]))
    if np.all(np.isfinite(lrs)):  # GARO's learning rate, mean over each chunk
      r.setdefault("learning_rate_curve", []).append(lrs.tolist())
    r["median_final_valid_loss"] = float(np.median(r["final_valid_loss"]))
    r["non_finite"] = bool(not np.all(np.isfinite(r["valid_loss"])))
    r["seconds"] += time.time() - began
    # Written after every run, so that a stopped benchmark resumes here.
    record["complete"] = all(
      set(args.seeds) <= set(results.get(f"{n}@{x:g}", {}).get("seeds", []))
      for n, x in runs
    )
    _write(record, out)
  if not todo:
    _write(record, out)
  print(to_markdown(record))


def _learning_rate(state) -> jax.Array:
  """The learning rate a GARO transformation applied at its last step; NaN
  for the other optimizers."""
  try:
    return jnp.asarray(garo_optax.hyperparams(state)["learning_rate"], jnp.float32)
  except ValueError:  # no GARO state inside
    return jnp.float32(jnp.nan)


# Options that a resumed run may change: which runs to add, and where to.
RESUMABLE = ("seeds", "optimizers", "controllers", "out")


def _resumed(path: pathlib.Path, config: dict[str, Any]) -> dict[str, Any]:
  """The record at ``path`` if it is of this configuration, else a new one."""
  if path.exists():
    record = json.loads(path.read_text())
    if {k: v for k, v in record["config"].items() if k not in RESUMABLE} == config:
      return record
    print(f"{path} is of another configuration: starting anew.")
  return {}


def _write(record: dict[str, Any], out: pathlib.Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=1) + "\n")
  tmp.replace(out.with_suffix(".json"))
  out.with_suffix(".md").write_text(to_markdown(record))
  plot(record, out.with_suffix(".png"))


def to_markdown(record: dict[str, Any]) -> str:
  results = record["results"]
  grid = {k: r for k, r in results.items() if r["optimizer"] == "adamw"}
  best = min(grid.values(), key=lambda r: r["median_final_valid_loss"], default=None)
  lines = [
    f"# Character transformer ({record['num_params'] / 1e6:.2f}M params), "
    f"{record['config']['steps']} steps",
    "",
    # Runs added later may come from another machine: name each.
    "Machines: "
    + "; ".join(sorted({m for r in results.values() for m in r["machines"]}))
    + f". Command: `{record['command']}`.",
    "",
    "Validation loss (nats per character) at the last step, median over the "
    "seeds run [min, max]"
    + (
      "." if record.get("complete") else " (in progress: resume with the same command)."
    ),
    "",
    "| optimizer | seeds | final valid loss | vs best AdamW of the grid "
    "| non-finite | GARO's learning rate, peak / last (mean per evaluation) |",
    "|---|---|---|---|---|---|",
  ]
  for key, r in results.items():
    finals = r["final_valid_loss"]
    ratio = (
      f"{r['median_final_valid_loss'] / best['median_final_valid_loss']:.3f}"
      if best
      else "—"
    )
    lrs = np.median(np.asarray(r.get("learning_rate_curve", [[np.nan]])), axis=0)
    lr = "—" if np.isnan(lrs[-1]) else f"{lrs.max():.2g} / {lrs[-1]:.2g}"
    lines.append(
      f"| {key} | {len(finals)} | {r['median_final_valid_loss']:.4f} "
      f"[{min(finals):.4f}, {max(finals):.4f}] | {ratio} | {r['non_finite']} "
      f"| {lr} |"
    )
  if best:
    lines += ["", f"Best AdamW of the grid: lr {best['learning_rate']:g}."]
  return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  for key, r in record["results"].items():
    valid = np.median(np.asarray(r["valid_loss"]), axis=0)
    ax.plot(record["eval_steps"], valid, label=key)
  ax.set(xlabel="step", ylabel="validation loss (nats/char)", title="char transformer")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


if __name__ == "__main__":
  main()
