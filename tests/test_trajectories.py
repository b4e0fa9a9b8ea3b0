"""GARO's trajectories against committed reference values.

Fifty steps of the suite's ``mlp_digits`` task, with the pretrained controller
at global and per-leaf granularity: the hyperparameters applied at every step
and the final params must be the ones recorded in
``tests/data/trajectories.npz``, bit for bit under the JAX version that
recorded them (to float rounding under another: XLA may fuse differently).
A refactoring that changes no maths must keep them.

To record them anew after a deliberate change of GARO's maths::

  python -m tests.test_trajectories
"""

import pathlib

import jax
import numpy as np
import optax
import pytest

import garo_optax
from benchmarks import tasks

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
    if str(reference["jax_version"]) == jax.__version__:
      np.testing.assert_array_equal(value, reference[name], err_msg=name)
    else:
      np.testing.assert_allclose(value, reference[name], rtol=1e-5, err_msg=name)


if __name__ == "__main__":
  arrays = {"jax_version": np.array(jax.__version__)}
  for granularity in GRANULARITIES:
    arrays.update(trajectory(granularity))
  np.savez(REFERENCE, **arrays)
  print(f"Wrote {REFERENCE}: {sorted(arrays)}")
