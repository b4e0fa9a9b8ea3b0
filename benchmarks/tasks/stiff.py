"""Stiff problems: where a learning rate that is fine elsewhere is too large.

Regression targets that are not standardised, a quadratic of large curvature
and badly scaled inputs are everyday problems on which a step size adapted
upwards turns a stable SGD run into a diverging one. GARO's safeguard is
tested and benchmarked on them (``benchmarks/stiff.py``); the suite runs one
of them (``diabetes_raw``).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_diabetes

from benchmarks.tasks._common import SPLIT_SEED, split, supervised_task
from benchmarks.tasks._task import Task

TARGET_SCALES = (1.0, 3.0, 10.0, 30.0)


class _HeMLP(nn.Module):
  """An MLP with He-initialised ReLU layers, as most regression code has."""

  features: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    dense = lambda width: nn.Dense(width, kernel_init=nn.initializers.he_normal())
    for width in self.features[:-1]:
      x = nn.relu(dense(width)(x))
    return dense(self.features[-1])(x)


def _mlp_regression(name, description, x, y, steps) -> Task:
  """MLP 10-64-1 on squared error, batch 32, on given (unscaled) targets."""
  train, test = split(x, y.astype(np.float32))
  model = _HeMLP((64, 1))

  def loss(params, batch):
    prediction = model.apply({"params": params}, batch["x"])[:, 0]
    return jnp.mean((prediction - batch["y"]) ** 2)

  return supervised_task(
    name,
    description,
    init=lambda key: model.init(key, train["x"][:1])["params"],
    loss=loss,
    train=train,
    test=test,
    metric=loss,
    metric_name="test_mse",
    higher_is_better=False,
    steps=steps,
    batch_size=32,
  )


def _standard_diabetes() -> tuple[np.ndarray, np.ndarray]:
  data = load_diabetes()
  y = data.target
  return data.data, (y - y.mean()) / y.std()


def regression(scale: float, steps: int = 1500) -> Task:
  """Diabetes regression whose target has standard deviation ``scale`` and
  mean ``2 * scale`` (the raw target's ratio), not standardised."""
  x, z = _standard_diabetes()
  return _mlp_regression(
    f"regression_scale{scale:g}",
    f"MLP 10-64-1 (ReLU, He init) on diabetes, target std {scale:g} and mean "
    f"{2 * scale:g} (not standardised), squared error, batch 32.",
    x,
    scale * (z + 2.0),
    steps,
  )


def diabetes_raw(steps: int = 1500) -> Task:
  """Diabetes with its raw target divided by 10 (mean 15, std 7.7)."""
  data = load_diabetes()
  task = _mlp_regression(
    "diabetes_raw",
    "MLP 10-64-1 (ReLU, He init) on diabetes, target / 10 (mean 15, std 7.7, "
    "not standardised), squared error, batch 32.",
    data.data,
    data.target / 10.0,
    steps,
  )
  return task


def badly_scaled_inputs(steps: int = 1500) -> Task:
  """Diabetes regression (standardised target) whose ten input features are
  scaled by 10^-1 to 10^1, as raw measurements in mixed units are."""
  x, z = _standard_diabetes()
  scales = np.logspace(-1, 1, x.shape[1])
  task = _mlp_regression(
    "badly_scaled_inputs",
    "MLP 10-64-1 (ReLU, He init) on diabetes, inputs scaled by 10^-1..10^1, "
    "standardised target, squared error, batch 32.",
    x,
    z,
    steps,
  )
  train = {**task.train, "x": task.train["x"] * scales.astype(np.float32)}
  test = {**task.test, "x": task.test["x"] * scales.astype(np.float32)}
  return task._replace(train=train, train_eval=train, test=test)


def stiff_quadratic(steps: int = 1500, dim: int = 32) -> Task:
  """Noise-free least squares with Hessian eigenvalues from 1 to 1000: plain
  gradient descent is stable only below a learning rate of 2e-3."""
  rng = np.random.default_rng(SPLIT_SEED)
  curvature = np.logspace(0, 3, dim).astype(np.float32)
  x = np.diag(np.sqrt(curvature)).astype(np.float32)
  target = rng.normal(size=dim).astype(np.float32)
  data = {"x": jnp.asarray(x), "y": jnp.asarray(x @ target)}

  def loss(params, batch):
    return 0.5 * jnp.sum((batch["x"] @ params["w"] - batch["y"]) ** 2)

  return supervised_task(
    "stiff_quadratic",
    f"Quadratic in {dim} dims, Hessian eigenvalues 1 to 1000, full batch.",
    init=lambda key: {"w": jax.random.normal(key, (dim,))},
    loss=loss,
    train=data,
    test=data,
    metric=loss,
    metric_name="loss",
    higher_is_better=False,
    steps=steps,
    batch_size=None,
  )


def all_tasks(steps: int = 1500) -> tuple[Task, ...]:
  """Every stiff problem, in the order of the benchmark's table."""
  return (
    *(regression(s, steps) for s in TARGET_SCALES),
    diabetes_raw(steps),
    badly_scaled_inputs(steps),
    stiff_quadratic(steps),
  )
