"""Tests of the compile-time workarounds (``_xla``): each leaves results as
they are."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from garo_optax import _transform, _xla


def test_hyperparameters_computed_once_are_unchanged():
  scales = jnp.array([[1e-30], [1.0], [1e30]])
  values = jax.random.normal(jax.random.key(4), (3, 5)) * scales
  out = jax.jit(lambda v: _xla.computed_once(*v))(values)
  np.testing.assert_array_equal(jnp.stack(out), values)


def test_every_leaf_reads_its_own_groups_values_across_index_chunks():
  # The leaves read their groups' hyperparameters at indices made in chunks
  # (`_xla.group_indices`): more groups than two chunks hold.
  n = 2 * _xla._INDEX_CHUNK + 3
  params = {f"p{i:02d}": jnp.full((2, 3), float(i)) for i in range(n)}
  rates = {name: 1e-3 * (i + 1) for i, name in enumerate(params)}
  tx = garo_optax.garo(rates, weight_decay=0.0, granularity="per_leaf")
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  for name, rate in rates.items():
    np.testing.assert_allclose(updates[name], -rate, rtol=1e-6)
  applied = garo_optax.hyperparams(state)["learning_rate"]
  np.testing.assert_allclose(
    [applied[n] for n in rates], list(rates.values()), rtol=1e-6
  )


def test_flags_computed_once_are_unchanged():
  combos = [(a, b) for a in (False, True) for b in (False, True)]
  for a, b in combos:
    out = jax.jit(_xla.flags_computed_once)(jnp.array(a), jnp.array(b))
    assert [bool(x) for x in out] == [a, b]
    assert all(x.dtype == jnp.bool_ and x.shape == () for x in out)
  # One flag alone: XLA would simplify a 1 x 1 product, so it is padded.
  for a in (False, True):
    (out,) = jax.jit(_xla.flags_computed_once)(jnp.array(a))
    assert bool(out) == a


def _optimised_program_lines(num_layers: int) -> int:
  """Lines of XLA:CPU's optimised program for a training step of GARO (given
  the loss) on an MLP of ``num_layers`` layers of width 8."""
  params = [{"w": jnp.eye(8), "b": jnp.zeros(8)} for _ in range(num_layers)]
  tx = garo_optax.garo()

  def step(params, state, x):
    def loss_fn(params):
      h = x
      for layer in params:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
      return jnp.mean(h**2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  compiled = jax.jit(step).lower(params, tx.init(params), jnp.ones((4, 8))).compile()
  return compiled.as_text().count("\n")


def test_the_safeguards_decisions_are_not_compiled_into_every_leaf():
  # Every leaf's update reads whether to skip the step or take the last one
  # back. Fused into each leaf's kernel, the safeguard's hundred scalar ops
  # made each further leaf cost 353 lines of optimised program; read from
  # one small kernel, 104 (jaxlib 0.10.2, XLA:CPU).
  per_leaf = (_optimised_program_lines(20) - _optimised_program_lines(10)) / 20
  assert per_leaf < 200, per_leaf


def test_the_controllers_decisions_compile_once_for_every_transformation():
  # The controller, bounds and safeguard are one jitted function of arrays
  # (`_transform._decide`): transformations that differ only in their rates
  # and bounds share its compilation, and a first update outside `jit` runs
  # it as one program rather than op by op. Either way, the same numbers.
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(5)}
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
  compiled = _transform._decide._cache_size()
  for lr, max_lr, max_effective in ((0.01, 0.5, 1.0), (0.05, 0.2, 0.7)):
    tx = garo_optax.garo(
      lr,
      momentum=0.5,
      granularity="per_leaf",
      total_steps=321,
      max_learning_rate=max_lr,
      max_effective_learning_rate=max_effective,
    )
    state = tx.init(params)
    for loss in (2.0, 1.5):
      value = jnp.float32(loss)
      eager = tx.update(grads, state, params, value=value)
      jitted = jax.jit(tx.update)(grads, state, params, value=value)
      chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-7)
      state = jitted[1]
  assert _transform._decide._cache_size() - compiled <= 1
