"""benchmarks.embed_scale, small."""

import json

import numpy as np

from benchmarks import embed_scale
from garo_optax import pretrained

SHIPPED = str(pretrained.FILES["garo_adamw"])


def test_records_losses_and_rates_per_scale_and_seed(tmp_path, monkeypatch):
  monkeypatch.setattr(embed_scale, "ARCHITECTURES", ((16, 1, 2, 4, 8, 2),))
  out = tmp_path / "embed"
  flags = ["--embed-scales", "0.02", "1", "--steps", "10", "--seeds", "1"]
  embed_scale.main([*flags, "--controllers", SHIPPED, "--out", str(out)])
  record = json.loads(out.with_suffix(".json").read_text())
  assert list(record["results"]) == [
    "w16_d1_h2_c4_v8_b2 embed 0.02",
    "w16_d1_h2_c4_v8_b2 embed 1",
  ]
  for row in record["results"].values():
    assert list(row) == ["adamw(1e-3)", "garo_adamw(1e-3)", f"garo_adamw[{SHIPPED}]"]
    assert all(
      len(r["loss"]) == 1 and np.all(np.isfinite(r["loss"])) for r in row.values()
    )
    assert row["adamw(1e-3)"]["learning_rate"] == [None]
    assert np.all(np.array(row["garo_adamw(1e-3)"]["learning_rate"]) > 0)
    # The shipped controller's file, built as the default is, is the default.
    assert row[f"garo_adamw[{SHIPPED}]"] == row["garo_adamw(1e-3)"]
  # The scale reaches the problem: another start, other losses.
  small, large = record["results"].values()
  assert small["adamw(1e-3)"]["loss"] != large["adamw(1e-3)"]["loss"]
  assert "| w16_d1_h2_c4_v8_b2 embed 0.02 | `adamw(1e-3)` |" in (
    out.with_suffix(".md").read_text()
  )
