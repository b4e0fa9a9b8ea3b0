"""The public API: what ``garo_optax`` exports."""

import re

import garo_optax

EXPECTED_ALL = (
  "ByGroup",
  "ControllerParams",
  "GaroState",
  "garo",
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
