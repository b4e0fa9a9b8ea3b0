"""The character-transformer benchmark, small: its results, and its resumption."""

import json

import garo_optax
from benchmarks import char_transformer

SMALL = ["--steps", "4", "--eval-every", "2", "--width", "16", "--depth", "1"]
SMALL += ["--heads", "2", "--context", "8", "--batch-size", "4"]


def _record(out):
  return json.loads(out.with_suffix(".json").read_text())


def test_runs_are_written_one_by_one_and_resumed(tmp_path):
  out = tmp_path / "ct"
  flags = [*SMALL, "--out", str(out)]
  char_transformer.main([*flags, "--seeds", "0", "--optimizers", "adamw", "garo_adamw"])
  first = _record(out)
  assert first["complete"] and first["num_params"] > 0
  assert set(first["results"]) == {
    *(f"adamw@{lr:g}" for lr in char_transformer.ADAMW_GRID),
    "garo_adamw@0.001",
  }
  for r in first["results"].values():
    assert r["seeds"] == [0] and len(r["valid_loss"][0]) == 2 and not r["non_finite"]
  # GARO's learning rate is recorded (a mean per evaluation), AdamW has none.
  (curve,) = first["results"]["garo_adamw@0.001"]["learning_rate_curve"]
  assert len(curve) == 2 and all(0 < lr < 1 for lr in curve)
  assert "learning_rate_curve" not in first["results"]["adamw@0.001"]
  assert "| garo_adamw@0.001 | 1 |" in out.with_suffix(".md").read_text()
  assert out.with_suffix(".png").stat().st_size > 0

  # Another seed for garo_adamw only: its seed 0 and AdamW's runs are kept.
  char_transformer.main([*flags, "--seeds", "0", "1", "--optimizers", "garo_adamw"])
  second = _record(out)
  garo = second["results"]["garo_adamw@0.001"]
  assert garo["seeds"] == [0, 1]
  assert (
    garo["final_valid_loss"][0]
    == first["results"]["garo_adamw@0.001"]["final_valid_loss"][0]
  )
  assert second["results"]["adamw@0.001"] == first["results"]["adamw@0.001"]

  # A controller file runs as garo_adamw would with it: the shipped one's,
  # saved, gives the default's losses.
  path = str(tmp_path / "shipped.npz")
  garo_optax.save_controller(
    path, garo_optax.pretrained.load("garo_adamw"), optimizer="garo_adamw"
  )
  char_transformer.main([*flags, "--seeds", "0", "--optimizers", "--controllers", path])
  from_file = _record(out)["results"][f"garo_adamw[{path}]@0.001"]
  assert from_file["valid_loss"] == garo["valid_loss"][:1]

  # Another model starts anew.
  flags[flags.index("--width") + 1] = "8"
  char_transformer.main([*flags, "--seeds", "0", "--optimizers", "garo_adamw"])
  assert set(_record(out)["results"]) == {"garo_adamw@0.001"}
