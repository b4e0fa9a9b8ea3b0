"""Helpers shared by the supervised tasks: splits, sampling, MLP, losses."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.tasks._task import Task

# The train/test split is fixed (it does not depend on the run's seed), so every
# optimizer and seed sees the same data.
SPLIT_SEED = 0


def split(
  x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Shuffles and splits rows; standardizes features with train statistics."""
  order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
  num_test = round(test_fraction * len(x))
  test_rows, train_rows = order[:num_test], order[num_test:]
  mean = x[train_rows].mean(0)
  std = x[train_rows].std(0) + 1e-8
  x = ((x - mean) / std).astype(np.float32)
  return (
    {"x": jnp.asarray(x[train_rows]), "y": jnp.asarray(y[train_rows])},
    {"x": jnp.asarray(x[test_rows]), "y": jnp.asarray(y[test_rows])},
  )


def row_sampler(batch_size: int) -> Callable[[jax.Array, dict], dict]:
  """A minibatch of ``batch_size`` rows drawn uniformly with replacement."""

  def sample(key, train):
    rows = jax.random.randint(key, (batch_size,), 0, len(train["y"]))
    return jax.tree.map(lambda a: a[rows], train)

  return sample


class MLP(nn.Module):
  """A multilayer perceptron (ReLU hidden layers unless told otherwise)."""

  features: Sequence[int]  # widths of the hidden layers, then of the output
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x):
    for width in self.features[:-1]:
      x = self.activation(nn.Dense(width)(x))
    return nn.Dense(self.features[-1])(x)


def supervised_task(
  name: str,
  description: str,
  *,
  init: Callable[[jax.Array], Any],
  loss: Callable[[Any, dict], jax.Array],
  train: dict[str, jax.Array],
  test: dict[str, jax.Array],
  metric: Callable[[Any, dict], jax.Array],
  metric_name: str,
  higher_is_better: bool,
  steps: int,
  batch_size: int | None,
) -> Task:
  """A Task trained on minibatches of ``batch_size`` rows of ``train`` (the
  whole of it when None), its full-batch loss taken over all of ``train``."""
  return Task(
    name=name,
    description=description,
    init=init,
    loss=loss,
    sample=row_sampler(batch_size) if batch_size else lambda key, train: train,
    train=train,
    train_eval=train,
    test=test,
    metric=metric,
    metric_name=metric_name,
    higher_is_better=higher_is_better,
    steps=steps,
  )


def classification_task(
  name: str,
  description: str,
  model: nn.Module,
  x: np.ndarray,
  y: np.ndarray,
  *,
  batch_size: int,
  steps: int,
) -> Task:
  """A softmax classifier trained on cross-entropy, scored by test accuracy."""
  train, test = split(x, y.astype(np.int32))
  example = train["x"][:1]

  def loss(params, batch):
    logits = model.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  def accuracy(params, batch):
    logits = model.apply({"params": params}, batch["x"])
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])

  return supervised_task(
    name,
    description,
    init=lambda key: model.init(key, example)["params"],
    loss=loss,
    train=train,
    test=test,
    metric=accuracy,
    metric_name="test_accuracy",
    higher_is_better=True,
    steps=steps,
    batch_size=batch_size,
  )


def regression_task(
  name: str,
  description: str,
  model: nn.Module,
  x: np.ndarray,
  y: np.ndarray,
  *,
  batch_size: int,
  steps: int,
) -> Task:
  """A scalar regression on half the mean squared error, scored by test MSE.

  The target is standardized with train statistics, so a test MSE of 1 is what
  predicting the train mean achieves.
  """
  y = y.astype(np.float32)
  train, test = split(x, y)
  mean, std = float(train["y"].mean()), float(train["y"].std())
  train["y"], test["y"] = (train["y"] - mean) / std, (test["y"] - mean) / std
  example = train["x"][:1]

  def predict(params, batch):
    return model.apply({"params": params}, batch["x"])[:, 0]

  def loss(params, batch):
    return 0.5 * jnp.mean((predict(params, batch) - batch["y"]) ** 2)

  def mse(params, batch):
    return jnp.mean((predict(params, batch) - batch["y"]) ** 2)

  return supervised_task(
    name,
    description,
    init=lambda key: model.init(key, example)["params"],
    loss=loss,
    train=train,
    test=test,
    metric=mse,
    metric_name="test_mse",
    higher_is_better=False,
    steps=steps,
    batch_size=batch_size,
  )
