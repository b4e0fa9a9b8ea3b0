"""GARO inside optax's combinators: chain, masked, MultiSteps, and others."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

LABELS = {"dense": {"kernel": "garo", "bias": "garo"}, "scale": "frozen"}
MASK = {"dense": {"kernel": True, "bias": True}, "scale": False}


def _zero_head_garo():
  """GARO whose heads ignore the GRU: exactly SGD(0.05, 0.9) with decay 0.01."""
  controller = garo_optax.init_controller(jax.random.key(1), head_scale=1.0)
  controller = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  return garo_optax.garo(0.05, 0.9, 0.01, controller=controller)


@pytest.mark.parametrize(
  "wrap",
  [
    lambda tx: optax.chain(optax.clip_by_global_norm(0.1), tx),
    lambda tx: optax.chain(
      optax.masked(tx, MASK),
      optax.masked(optax.set_to_zero(), jax.tree.map(lambda m: not m, MASK)),
    ),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=4),
    lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=3),
    lambda tx: optax.partition({"garo": tx, "frozen": optax.set_to_zero()}, LABELS),
  ],
  ids=["chain_clip", "masked", "multi_steps", "apply_if_finite", "partition"],
)
def test_wrapped_garo_matches_wrapped_sgd(params, train, wrap):
  reference = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, 0.9))
  final, state, losses = train(wrap(_zero_head_garo()), params, 8)
  expected, _, expected_losses = train(wrap(reference), params, 8)
  chex.assert_trees_all_close(final, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  assert losses[-1] < losses[0]
  np.testing.assert_allclose(
    garo_optax.hyperparams(state)["learning_rate"], 0.05, rtol=1e-6
  )


def test_multi_steps_updates_only_every_kth_step(params, random_grads):
  tx = optax.MultiSteps(garo_optax.garo(0.1, 0.9), every_k_schedule=4)
  grads = random_grads(jax.random.key(0), params, 8)
  state, update = tx.init(params), jax.jit(tx.update)
  for t in range(8):
    g = jax.tree.map(lambda x, t=t: x[t], grads)
    updates, state = update(g, state, params, value=jnp.float32(1.0))
    norm = optax.tree.norm(updates)
    assert norm > 0 if t % 4 == 3 else norm == 0
  assert state.inner_opt_state.count == 2


@pytest.mark.parametrize("value", [None, 2.5])
def test_value_passes_through_chain(params, random_grads, value):
  tx = optax.chain(optax.clip_by_global_norm(1.0), garo_optax.garo())
  grads = jax.tree.map(lambda x: x[0], random_grads(jax.random.key(0), params, 1))
  _, state = tx.update(grads, tx.init(params), params, value=value)
  # The running mean of the loss starts at the first loss seen; 0 with none.
  assert state[1].feature_state.loss == (0.0 if value is None else value)


def test_apply_if_finite_and_garo_both_skip_nan(params, random_grads):
  tx = optax.apply_if_finite(garo_optax.garo(0.1, 0.9), max_consecutive_errors=3)
  grads = jax.tree.map(lambda x: x[0], random_grads(jax.random.key(0), params, 1))
  state = tx.init(params)
  nan_grads = {**grads, "scale": jnp.float32(jnp.nan)}
  updates, state = tx.update(nan_grads, state, params)
  chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
  assert state.notfinite_count == 1 and state.inner_state.count == 0
  _, state = tx.update(grads, state, params)
  assert state.notfinite_count == 0 and state.inner_state.count == 1
