"""GARO's fast step equals the algorithm written out plainly.

The reference is the step as ``garo``'s docstring states it, written for
clarity, not speed: the sums Σg², Σm², Σg·m as separate ``optax.tree``
reductions, the features of ``_features.FEATURE_NAMES`` computed one by one,
``h_t = GRU(x_t, h_{t-1})``, the heads (softplus, tanh, softplus of
``W h_t + b``) and the running mean of their offsets from the starting values
(its steps clipped; the learning-rate offset moves the effective step
``η/(1 - μ)``), then SGD with momentum leaf by leaf,
``m_t = μ_t m_{t-1} + g_t + λ_t θ_t`` and ``u_t = -η_t m_t``. The controller's
gradient through the fast sums is compared with that through plain sums too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax import (
  _controller,
  _features,
  _groups,
  _gru,
  _statistics,
)

CLIP = _features.FEATURE_CLIP
FAST, SLOW = _features.EMA_DECAY, _features.SLOW_EMA_DECAY
DECAY = _controller.OUTPUT_DECAY
MAX_FALL = np.array(_controller.MAX_OFFSET_STEP)
MAX_RISE = np.array(_controller.MAX_OFFSET_RISE)


def _softplus_inverse(x):
  return float(np.log(np.expm1(x)))


def reference_run(
  controller, lr0, momentum0, wd0, params, grads_seq, losses, total_steps=None
):
  """Runs GARO's steps the slow, obvious way; returns updates and hyperparams."""
  bias = jnp.array(
    [
      _softplus_inverse(lr0),
      np.arctanh(momentum0),
      _softplus_inverse(wd0) if wd0 > 0 else -20.0,
    ],
    jnp.float32,
  )
  hidden = jnp.zeros(controller.hidden_size)
  offsets = np.zeros(3)
  mu = jax.tree.map(jnp.zeros_like, params)
  lr_ref, mom_ref, wd_ref = (
    float(jax.nn.softplus(bias[0])),
    float(jnp.tanh(bias[1])),
    float(jax.nn.softplus(bias[2])),
  )
  lr_prev = lr_ref
  ema_slow = ema_cos = ema_loss = slow_loss = None
  variance = 0.0
  outputs = []
  for t, (grads, loss) in enumerate(zip(grads_seq, losses, strict=True)):
    g_norm = optax.tree.norm(grads)
    m_norm = optax.tree.norm(mu)
    cos = float(optax.tree.vdot(grads, mu)) / max(float(g_norm) * float(m_norm), 1e-38)
    log_g = float(jnp.log(g_norm))
    if t == 0:
      ema_slow, ema_cos, ema_loss, slow_loss = log_g, cos, loss, loss
    ema_cos = FAST * ema_cos + (1 - FAST) * cos
    variance = SLOW * variance + (1 - SLOW) * (loss - ema_loss) ** 2
    ema_loss = FAST * ema_loss + (1 - FAST) * loss
    slow_loss = SLOW * slow_loss + (1 - SLOW) * loss
    features = np.array(
      [
        log_g - ema_slow,
        ema_cos,
        0.0 if t == 0 else (ema_loss - slow_loss) / abs(slow_loss),
        np.sqrt(variance) / abs(slow_loss),
        np.log(lr_prev) - np.log(lr_ref),
        np.log1p(t) / 10.0,
        0.0 if total_steps is None else min(t / total_steps, 1.0),
      ]
    )
    ema_slow = SLOW * ema_slow + (1 - SLOW) * log_g
    x = jnp.asarray(np.clip(features, -CLIP, CLIP), jnp.float32)
    hidden = _gru.gru_cell(controller.gru, x, hidden)
    pre = hidden @ controller.head_kernel + bias
    target = np.array(
      [
        np.log(float(jax.nn.softplus(pre[0])) / lr_ref),
        float(jnp.tanh(pre[1])) - mom_ref,
        np.log(float(jax.nn.softplus(pre[2])) / wd_ref),
      ]
    )
    offsets = offsets + np.clip((1 - DECAY) * (target - offsets), -MAX_FALL, MAX_RISE)
    mom = min(max(mom_ref + offsets[1], 0.0), 1.0)
    # the learning-rate offset moves the effective step lr / (1 - momentum)
    lr = lr_ref * np.exp(offsets[0]) * (1 - mom) / (1 - mom_ref)
    wd = wd_ref * np.exp(offsets[2])
    mu = jax.tree.map(
      lambda m, g, p, mom=mom, wd=wd: mom * m + g + wd * p, mu, grads, params
    )
    updates = jax.tree.map(lambda m, lr=lr: -lr * m, mu)
    params = optax.apply_updates(params, updates)
    lr_prev = float(lr)
    outputs.append((updates, (lr, mom, wd)))
  return outputs


@pytest.mark.parametrize(
  "momentum, weight_decay, total_steps", [(0.0, 0.0, None), (0.9, 1e-3, 8)]
)
def test_fast_path_matches_reference(momentum, weight_decay, total_steps):
  keys = jax.random.split(jax.random.key(0), 5)
  params = {
    "a": jax.random.normal(keys[0], (7, 5)),
    "b": {"c": jax.random.normal(keys[1], (11,)), "d": jax.random.normal(keys[2], ())},
    "e": jax.random.normal(keys[4], (4000,)) * 0.1,
  }
  steps = 12
  grads_seq = [
    jax.tree.map(
      lambda p, k=k, i=i: jax.random.normal(k, p.shape) * (1.0 + 0.3 * i),
      params,
    )
    for i, k in enumerate(jax.random.split(keys[3], steps))
  ]
  losses = [2.0 / (1 + i) + 0.1 * (i % 3) for i in range(steps)]
  controller = garo_optax.init_controller(jax.random.key(7), head_scale=1.0)

  expected = reference_run(
    controller, 0.05, momentum, weight_decay, params, grads_seq, losses, total_steps
  )
  tx = garo_optax.garo(
    0.05, momentum, weight_decay, controller=controller, total_steps=total_steps
  )
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grads, loss, (want_updates, want_hp) in zip(
    grads_seq, losses, expected, strict=True
  ):
    updates, state = update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
      updates,
      want_updates,
    )
    got = garo_optax.hyperparams(state)
    for name, want in zip(
      ("learning_rate", "momentum", "weight_decay"), want_hp, strict=True
    ):
      np.testing.assert_allclose(got[name], want, rtol=2e-5, atol=1e-7)
  # The controller moved the hyperparameters, so the comparison has teeth.
  assert abs(float(got["learning_rate"]) - 0.05) > 1e-3


def _plain_group_statistics(grad_leaves, mu_leaves, groups):
  rows = [
    jnp.stack([jnp.sum(g * g), jnp.sum(m * m), jnp.sum(g * m)])
    for g, m in zip(grad_leaves, mu_leaves, strict=True)
  ]
  return _groups.group_sums(jnp.stack(rows), groups)


# Per leaf with -m slow: the per-leaf statistics are checked in test_statistics.
@pytest.mark.parametrize(
  "granularity", ["global", pytest.param("per_leaf", marks=pytest.mark.slow)]
)
def test_controller_gradient_through_steps_on_given_gradients(granularity, monkeypatch):
  # Given gradients have no tangents while the momenta do: the fast sums must
  # differentiate as plain sums do (JAX's own rule for a variadic reduction
  # fails there). Leaves in rows, in halves, in a batch and alone.
  shapes = [(1024, 512), (2**16,), (3, 5), (3, 5), (7,)]
  keys = jax.random.split(jax.random.key(5), len(shapes))
  params = {
    f"p{i}": jax.random.normal(k, s)
    for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
  }
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(p), params)
  controller = garo_optax.init_controller(jax.random.key(6), head_scale=1.0)

  def loss(controller, params, grads):
    tx = garo_optax.garo(
      0.1, momentum=0.5, controller=controller, granularity=granularity
    )
    p, state = params, tx.init(params)
    for _ in range(3):
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return sum(jnp.sum(x) for x in jax.tree.leaves(p))

  fast = jax.jit(jax.grad(loss))(controller, params, grads)
  monkeypatch.setattr(_statistics, "_local_group_statistics", _plain_group_statistics)
  plain = jax.jit(jax.grad(loss))(controller, params, grads)
  # Up to float32 rounding, which this loss (a sum over 2^19 params) scales up.
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain), strict=True):
    scale = float(jnp.max(jnp.abs(b)))
    assert scale > 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def test_state_is_one_buffer_per_param_and_does_not_recompile():
  params = {f"w{i}": jnp.ones((16, 8)) for i in range(5)}
  tx = garo_optax.garo()
  state = tx.init(params)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  extra = state_bytes - sum(x.nbytes for x in jax.tree.leaves(state.mu))
  assert sum(x.nbytes for x in jax.tree.leaves(state.mu)) == param_bytes
  assert extra < 256  # hidden state, hyperparameters, counters
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(None)
    updates, state = tx.update(params, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    params, state = step(params, state)
  assert len(traces) == 1
