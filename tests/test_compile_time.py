"""benchmarks.compile_time, small."""

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import compile_time


def test_records_a_compile_time_per_optimizer_and_size(tmp_path):
  out = tmp_path / "compile"
  compile_time.main(["--leaves", "2", "--repeats", "1", "--penalty", "--out", str(out)])
  record = json.loads(out.with_suffix(".json").read_text())
  assert record["penalty"] and record["repeats"] == 1
  assert list(record["results"]) == ["2"]
  row = record["results"]["2"]
  assert list(row) == list(compile_time.optimizers())
  assert all(seconds > 0 for seconds in row.values())
  assert "| 2 | " in out.with_suffix(".md").read_text()


def test_penalty_adds_a_term_per_leaf():
  params, loss_fn, batch = compile_time.mlp(4)
  _, penalised, _ = compile_time.mlp(4, penalty=True)
  squares = sum(float(jnp.sum(p**2)) for p in jax.tree.leaves(params))
  assert float(penalised(params, batch)) == pytest.approx(
    float(loss_fn(params, batch)) + 1e-4 * squares, rel=1e-6
  )


def test_odd_leaf_counts_are_refused(tmp_path):
  with pytest.raises(SystemExit):
    compile_time.main(["--leaves", "3", "--out", str(tmp_path / "x")])


def test_eager_table_times_a_first_update_in_a_fresh_process(tmp_path):
  # One real fresh process (the cheapest optimizer); the table from made-up
  # timings.
  assert compile_time.eager_seconds("sgd_momentum", 2) > 0
  names = list(compile_time.optimizers())
  timings = {name: float(i + 1) for i, name in enumerate(names)}
  eager = compile_time.measure([2], 1, timer=lambda name, n: timings[name])
  assert eager == {"2": timings}
  record = {
    "machine": "m",
    "command": "c",
    "penalty": False,
    "repeats": 1,
    "optimizers": names,
    "results": eager,
    "eager": eager,
  }
  text = compile_time.markdown(record)
  assert "first update outside `jit`" in text
  assert text.count(f"| 2 | 1.00 s ({1 / timings['adamw']:.2f}x)") == 2
