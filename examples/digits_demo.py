"""Trains a Flax NNX MLP on scikit-learn's digits with GARO, SGD, Adam and Prodigy.

GARO runs three times: with ``garo()``'s default, the meta-trained controller
shipped in ``garo_optax/pretrained``; with the seeded, untrained one
(``controller="init"``), which shows what the training of the controller adds;
and as ``garo_adamw()``, the same kind of controller driving AdamW (its
``b1`` is drawn with the momenta). The others are what a user would pick
instead, untuned: ``sgd(0.01)`` (GARO's starting point), ``adam(1e-3)``, and
Prodigy with its defaults (``optax.contrib.prodigy()``), a tuning-free
optimizer like GARO.

The project's main job: it runs offline on bundled data, prints a short table
of loss, accuracy and GARO's hyperparameters, and saves a plot of the loss and
of the learning rate / momentum / weight decay over the steps.

Usage::

  python examples/digits_demo.py [--steps 1500] [--out outputs/digits_demo.png]
"""

import argparse
import os
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import garo_optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt


class MLP(nnx.Module):
  """A two-layer perceptron for 8x8 digit images."""

  def __init__(self, rngs: nnx.Rngs, hidden: int = 128):
    self.hidden = nnx.Linear(64, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def loss_fn(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads, value=loss)
  return loss


@nnx.jit
def evaluate(model, x, y):
  logits = model(x)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def load_data(seed: int):
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  return train_test_split(
    x, digits.target.astype(np.int32), test_size=0.25, random_state=seed
  )


def train(tx, data, steps: int, batch_size: int, seed: int, name: str):
  """Trains a fresh model; returns per-step records."""
  x_train, x_test, y_train, y_test = data
  model = MLP(nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rng = np.random.default_rng(seed)
  history = []
  for step in tqdm(range(steps), desc=name, leave=False):
    index = rng.integers(0, len(x_train), batch_size)
    train_step(model, optimizer, x_train[index], y_train[index])
    record = {"step": step + 1}
    if isinstance(
      optimizer.opt_state, garo_optax.GaroState | garo_optax.GaroAdamWState
    ):
      hp = garo_optax.hyperparams(optimizer.opt_state)
      # garo_adamw's b1 goes in the momentum column: each is the decay of its
      # rule's first moment.
      record.update({("momentum" if k == "b1" else k): float(v) for k, v in hp.items()})
    if (step + 1) % 25 == 0 or step == 0:
      train_loss, _ = evaluate(model, x_train, y_train)
      _, test_acc = evaluate(model, x_test, y_test)
      record.update(train_loss=float(train_loss), test_accuracy=float(test_acc))
    history.append(record)
  return history


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--steps", type=int, default=int(os.environ.get("GARO_DEMO_STEPS", 1500))
  )
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="outputs/digits_demo.png")
  args = parser.parse_args()

  data = load_data(args.seed)
  optimizers = {
    # garo()'s default: the meta-trained controller shipped in
    # garo_optax/pretrained, starting as SGD at 0.01.
    "GARO": garo_optax.garo(),
    # The seeded, untrained controller: SGD at 0.01 that drifts a little.
    "GARO seeded": garo_optax.garo(controller="init"),
    # AdamW(1e-3) with garo_adamw's meta-trained controller.
    "GARO-AdamW": garo_optax.garo_adamw(),
    "SGD(0.01)": optax.sgd(0.01),
    "Adam(1e-3)": optax.adam(1e-3),
    "Prodigy": optax.contrib.prodigy(),
  }
  runs = {
    name: train(tx, data, args.steps, args.batch_size, args.seed, name)
    for name, tx in optimizers.items()
  }
  report(runs)
  plot(runs, args.out)
  print(f"\nSaved the plot to {args.out}")


def report(runs):
  evaluated = [r for r in runs["GARO"] if "train_loss" in r]
  picks = sorted({0, len(evaluated) // 4, len(evaluated) // 2, len(evaluated) - 1})
  header = (
    f"{'step':>6} | {'optimizer':>15} | {'train loss':>10} | "
    f"{'test acc':>8} | {'lr':>9} | {'mom / b1':>8} | {'wd':>9}"
  )
  print(header)
  print("-" * len(header))
  for i in picks:
    step = evaluated[i]["step"]
    for name, history in runs.items():
      r = history[step - 1]
      hp = (
        (f"{r['learning_rate']:9.3g} | {r['momentum']:8.3f} | {r['weight_decay']:9.2g}")
        if "learning_rate" in r
        else (f"{'':>9} | {'':>8} | {'':>9}")
      )
      print(
        f"{step:>6} | {name:>15} | {r['train_loss']:10.4g} | "
        f"{r['test_accuracy']:8.3f} | {hp}"
      )


# How each optimizer is drawn. The seeded controller behaves like SGD at its
# starting rate, so its line is dashed and drawn over SGD's, not hidden under it.
STYLES = {
  "GARO": {"color": "C0", "linewidth": 2.0, "zorder": 4},
  "GARO seeded": {"color": "C3", "linestyle": "--", "linewidth": 1.5, "zorder": 5},
  "GARO-AdamW": {"color": "C1", "linewidth": 2.0, "zorder": 4},
  "SGD(0.01)": {"color": "0.6", "linewidth": 3.5, "zorder": 2},
  "Adam(1e-3)": {"color": "C2", "linewidth": 1.5, "zorder": 3},
  "Prodigy": {"color": "C4", "linewidth": 1.5, "zorder": 3},
}
LABELS = {"GARO seeded": "GARO seeded (untrained: stays near SGD)"}


def moving_average(values, window):
  """Mean of the last ``window`` values at each step (fewer at the start)."""
  total = np.cumsum(np.asarray(values, np.float64))
  total[window:] = total[window:] - total[:-window]
  return total / np.minimum(np.arange(1, len(total) + 1), window)


def plot(runs, out):
  fig, axes = plt.subplots(2, 2, figsize=(12, 8))
  loss_ax, *hyperparam_axes = axes.flat
  for name, history in runs.items():
    evaluated = [r for r in history if "train_loss" in r]
    loss_ax.plot(
      [r["step"] for r in evaluated],
      [r["train_loss"] for r in evaluated],
      label=LABELS.get(name, name),
      **STYLES[name],
    )
  loss_ax.set(
    title="train loss (full batch, every 25 steps)",
    xlabel="step",
    ylabel="cross-entropy",
    yscale="log",
  )

  # The per-step values are noisy (each mini-batch moves them): a moving average
  # shows their course.
  window = max(1, len(next(iter(runs.values()))) // 50)
  for ax, key, scale in zip(
    hyperparam_axes,
    ("learning_rate", "momentum", "weight_decay"),
    ("log", "linear", "log"),
    strict=True,
  ):
    for name, history in runs.items():
      if key in history[0]:
        ax.plot(
          [r["step"] for r in history],
          moving_average([r[key] for r in history], window),
          **STYLES[name],
        )
    label = "momentum / b1" if key == "momentum" else key.replace("_", " ")
    ax.set(
      title=f"GARO's {label} (mean of the last {window} steps)",
      xlabel="step",
      ylabel=label,
      yscale=scale,
    )
  # Asked for no weight decay, GARO starts at its floor (the head is a softplus)
  # and stays within a few 1e-9 of it: on a wide log scale, a flat line.
  wd_ax = hyperparam_axes[-1]
  floor = runs["GARO"][0]["weight_decay"]
  wd_ax.axhline(floor, color="black", linestyle=":", linewidth=1)
  wd_ax.annotate(
    f"floor for weight_decay=0 ({floor:.1g}): GARO stays near it",
    (0.02, floor),
    xycoords=("axes fraction", "data"),
    xytext=(0, 30),
    textcoords="offset points",
  )
  wd_ax.set(ylim=(1e-10, 1e-2))

  fig.legend(loc="upper center", ncol=len(runs))
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=120)


if __name__ == "__main__":
  main()
