"""The README's code runs as written, and `benchmarks.readme` has a CLI."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax.numpy as jnp
import optax
import pytest

import garo_optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# One worker runs this module: its module-scoped fixture is computed once.
pytestmark = pytest.mark.xdist_group("readme")


def _python_blocks():
  """Every ```python block of the README, by the line it starts on."""
  text = README.read_text()
  return {
    f"line{text.count(chr(10), 0, match.start()) + 1}": match.group(1)
    for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)
  }


# Runs each block given on the command line in a fresh namespace and an empty
# directory, and prints one JSON object: each block's traceback, or None.
_RUN_BLOCKS = """
import json, os, sys, tempfile, traceback

blocks, errors = json.loads(sys.argv[1]), {}
for name, code in blocks.items():
  os.chdir(tempfile.mkdtemp(prefix=name))
  try:
    exec(compile(code, f"README.md:{name}", "exec"), {"__name__": "__main__"})
  except BaseException:
    errors[name] = traceback.format_exc()
  else:
    errors[name] = None
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def block_errors(tmp_path_factory):
  """Each README block's traceback (or None), all run in one fresh process.

  One process, not one per block: they share its start and its compilations
  (a third of the time). Each block still runs in its own namespace, so a
  block that forgets an import fails as it would on its own.
  """
  env = {
    **os.environ,
    # This checkout's garo_optax, whatever is installed.
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    # The multi-device block's 8 devices on a CPU (the README says so), added
    # to the suite's compile flags; the other blocks do not mind.
    "XLA_FLAGS": " ".join(
      filter(
        None,
        [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8"],
      )
    ),
    "MPLBACKEND": "Agg",
    "TMPDIR": str(tmp_path_factory.mktemp("blocks")),
  }
  result = subprocess.run(
    [sys.executable, "-c", _RUN_BLOCKS, json.dumps(_python_blocks())],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-5000:]
  return json.loads(result.stdout.splitlines()[-1])


def test_block_runner_gives_each_block_its_own_namespace_and_directory(tmp_path):
  # A block that leans on an earlier block's import or files fails, as it
  # would run alone; the others pass.
  blocks = {
    "a": "import numpy as np\nopen('left_behind', 'w').close()",
    "b": "np.zeros(1)",
    "c": "import os\nassert os.listdir('.') == []",
  }
  result = subprocess.run(
    [sys.executable, "-c", _RUN_BLOCKS, json.dumps(blocks)],
    env={**os.environ, "TMPDIR": str(tmp_path)},
    capture_output=True,
    text=True,
    check=True,
  )
  errors = json.loads(result.stdout.splitlines()[-1])
  assert errors["a"] is None and errors["c"] is None
  assert "NameError: name 'np' is not defined" in errors["b"]


def test_readme_has_python_blocks():
  assert len(_python_blocks()) >= 5


@pytest.mark.parametrize("name", _python_blocks())
def test_readme_block_runs(block_errors, name):
  """Each block runs on its own: its own namespace and an empty directory."""
  assert block_errors[name] is None, f"{_python_blocks()[name]}\n{block_errors[name]}"


def _benchmarks_readme(*args):
  return subprocess.run(
    [sys.executable, "-m", "benchmarks.readme", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )


def test_benchmarks_readme_help_writes_nothing():
  before = README.stat().st_mtime_ns, README.read_bytes()
  result = _benchmarks_readme("--help")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("usage:") and "--check" in result.stdout
  assert (README.stat().st_mtime_ns, README.read_bytes()) == before


def test_benchmarks_readme_check_reports_a_stale_block(tmp_path):
  stale = (
    "# Title\n\n<!-- results:step_time_cpu -->\nold\n<!-- /results:step_time_cpu -->\n"
  )
  readme = tmp_path / "README.md"
  readme.write_text(stale)
  result = _benchmarks_readme("--readme", str(readme), "--check")
  assert result.returncode == 1 and "out of date" in result.stdout
  assert readme.read_text() == stale
  assert _benchmarks_readme("--readme", str(readme)).returncode == 0
  assert "| optimizer |" in readme.read_text()
  assert _benchmarks_readme("--readme", str(readme), "--check").returncode == 0


# The wrappers the README says pass `value` on to GARO.
PASS_VALUE = {
  "chain": lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
  "MultiSteps": lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
  "masked": lambda tx: optax.masked(tx, {"w": True}),
  "partition": lambda tx: optax.partition({"a": tx}, {"w": "a"}),
  "apply_if_finite": lambda tx: optax.apply_if_finite(tx, 3),
  "inject_hyperparams": lambda tx: optax.inject_hyperparams(
    lambda scale: optax.chain(optax.scale(scale), tx)
  )(scale=1.0),
}


@pytest.mark.parametrize("wrap", PASS_VALUE.values(), ids=PASS_VALUE.keys())
def test_wrapper_passes_value_to_garo(wrap):
  params = {"w": jnp.ones(3)}
  tx = wrap(garo_optax.garo())
  _, state = tx.update(params, tx.init(params), params, value=jnp.float32(2.0))
  assert (
    optax.tree.get(state, "feature_state").loss == 2.0
  )  # GARO's running mean of the loss


def test_lookahead_does_not_pass_value():
  params = optax.LookaheadParams.init_synced({"w": jnp.ones(3)})
  tx = optax.lookahead(garo_optax.garo(), sync_period=2, slow_step_size=0.5)
  with pytest.raises(TypeError, match="value"):
    tx.update(params.fast, tx.init(params), params, value=jnp.float32(2.0))
  chained = optax.chain(tx)
  _, state = chained.update(
    params.fast, chained.init(params), params, value=jnp.float32(2.0)
  )
  assert optax.tree.get(state, "feature_state").loss == 0.0  # dropped: GARO saw no loss
