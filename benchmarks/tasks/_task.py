"""The `Task` record every benchmark problem is described by."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any
Batch = Any


class Task(NamedTuple):
  """A training problem: a model, its data and how to score it.

  All functions are pure and jittable; the data fields are pytrees of arrays
  passed to the jitted training run as arguments (not baked in as constants).
  """

  name: str
  description: str
  init: Callable[[jax.Array], Params]  # key -> params
  loss: Callable[[Params, Batch], jax.Array]  # mean loss over a batch, scalar
  sample: Callable[[jax.Array, Batch], Batch]  # key, train -> minibatch
  train: Batch  # the whole training set (what `sample` draws from)
  train_eval: Batch  # data of the full-batch train loss (train, or a fixed subset)
  test: Batch  # held-out data for `metric`
  metric: Callable[[Params, Batch], jax.Array]  # params, test -> scalar
  metric_name: str
  higher_is_better: bool
  steps: int  # training steps of a full run
