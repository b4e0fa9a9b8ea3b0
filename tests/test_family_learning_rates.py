"""benchmarks.family_learning_rates, small."""

import json

import numpy as np
import pytest

from benchmarks import family_learning_rates


def test_records_a_final_loss_per_rate_and_seed(tmp_path):
  out = tmp_path / "flr"
  flags = ["--distribution", "tiny", "--families", "quadratic_d8_b4", "--steps", "20"]
  flags += ["--seeds", "2", "--learning-rates", "1e-3", "0.1", "--out", str(out)]
  family_learning_rates.main(flags)
  record = json.loads(out.with_suffix(".json").read_text())
  row = record["results"]["quadratic_d8_b4"]
  assert set(row) == {"0.001", "0.1"} and all(len(v) == 2 for v in row.values())
  assert np.all(np.isfinite(row["0.1"]))
  # On a quadratic, 20 steps at 0.1 go further down than at 1e-3.
  assert np.all(np.array(row["0.1"]) < np.array(row["0.001"]))
  assert "| `quadratic_d8_b4` |" in out.with_suffix(".md").read_text()


def test_unknown_family_is_refused(tmp_path):
  with pytest.raises(SystemExit):
    family_learning_rates.main(["--distribution", "tiny", "--families", "nope"])
