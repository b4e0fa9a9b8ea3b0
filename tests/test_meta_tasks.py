"""Tests of garo_optax.meta's problems and task families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from garo_optax.meta import problems

# XLA:CPU compiles several times faster without LLVM's optimisations, which
# tests that run a program once do not need.
FAST_COMPILE = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
}


def _run(f, *args):
  """``f(*args)``, jitted with :data:`FAST_COMPILE`."""
  return jax.jit(f).lower(*args).compile(FAST_COMPILE)(*args)


def test_layer_norm_mlp_ignores_the_scale_of_its_weights():
  params = problems.dense_init(jax.random.key(0), (5, 7, 6, 3), 1.0, layer_norm=True)
  x = jax.random.normal(jax.random.key(1), (4, 5))

  def outputs(params):
    scaled = [dict(layer, w=10.0 * layer["w"]) for layer in params[:-1]]
    return (
      problems.dense_apply(params, x, "gelu"),
      problems.dense_apply(scaled + params[-1:], x, "gelu"),
      problems.layer_norm(x @ params[0]["w"]),
    )

  plain, scaled, hidden = _run(outputs, params)
  np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.mean(hidden, -1), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.std(hidden, -1), 1.0, rtol=1e-3)


def test_transformer_is_causal():
  text = jax.random.randint(jax.random.key(0), (100,), 0, 12)
  task = problems.TransformerTask(text, jnp.array(1.0), 8, 16, 2, 2, 12, 4)

  def logits_and_loss(key):
    params = task.init(key)
    tokens = task.batch(jax.random.fold_in(key, 1))
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % task.vocab)
    logits = task.logits(params, tokens[:, :-1])
    return (
      tokens,
      logits,
      task.logits(params, changed[:, :-1]),
      task.loss(params, tokens),
    )

  tokens, before, after, loss = _run(logits_and_loss, jax.random.key(1))
  assert before.shape == (4, 8, 12)
  # Positions before the changed token do not see it; it and those after do.
  np.testing.assert_array_equal(before[:, :5], after[:, :5])
  assert np.all(np.any(before[:, 5:] != after[:, 5:], axis=-1))
  # The loss is the mean next-token cross-entropy over the positions.
  logp = jax.nn.log_softmax(before)
  expected = -np.mean(np.take_along_axis(logp, tokens[:, 1:, None], -1))
  assert loss == pytest.approx(float(expected), rel=1e-5)
