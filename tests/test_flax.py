"""GARO in Flax: linen ``TrainState`` and NNX loops, and checkpointing."""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import garo_optax

NUM_STEPS = 30


def _data():
  """A small regression: 32 examples, 4 inputs, 2 outputs of a fixed teacher."""
  inputs = jax.random.normal(jax.random.key(0), (32, 4))
  teacher = jax.random.normal(jax.random.key(1), (4, 2))
  return inputs, jnp.sin(inputs @ teacher)


def test_linen_train_state_loop():
  inputs, targets = _data()
  model = nn.Sequential([nn.Dense(16), nn.tanh, nn.Dense(2)])
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=model.init(jax.random.key(2), inputs),
    tx=garo_optax.garo(0.1, 0.9),
  )

  @jax.jit
  def train_step(state):
    def loss_fn(params):
      return jnp.mean((state.apply_fn(params, inputs) - targets) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(NUM_STEPS):
    state, loss = train_step(state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
  assert state.opt_state.count == NUM_STEPS


def test_nnx_optimizer_loop():
  inputs, targets = _data()

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(4, 16, rngs=rngs)
      self.out = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))

  model = MLP(nnx.Rngs(2))
  optimizer = nnx.Optimizer(model, garo_optax.garo(0.1, 0.9), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    def loss_fn(model):
      return jnp.mean((model(inputs) - targets) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, value=loss)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(NUM_STEPS)]
  assert losses[-1] < 0.5 * losses[0]
  opt_state = optimizer.opt_state
  assert opt_state.count[...] == NUM_STEPS
  # The loss reached GARO's running statistics through `value`.
  assert 0 < opt_state.feature_state.loss[...] < losses[0]
