"""Tests of garo_optax.meta's problems and task families."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from garo_optax.meta import problems, tasks

ALL_FAMILIES = tuple(
  {f.name: f for name in tasks.NAMES for f in tasks.families(name)}.values()
)
# XLA:CPU compiles several times faster without LLVM's optimisations, which
# tests that run a program once do not need.
FAST_COMPILE = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
}


def _name(family):
  return family.name


def _run(f, *args):
  """``f(*args)``, jitted with :data:`FAST_COMPILE`."""
  return jax.jit(f).lower(*args).compile(FAST_COMPILE)(*args)


def test_registry():
  for name in tasks.NAMES:
    names = [f.name for f in tasks.families(name)]
    assert len(set(names)) == len(names), name
  assert 20 <= len(tasks.families("default")) <= 40
  assert 2 <= len(tasks.families("tiny")) <= 3
  assert len(tasks.families("v1")) == 8
  # Cached: the same family objects (closures) every time.
  assert tasks.families("default") is tasks.families("default")
  assert tasks.families("wide")[: len(tasks.families("default"))] == tasks.families(
    "default"
  )
  valid = "valid: default, embed_scales, scales, wide, tiny, v1"
  with pytest.raises(ValueError, match=valid):
    tasks.families("broad")


@pytest.mark.parametrize("family", ALL_FAMILIES, ids=_name)
def test_family_makes_trainable_tasks(family):
  """Every family's tasks trace: losses, gradients, batches of tasks."""

  def make(key):
    task = family.sample(key)
    params = task.init(jax.random.key(3))
    loss, grads = jax.value_and_grad(task.loss)(params, task.batch(jax.random.key(4)))
    return params, loss, grads

  # Shapes only (no compilation): a scalar loss, gradients shaped like params.
  params, loss, grads = jax.eval_shape(make, jax.random.key(1))
  assert loss.shape == () and loss.dtype == jnp.float32
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert [g.shape for g in jax.tree.leaves(grads)] == [
    p.shape for p in jax.tree.leaves(params)
  ]
  batched = jax.eval_shape(
    jax.vmap(family.sample), jax.random.split(jax.random.key(0), 3)
  )
  assert all(x.shape[0] == 3 for x in jax.tree.leaves(batched))


# One family of each kind of problem and option in "default" (every task type,
# layer norm, label noise, raw targets, autoencoders, embeddings, attention):
# the rest differ from these in sizes only, and train in the slow run
# (pytest -m slow); every family is traced in the default run above.
_REPRESENTATIVES = (
  "quadratic_d16_b8",
  "badly_scaled_logistic_d64_k10_b128",
  "noisy_logistic_d16_k4_b512",
  "teacher_raw_regression_mlp_64x64x64_tanh_b256",
  "teacher_classification_mlp_32x32x32x32x32x32_tanh_ln_b64",
  "digits_autoencoder_128x16x128_gelu_b32",
  "conv_16_b8",
  "markov_text_v32_e16_c8_h256_b64",
  "markov_text_transformer_w16_d1_h2_c32_v16_b8",
  "factorization_32x32_r4",
)


def test_representatives_are_default_families():
  """A misspelt representative would quietly leave the default run with one
  kind of problem fewer trained."""
  assert set(_REPRESENTATIVES) <= {f.name for f in tasks.families("default")}


@pytest.mark.parametrize(
  "family",
  [
    f if f.name in _REPRESENTATIVES else pytest.param(f, marks=pytest.mark.slow)
    for f in tasks.families("default")
  ],
  ids=_name,
)
def test_default_family_trains(family):
  """Two tasks sampled under vmap: finite initial losses that a few small
  Adam steps on a fixed minibatch bring down; other keys, other tasks."""
  tx = optax.adam(1e-3)

  def run(keys):
    def one(key):
      task = family.sample(key)
      init_key, batch_key = jax.random.split(jax.random.fold_in(key, 1))
      params, batch = task.init(init_key), task.batch(batch_key)

      def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state)
        return (optax.apply_updates(params, updates), state), loss

      (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=8)
      return losses, task.loss(params, batch), jax.tree.leaves(task)[0]

    return jax.vmap(one)(keys)

  losses, final, data = _run(run, jax.random.split(jax.random.key(0), 2))
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(final))
  assert np.all(final < losses[:, 0]), (losses, final)
  assert not np.array_equal(data[0], data[1])


@pytest.mark.parametrize(
  "family",
  [
    tasks.logistic_family(4, 3, 8),
    tasks.mlp_teacher_family((8,), "tanh", 4, True),
    tasks.autoencoder_family((8, 2, 8), "gelu", 4, "low_rank_gaussian"),
    tasks.badly_scaled_linear_family(4, 4),
    tasks.transformer_family(8, 1, 2, 4, 8, 2),
  ],
  ids=_name,
)
def test_family_is_deterministic(family):
  """A task is a function of its key alone: the same sampled alone or in a
  vmapped batch; other keys, other tasks."""

  def make(keys):
    return jax.vmap(family.sample)(keys), family.sample(keys[1])

  batch, alone = _run(make, jax.random.split(jax.random.key(1), 3))
  for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(alone), strict=True):
    np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)
    if a.ndim > 1:
      assert not np.array_equal(a[0], a[1])


def test_family_shapes():
  family = tasks.mlp_teacher_family((32, 16), "tanh", 8, regression=False)
  params = jax.eval_shape(lambda k: family.sample(k).init(k), jax.random.key(0))
  assert [p["w"].shape for p in params] == [(16, 32), (32, 16), (16, 8)]
  x, y = jax.eval_shape(lambda k: family.sample(k).batch(k), jax.random.key(2))
  assert x.shape == (8, 16) and y.shape == (8,) and y.dtype == jnp.int32
  windows = jax.eval_shape(
    jax.vmap(lambda k: tasks.char_family(4, 16, 8).sample(k).batch(k)),
    jax.random.split(jax.random.key(0), 3),
  )
  assert windows.shape == (3, 8, 5)
  family = tasks.mlp_teacher_family((32, 16), "gelu", 8, False, layer_norm=True)
  params = jax.eval_shape(lambda k: family.sample(k).init(k), jax.random.key(0))
  assert [sorted(layer) for layer in params] == [["b", "gain", "w"]] * 2 + [["b", "w"]]
  autoencoder = jax.eval_shape(
    tasks.autoencoder_family((32, 4, 32), "relu", 8, "digits").sample,
    jax.random.key(0),
  )
  assert autoencoder.inputs.shape == autoencoder.targets.shape == (1024, 64)
  assert autoencoder.num_outputs == 64 and autoencoder.objective == "mse"


def test_default_distribution_is_broad():
  """The spread issue 18 asks for: MLP depths 1 to 6, widths 16 to 1024,
  three activations with and without layer norm, every problem type, batch
  sizes 8 to 512 (and full-batch problems), and no family of more than
  300k params."""
  sampled, params = {}, {}
  for f in tasks.families("default"):
    sampled[f.name], params[f.name] = jax.eval_shape(
      lambda k, f=f: (f.sample(k), f.sample(k).init(k)), jax.random.key(0)
    )
  mlps = [t for t in sampled.values() if isinstance(t, problems.MLPTask) and t.hidden]
  assert {len(t.hidden) for t in mlps} == {1, 2, 3, 4, 5, 6}
  widths = {w for t in mlps for w in t.hidden}
  assert min(widths) <= 16 and max(widths) == 1024
  assert {(t.activation, t.layer_norm) for t in mlps} == {
    (a, n) for a in ("relu", "gelu", "tanh") for n in (False, True)
  } | {("linear", False)}  # deep linear networks
  assert any(t.objective == "mse" and t.num_outputs > 8 for t in mlps)  # autoencoder
  kinds = {type(t) for t in sampled.values()}
  assert kinds == {
    problems.MLPTask,
    problems.QuadraticTask,
    problems.ConvTask,
    problems.CharTask,
    problems.TransformerTask,
    problems.FactorizationTask,
  }
  names = " ".join(sampled)
  for part in ("raw_regression", "noisy_", "badly_scaled_linear", "logistic"):
    assert part in names
  batch_sizes = {t.batch_size for t in sampled.values() if hasattr(t, "batch_size")}
  assert 0 in batch_sizes  # full batch
  batch_sizes.discard(0)
  assert min(batch_sizes) == 8 and max(batch_sizes) == 512
  sizes = [sum(x.size for x in jax.tree.leaves(p)) for p in params.values()]
  assert max(sizes) <= 300_000


def test_training_datasets_are_not_held_out():
  names = {f.dataset for f in ALL_FAMILIES}
  assert names <= set(tasks.DATASETS)
  # The suite's held-out and validation datasets (benchmarks/tasks).
  forbidden = (
    "breast_cancer",
    "diabetes",
    "wine",
    "shakespeare",
    "rosenbrock",
    "mnist1d",
    "mnist_1d",
    "addition",
  )
  for dataset in (*tasks.DATASETS, *(f.name for f in ALL_FAMILIES)):
    assert not any(word in dataset.lower() for word in forbidden), dataset
  # No loader of a dataset but digits' is called, and no file is read.
  source = inspect.getsource(tasks) + inspect.getsource(problems)
  assert set(re.findall(r"\bload_\w+", source)) == {"load_digits"}
  assert "open(" not in source and "read_text" not in source
  # The only shared dataset, digits, meets MLPs here and a convnet there.
  for family in ALL_FAMILIES:
    if family.dataset == "digits":
      task = jax.eval_shape(family.sample, jax.random.key(0))
      assert isinstance(task, problems.MLPTask), family.name
  bench = pytest.importorskip("benchmarks.tasks")
  assert set(bench.META_TRAIN) == {"quadratic", "mlp_digits"}
  assert set(bench.VALIDATION) == {
    "diabetes_raw",
    "wine_logreg",
    "wine_mlp",
    "noisy_logreg",
    "wine_factorization",
    "helical_valley",
    "sine_regression",
    "addition_lm",
  }
  assert {
    "logreg_breast_cancer",
    "diabetes",
    "char_lm",
    "rosenbrock",
    "mlp_mnist1d",
    "conv_digits",
  } == set(bench.HELD_OUT)


def test_layer_norm_mlp_ignores_the_scale_of_its_weights():
  params = problems.dense_init(jax.random.key(0), (5, 7, 6, 3), 1.0, layer_norm=True)
  x = jax.random.normal(jax.random.key(1), (4, 5))

  def outputs(params):
    scaled = [dict(layer, w=10.0 * layer["w"]) for layer in params[:-1]]
    return (
      problems.dense_apply(params, x, "gelu"),
      problems.dense_apply(scaled + params[-1:], x, "gelu"),
      problems.layer_norm(x @ params[0]["w"]),
    )

  plain, scaled, hidden = _run(outputs, params)
  np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.mean(hidden, -1), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.std(hidden, -1), 1.0, rtol=1e-3)


def test_reparametrized_family_moves_adamw_s_rate_by_its_scale():
  """A rescaled problem is the family's, in params ``θ / s``: the same loss at
  the start, gradients ``s`` times as large, and AdamW at ``lr / s`` takes it
  along the same path in ``θ`` as AdamW at ``lr`` takes the problem."""
  family = tasks.mlp_teacher_family((8,), "tanh", 4, True)
  rescaled = tasks.reparametrized(family, (0.2, 20.0))
  key = jax.random.key(3)

  def runs(key):
    plain, task = family.sample(key), rescaled.sample(key)
    theta, phi = plain.init(key), task.init(key)
    batch = plain.batch(key)
    grads = (jax.grad(plain.loss)(theta, batch), jax.grad(task.loss)(phi, batch))
    paths = []
    for loss, params, lr in (
      (plain.loss, theta, 1e-2),
      (task.loss, phi, 1e-2 / task.scale),
    ):
      # eps=0: Adam's step is then exactly invariant to the gradient's scale.
      tx = optax.adam(lr, eps=0.0)
      state = tx.init(params)
      for i in range(5):
        updates, state = tx.update(
          jax.grad(loss)(params, plain.batch(jax.random.fold_in(key, i))), state
        )
        params = optax.apply_updates(params, updates)
      paths.append(params)
    start = (plain.loss(theta, batch), task.loss(phi, batch))
    return task, plain, start, grads, paths

  task, plain, start, (g_theta, g_phi), (theta, phi) = _run(runs, key)
  scale = float(task.scale)
  assert 0.2 <= scale <= 20.0 and scale != 1.0
  # The problem is the family's: the same data, drawn with the same key.
  for a, b in zip(jax.tree.leaves(task.task), jax.tree.leaves(plain), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(start[1], start[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_phi), jax.tree.leaves(g_theta), strict=True):
    np.testing.assert_allclose(a, scale * b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(phi), jax.tree.leaves(theta), strict=True):
    np.testing.assert_allclose(scale * a, b, rtol=1e-4, atol=1e-6)
  # The scale is drawn per problem, over the range.
  scales = _run(
    lambda keys: jax.vmap(rescaled.sample)(keys).scale,
    jax.random.split(key, 64),
  )
  assert 0.2 <= scales.min() < 1.0 < scales.max() <= 20.0
  with pytest.raises(ValueError, match="param scales must be"):
    tasks.reparametrized(family, (2.0, 1.0))


def test_embed_scales_families_start_the_embeddings_small():
  """The "embed_scales" distribution is the default one whose transformers'
  token embeddings start at a standard deviation drawn over EMBED_SCALES; the
  text and every other weight are the default family's for the same key."""
  default, scaled = tasks.families("default"), tasks.families("embed_scales")
  assert len(scaled) == len(default)
  changed = [(d, s) for d, s in zip(default, scaled, strict=True) if d is not s]
  assert [s.name for _, s in changed] == [
    d.name.replace("_b8", "_e0.02-1_b8") for d, _ in changed
  ]
  assert len(changed) == 4 and all("transformer" in s.name for _, s in changed)
  plain, family = changed[1]

  def draw(keys):
    def one(key):
      task, base = family.sample(key), plain.sample(key)
      return task, base, task.init(key), base.init(key)

    return jax.vmap(one)(keys)

  task, base, params, base_params = _run(draw, jax.random.split(jax.random.key(0), 64))
  assert base.embed_scale is None
  low, high = tasks.EMBED_SCALES
  assert low <= task.embed_scale.min() < 0.05 and 0.5 < task.embed_scale.max() <= high
  np.testing.assert_array_equal(task.text, base.text)
  np.testing.assert_array_equal(task.init_scale, base.init_scale)
  np.testing.assert_allclose(
    params["embed"], task.embed_scale[:, None, None] * base_params["embed"], rtol=1e-6
  )
  rest = [{k: v for k, v in p.items() if k != "embed"} for p in (params, base_params)]
  for a, b in zip(*map(jax.tree.leaves, rest), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="embed scales must be"):
    tasks.transformer_family(8, 1, 2, 4, 8, 2, embed_scales=(1.0, 0.0))


def test_scales_families_add_wider_transformers_drawn_twice_as_often():
  """The "scales" distribution: the default's other families (the same
  objects), and its transformers and two wider ones, every one with
  embeddings from EMBED_SCALES and weight 2."""
  default, scales = tasks.families("default"), tasks.families("scales")
  kept = [f for f in scales if f.weight == 1.0]
  assert all(any(f is d for d in default) for f in kept)
  assert len(kept) == len(default) - 4
  transformers = [f for f in scales if f.weight != 1.0]
  assert [f.weight for f in transformers] == [tasks.SCALES_TRANSFORMER_WEIGHT] * 6
  assert all(f.name.endswith("_e0.02-1_b8") for f in transformers)
  widths = [jax.eval_shape(f.sample, jax.random.key(0)).width for f in transformers]
  assert sorted(widths) == [16, 32, 32, 64, 64, 128]


def test_transformer_is_causal():
  text = jax.random.randint(jax.random.key(0), (100,), 0, 12)
  task = problems.TransformerTask(text, jnp.array(1.0), 8, 16, 2, 2, 12, 4)

  def logits_and_loss(key):
    params = task.init(key)
    tokens = task.batch(jax.random.fold_in(key, 1))
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % task.vocab)
    logits = task.logits(params, tokens[:, :-1])
    return (
      tokens,
      logits,
      task.logits(params, changed[:, :-1]),
      task.loss(params, tokens),
    )

  tokens, before, after, loss = _run(logits_and_loss, jax.random.key(1))
  assert before.shape == (4, 8, 12)
  # Positions before the changed token do not see it; it and those after do.
  np.testing.assert_array_equal(before[:, :5], after[:, :5])
  assert np.all(np.any(before[:, 5:] != after[:, 5:], axis=-1))
  # The loss is the mean next-token cross-entropy over the positions.
  logp = jax.nn.log_softmax(before)
  expected = -np.mean(np.take_along_axis(logp, tokens[:, 1:, None], -1))
  assert loss == pytest.approx(float(expected), rel=1e-5)


def test_label_noise_and_raw_targets():
  keys = jax.random.split(jax.random.key(0), 8)
  labels = jnp.zeros((4096,), jnp.int32)
  y = jax.random.normal(jax.random.key(0), (2048, 3))

  def make(keys):
    noisy = jax.vmap(lambda k: tasks._noisy_labels(k, labels, 10, 0.4))(keys)
    return noisy, jax.vmap(lambda k: tasks._raw_targets(k, y))(keys)

  noisy, raw = _run(make, keys)
  changed = np.mean(np.asarray(noisy) != 0, axis=1).tolist()
  # A fraction uniform in [0, 0.4] replaced, by classes that are 0 a tenth
  # of the time: at most 0.36 changed.
  assert max(changed) <= 0.37 and max(changed) > 0.1 and len(set(changed)) == 8
  scales, offsets = np.std(np.asarray(raw), 1), np.mean(np.asarray(raw), 1)
  # Scales in [1, 100] (of unit-variance targets), offsets of 3 scales or so.
  assert np.all((scales >= 0.9) & (scales <= 110)) and np.ptp(np.log10(scales)) > 1
  assert np.median(np.abs(offsets) / scales) > 0.5


def test_badly_scaled_features_span_decades():
  z, x = _run(lambda k: tasks._badly_scaled_features(k, 2048, 32), jax.random.key(0))
  spread = np.ptp(np.log10(np.std(x, 0) / np.std(z, 0)))
  assert 2.5 <= spread <= 4.0


def test_cost_benchmark_runs(capsys):
  from benchmarks import meta_family_cost

  meta_family_cost.main(
    [
      "--families",
      "tiny",
      "--only",
      "quadratic_d8_b4",
      "--steps",
      "2",
      "--repeats",
      "1",
    ]
  )
  table = capsys.readouterr().out
  assert "| quadratic_d8_b4 | quadratic | 8 | 1 | 4 |" in table
  assert "1 families:" in table


@pytest.mark.parametrize(
  "family",
  [
    f
    for f in tasks.families("default")
    if f.name.startswith(("deep_linear", "teacher_full"))
  ],
  ids=_name,
)
def test_full_batch_families_are_deterministic(family):
  """Full-batch problems have no minibatch noise: every key gives the whole
  dataset."""
  task = family.sample(jax.random.key(0))
  params = task.init(jax.random.key(1))
  first = task.loss(params, task.batch(jax.random.key(2)))
  second = task.loss(params, task.batch(jax.random.key(3)))
  assert float(first) == float(second)
  assert task.batch(jax.random.key(2))[0].shape == task.inputs.shape
