"""Meta-trains a GARO controller from a configuration (command line).

The shipped controller is made by::

  python -m garo_optax.meta.train --config default --seed 0 \
    --out controller.npz --checkpoint run.ckpt.npz

(the configuration is ``garo_optax/meta/configs/default.json``; see
:mod:`garo_optax.meta.config` for its fields). Training starts from the
seeded controller of ``hidden_size`` units and, every meta-step, draws
``slots_per_step`` slots (a task family at a granularity; distinct slots, in
proportion to their families' weights), trains ``pairs``
antithetic pairs of runs of each with perturbed controllers, and takes an Adam
step on the averaged evolution-strategies gradient.

With the ``pes`` estimator every slot keeps its pairs of runs alive across
meta-steps (persistent ES): each time the slot is drawn, each pair trains one
more truncation of ``unroll`` steps. A run lasts a log-uniform number of
steps between ``min_horizon`` and ``max_horizon``, drawn when it starts on a
fresh problem with a fresh starting learning rate (log-uniform in
``[min_lr, max_lr]``); a share ``total_steps_share`` of the runs is given
that length as garo's ``total_steps``. The first runs of the pairs are
staggered, so every meta-step mixes truncations from the start of runs with
truncations near their end.

Everything random derives from ``--seed`` and the meta-step index: a run
resumed from its checkpoint (``--checkpoint``, written every
``checkpoint_every`` meta-steps with the weights at ``--out``, which are then
those of ``meta_steps=<that step>``) ends with the same weights, byte for
byte, as an uninterrupted one. The persistent runs are part of the
checkpoint. ``--set key=value`` changes a field of the configuration;
``--plot`` draws the meta-loss curve, ``--snapshots`` keeps the weights of
every checkpoint. A JSON record of the run (the
configuration, the seed, the time, the versions) is written next to
``--out``.
"""

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from garo_optax.meta import config as config_lib
from garo_optax.meta import inner, steps
from garo_optax.meta import tasks as tasks_lib


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--config",
    default="default",
    help=f"a configuration ({', '.join(config_lib.names())}) or a JSON file",
  )
  p.add_argument("--seed", type=int, default=0, help="the meta-seed")
  p.add_argument("--out", required=True, help="where to write the controller .npz")
  p.add_argument(
    "--checkpoint", default=None, help="checkpoint .npz (resumed if present)"
  )
  p.add_argument(
    "--set",
    nargs="+",
    default=[],
    metavar="KEY=VALUE",
    help="change fields of the configuration, e.g. --set meta_steps=10",
  )
  p.add_argument("--plot", default=None, help="PNG of the meta-loss curve")
  p.add_argument(
    "--snapshots",
    default=None,
    help="folder for the weights at every checkpoint (step<N>.npz), to choose "
    "a checkpoint on validation tasks",
  )
  return p


@dataclasses.dataclass(frozen=True)
class Slot:
  """A task family trained at one granularity."""

  family: tasks_lib.Family
  granularity: str

  @property
  def name(self) -> str:
    return f"{self.family.name}@{self.granularity}"


@functools.cache
def _families(
  name: str, param_scales: tuple[float, float] | None
) -> tuple[tasks_lib.Family, ...]:
  # Cached: the jitted steps are cached per family, and a fresh family (a new
  # closure) would miss that cache in every call of `train` in one process.
  families = tasks_lib.families(name)
  if param_scales is None:
    return families
  return tuple(tasks_lib.reparametrized(f, param_scales) for f in families)


def slots(config: config_lib.Config) -> tuple[Slot, ...]:
  """The slots of a configuration, in a fixed order."""
  families = _families(config.families, config.param_scales)
  out = [Slot(f, "global") for f in families]
  if config.per_leaf_stride:
    out += [Slot(f, "per_leaf") for f in families[:: config.per_leaf_stride]]
  return tuple(out)


def draw_probabilities(all_slots: tuple[Slot, ...]) -> np.ndarray | None:
  """The probability of each slot's being drawn first, in proportion to its
  family's weight; ``None`` (uniform) when every family weighs the same."""
  weights = np.array([s.family.weight for s in all_slots], np.float64)
  if np.all(weights == weights[0]):
    # numpy draws uniformly with other random numbers than from given
    # probabilities: the runs of unweighted families stay what they were.
    return None
  return weights / weights.sum()


def draw(
  seed: int, step: int, count: int, num_slots: int, p: np.ndarray | None = None
) -> list[int]:
  """The indices, sorted, of the ``count`` distinct slots of meta-step
  ``step`` (of ``num_slots``, drawn with probabilities ``p``)."""
  rng = np.random.default_rng([seed, step])
  return sorted(int(i) for i in rng.choice(num_slots, count, replace=False, p=p))


def inner_config(config: config_lib.Config, granularity: str) -> inner.InnerConfig:
  """How garo is built in the inner runs of a slot."""
  return inner.InnerConfig(
    config.max_effective_learning_rate,
    granularity=granularity,
    log_floor=config.log_floor,
    home_learning_rate=config.home_learning_rate,
    home_steps=config.home_steps,
    optimizer=config.optimizer,
    max_learning_rate=config.max_learning_rate,
    smoothness=config.smoothness,
    backoff_penalty=config.backoff_penalty,
    peak_penalty=config.peak_penalty,
  )


def _horizons(config: config_lib.Config) -> steps.Horizons:
  return steps.Horizons(
    max(config.min_horizon // config.unroll, 1),
    max(config.max_horizon // config.unroll, 1),
    config.total_steps_share,
  )


def _to_numpy(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def _save_checkpoint(path, step, history, state):
  arrays = {f"leaf_{i}": _to_numpy(x) for i, x in enumerate(jax.tree.leaves(state))}
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, step=np.array(step), history=np.asarray(history, np.float64), **arrays)
  os.replace(tmp, path)


def _load_checkpoint(path, state):
  """``(step, history, state)`` from a checkpoint of a run like ``state``'s."""
  with np.load(path, allow_pickle=False) as data:
    template, treedef = jax.tree.flatten(state)
    if f"leaf_{len(template) - 1}" not in data or f"leaf_{len(template)}" in data:
      raise ValueError(
        f"{path} is a checkpoint of another configuration than this run's"
      )
    leaves = []
    for i, like in enumerate(template):
      x = jnp.asarray(data[f"leaf_{i}"])
      if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
      elif x.shape != like.shape:
        raise ValueError(
          f"{path} is a checkpoint of another configuration than this run's"
        )
      leaves.append(x)
    return int(data["step"]), data["history"].tolist(), treedef.unflatten(leaves)


def _plot(path, history, title):
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
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _slot_step(config, slot):
  """The jitted meta-gradient of one slot: ``(controller, state, key) ->
  (meta-loss, gradient, state)``."""
  ic = inner_config(config, slot.granularity)
  args = (config.sigma, config.min_lr, config.max_lr)
  if config.estimator == "pes":
    fn = steps.family_pes_step(
      slot.family,
      config.pairs,
      config.unroll,
      _horizons(config),
      ic,
      config.fitness_shaping,
    )
    return lambda controller, state, key: fn(controller, state, key, *args)
  fn = steps.family_step(
    slot.family, config.pairs, config.unroll, ic, config.fitness_shaping
  )
  return lambda controller, state, key: (*fn(controller, key, *args), state)


def _initial_runs(config, all_slots, controller):
  if config.estimator != "pes":
    return [None] * len(all_slots)
  return [
    steps.initial_pes_state(
      s.family, i, controller, config.pairs, inner_config(config, s.granularity)
    )
    for i, s in enumerate(all_slots)
  ]


def _record(config, seed, meta_steps, history, seconds):
  return {
    "config": dataclasses.asdict(config),
    "seed": seed,
    "meta_steps": meta_steps,
    "final_meta_loss_mean20": float(np.mean(history[-20:])) if history else None,
    "seconds": round(seconds, 1),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "garo_optax": garo_optax.__version__,
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {jax.default_backend()}",
  }


def train(
  config: config_lib.Config,
  seed: int,
  out: str | os.PathLike,
  checkpoint: str | os.PathLike | None = None,
  plot: str | os.PathLike | None = None,
  snapshots: str | os.PathLike | None = None,
) -> garo_optax.ControllerParams:
  """Meta-trains a controller as the module's docstring says; returns it."""
  from tqdm import tqdm

  all_slots = slots(config)
  if config.slots_per_step > len(all_slots):
    raise ValueError(
      f"slots_per_step={config.slots_per_step} but the configuration has "
      f"{len(all_slots)} slots"
    )
  draw_p = draw_probabilities(all_slots)
  seed_key = jax.random.key(seed)
  controller = garo_optax.init_controller(
    seed_key,
    hidden_size=config.hidden_size,
    head_scale=config.head_scale,
    num_features=config.num_features,
  )
  meta_opt = optax.adam(config.meta_lr)
  state = {
    "controller": controller,
    "opt_state": meta_opt.init(controller),
    "runs": _initial_runs(config, all_slots, controller),
  }
  start, history, seconds = 0, [], 0.0
  if checkpoint and os.path.exists(checkpoint):
    start, history, state = _load_checkpoint(checkpoint, state)
    record = pathlib.Path(out).with_suffix(".json")
    if record.exists():
      seconds = json.loads(record.read_text()).get("seconds", 0.0)

  @jax.jit
  def apply(controller, opt_state, grads):
    updates, opt_state = meta_opt.update(grads, opt_state, controller)
    return optax.apply_updates(controller, updates), opt_state

  pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)

  def write(step):
    garo_optax.save_controller(out, state["controller"], optimizer=config.optimizer)
    pathlib.Path(out).with_suffix(".json").write_text(
      json.dumps(
        _record(config, seed, step, history, seconds + time.time() - began), indent=2
      )
      + "\n"
    )
    if checkpoint:
      _save_checkpoint(checkpoint, step, history, state)
    if snapshots:
      os.makedirs(snapshots, exist_ok=True)
      garo_optax.save_controller(
        os.path.join(snapshots, f"step{step}.npz"),
        state["controller"],
        optimizer=config.optimizer,
      )
    if plot:
      _plot(plot, history, f"GARO meta-training, seed {seed}")

  began = time.time()
  bar = tqdm(range(start, config.meta_steps), initial=start, total=config.meta_steps)
  for step in bar:
    chosen = draw(seed, step, config.slots_per_step, len(all_slots), draw_p)
    step_key = jax.random.fold_in(seed_key, step)
    losses, grads = [], []
    for i in chosen:
      fn = _slot_step(config, all_slots[i])
      loss, grad, state["runs"][i] = fn(
        state["controller"], state["runs"][i], jax.random.fold_in(step_key, i)
      )
      losses.append(float(loss))
      grads.append(grad)
    grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
    state["controller"], state["opt_state"] = apply(
      state["controller"], state["opt_state"], grad
    )
    history.append(float(np.mean(losses)))
    bar.set_postfix(meta_loss=f"{history[-1]:.3f}")
    if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.meta_steps:
      write(step + 1)
  if start >= config.meta_steps:
    write(config.meta_steps)
  return state["controller"]


def main(argv: list[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  config = config_lib.override(config_lib.load(args.config), args.set)
  train(config, args.seed, args.out, args.checkpoint, args.plot, args.snapshots)


if __name__ == "__main__":
  main()
