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
