"""The public API: what ``garo_optax`` exports."""

import pathlib
import re
import shutil
import subprocess
import sys

import garo_optax

EXPECTED_ALL = (
  "ByGroup",
  "ControllerParams",
  "GaroAdamWState",
  "GaroState",
  "garo",
  "garo_adamw",
  "hyperparams",
  "init_controller",
  "load_controller",
  "save_controller",
)


def test_all_is_the_expected_list():
  assert sorted(garo_optax.__all__) == sorted(EXPECTED_ALL)
  assert len(set(garo_optax.__all__)) == len(garo_optax.__all__)


def test_every_public_name_is_importable():
  namespace = {}
  exec("from garo_optax import *", namespace)
  for name in EXPECTED_ALL:
    assert namespace[name] is getattr(garo_optax, name)


def test_version():
  assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", garo_optax.__version__)


_ALONE = """
import importlib, pkgutil, runpy, sys
root = sys.argv[1]
sys.path = [root] + [p for p in sys.path if p not in ("", {repo!r})]
import garo_optax
assert garo_optax.__file__.startswith(root), garo_optax.__file__
for module in pkgutil.walk_packages(garo_optax.__path__, "garo_optax."):
  importlib.import_module(module.name)
for forbidden in ("benchmarks", "tests", "examples"):
  assert forbidden not in sys.modules, forbidden
sys.argv = ["train", "--help"]
runpy.run_module("garo_optax.meta.train", run_name="__main__")
"""


def test_package_stands_alone(tmp_path):
  """Every module imports, and the meta-training command line runs, from a
  copy of ``garo_optax/`` alone: nothing needs the repository."""
  repo = pathlib.Path(__file__).resolve().parents[1]
  shutil.copytree(
    repo / "garo_optax",
    tmp_path / "garo_optax",
    ignore=shutil.ignore_patterns("__pycache__"),
  )
  result = subprocess.run(
    [sys.executable, "-c", _ALONE.format(repo=str(repo)), str(tmp_path)],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "usage:" in result.stdout
