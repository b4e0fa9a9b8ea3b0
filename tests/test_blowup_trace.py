"""Tests of ``benchmarks.blowup_trace``."""

import numpy as np

from benchmarks import blowup_trace
from garo_optax._safeguard import NO_CAP


def test_trace_reports_the_steps_around_the_first_backoff():
  """A made-up run whose loss climbs and is cut back: the summary finds the
  first back-off, the window around it and the peak."""
  loss = np.array([4.0, 2.0, 1.0, 0.5, 5.0, 40.0, 3.0, 1.0])
  backoffs = np.array([0, 0, 0, 0, 0, 1, 1, 2], float)
  learning_rate = np.array([0.1, 0.2, 0.4, 0.8, 0.8, 0.4, 0.1, 1e-3])
  no_cap = np.full(8, NO_CAP)
  cap = np.where(backoffs > 0, 0.2, NO_CAP)
  record = {
    "loss": loss,
    "backoffs": backoffs,
    "grad_norm": np.sqrt(loss),
    "learning_rate": learning_rate,
    "cap": cap,
  }
  s = blowup_trace.summary(record)
  assert s["first_backoff_step"] == 5 and s["backoffs"] == 2
  assert s["peak_over_first"] == 10.0
  # The rate ends 200 times below the cap: the controller's own cut.
  assert s["final_learning_rate"] == 1e-3 and s["final_cap"] == 0.2
  steps = [x["step"] for x in s["around_first_backoff"]]
  assert steps == list(range(0, 8))
  never = blowup_trace.summary({**record, "backoffs": np.zeros(8), "cap": no_cap})
  assert "first_backoff_step" not in never and never["final_cap"] is None


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
