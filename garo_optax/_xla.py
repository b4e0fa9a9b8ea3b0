"""Workarounds for how XLA compiles GARO's step, each explained where it is.

None of them changes a result: each only changes how XLA sees the program,
so that a model with many leaves compiles in less time. Should a later XLA
see through one of them, the results stay the same and only the gain is
lost. Where each gain was measured: ``benchmarks/results/step_time_cpu.md``
(``python -m benchmarks.step_time``) for the step, ``benchmarks/README.md``
for the analysis.
"""

import jax
import jax.numpy as jnp

# Group indices per reduction in group_indices: one reduction with 1000
# outputs took 1.6 s to compile.
_INDEX_CHUNK = 16


def _add(a, b):
  return tuple(x + y for x, y in zip(a, b, strict=True))


def computed_once(*values: jax.Array) -> tuple[jax.Array, ...]:
  """``values`` (each of shape ``(G,)``), computed once rather than per leaf.

  XLA:CPU fuses the cheap scalar ops that make the hyperparameters into every
  leaf's update kernel, so a model with many leaves compiles that chain once
  per leaf. A product with the identity, which XLA neither fuses into its
  consumers nor simplifies away, makes them one small kernel whose output
  every leaf reads: one step of the 1000-leaf model of
  `benchmarks/step_time.py` took 5.1 s instead of 7.0 s in ``.compile()``
  (one run each). The product is exact for finite values
  (``HIGHEST`` precision: no reduced-precision passes on GPU or TPU); a
  non-finite one makes the others NaN too, which only turns a diverged step
  into another diverged step. Should a later XLA simplify the product away,
  the results stay the same and only the compile-time gain is lost.
  """
  stacked = jnp.stack(values, axis=-1)
  # jnp.eye, built from iotas: XLA does simplify a product with a literal
  # identity (np.eye) away, and the chain lands in every leaf's kernel again.
  identity = jnp.eye(len(values), dtype=stacked.dtype)
  out = jnp.matmul(stacked, identity, precision=jax.lax.Precision.HIGHEST)
  return tuple(out[..., k] for k in range(len(values)))


def flags_computed_once(*flags: jax.Array) -> tuple[jax.Array, ...]:
  """Boolean scalars ``flags``, computed once rather than per leaf.

  The safeguard's decisions (skip the step, take the last one back) end a
  chain of about a hundred scalar ops over the statistics and the loss, and
  every leaf's update reads them: XLA:CPU fused the chain into every leaf's
  kernel. Made a product with the identity (:func:`computed_once`, exact for
  0 and 1), they are computed once and read by every leaf
  (``benchmarks/results/compile_time/``). Not in the hyperparameters'
  product: a non-finite learning rate makes every column of it NaN, and a
  step with one is a step to skip.
  """
  values = [jnp.reshape(f, (1,)).astype(jnp.float32) for f in flags]
  # A flag alone gets a zero column: XLA rewrites a product of 1 x 1
  # matrices as a multiply, which it fuses.
  padding = [jnp.zeros((1,), jnp.float32)] if len(values) == 1 else []
  out = computed_once(*values, *padding)
  return tuple(x[0] > 0.5 for x in out[: len(flags)])


def group_indices(count: jax.Array, num_groups: int) -> list[jax.Array]:
  """``0, ..., num_groups - 1`` as int32 scalars that XLA cannot fold.

  A leaf's update that reads its group's hyperparameters at a constant index
  has the index compiled into its kernel: with a group per leaf, no two
  leaves' kernels were alike, and XLA:CPU compiled two per leaf (2000 LLVM
  modules, 20 s, for 1000 leaves). Read at these indices, the kernels of
  leaves of one shape are one kernel: one step of
  ``benchmarks/step_time.py``'s 1000 leaves with ``granularity="per_leaf"``
  compiled in 13.8 s instead of 27.6 s (``garo_per_leaf`` in
  ``benchmarks/results/step_time_cpu.md``, now and before).

  Each index is its own buffer, an output of a small variadic reduction of a
  zero XLA cannot see as one (``count < 0``): ``[k + zero, zero]`` for index
  ``k`` (a reduction of one entry XLA folds away, index and all), and
  ``_INDEX_CHUNK`` indices per reduction (one with 1000 outputs took 1.6 s to
  compile). Should a
  later XLA see through the zero, the results stay the same and only the
  compile-time gain is lost.
  """
  zero = (count < 0).astype(jnp.int32)
  indices = []
  for start in range(0, num_groups, _INDEX_CHUNK):
    chunk = range(start, min(num_groups, start + _INDEX_CHUNK))
    pairs = tuple(jnp.stack([zero + k, zero]) for k in chunk)
    init = (jnp.zeros((), jnp.int32),) * len(pairs)
    indices += jax.lax.reduce(pairs, init, _add, (0,))
  return indices


def take(values: jax.Array, index: jax.Array) -> jax.Array:
  return jax.lax.dynamic_index_in_dim(values, index, keepdims=False)
