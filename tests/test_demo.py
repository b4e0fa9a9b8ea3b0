"""The main job (examples/digits_demo.py) runs end to end, briefly."""

import pathlib
import runpy
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_digits_demo_prints_table_and_saves_plot(tmp_path, monkeypatch, capsys):
  # As `python examples/digits_demo.py --out ...` runs it, in this process (a
  # fresh one would only import JAX and Flax again).
  script = ROOT / "examples" / "digits_demo.py"
  out = tmp_path / "demo.png"
  monkeypatch.setenv("GARO_DEMO_STEPS", "50")
  monkeypatch.setattr(sys, "argv", [str(script), "--out", str(out)])
  runpy.run_path(str(script), run_name="__main__")
  stdout = capsys.readouterr().out
  names = ("GARO", "GARO seeded", "GARO-AdamW", "SGD(0.01)", "Adam(1e-3)", "Prodigy")
  for name in names:
    assert f"| {name:>15} |" in stdout
  assert out.stat().st_size > 10_000
