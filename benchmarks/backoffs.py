"""The safeguard's back-offs with and without its one-step jump test.

``garo_adamw()`` (the shipped controller, starting at 1e-3) trains the suite's
``mlp_digits`` over 3 seeds, once as shipped (no jump test) and once with the
jump test of ``garo()``'s safeguard, and so does the first controller, trained
with the jump test (``results/meta_adamw/with_jump_test/seed2.npz``); prints
and writes
``results/backoffs.json``: per seed, the back-offs and the full-batch train
loss at the end. Usage: ``python -m benchmarks.backoffs``.
"""

import json
import pathlib

import jax
import optax

import garo_optax
from benchmarks import optimizers, tasks
from garo_optax import _transform

RESULTS = pathlib.Path(__file__).parent / "results" / "backoffs.json"


FIRST = pathlib.Path(__file__).parent / "results/meta_adamw/with_jump_test/seed2.npz"


def run(task, jump_test: bool, seed: int, controller=None) -> dict:
  # The jump test is a field of garo_adamw's Rule: set it on the way in.
  original = _transform.transformation

  def with_jump_test(rule, *args, **kwargs):
    return original(rule._replace(jump_test=jump_test), *args, **kwargs)

  _transform.transformation = with_jump_test
  try:
    # A controller from a file gets the shipped one's defaults.
    tx = garo_optax.garo_adamw(
      1e-3,
      controller=controller,
      **(optimizers.shipped_defaults("garo_adamw") if controller else {}),
    )
  finally:
    _transform.transformation = original
  params = task.init(jax.random.key(seed))

  @jax.jit
  def train(params, key):
    def step(carry, k):
      p, s = carry
      loss, g = jax.value_and_grad(task.loss)(p, task.sample(k, task.train))
      u, s = tx.update(g, s, p, value=loss)
      return (optax.apply_updates(p, u), s), loss

    keys = jax.random.split(key, task.steps)
    (p, s), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
    return task.loss(p, task.train_eval), s.safeguard.backoffs

  loss, backoffs = train(params, jax.random.key(100 + seed))
  return {"seed": seed, "final_train_loss": float(loss), "backoffs": int(backoffs)}


def main() -> None:
  task = tasks.get("mlp_digits")
  out = {
    "command": "python -m benchmarks.backoffs",
    "machine": f"jax {jax.__version__}, {jax.devices()[0].platform}",
    "task": task.name,
    "steps": task.steps,
    "garo_adamw": [run(task, False, s) for s in range(3)],
    "garo_adamw_with_jump_test": [run(task, True, s) for s in range(3)],
    # The first controller, trained with the jump test, run as it was trained.
    "first_controller_with_jump_test": [
      run(task, True, s, str(FIRST)) for s in range(3)
    ],
  }
  print(json.dumps(out, indent=1))
  RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
