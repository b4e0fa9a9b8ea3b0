"""optax's own checks of its contributed optimizers, with GARO under test.

``optax/contrib/_common_test.py`` holds the tests every ``optax.contrib``
optimizer passes: convergence on four targets (Rosenbrock from (0, 0)
included), extra arguments, ``inject_hyperparams``, ``tree.map_params``,
dtypes, ``MultiSteps`` and schedules. Its test methods are parameterized over
optax's own list of optimizers; here the undecorated methods run with GARO's
configurations, its factory lookup (``_get_opt_factory``) pointed at
:func:`garo_optax.garo` (or :func:`garo_optax.garo_adamw`).
"""

import jax.numpy as jnp
import optax
import pytest

import garo_optax

common = pytest.importorskip("optax.contrib._common_test")

CONFIGURATIONS = {
  "global": {"learning_rate": 1e-3},
  "per_leaf": {"learning_rate": 1e-3, "granularity": "per_leaf"},
  "init": {"learning_rate": 1e-3, "controller": "init"},
  "adamw": {"learning_rate": 1e-3, "controller": "init"},
}
# The transformation each configuration builds.
FACTORIES = {"adamw": garo_optax.garo_adamw}
TARGETS = {
  "parabola": common._setup_parabola,
  "rosenbrock": common._setup_rosenbrock,
  "matrix_parabola": common._setup_matrix_parabola,
  "mixed_tensor_target": common._setup_mixed_tensor_target,
}


def _undecorated(name: str):
  """The test method ``name`` of optax's ``ContribTest``, before absl's
  parameterization (each generated method wraps it)."""
  return getattr(common.ContribTest, f"{name}0").__wrapped__


def _factory(configuration):
  return FACTORIES.get(configuration, garo_optax.garo)


def _with_schedule_annotation(factory):
  def make(
    learning_rate: optax.ScalarOrSchedule, **kwargs
  ) -> optax.GradientTransformationExtraArgs:
    """``factory`` annotated as optax's schedule check looks for (GARO's own
    annotation also allows ``{group: value}`` mappings, so the check skips
    it)."""
    return factory(learning_rate, **kwargs)

  return make


# The per-leaf and seeded configurations run with -m slow: their code paths
# are checked by test_conformance.py and test_groups.py in the default run.
SLOW = ("per_leaf", "init")
CONFIGURATION_PARAMS = [
  pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
  for name in CONFIGURATIONS
]
# garo_adamw's dtype checks too: test_conformance.py runs them over both.
DTYPE_CONFIGURATION_PARAMS = [
  pytest.param(name, marks=pytest.mark.slow) if name in (*SLOW, "adamw") else name
  for name in CONFIGURATIONS
]


@pytest.fixture
def case(monkeypatch, configuration):
  monkeypatch.setattr(common, "_get_opt_factory", lambda name: _factory(configuration))
  return common.ContribTest()


def _arguments(configuration):
  return {
    "opt_name": _factory(configuration).__name__,
    "opt_kwargs": CONFIGURATIONS[configuration],
    "wrapper_name": None,
    "wrapper_kwargs": None,
  }


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("configuration", CONFIGURATION_PARAMS)
def test_optimizers(case, configuration, target):
  """``tree.map_params`` works, then 30,000 steps end within 3e-2 of the
  optimum."""
  _undecorated("test_optimizers")(
    case, **_arguments(configuration), target=TARGETS[target], dtype="float32"
  )


@pytest.mark.parametrize("configuration", CONFIGURATION_PARAMS)
def test_optimizers_accept_extra_args(case, configuration):
  _undecorated("test_optimizers_accept_extra_args")(
    case, **_arguments(configuration), wrap=False
  )


@pytest.mark.parametrize("configuration", CONFIGURATION_PARAMS)
def test_optimizers_can_be_wrapped_in_inject_hyperparams(case, configuration):
  _undecorated("test_optimizers_can_be_wrapped_in_inject_hyperparams")(
    case,
    opt_name=_factory(configuration).__name__,
    opt_kwargs=CONFIGURATIONS[configuration],
  )


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("configuration", DTYPE_CONFIGURATION_PARAMS)
def test_preserve_dtype(case, configuration, dtype):
  _undecorated("test_preserve_dtype")(
    case,
    opt_name=_factory(configuration).__name__,
    opt_kwargs=CONFIGURATIONS[configuration],
    dtype=dtype,
  )


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("configuration", DTYPE_CONFIGURATION_PARAMS)
def test_gradient_accumulation(case, configuration, dtype):
  _undecorated("test_gradient_accumulation")(
    case,
    opt_name=_factory(configuration).__name__,
    opt_kwargs=CONFIGURATIONS[configuration],
    dtype=dtype,
  )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("configuration", DTYPE_CONFIGURATION_PARAMS)
def test_state_shape_dtype_shard_stability(case, configuration, dtype):
  _undecorated("test_state_shape_dtype_shard_stability")(
    case, **_arguments(configuration), dtype=dtype
  )


@pytest.mark.parametrize("configuration", CONFIGURATION_PARAMS)
def test_accepts_learning_rate_schedule(case, monkeypatch, configuration):
  """A constant schedule gives the same 10 steps as its constant.

  The pretrained controller moves a constant starting rate towards its home
  rate, while a schedule is the rate it works around at every step: the two
  agree with the home move off (``home_steps=0``).
  """
  monkeypatch.setattr(
    common,
    "_get_opt_factory",
    lambda name: _with_schedule_annotation(_factory(configuration)),
  )
  arguments = _arguments(configuration)
  if "controller" not in arguments["opt_kwargs"]:  # the pretrained one
    arguments["opt_kwargs"] = {**arguments["opt_kwargs"], "home_steps": 0}
  _undecorated(
    "test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such"
  )(case, **arguments)
