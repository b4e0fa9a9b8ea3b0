"""Meta-training with garo_optax's ES estimator against evosax's OpenAI-ES.

The recipe's estimators are ours (``garo_optax.meta.estimators``). This
measures whether evosax's ``Open_ES`` (antithetic sampling, optax outer step,
fitness shaping) meta-trains a controller as well, on the same footing: the
same families, the same problems and starting learning rates for a given seed
and meta-step, the same inner runs and meta-loss as ``--config default``
(``garo_optax.meta.train.inner_config``), 8 antithetic pairs per meta-step
(one problem per pair), σ, Adam at the same rate for the outer step, and the
same weights perturbed: the GRU candidate's biases stay out of the search
under all three (they keep GARO's first step plain SGD), so evosax searches over
the other weights and the benchmark puts the frozen ones back.

The estimators differ only in how a population's meta-losses become a
gradient:

- ``garo_optax``: each pair casts one vote, the sign of its loss difference
  (``fitness_shaping="sign"``, the recipe's);
- ``evosax_ranks``: evosax's default for OpenAI-ES, centred ranks over the
  whole population of 16 runs on 8 problems;
- ``evosax_raw``: evosax with no shaping (the loss differences as they are).

Every estimator meta-trains from the same seeded controller for
``--meta-steps`` whole-run ES steps (one family a step, in turn) per seed;
the controllers are then scored by their mean meta-loss on validation problems
that no training step drew (fixed keys, every family, log-uniform starting
rates from 1e-4 to 1): lower is better. The seeded controller's score is the
reference. Writes ``results/evosax_es/evosax_es.{json,md}``.

Persistent ES is not compared: evosax's ``PersistentES`` keeps one step
counter for the whole population (every run restarts after ``T`` steps, all
together), whereas the recipe's runs each draw their own length (200 to 3000
steps) and start staggered, which it cannot express.

Usage::

  python -m benchmarks.evosax_es [--meta-steps 150] [--seeds 0 1 2]
      [--unroll 100] [--draws 2] [--families ...] [--estimators ...]
"""

import argparse
import functools
import importlib.metadata
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms import Open_ES
from evosax.core.fitness_shaping import (
  centered_rank_fitness_shaping_fn,
  identity_fitness_shaping_fn,
)
from jax.flatten_util import ravel_pytree

import garo_optax
from benchmarks import _machine
from garo_optax.meta import config as config_lib
from garo_optax.meta import estimators, inner, steps, tasks, train

RESULTS = pathlib.Path(__file__).parent / "results" / "evosax_es"
ESTIMATORS = ("garo_optax", "evosax_ranks", "evosax_raw")
# Cheap families of the default distribution, one of each kind.
FAMILIES = (
  "quadratic_d16_b8",
  "badly_scaled_linear_d32_b32",
  "noisy_logistic_d16_k4_b512",
  "deep_linear_d4_w16_n256",
  "teacher_raw_regression_mlp_64x64x64_tanh_b256",
  "digits_mlp_64x64x64x64x64x64_tanh_b16",
)
VALIDATION_KEY = 10**6  # far from the seeds' keys


def _split(controller):
  """``(searched, frozen)``: the weights ES perturbs, and the GRU candidate's
  biases, which it does not (``estimators._perturbations``)."""
  hidden = controller.hidden_size
  gru = controller.gru
  searched = controller._replace(
    gru=gru._replace(input_bias=gru.input_bias[: 2 * hidden], hidden_bias=None)
  )
  return searched, (gru.input_bias[2 * hidden :], gru.hidden_bias)


def _join(searched, frozen):
  tail, hidden_bias = frozen
  gru = searched.gru
  return searched._replace(
    gru=gru._replace(
      input_bias=jnp.concatenate([gru.input_bias, tail]), hidden_bias=hidden_bias
    )
  )


def _seeded(config, seed):
  """The seeded controller that ``--config default`` starts from."""
  return garo_optax.init_controller(
    jax.random.key(seed),
    hidden_size=config.hidden_size,
    head_scale=config.head_scale,
    num_features=config.num_features,
  )


def _problems(family, pairs, key, min_lr, max_lr):
  """The pairs' problems, run keys and starting rates, drawn from a
  meta-step's key as ``steps.family_step`` draws them (its fourth part keys
  the perturbations: :func:`_es_key`)."""
  task_key, run_key, lr_key, _ = jax.random.split(key, 4)
  task = jax.vmap(family.sample)(jax.random.split(task_key, pairs))
  learning_rate = steps._log_uniform(lr_key, (pairs,), min_lr, max_lr)
  return task, jax.random.split(run_key, pairs), learning_rate


@functools.cache
def _evaluate(family, pairs, unroll, config):
  """``evaluate(controllers, key, min_lr, max_lr)``, jitted: the meta-losses
  of ``2 * pairs`` controllers on the ``pairs`` problems drawn from ``key``,
  controllers ``i`` and ``pairs + i`` on problem ``i`` (as ``es_gradient``
  runs them). One compilation serves every estimator and the validation."""

  @jax.jit
  def evaluate(controllers, key, min_lr, max_lr):
    task, keys, learning_rate = _problems(family, pairs, key, min_lr, max_lr)
    twice = estimators._twice
    return jax.vmap(inner.unroll_meta_loss, in_axes=(0, 0, 0, 0, None, None))(
      controllers,
      jax.tree.map(twice, task),
      twice(keys),
      twice(learning_rate),
      unroll,
      config,
    )

  return evaluate


@jax.jit
def _es_key(key):
  """The perturbations' key of a meta-step's key, as ``steps.family_step``
  splits it."""
  return jax.random.split(key, 4)[3]


def evosax_strategy(shaping, controller, pairs, sigma, optimizer):
  """evosax's ``Open_ES`` over the searched weights of ``controller``, with
  ``"ranks"`` (centred ranks) or ``"raw"`` (no) fitness shaping and the optax
  ``optimizer`` for the outer step."""
  searched, _ = _split(controller)
  return Open_ES(
    population_size=2 * pairs,
    solution=searched,
    optimizer=optimizer,
    std_schedule=optax.constant_schedule(sigma),
    fitness_shaping_fn={
      "ranks": centered_rank_fitness_shaping_fn,
      "raw": identity_fitness_shaping_fn,
    }[shaping],
  )


def _garo_optax_estimator(controller, config):
  """``(state, ask, tell, mean)`` of the recipe's ES: ``es_gradient`` taken
  apart around the runs, the perturbations from the same key."""
  meta_opt = optax.adam(config.meta_lr)
  pairs, sigma = config.pairs, config.sigma

  @jax.jit
  def ask(key, state):
    controller, _ = state
    epsilon = estimators._perturbations(key, controller, pairs, sigma)
    return estimators._antithetic(controller, epsilon), epsilon

  @jax.jit
  def tell(state, epsilon, losses):
    controller, opt_state = state
    grad = estimators._es_combine(
      losses[:pairs], losses[pairs:], epsilon, sigma, config.fitness_shaping
    )
    updates, opt_state = meta_opt.update(grad, opt_state, controller)
    return optax.apply_updates(controller, updates), opt_state

  return (controller, meta_opt.init(controller)), ask, tell, lambda state: state[0]


def _evosax_estimator(shaping, controller, config, seed):
  """``(state, ask, tell, mean)`` of evosax's OpenAI-ES over the searched
  weights, the frozen ones put back for the runs."""
  es = evosax_strategy(
    shaping, controller, config.pairs, config.sigma, optax.adam(config.meta_lr)
  )
  params = es.default_params
  searched, frozen = _split(controller)

  @jax.jit
  def ask(key, state):
    population, state = es.ask(key, state, params)
    return jax.vmap(_join, (0, None))(population, frozen), (key, population, state)

  @jax.jit
  def tell(state, asked, losses):
    key, population, state = asked
    return es.tell(key, population, losses, state, params)[0]

  state = es.init(jax.random.key(seed), searched, params)
  return state, ask, tell, lambda state: _join(es.get_mean(state), frozen)


def meta_train(estimator, families, config, seed, meta_steps, unroll):
  """``meta_steps`` ES steps from the seeded controller; returns it trained,
  the mean meta-loss of each step and the seconds a step took."""
  controller = _seeded(config, seed)
  if estimator == "garo_optax":
    state, ask, tell, mean = _garo_optax_estimator(controller, config)
  else:
    state, ask, tell, mean = _evosax_estimator(
      estimator.split("_")[1], controller, config, seed
    )
  ic = train.inner_config(config, "global")
  evaluate = [_evaluate(f, config.pairs, unroll, ic) for f in families]
  seed_key = jax.random.key(seed)
  # Timed over the second half of the steps, long after every compilation
  # (evosax's state changes its types after its first step: a second one).
  history, seconds, timed = [], 0.0, 0
  for t in range(meta_steps):
    began = time.perf_counter()
    key = jax.random.fold_in(seed_key, t)
    controllers, asked = ask(_es_key(key), state)
    losses = evaluate[t % len(families)](controllers, key, config.min_lr, config.max_lr)
    state = tell(state, asked, losses)
    history.append(float(jnp.mean(losses)))
    if 2 * t >= meta_steps:
      seconds, timed = seconds + time.perf_counter() - began, timed + 1
  return mean(state), history, seconds / max(1, timed)


def validation_score(controller, families, config, unroll, draws):
  """Mean meta-loss per family on ``draws`` fixed draws of validation
  problems (``config.pairs`` problems a draw)."""
  ic = train.inner_config(config, "global")
  controllers = jax.tree.map(
    lambda x: jnp.broadcast_to(x, (2 * config.pairs, *x.shape)), controller
  )
  scores = []
  for i, family in enumerate(families):
    evaluate = _evaluate(family, config.pairs, unroll, ic)
    losses = [
      evaluate(
        controllers,
        jax.random.fold_in(jax.random.key(VALIDATION_KEY), 1000 * i + d),
        config.min_lr,
        config.max_lr,
      )
      for d in range(draws)
    ]
    scores.append(float(jnp.mean(jnp.stack(losses))))
  return scores


def run(
  meta_steps, seeds, unroll, draws, family_names=FAMILIES, estimator_names=ESTIMATORS
):
  config = config_lib.load("default")
  by_name = {f.name: f for f in tasks.families("default")}
  families = [by_name[name] for name in family_names]
  seeded = {
    seed: validation_score(_seeded(config, seed), families, config, unroll, draws)
    for seed in seeds
  }
  results = {}
  for estimator in estimator_names:
    for seed in seeds:
      controller, history, per_step = meta_train(
        estimator, families, config, seed, meta_steps, unroll
      )
      score = validation_score(controller, families, config, unroll, draws)
      results.setdefault(estimator, []).append(
        {
          "seed": seed,
          "validation": score,
          "validation_mean": float(np.mean(score)),
          "seeded_validation_mean": float(np.mean(seeded[seed])),
          "seconds_per_meta_step": per_step,
          "meta_loss_last20": float(np.mean(history[-20:])),
          "finite": bool(np.all(np.isfinite(ravel_pytree(controller)[0]))),
        }
      )
      print(estimator, seed, f"{np.mean(score):.4f}", f"{per_step:.3f} s/step")
  return {
    "machine": _machine.describe(),
    "evosax": importlib.metadata.version("evosax"),
    "families": list(family_names),
    "meta_steps": meta_steps,
    "seeds": list(seeds),
    "unroll": unroll,
    "validation_problems_per_family": draws * config.pairs,
    "pairs": config.pairs,
    "sigma": config.sigma,
    "meta_lr": config.meta_lr,
    "results": results,
  }


def markdown(record: dict, command: str) -> str:
  seeds = record["seeds"]
  lines = [
    "# Meta-training with garo_optax's ES and evosax's OpenAI-ES",
    "",
    f"`{command}` on {record['machine']}: {record['meta_steps']} whole-run ES "
    f"meta-steps of {record['unroll']} inner steps, {record['pairs']} antithetic "
    f"pairs (σ {record['sigma']}, Adam {record['meta_lr']}), one family a step in "
    f"turn over {len(record['families'])} families of the default distribution. "
    "Score: the mean meta-loss (the recipe's) on "
    f"{record['validation_problems_per_family']} validation problems per family "
    "that no step drew; lower is better.",
    "",
    "| estimator | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | "
    "seconds per meta-step |",
    "|---|" + "---|" * (len(seeds) + 2),
  ]
  first = next(iter(record["results"].values()))
  seeded = [r["seeded_validation_mean"] for r in first]
  lines.append(
    "| seeded (untrained) | "
    + " | ".join(f"{v:.4f}" for v in seeded)
    + f" | {np.mean(seeded):.4f} | |"
  )
  for name, rows in record["results"].items():
    scores = [r["validation_mean"] for r in rows]
    cells = [
      f"{v:.4f}" if r["finite"] else "non-finite"
      for v, r in zip(scores, rows, strict=True)
    ]
    per_step = np.median([r["seconds_per_meta_step"] for r in rows])
    lines.append(
      f"| `{name}` | "
      + " | ".join(cells)
      + f" | {np.mean(scores):.4f} | {per_step:.2f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.evosax_es", description=__doc__.splitlines()[0]
  )
  p.add_argument("--meta-steps", type=int, default=150)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--unroll", type=int, default=100, help="inner steps per run")
  p.add_argument(
    "--draws",
    type=int,
    default=2,
    help="validation draws per family, of 8 problems each",
  )
  p.add_argument("--families", nargs="+", default=list(FAMILIES))
  p.add_argument(
    "--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS)
  )
  p.add_argument("--out", type=pathlib.Path, default=RESULTS / "evosax_es")
  args = p.parse_args(argv)
  command = "python -m benchmarks.evosax_es " + " ".join(
    sys.argv[1:] if argv is None else argv
  )
  record = run(
    args.meta_steps,
    args.seeds,
    args.unroll,
    args.draws,
    args.families,
    args.estimators,
  )
  record["command"] = command.strip()
  _machine.write(args.out, record, markdown(record, command.strip()))


if __name__ == "__main__":
  main()
