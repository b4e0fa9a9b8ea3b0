"""What is ``garo_adamw``'s own: its bias correction, mask, options and
controller files (what it shares with ``garo`` is in ``test_conformance.py``)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax


def _zero_heads():
  controller = garo_optax.init_controller(jax.random.key(1), head_scale=1.0)
  return controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))


def test_bias_correction_follows_a_changing_b1(params):
  """Constant gradients have a first moment of exactly those gradients once
  corrected, whatever b1 did; so each update is ``-lr · g / (|g| + eps)``."""
  b1 = optax.linear_schedule(0.0, 0.95, 10)
  tx = garo_optax.garo_adamw(
    0.1, b1, eps=0.0, weight_decay=0.0, controller=_zero_heads()
  )
  grads = jax.tree.map(lambda p: jnp.full_like(p, -0.3), params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(12):
    updates, state = update(grads, state, params)
    chex.assert_trees_all_close(
      updates, jax.tree.map(lambda p: jnp.full_like(p, 0.1), params), rtol=1e-5
    )
  # The weight of the gradients in mu is 1 - Π b1_t.
  b1s = np.array([b1(t) for t in range(12)], np.float64)
  np.testing.assert_allclose(state.mu_weight, 1 - np.prod(b1s), rtol=1e-5)


def test_mask_decays_only_the_masked_params(params, train):
  mask = {"dense": {"kernel": True, "bias": False}, "scale": False}
  tx = garo_optax.garo_adamw(
    0.01, weight_decay=0.5, mask=mask, controller=_zero_heads()
  )
  reference = optax.adamw(0.01, weight_decay=0.5, mask=mask)
  final, _, _ = train(tx, params, 20)
  expected, _, _ = train(reference, params, 20)
  chex.assert_trees_all_close(final, expected, rtol=1e-5, atol=1e-6)
  # The mask mattered: decaying everything ends elsewhere.
  unmasked, _, _ = train(optax.adamw(0.01, weight_decay=0.5), params, 20)
  assert not np.allclose(unmasked["scale"], expected["scale"])


def test_mask_as_a_function_of_the_params(params, random_grads):
  def mask(p):
    return jax.tree.map(lambda x: x.ndim > 1, p)

  tx = garo_optax.garo_adamw(0.1, weight_decay=1.0, mask=mask, controller="init")
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: only the decay moves the params, and only the kernel's.
  assert float(jnp.abs(updates["dense"]["kernel"]).max()) > 0
  assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0
  assert float(jnp.abs(updates["scale"])) == 0


def test_bad_mask_is_refused(params):
  tx = garo_optax.garo_adamw(mask={"dense": True}, controller="init")
  with pytest.raises(ValueError, match="mask"):
    tx.update(params, tx.init(params), params)
  tx = garo_optax.garo_adamw(mask=jax.tree.map(lambda _: 1, params), controller="init")
  with pytest.raises(TypeError, match="mask"):
    tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
  ("kwargs", "error", "name"),
  [
    ({"b2": 1.0}, ValueError, "b2"),
    ({"b2": -0.1}, ValueError, "b2"),
    ({"eps": -1e-8}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"b2": optax.constant_schedule(0.99)}, TypeError, "b2"),
    ({"b2": {"a": 0.99}}, TypeError, "b2"),
  ],
)
def test_fixed_options_are_checked(kwargs, error, name):
  with pytest.raises(error, match=name):
    garo_optax.garo_adamw(**kwargs, controller="init")


def test_max_effective_learning_rate_is_garos_only():
  with pytest.raises(TypeError, match="max_effective_learning_rate"):
    garo_optax.garo_adamw(max_effective_learning_rate=1.0)


def test_hyperparams_and_callback_name_b1(params, random_grads):
  seen = []
  tx = garo_optax.garo_adamw(
    3e-3, 0.8, controller="init", callback=lambda step, info: seen.append(info)
  )
  state = tx.init(params)
  assert garo_optax.hyperparams(state) == pytest.approx(
    {"learning_rate": 3e-3, "b1": 0.8, "weight_decay": 1e-4}, rel=1e-5
  )
  grads = jax.tree.map(lambda g: g[0], random_grads(jax.random.key(0), params, 1))
  _, state = jax.jit(tx.update)(grads, state, params)
  jax.effects_barrier()
  assert set(seen[0]) == {
    "learning_rate",
    "b1",
    "weight_decay",
    "skipped",
    "backoffs",
    "spikes",  # always 0: garo_adamw's safeguard has no spike rule
    "diverged",
  }
  assert float(optax.tree.get(state, "b1")) == pytest.approx(float(seen[0]["b1"]))


def test_controller_files_name_what_they_drive(tmp_path):
  controller = garo_optax.init_controller(jax.random.key(0), hidden_size=4)
  path = tmp_path / "sgd.npz"
  garo_optax.save_controller(path, controller)  # trained for garo
  with pytest.raises(ValueError, match="trained for garo, not garo_adamw"):
    garo_optax.garo_adamw(controller=path)
  garo_optax.garo(controller=path)  # its own transformation reads it
  # Read without asking, the weights are there to use anyway.
  loaded = garo_optax.load_controller(path)
  garo_optax.garo_adamw(controller=loaded)
  adamw_path = tmp_path / "adamw.npz"
  garo_optax.save_controller(adamw_path, controller, optimizer="garo_adamw")
  with pytest.raises(ValueError, match="trained for garo_adamw, not garo"):
    garo_optax.garo(controller=adamw_path)
  chex.assert_trees_all_equal(
    garo_optax.load_controller(adamw_path, optimizer="garo_adamw"), loaded
  )
  with pytest.raises(ValueError, match="optimizer"):
    garo_optax.save_controller(tmp_path / "x.npz", controller, optimizer="adam")


def test_a_gradient_spike_alone_does_not_back_off(params):
  """One step's gradient norm jumping 30-fold against the last step: garo
  takes it as a spike (clipped, without momentum) and backs off only when the
  next step jumps again, against the spike's step, as an overshoot does;
  garo_adamw does neither, as AdamW's step does not grow with the gradient
  (near zero loss, minibatch spikes would cut its learning rate again and
  again)."""
  grads = jax.tree.map(jnp.ones_like, params)
  spike = jax.tree.map(lambda g: -30.0 * g, grads)
  overshoot = jax.tree.map(lambda g: 30.0 * g, grads)

  def backoffs(tx, jumps):
    state, update = tx.init(params), jax.jit(tx.update)
    for g in [grads] * 20 + jumps:
      _, state = update(g, state, params)
    return int(state.safeguard.backoffs)

  garo = garo_optax.garo(0.01, controller="init")
  adamw = garo_optax.garo_adamw(1e-3, controller="init")
  assert backoffs(garo, [spike]) == 0
  assert backoffs(garo, [spike, overshoot]) == 1
  assert backoffs(adamw, [spike]) == 0
  assert backoffs(adamw, [spike, overshoot]) == 0
