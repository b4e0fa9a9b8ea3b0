"""Tests of the controller (init, heads, files)."""

import re
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax import _controller, _hyperparams

HIDDEN_SIZE = 8


@pytest.fixture
def controller():
  return garo_optax.init_controller(
    jax.random.key(0), hidden_size=HIDDEN_SIZE, head_scale=1.0
  )


@pytest.fixture
def saved_arrays(tmp_path, controller):
  """The arrays of a good controller file, as a dict."""
  garo_optax.save_controller(tmp_path / "good.npz", controller)
  with np.load(tmp_path / "good.npz") as data:
    return {k: data[k] for k in data.files}


def test_save_load_round_trip(tmp_path, controller):
  path = tmp_path / "controller.npz"
  garo_optax.save_controller(path, controller)
  loaded = garo_optax.load_controller(path)
  assert isinstance(loaded, garo_optax.ControllerParams)
  jax.tree.map(np.testing.assert_array_equal, loaded, controller)
  assert {x.dtype for x in jax.tree.leaves(loaded)} == {jnp.dtype(jnp.float32)}


def test_a_controller_reading_the_update_ratio_round_trips(tmp_path):
  controller = garo_optax.init_controller(
    jax.random.key(0), hidden_size=HIDDEN_SIZE, num_features=8
  )
  assert controller.num_features == 8
  garo_optax.save_controller(tmp_path / "c.npz", controller, optimizer="garo_adamw")
  with np.load(tmp_path / "c.npz") as data:
    assert int(data["num_features"]) == 8
  loaded = garo_optax.load_controller(tmp_path / "c.npz")
  jax.tree.map(np.testing.assert_array_equal, loaded, controller)


@pytest.mark.parametrize("num_features", [0, 6, 9])
def test_init_controller_refuses_other_numbers_of_features(num_features):
  with pytest.raises(ValueError, match="num_features must be one of"):
    garo_optax.init_controller(jax.random.key(0), num_features=num_features)


INVALID = "is not a valid GARO controller file"


def _assert_invalid(path, match):
  """Loading ``path`` raises a ValueError that names it and says why."""
  with pytest.raises(ValueError, match=re.escape(match)) as error:
    garo_optax.load_controller(path)
  message = str(error.value)
  assert repr(str(path)) in message and INVALID in message
  # Nothing the user sees, chained errors included, suggests unpickling.
  shown = "".join(traceback.format_exception(error.value)).replace(str(path), "")
  assert "pickle" not in shown


@pytest.mark.parametrize(
  ("change", "match"),
  [
    ({"head_kernel": np.zeros((HIDDEN_SIZE, 4))}, "'head_kernel' has shape"),
    ({"head_kernel": np.zeros(3)}, "'head_kernel' has shape"),
    ({"gru/hidden_kernel": np.zeros((3, 3))}, "'gru/hidden_kernel' has shape"),
    ({"gru/input_bias": None}, "no array 'gru/input_bias'"),
    ({"head_kernel": None}, "no array 'head_kernel'"),
    ({"version": np.array(1)}, "format version 1; this garo_optax reads version 2"),
    ({"version": None}, "no 'version' entry"),
    ({"version": np.array("one")}, "'version' entry is not an integer"),
    ({"num_features": np.array(3)}, "3 features"),
    ({"num_features": np.array(8)}, "'num_features' entry says 8"),
    ({"gru/input_kernel": np.zeros((5, 3 * HIDDEN_SIZE))}, "reads 5 features"),
    ({"num_features": None}, "no 'num_features' entry"),
    ({"format": np.array("something else")}, "its format is 'something else'"),
    ({"format": None}, "no 'format' entry"),
    ({"format": np.arange(3)}, "'format' entry is not a string"),
    ({"gru/hidden_bias": np.zeros(HIDDEN_SIZE, np.int32)}, "dtype int32"),
  ],
)
def test_load_rejects_bad_files(tmp_path, saved_arrays, change, match):
  """``change`` replaces arrays of a good file; ``None`` removes one."""
  arrays = {k: v for k, v in {**saved_arrays, **change}.items() if v is not None}
  np.savez(tmp_path / "bad.npz", **arrays)
  _assert_invalid(tmp_path / "bad.npz", match)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["gru/input_kernel", "head_kernel"])
def test_load_rejects_nonfinite_weights(tmp_path, saved_arrays, name, bad):
  weights = saved_arrays[name].copy()
  weights.flat[1] = bad
  np.savez(tmp_path / "bad.npz", **{**saved_arrays, name: weights})
  _assert_invalid(tmp_path / "bad.npz", f"{name!r} has NaN or infinite entries")


@pytest.mark.parametrize(
  "contents",
  [
    np.random.default_rng(0).bytes(1000),
    b"",
    b"PK\x03\x04" + np.random.default_rng(1).bytes(100),  # a broken zip
    b"\x93NUMPY" + np.random.default_rng(2).bytes(100),  # a broken .npy
  ],
  ids=["random", "empty", "zip", "npy"],
)
def test_load_rejects_other_bytes(tmp_path, contents):
  (tmp_path / "bad.npz").write_bytes(contents)
  _assert_invalid(tmp_path / "bad.npz", "not an .npz archive of plain arrays")


def test_load_rejects_pickled_arrays_and_single_arrays(tmp_path, saved_arrays):
  np.savez(tmp_path / "object.npz", **saved_arrays, extra=np.array([{}], object))
  _assert_invalid(tmp_path / "object.npz", "not an .npz archive of plain arrays")
  np.save(tmp_path / "single.npy", saved_arrays["head_kernel"])
  _assert_invalid(tmp_path / "single.npy", "a single array, not an .npz archive")


def test_load_missing_file_names_it(tmp_path):
  path = tmp_path / "missing.npz"
  with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
    garo_optax.load_controller(path)


@pytest.mark.parametrize("as_str", [False, True])
def test_garo_accepts_a_controller_path(tmp_path, controller, as_str):
  """``garo(controller=path)`` is ``garo(controller=load_controller(path))``."""
  path = tmp_path / "controller.npz"
  garo_optax.save_controller(path, controller)
  params = {"w": jnp.arange(1.0, 5.0), "b": jnp.ones(2)}
  results = []
  for given in (str(path) if as_str else path, garo_optax.load_controller(path)):
    tx = garo_optax.garo(0.1, 0.5, 1e-3, controller=given)
    state = tx.init(params)
    p = params
    for _ in range(5):
      grads = jax.tree.map(jnp.sin, p)
      updates, state = tx.update(grads, state, p, value=jnp.sum(p["w"] ** 2))
      p = optax.apply_updates(p, updates)
    results.append((p, garo_optax.hyperparams(state)))
  jax.tree.map(np.testing.assert_array_equal, *results)


def test_garo_missing_controller_path_names_it(tmp_path):
  path = tmp_path / "nowhere" / "controller.npz"
  for given in (path, str(path)):
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
      garo_optax.garo(controller=given)


def test_save_rejects_wrong_shapes(tmp_path, controller):
  controller = controller._replace(head_kernel=jnp.zeros((HIDDEN_SIZE, 2)))
  with pytest.raises(ValueError, match="head_kernel"):
    garo_optax.save_controller(tmp_path / "c.npz", controller)
  assert not (tmp_path / "c.npz").exists()


def test_init_controller_is_float32_with_x64():
  with jax.enable_x64(True):
    controller = jax.eval_shape(garo_optax.init_controller, jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(controller)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
  ("learning_rate", "momentum", "weight_decay"),
  [(0.1, 0.0, 0.0), (3e-4, 0.9, 0.05), (1.0, 0.5, 1e-6)],
)
def test_zero_hidden_state_gives_starting_values(
  controller, learning_rate, momentum, weight_decay
):
  bias = _hyperparams.head_bias(learning_rate, momentum, weight_decay)
  hidden, offsets, values = _controller.controller_step(
    controller,
    jnp.zeros((1, controller.num_features)),
    jnp.zeros((1, HIDDEN_SIZE)),
    jnp.zeros((1, len(_controller.HEAD_NAMES))),
    bias,
  )
  np.testing.assert_array_equal(hidden, 0.0)
  np.testing.assert_array_equal(offsets, 0.0)
  np.testing.assert_allclose(
    [v[0] for v in values[:2]], [learning_rate, momentum], rtol=1e-6
  )
  if weight_decay:
    np.testing.assert_allclose(values[2][0], weight_decay, rtol=1e-6)
  else:
    assert 0 <= values[2][0] < 1e-8


def test_applied_values_follow_the_heads_through_a_running_mean(controller):
  """The applied values are the reference's moved by a running mean of the
  heads' offsets from it (log ratios for the rates, a difference for the
  momentum) whose steps are clipped, computed here from the equations."""
  reference = np.array([0.1, 0.5, 1e-3])
  bias = _hyperparams.head_bias(*reference)
  features = jax.random.normal(jax.random.key(1), (1, controller.num_features))
  hidden = jnp.zeros((1, HIDDEN_SIZE))
  offsets = jnp.zeros((1, len(_controller.HEAD_NAMES)))
  decay = _controller.OUTPUT_DECAY
  max_fall = np.array(_controller.MAX_OFFSET_STEP)
  max_rise = np.array(_controller.MAX_OFFSET_RISE)
  expected = np.zeros(3)
  for _ in range(3):
    hidden, offsets, values = _controller.controller_step(
      controller, features, hidden, offsets, bias
    )
    lr, mom, wd = _controller.heads(hidden @ controller.head_kernel + bias)
    target = np.array(
      [
        np.log(lr[0] / reference[0]),
        mom[0] - reference[1],
        np.log(wd[0] / reference[2]),
      ]
    )
    expected = expected + np.clip(
      (1 - decay) * (target - expected), -max_fall, max_rise
    )
    np.testing.assert_allclose(offsets[0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
      [v[0] for v in values],
      [
        reference[0]
        * np.exp(expected[0])
        * (1 - (reference[1] + expected[1]))
        / (1 - reference[1]),
        reference[1] + expected[1],
        reference[2] * np.exp(expected[2]),
      ],
      rtol=1e-5,
    )
  assert np.all(np.abs(expected) > 1e-4)  # the heads did move


def test_running_offsets_move_at_most_their_bounds(controller):
  """However far the heads are, the running offsets move at most 0.05 a step
  in log learning rate (a factor of 10 takes 47 steps), 0.02 in momentum and
  0.05 in log weight decay, up as down (``MAX_OFFSET_STEP``,
  ``MAX_OFFSET_RISE``)."""
  still = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  bias = _hyperparams.head_bias(0.1, 0.5, 1e-3)
  far = jnp.array([[-10.0, -10.0, -10.0], [10.0, 10.0, 10.0]])
  features = jnp.zeros((2, controller.num_features))
  _, offsets, _ = _controller.controller_step(
    still, features, jnp.zeros((2, HIDDEN_SIZE)), far, bias
  )
  np.testing.assert_allclose(
    offsets - far, [[0.05, 0.02, 0.05], [-0.05, -0.02, -0.05]], atol=1e-6
  )


def test_same_weights_same_bytes(tmp_path, controller):
  """A controller file depends on the weights only (not on when it was
  written), so a rerun of meta-training can be compared byte for byte."""
  import time

  garo_optax.save_controller(tmp_path / "a.npz", controller)
  time.sleep(2.1)  # the zip format stamps entries to 2 s
  garo_optax.save_controller(tmp_path / "b", controller)
  assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
  other = controller._replace(head_kernel=controller.head_kernel + 1.0)
  garo_optax.save_controller(tmp_path / "c.npz", other)
  assert (tmp_path / "c.npz").read_bytes() != (tmp_path / "a.npz").read_bytes()
