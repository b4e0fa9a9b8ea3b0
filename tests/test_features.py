"""Tests of the controller's input features (``_features``)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from garo_optax import _features, _statistics


def _group_statistics(grad_and_mu, num_groups, mu_scale):
  """Statistics of ``num_groups`` random groups; ``mu_scale=0``: step 0."""
  g, m = grad_and_mu()
  statistics = _statistics.tree_statistics(g, mu_scale * m)[0]
  return jnp.arange(1.0, num_groups + 1)[:, None] * statistics


@pytest.mark.parametrize("value", [None, 3.7])
def test_features_are_zero_at_step_zero(grad_and_mu, value):
  num_groups = 2
  # Whatever the running statistics hold, step 0 does not read them.
  feature_state = jax.tree.map(
    lambda x: x + 4.0, _features.init_feature_state(num_groups)
  )
  features, new_state = _features.compute_features(
    _group_statistics(grad_and_mu, num_groups, mu_scale=0.0),
    feature_state,
    jnp.array(0),
    jnp.full((num_groups,), 0.5),  # a rate applied "before" step 0
    jnp.full((num_groups,), 0.01),
    value,
  )
  assert features.shape == (num_groups, _features.NUM_FEATURES)
  np.testing.assert_array_equal(features, 0.0)
  expected_loss = feature_state.loss if value is None else value
  np.testing.assert_allclose(new_state.loss, expected_loss, rtol=1e-6)


def test_features_are_finite_and_clipped(grad_and_mu):
  statistics = _group_statistics(grad_and_mu, 4, mu_scale=1.0)
  # Overflowed, vanishing and zero sums of squares.
  statistics = statistics.at[0].set(jnp.inf).at[1].set(1e-45).at[2].set(0.0)
  state = _features.init_feature_state(4)
  for count, value in enumerate([1.0, 1e30, 0.0]):
    features, state = _features.compute_features(
      statistics,
      state,
      jnp.array(count),
      jnp.full((4,), 100.0),
      jnp.full((4,), 1e-40),
      value,
    )
    assert np.all(np.isfinite(features))
    assert np.all(np.abs(features) <= _features.FEATURE_CLIP)
    chex.assert_tree_all_finite(state)
  # The learning-rate ratio of 1e42 is clipped, not dropped.
  np.testing.assert_array_equal(
    features[:, _features.FEATURE_NAMES.index("log_learning_rate_ratio")],
    _features.FEATURE_CLIP,
  )


def test_learning_rate_ratio_reads_the_rate_the_controller_chose(grad_and_mu):
  """A rate cut by the safeguard's cap reads as the rate before the cut."""
  statistics = _group_statistics(grad_and_mu, 2, mu_scale=1.0)
  chosen = jnp.array([0.2, 0.05])
  applied = jnp.array([0.002, 0.05])  # group 0 capped at 0.002
  reference = jnp.array([0.01, 0.01])
  state = _features.record_cut(_features.init_feature_state(2), chosen, applied)
  np.testing.assert_allclose(state.learning_rate_cut, [np.log(0.01), 0.0], rtol=1e-6)
  features, _ = _features.compute_features(
    statistics, state, jnp.array(5), applied, reference, 1.0
  )
  np.testing.assert_allclose(
    features[:, _features.FEATURE_NAMES.index("log_learning_rate_ratio")],
    np.log(chosen / reference),
    rtol=1e-5,
  )
