"""Shared test problems: a small params pytree, a tiny regression, random leaves."""

import functools
import os
import subprocess
import sys

# Compiling is most of this suite's time on a CPU. Two XLA flags make it about
# 40% faster without changing the maths (the rounding may differ, so
# tests/test_trajectories.py records its reference under them): no LLVM
# optimisations (XLA's own passes, fusion included, still run), and XLA:CPU's
# loop emitters rather than its newer fusion emitters, which compiled a GARO
# step in 0.18 s instead of 0.42 s (jaxlib 0.10.2). Set here, before JAX starts
# its backend; child processes (pytest-xdist's workers, notebook kernels, the
# sharded checks) inherit them.
FAST_COMPILE_FLAGS = (
  "--xla_backend_optimization_level=0",
  "--xla_cpu_use_fusion_emitters=false",
)


def _accepted(xla_flags: str) -> bool:
  """Whether JAX starts with ``xla_flags``: XLA aborts the process on a flag
  its version does not know, so a child process tries them."""
  probe = subprocess.run(
    [sys.executable, "-c", "import jax; jax.devices('cpu')"],
    env=dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu"),
    capture_output=True,
    check=False,
  )
  return probe.returncode == 0


def _with_fast_compile_flags(xla_flags: str) -> str:
  if "xla_backend_optimization_level" in xla_flags:  # the user's, or inherited
    return xla_flags
  fast = " ".join(filter(None, [xla_flags, *FAST_COMPILE_FLAGS]))
  if _accepted(fast):
    return fast
  # A jaxlib without the emitters' flag: LLVM's optimisations alone.
  return " ".join(filter(None, [xla_flags, FAST_COMPILE_FLAGS[0]]))


os.environ["XLA_FLAGS"] = _with_fast_compile_flags(os.environ.get("XLA_FLAGS", ""))

# JAX after the flags.
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def params():
  """A matrix, a vector and a scalar leaf, in float32."""
  return {
    "dense": {
      "kernel": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
      "bias": jnp.full((4,), 0.1, jnp.float32),
    },
    "scale": jnp.array(1.5, jnp.float32),
  }


@pytest.fixture
def loss_fn():
  """Mean squared error of ``scale * tanh(x W + b)`` against a fixed teacher."""
  inputs = jax.random.normal(jax.random.key(0), (16, 3))
  teacher = jax.random.normal(jax.random.key(1), (3, 4))
  targets = 0.8 * jnp.tanh(inputs @ teacher)

  def loss(params):
    hidden = inputs @ params["dense"]["kernel"] + params["dense"]["bias"]
    return jnp.mean((params["scale"] * jnp.tanh(hidden) - targets) ** 2)

  return loss


@pytest.fixture
def train(loss_fn):
  """``train(tx, params, num_steps) -> (params, state, losses)``.

  Runs ``num_steps`` of ``tx`` on ``loss_fn`` in one jitted scan, passing the
  loss as ``value``; ``losses[t]`` is the loss before step ``t``.
  """

  def run(tx, params, num_steps):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = tx.update(grads, state, params, value=loss)
      return (optax.apply_updates(params, updates), state), loss

    scan = jax.jit(lambda carry: jax.lax.scan(step, carry, length=num_steps))
    (params, state), losses = scan((params, tx.init(params)))
    return params, state, losses

  return run


@functools.partial(jax.jit, static_argnums=2)
def _random_grads(key, params, num_steps):
  keys = jax.random.split(key, num_steps)
  return jax.vmap(lambda k: optax.tree.random_like(k, params))(keys)


@pytest.fixture
def random_grads():
  """``random_grads(key, params, num_steps) -> grads`` with a leading step axis."""
  return _random_grads


def _grad_and_mu(shape=(3, 4), dtype=jnp.float32):
  g_key, m_key = jax.random.split(jax.random.key(0))
  return (
    jax.random.normal(g_key, shape).astype(dtype),
    jax.random.normal(m_key, shape).astype(dtype),
  )


@pytest.fixture
def grad_and_mu():
  """``grad_and_mu(shape=(3, 4), dtype=float32) -> (grad, mu)``, random leaves."""
  return _grad_and_mu
