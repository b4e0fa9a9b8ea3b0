"""Meta-trains a GARO controller with antithetic or persistent ES (command line).

Example (the command that made the shipped weights is in
``docs/pretrained_history.md``)::

  python -m garo_optax.meta.train --out weights.npz --meta-steps 300

Every meta-step draws ``--families-per-step`` task families, ``--pairs``
random problems of each with a random starting learning rate (log-uniform in
``[--min-lr, --max-lr]``), trains each problem ``--unroll`` steps from scratch
with a pair of antithetic perturbations of the controller, and takes an Adam
step on the ES gradient. Everything random derives from ``--seed`` and the
meta-step index, so a run resumed from its checkpoint (``--checkpoint``,
written every ``--checkpoint-every`` steps with ``--out`` and ``--plot``) ends
with the same weights as an uninterrupted one, and the weights written at
meta-step ``n`` of a longer run are those of ``--meta-steps n``: the meta
learning rate has no schedule. The meta-loss curve is drawn to ``--plot``.
``--init`` starts from saved weights instead of a seeded controller, so that
training can go on in stages with other settings (the shipped weights are
made that way: see ``docs/pretrained_history.md``). ``--drop-features``
zeroes the input weights of the named features and keeps them at zero (ES
never perturbs them): the controller trains without reading those features,
and with ``--meta-steps 0`` the command only removes them from ``--init``.

With ``--estimator pes`` (persistent ES, :func:`estimators.pes_gradient`)
every family keeps ``--pairs`` antithetic pairs of inner runs alive across
meta-steps: each time the family is drawn, each pair trains one more
truncation of ``--unroll`` steps, and a pair is restarted on a fresh problem
with a fresh starting learning rate after ``--horizon`` inner steps
(``--horizon / --unroll`` truncations). The restarts are staggered: the first
run of pair ``j`` of family ``i`` is ``(i * pairs + j) mod (horizon / unroll)``
truncations shorter, so the pairs of a family stay at ``min(pairs, horizon /
unroll)`` different depths of the horizon and every meta-step mixes
truncations from the start of runs with truncations near their end. A
truncation's meta-loss is its steps' log loss ratio to the run's initial loss,
so the meta-loss curve of PES is not comparable with that of ES.
The persistent runs are part of the checkpoint: a resumed PES run ends with the
same weights as an uninterrupted one too.
"""

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from garo_optax import _features
from garo_optax.meta import inner, steps
from garo_optax.meta import tasks as tasks_lib


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="where to write the controller .npz")
  p.add_argument("--meta-steps", type=int, default=300)
  p.add_argument("--pairs", type=int, default=4, help="antithetic pairs per family")
  p.add_argument("--families-per-step", type=int, default=4)
  p.add_argument(
    "--unroll", type=int, default=300, help="inner steps per run (per truncation)"
  )
  p.add_argument(
    "--estimator",
    choices=("es", "pes"),
    default="es",
    help="antithetic ES over whole runs, or persistent ES over truncations",
  )
  p.add_argument(
    "--horizon",
    type=int,
    default=None,
    help="PES: inner steps before a pair of runs restarts (multiple of --unroll)",
  )
  p.add_argument(
    "--families",
    nargs="*",
    default=None,
    help="names of the training families to use (default: all)",
  )
  p.add_argument("--sigma", type=float, default=0.05, help="ES perturbation scale")
  p.add_argument("--meta-lr", type=float, default=0.02, help="Adam learning rate")
  p.add_argument("--min-lr", type=float, default=1e-3)
  p.add_argument("--max-lr", type=float, default=1e-1)
  p.add_argument(
    "--max-effective-lr",
    type=float,
    default=1.0,
    help="garo's max_effective_learning_rate in the inner runs",
  )
  p.add_argument(
    "--home-lr",
    type=float,
    default=None,
    help="garo's home_learning_rate in the inner runs (with --home-steps)",
  )
  p.add_argument("--home-steps", type=float, default=None, help="garo's home_steps")
  p.add_argument(
    "--drop-features",
    nargs="+",
    default=(),
    choices=_features.FEATURE_NAMES,
    metavar="FEATURE",
    help="features the controller does not read: their input weights are "
    f"zeroed and never trained (any of {', '.join(_features.FEATURE_NAMES)})",
  )
  p.add_argument(
    "--log-floor",
    type=float,
    default=inner.LOG_FLOOR,
    help="the meta-loss floors log(loss_t / loss_0) at minus this",
  )
  p.add_argument(
    "--init",
    default=None,
    help="start from this controller .npz (and its hidden size) instead of a "
    "seeded one",
  )
  p.add_argument("--hidden-size", type=int, default=16)
  p.add_argument("--head-scale", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--checkpoint", default=None, help="checkpoint .npz (resumed if present)"
  )
  p.add_argument("--checkpoint-every", type=int, default=10)
  p.add_argument("--plot", default=None, help="PNG of the meta-loss curve")
  return p


def _drop_features(controller, indices):
  """The controller with zero input weights for the features ``indices``."""
  kernel = controller.gru.input_kernel.at[np.asarray(indices, np.int32)].set(0.0)
  return controller._replace(gru=controller.gru._replace(input_kernel=kernel))


def _to_numpy(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def _save_checkpoint(path, controller, opt_state, step, history, pes=None):
  leaves = jax.tree.leaves((controller, opt_state))
  arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
  if pes is not None:
    arrays.update(
      {f"pes_{i}": _to_numpy(x) for i, x in enumerate(jax.tree.leaves(pes))}
    )
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, step=np.array(step), history=np.asarray(history, np.float64), **arrays)
  os.replace(tmp, path)


def _load_checkpoint(path, controller, opt_state, pes=None):
  with np.load(path, allow_pickle=False) as data:
    treedef = jax.tree.structure((controller, opt_state))
    leaves = [jnp.asarray(data[f"leaf_{i}"]) for i in range(treedef.num_leaves)]
    controller, opt_state = treedef.unflatten(leaves)
    if pes is not None:
      if "pes_0" not in data:
        raise ValueError(f"{path} is not a checkpoint of a PES run")
      template, treedef = jax.tree.flatten(pes)
      leaves = []
      for i, like in enumerate(template):
        x = jnp.asarray(data[f"pes_{i}"])
        if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
          x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
        leaves.append(x)
      pes = treedef.unflatten(leaves)
    return controller, opt_state, int(data["step"]), data["history"].tolist(), pes


def _plot(path, history, families):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  history = np.asarray(history)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(history, alpha=0.3, label="meta-step")
  window = min(20, len(history))
  if window > 1:
    smooth = np.convolve(history, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window - 1, len(history)), smooth, label=f"mean of {window}")
  ax.set_xlabel("meta-step")
  ax.set_ylabel("meta-loss (mean log loss ratio)")
  ax.set_title(f"GARO meta-training ({families} families)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# Cached: the jitted steps are cached per family, and a fresh family (a new
# closure) would miss that cache in every call of `train` in one process.
_training_families = functools.cache(tasks_lib.training_families)


def _setup(args: argparse.Namespace):
  """The chosen families, the truncations per PES run (or ``None``) and the
  inner runs' configuration, once the arguments are checked."""
  families = _training_families()
  if args.families:
    unknown = set(args.families) - {f.name for f in families}
    if unknown:
      raise ValueError(f"unknown families: {sorted(unknown)}")
    families = tuple(f for f in families if f.name in args.families)
  truncations = None
  if args.estimator == "pes":
    if not args.horizon or args.horizon % args.unroll:
      raise ValueError("--horizon must be a positive multiple of --unroll")
    truncations = args.horizon // args.unroll
  elif args.horizon is not None:
    raise ValueError("--horizon is for --estimator pes")
  if (args.home_lr is None) != (args.home_steps is None):
    raise ValueError("--home-lr and --home-steps go together")
  config = inner.InnerConfig(
    args.max_effective_lr,
    log_floor=args.log_floor,
    home_learning_rate=args.home_lr,
    home_steps=args.home_steps,
    dropped_features=tuple(
      sorted(_features.FEATURE_NAMES.index(name) for name in set(args.drop_features))
    ),
  )
  return families, truncations, config


def train(args: argparse.Namespace) -> garo_optax.ControllerParams:
  """Runs meta-training as the command line describes; returns the weights."""
  from tqdm import tqdm

  families, truncations, config = _setup(args)
  seed_key = jax.random.key(args.seed)
  if args.init:
    controller = garo_optax.load_controller(args.init)
  else:
    controller = garo_optax.init_controller(
      seed_key, hidden_size=args.hidden_size, head_scale=args.head_scale
    )
  controller = _drop_features(controller, config.dropped_features)
  meta_opt = optax.adam(args.meta_lr)
  opt_state = meta_opt.init(controller)
  pes = None
  if args.estimator == "pes":
    pes = [
      steps.initial_pes_state(f, i, controller, args.pairs, truncations, config)
      for i, f in enumerate(families)
    ]
  start, history = 0, []
  if args.checkpoint and os.path.exists(args.checkpoint):
    controller, opt_state, start, history, pes = _load_checkpoint(
      args.checkpoint, controller, opt_state, pes
    )

  @jax.jit
  def apply(controller, opt_state, grads):
    updates, opt_state = meta_opt.update(grads, opt_state, controller)
    return optax.apply_updates(controller, updates), opt_state

  began = time.time()
  bar = tqdm(range(start, args.meta_steps), initial=start, total=args.meta_steps)
  for step in bar:
    rng = np.random.default_rng([args.seed, step])
    chosen = rng.choice(len(families), args.families_per_step, replace=False)
    step_key = jax.random.fold_in(seed_key, step)
    losses, grads = [], []
    for i in sorted(chosen):
      if pes is None:
        fn = steps.family_step(families[i], args.pairs, args.unroll, config)
        loss, grad = fn(
          controller,
          jax.random.fold_in(step_key, i),
          args.sigma,
          args.min_lr,
          args.max_lr,
        )
      else:
        fn = steps.family_pes_step(
          families[i], args.pairs, args.unroll, truncations, config
        )
        loss, grad, pes[i] = fn(
          controller,
          pes[i],
          jax.random.fold_in(step_key, i),
          args.sigma,
          args.min_lr,
          args.max_lr,
        )
      losses.append(float(loss))
      grads.append(grad)
    grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
    controller, opt_state = apply(controller, opt_state, grad)
    history.append(float(np.mean(losses)))
    bar.set_postfix(meta_loss=f"{history[-1]:.3f}")
    last = step + 1 == args.meta_steps
    if (step + 1) % args.checkpoint_every == 0 or last:
      # The weights after every checkpointed step: a run stopped early has
      # written exactly what `--meta-steps <its last checkpoint>` writes.
      garo_optax.save_controller(args.out, controller)
      if args.checkpoint:
        _save_checkpoint(args.checkpoint, controller, opt_state, step + 1, history, pes)
      if args.plot:
        _plot(args.plot, history, len(families))
  if start >= args.meta_steps:  # no step ran (--meta-steps 0: only the edit)
    garo_optax.save_controller(args.out, controller)
  summary = {
    "estimator": args.estimator,
    "meta_steps": args.meta_steps,
    "final_meta_loss_mean20": float(np.mean(history[-20:])) if history else None,
    "seconds_this_session": round(time.time() - began, 1),
  }
  print(json.dumps(summary))
  return controller


def main(argv: list[str] | None = None) -> None:
  train(_parser().parse_args(argv))


if __name__ == "__main__":
  main()
