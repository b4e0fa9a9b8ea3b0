"""The suite's tasks whose data the project makes itself."""

import jax
import numpy as np

from benchmarks.tasks import validation


def test_addition_lm_is_sums_written_out():
  task = validation.addition_lm()
  symbols = np.array(list("\n+0123456789="))  # sorted, as the ids are
  text = "".join(symbols[np.asarray(task.train)])
  lines = text.split("\n")[1:-1]  # whole lines only
  assert len(lines) > 10_000
  for line in lines[:500]:
    a, rest = line.split("+")
    b, total = rest.split("=")
    assert int(a) + int(b) == int(total) and max(int(a), int(b)) < 1000
  batch = task.sample(jax.random.key(0), task.train)
  assert batch.shape == (
    validation.ADDITION_BATCH_SIZE,
    validation.ADDITION_CONTEXT + 1,
  )
  assert task.test.shape == (64, validation.ADDITION_CONTEXT + 1)
  # At initialisation the model knows nothing: about log(13) nats a character.
  # (Jitted: a transformer's init and loss run op by op compile ~150 ops.)
  params = jax.jit(task.init)(jax.random.key(0))
  assert abs(float(jax.jit(task.loss)(params, task.test)) - np.log(13)) < 0.5
