"""benchmarks/evosax_es.py: evosax's OpenAI-ES on the recipe's footing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from benchmarks import evosax_es
from garo_optax.meta import estimators


def test_frozen_weights_are_split_off_and_put_back():
  controller = garo_optax.init_controller(jax.random.key(0), hidden_size=4)
  controller = jax.tree.map(
    lambda x: x + jax.random.normal(jax.random.key(1), x.shape), controller
  )
  searched, frozen = evosax_es._split(controller)
  assert searched.gru.input_bias.shape == (8,) and searched.gru.hidden_bias is None
  joined = evosax_es._join(searched, frozen)
  for a, b in zip(jax.tree.leaves(joined), jax.tree.leaves(controller), strict=True):
    np.testing.assert_array_equal(a, b)


def test_unshaped_evosax_step_is_ours_without_shaping():
  """With no fitness shaping, evosax's OpenAI-ES gradient on an antithetic
  population is ``estimators._es_combine(..., "none")`` on its perturbations:
  the benchmark's estimators differ in their shaping only."""
  controller = garo_optax.init_controller(jax.random.key(0), hidden_size=4)
  pairs, sigma = 4, 0.05
  # The gradient comes out as the step of SGD at rate 1.
  strategy = evosax_es.evosax_strategy("raw", controller, pairs, sigma, optax.sgd(1.0))
  searched, _ = evosax_es._split(controller)
  params = strategy.default_params
  state = strategy.init(jax.random.key(1), searched, params)
  population, state = strategy.ask(jax.random.key(2), state, params)
  losses = jax.random.uniform(jax.random.key(3), (2 * pairs,))
  after, _ = strategy.tell(jax.random.key(4), population, losses, state, params)
  evosax_grad = jax.tree.map(jnp.subtract, searched, strategy.get_mean(after))
  epsilon = jax.tree.map(lambda p, m: p[:pairs] - m, population, searched)
  # Antithetic: the second half is the first mirrored.
  for p, e, m in zip(
    jax.tree.leaves(population),
    jax.tree.leaves(epsilon),
    jax.tree.leaves(searched),
    strict=True,
  ):
    np.testing.assert_allclose(p[pairs:], m - e, atol=1e-6)
  ours = estimators._es_combine(losses[:pairs], losses[pairs:], epsilon, sigma, "none")
  for a, b in zip(jax.tree.leaves(evosax_grad), jax.tree.leaves(ours), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5)


def test_benchmark_writes_a_row_per_estimator(tmp_path):
  # evosax_raw differs from evosax_ranks only in its shaping (above).
  estimators = ["garo_optax", "evosax_ranks"]
  out = tmp_path / "evosax"
  evosax_es.main(
    [
      *("--meta-steps", "2", "--seeds", "0", "--unroll", "2", "--draws", "1"),
      *("--families", "quadratic_d16_b8", "--estimators", *estimators),
      *("--out", str(out)),
    ]
  )
  record = json.loads(out.with_suffix(".json").read_text())
  assert list(record["results"]) == estimators
  for rows in record["results"].values():
    (row,) = rows
    assert row["finite"] and np.isfinite(row["validation_mean"])
    assert row["seconds_per_meta_step"] > 0
  table = out.with_suffix(".md").read_text()
  assert "| seeded (untrained) |" in table
  for name in estimators:
    assert f"| `{name}` |" in table
