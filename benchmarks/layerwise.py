"""Per-layer learning-rate trajectories of per-leaf GARO on a digits MLP.

Trains a two-layer MLP on scikit-learn's digits (minibatches of 128) with
``garo(granularity="per_leaf")`` for each controller available (the seeded
``"init"`` one and, once shipped, ``"pretrained"``) and plots the learning
rate, momentum and weight decay of every leaf over the steps.

Usage::

  python -m benchmarks.layerwise [--steps 1000] [--seeds 3]
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from sklearn.datasets import load_digits

import garo_optax
from garo_optax._controller import HEAD_NAMES

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = pathlib.Path(__file__).parent / "results"


def init_mlp(key, width: int = 128):
  k1, k2 = jax.random.split(key)
  return {
    "hidden": {
      "kernel": jax.random.normal(k1, (64, width)) / 8.0,
      "bias": jnp.zeros(width),
    },
    "out": {
      "kernel": jax.random.normal(k2, (width, 10)) / np.sqrt(width),
      "bias": jnp.zeros(10),
    },
  }


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  logits = h @ params["out"]["kernel"] + params["out"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(controller: str, steps: int, seed: int, batch_size: int = 128):
  """Returns the loss and per-leaf hyperparameters at every step."""
  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  y = jnp.asarray(digits.target)
  tx = garo_optax.garo(controller=controller, granularity="per_leaf")
  params = init_mlp(jax.random.key(seed))

  def step(carry, key):
    params, state = carry
    index = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, x[index], y[index])
    updates, state = tx.update(grads, state, params, value=loss)
    record = {
      name: jnp.stack(list(garo_optax.hyperparams(state)[name].values()))
      for name in HEAD_NAMES
    }
    return (optax.apply_updates(params, updates), state), (loss, record)

  keys = jax.random.split(jax.random.key(1000 + seed), steps)
  _, (losses, records) = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), keys))(
    params, tx.init(params)
  )
  names = list(garo_optax.hyperparams(tx.init(params))["learning_rate"])
  return np.asarray(losses), {k: np.asarray(v) for k, v in records.items()}, names


def available_controllers() -> list[str]:
  controllers = ["init"]
  try:
    garo_optax.garo(controller="pretrained")
    controllers.append("pretrained")
  except (ValueError, FileNotFoundError):
    pass
  return controllers


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--out", default=str(RESULTS / "layerwise_digits"))
  args = parser.parse_args(argv)

  controllers = available_controllers()
  fig, axes = plt.subplots(
    len(controllers), 4, figsize=(17, 3.6 * len(controllers)), squeeze=False
  )
  summary = {}
  for row, controller in zip(axes, controllers, strict=True):
    runs = [train(controller, args.steps, seed) for seed in range(args.seeds)]
    names = runs[0][2]
    losses = np.stack([r[0] for r in runs])
    row[0].semilogy(np.median(losses, 0))
    row[0].set(
      title=f"{controller}: minibatch loss (median of {args.seeds})", xlabel="step"
    )
    summary[controller] = {"final_loss_median": float(np.median(losses[:, -1]))}
    for ax, head in zip(row[1:], HEAD_NAMES, strict=True):
      values = np.stack([r[1][head] for r in runs])  # (seeds, steps, leaves)
      median = np.median(values, 0)
      for i, name in enumerate(names):
        ax.plot(median[:, i], label=name)
      ax.set(
        title=f"{controller}: {head.replace('_', ' ')}",
        xlabel="step",
        yscale="log" if head != "momentum" else "linear",
      )
      summary[controller][head] = {
        name: float(median[-1, i]) for i, name in enumerate(names)
      }
    row[1].legend(fontsize=8)
  fig.tight_layout()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out.with_suffix(".png"), dpi=110)
  payload = {
    "command": "python -m benchmarks.layerwise " + " ".join(argv or []),
    "steps": args.steps,
    "seeds": args.seeds,
    "final": summary,
  }
  out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
  print(json.dumps(summary, indent=2))
  print(f"Wrote {out.with_suffix('.png')} and .json")


if __name__ == "__main__":
  main()
