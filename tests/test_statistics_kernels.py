"""The statistics benchmark gives GARO's sums every way; the GPU script runs."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import statistics_kernels


@pytest.mark.parametrize("name", list(statistics_kernels.FORMULATIONS))
def test_each_formulation_computes_the_three_sums(name):
  # Odd sizes, a size from which a lone leaf is summed in halves, and a pair
  # of one size, so that every branch of every formulation runs.
  shapes = [(3, 5), (2**16,), (7,), (4, 4), (16,)]
  keys = jax.random.split(jax.random.key(0), len(shapes))
  pairs = [jax.random.normal(k, (2, *s)) for k, s in zip(keys, shapes, strict=True)]
  grads, mus = [p[0].reshape(-1) for p in pairs], [p[1].reshape(-1) for p in pairs]
  g, m = (np.concatenate([np.asarray(x, np.float64) for x in t]) for t in (grads, mus))
  want = np.array([g @ g, m @ m, g @ m])
  got = jax.jit(statistics_kernels.FORMULATIONS[name])(grads, mus)
  # float32 sums: within 1e-4 of the sums of absolute terms.
  np.testing.assert_array_less(np.abs(np.asarray(got) - want), 1e-4 * (g @ g + m @ m))


def test_benchmark_writes_every_formulation_and_the_yardstick(tmp_path):
  out = tmp_path / "statistics_kernels"
  statistics_kernels.main(
    [*"--params 3000 --leaves 3 7 --steps 2 --repeats 3 --out".split(), str(out)]
  )
  payload = json.loads(out.with_suffix(".json").read_text())
  assert [r["num_leaves"] for r in payload["results"]] == [3, 7]
  for result in payload["results"]:
    rows = result["formulations"]
    assert set(rows) == {*statistics_kernels.FORMULATIONS, "elementwise"}
    assert all(row["step_ms"] > 0 and row["compile_s"] > 0 for row in rows.values())
  assert "| garo | " in out.with_suffix(".md").read_text()
  assert payload["command"].endswith(str(out))


# With -m slow: the two benchmarks it calls are tested above and in
# test_step_time.py; this checks the script's plumbing of their arguments.
@pytest.mark.slow
def test_gpu_checks_script_runs_small(tmp_path):
  # The script meant for a GPU machine, on this one and tiny: it must not rot.
  small = "--params 3000 --leaves 3 --steps 2 --repeats 2".split()
  script = pathlib.Path(__file__).parents[1] / "benchmarks" / "gpu_checks.sh"
  env = {
    **os.environ,
    "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}",
  }
  subprocess.run(
    ["bash", str(script), str(tmp_path), *small],
    check=True,
    cwd=script.parents[1],
    env=env,
    capture_output=True,
  )
  written = sorted(p.name for p in tmp_path.iterdir())
  stems = [
    "statistics_kernels_gpu",
    "step_time_gpu_1000_leaves",
    "step_time_gpu_100_leaves",
  ]
  assert written == sorted(f"{s}.{ext}" for s in stems for ext in ("json", "md"))
