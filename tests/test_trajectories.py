"""GARO's trajectories against committed reference values.

Fifty steps of the suite's ``mlp_digits`` task, with the pretrained controller
at global and per-leaf granularity: the hyperparameters applied at every step
and the final params must be the ones recorded in
``tests/data/trajectories.npz``, bit for bit under the JAX version, XLA
flags and CPU model that recorded them (to float rounding under others: XLA
compiles for the host's CPU, and may fuse and round differently). A
refactoring that changes no maths must keep them.

To record them anew after a deliberate change of GARO's maths, with the XLA
flags the test suite runs with (``tests/conftest.py``)::

  python -m tests.test_trajectories
"""

import os
import pathlib

if __name__ == "__main__":
  from tests import conftest  # noqa: F401  (sets XLA_FLAGS before JAX starts)

import jax
import numpy as np
import optax
import pytest

import garo_optax
from benchmarks import _machine, tasks

REFERENCE = pathlib.Path(__file__).parent / "data" / "trajectories.npz"
STEPS = 50
GRANULARITIES = ("global", "per_leaf")


def trajectory(granularity: str) -> dict[str, np.ndarray]:
  """Per-step hyperparameters (flattened per group) and the final params."""
  task = tasks.get("mlp_digits")
  tx = garo_optax.garo(granularity=granularity)
  params = task.init(jax.random.key(0))
  keys = jax.random.split(jax.random.key(1), STEPS)

  def step(carry, key):
    params, state = carry
    loss, grads = jax.value_and_grad(task.loss)(params, task.sample(key, task.train))
    updates, state = tx.update(grads, state, params, value=loss)
    applied = jax.tree.leaves(garo_optax.hyperparams(state))
    return (optax.apply_updates(params, updates), state), jax.numpy.stack(applied)

  (params, _), hyperparams = jax.jit(lambda carry: jax.lax.scan(step, carry, keys))(
    (params, tx.init(params))
  )
  leaves = [np.asarray(x).ravel() for x in jax.tree.leaves(params)]
  return {
    f"{granularity}/hyperparams": np.asarray(hyperparams),
    f"{granularity}/params": np.concatenate(leaves),
  }


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_trajectory_matches_reference(granularity):
  with np.load(REFERENCE) as data:
    reference = {k: data[k] for k in data.files}
  got = trajectory(granularity)
  for name, value in got.items():
    if _recorded_here(reference):
      np.testing.assert_array_equal(value, reference[name], err_msg=name)
    else:
      # Fifty steps of a recurrent controller carry other rounding along:
      # about 1e-4 of each value (measured between XLA:CPU's two emitters).
      scale = np.max(np.abs(reference[name]))
      np.testing.assert_allclose(
        value, reference[name], rtol=1e-3, atol=1e-6 * scale, err_msg=name
      )


def _recorded_here(reference) -> bool:
  """Whether the reference was recorded under this JAX, these XLA flags and
  on this CPU model."""
  return (
    str(reference["jax_version"]) == jax.__version__
    and str(reference.get("xla_flags", "")) == os.environ.get("XLA_FLAGS", "")
    and str(reference.get("cpu", "")) == _machine.cpu_model()
  )


if __name__ == "__main__":
  arrays = {
    "jax_version": np.array(jax.__version__),
    "xla_flags": np.array(os.environ.get("XLA_FLAGS", "")),
    "cpu": np.array(_machine.cpu_model()),
  }
  for granularity in GRANULARITIES:
    arrays.update(trajectory(granularity))
  np.savez(REFERENCE, **arrays)
  print(f"Wrote {REFERENCE}: {sorted(arrays)}")
