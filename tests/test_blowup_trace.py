"""Tests of ``benchmarks.blowup_trace``."""

import numpy as np

from benchmarks import blowup_trace


def test_trace_reports_the_steps_around_the_first_backoff():
  """A made-up run whose loss climbs and is cut back: the summary finds the
  first back-off, the window around it and the peak."""
  loss = np.array([4.0, 2.0, 1.0, 0.5, 5.0, 40.0, 3.0, 1.0])
  backoffs = np.array([0, 0, 0, 0, 0, 1, 1, 2], float)
  record = {"loss": loss, "backoffs": backoffs, "grad_norm": np.sqrt(loss)}
  s = blowup_trace.summary(record)
  assert s["first_backoff_step"] == 5 and s["backoffs"] == 2
  assert s["peak_over_first"] == 10.0
  steps = [x["step"] for x in s["around_first_backoff"]]
  assert steps == list(range(0, 8))
  assert "first_backoff_step" not in blowup_trace.summary(
    {"loss": loss, "backoffs": np.zeros(8)}
  )


def test_benchmark_runs_end_to_end(tmp_path):
  """Twenty steps on the quadratic: a JSON and a table, a row per seed, with
  per-leaf hyperparameters and a variant told the run's length too."""
  out = tmp_path / "trace_0.5"
  blowup_trace.main(
    [
      "--task",
      "quadratic",
      "--optimizers",
      "garo_init",
      "garo_per_leaf",
      "garo_total_steps",
      "--seeds",
      "2",
      "--steps",
      "20",
      "--out",
      str(out),
    ]
  )
  text = (tmp_path / "trace_0.5.md").read_text()
  assert (tmp_path / "trace_0.5.json").exists()
  assert text.count("| garo_init |") == 2
  assert text.count("| garo_per_leaf |") == 2
  assert text.count("| garo_total_steps |") == 2
  assert "--steps 20" in text
