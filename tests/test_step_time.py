"""The update-cost benchmark runs end to end on a tiny model."""

import json

from benchmarks import step_time


def test_step_time_writes_every_optimizer_and_garo_keeps_one_buffer(tmp_path):
  out = tmp_path / "step_time"
  args = "--params 3000 --leaves 3 7 --steps 2 --repeats 3 --optimizers garo sgd adamw"
  step_time.main([*args.split(), "--out", str(out)])
  payload = json.loads(out.with_suffix(".json").read_text())
  assert [r["num_leaves"] for r in payload["results"]] == [3, 7]
  for result in payload["results"]:
    rows = result["optimizers"]
    assert set(rows) == {"garo", "sgd", "adamw"}
    for row in rows.values():
      assert row["step_ms"] > 0 and row["compile_s"] > 0 and row["compile_step_s"] > 0
    # One momentum buffer shaped like the params, plus a few scalars.
    assert 1.0 <= rows["garo"]["state_over_param_bytes"] < 1.05
    assert rows["adamw"]["state_over_param_bytes"] >= 2.0
  markdown = out.with_suffix(".md").read_text()
  assert "| garo |" in markdown and "x" in markdown.split("- garo:")[1]
