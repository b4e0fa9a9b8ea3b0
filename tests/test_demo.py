"""The main job (examples/digits_demo.py) runs end to end, briefly."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_digits_demo_prints_table_and_saves_plot(tmp_path):
  out = tmp_path / "demo.png"
  result = subprocess.run(
    [sys.executable, str(ROOT / "examples" / "digits_demo.py"), "--out", str(out)],
    env={**os.environ, "GARO_DEMO_STEPS": "50", "MPLBACKEND": "Agg"},
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  names = ("GARO", "GARO seeded", "GARO-AdamW", "SGD(0.01)", "Adam(1e-3)", "Prodigy")
  for name in names:
    assert f"| {name:>15} |" in result.stdout
  assert out.stat().st_size > 10_000
