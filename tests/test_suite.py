"""The training-quality benchmark suite: a reduced run, determinism, bad input."""

import inspect
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from benchmarks import optimizers, report, suite, tasks, train

# One worker runs this module: its module-scoped fixture is computed once.
pytestmark = pytest.mark.xdist_group("suite")

SMOKE = {
  "task_names": ["quadratic", "logreg_breast_cancer"],
  "optimizer_names": ["adam", "adam_tuned", "garo_init"],
  "num_seeds": 1,
  "steps": 20,
  "progress": False,
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  results = suite.run_suite("quick", **SMOKE)
  out = tmp_path_factory.mktemp("suite")
  report.write(results, out)
  return results, out


def test_smoke_run_writes_files(smoke):
  _, out = smoke
  for name in (
    "suite_results.json",
    "suite_summary.md",
    "suite_report.md",
    "suite_loss_curves.png",
    "suite_garo_hyperparams.png",
  ):
    assert (out / name).stat().st_size > 0, name
  summary = (out / "suite_summary.md").read_text()
  assert "| `garo_init` | all |" in summary
  assert "![Loss curves](suite_loss_curves.png)" in summary
  assert "| `adam_tuned` |" in (out / "suite_report.md").read_text()
  written = json.loads((out / "suite_results.json").read_text())
  assert list(written["tasks"]) == SMOKE["task_names"]


def test_smoke_run_numbers_are_finite(smoke):
  results, _ = smoke
  for task in results["tasks"].values():
    assert task["steps"] == 20 and task["target_loss"] is not None
    for name, record in task["optimizers"].items():
      curve = np.asarray(record["train_loss"])
      assert curve.shape == (1, 11) and np.all(np.isfinite(curve)), name
      assert np.all(np.isfinite(record["metric"])), name
      assert record["ms_per_step"]["median"] > 0
      # Every optimizer lowers the loss of these convex tasks in 20 steps.
      assert curve[0, -1] < curve[0, 0], name
  garo = results["summary"]["garo_init"]["all"]
  assert garo["wins"]["adam"]["tasks"] == 2
  assert math.isfinite(garo["geomean_loss_ratio_to_best_tuned"])


def test_garo_records_its_hyperparameters(smoke):
  results, _ = smoke
  record = results["tasks"]["quadratic"]["optimizers"]["garo_init"]
  learning_rate = np.asarray(record["hyperparams"][0]["learning_rate"])
  assert learning_rate.shape == (10,) and np.all(learning_rate > 0)
  assert results["tasks"]["quadratic"]["optimizers"]["adam"]["hyperparams"] is None


def test_an_optimizer_that_cannot_be_built_is_skipped_with_a_note(monkeypatch):
  def make(learning_rate):
    raise ValueError(f"no weights for {learning_rate}")

  broken = optimizers.Optimizer("broken", "raises when built", make, 0.5)
  monkeypatch.setitem(optimizers.OPTIMIZERS, "broken", broken)
  results = suite.run_suite(
    "quick",
    task_names=["rosenbrock"],
    optimizer_names=["broken"],
    num_seeds=1,
    steps=2,
    progress=False,
  )
  assert results["config"]["skipped_optimizers"] == {
    "broken": "ValueError: no weights for 0.5"
  }
  assert results["tasks"]["rosenbrock"]["optimizers"] == {}
  assert "`broken`: ValueError: no weights for 0.5" in report.summary_markdown(results)


def test_tuned_learning_rate_is_recorded(smoke):
  results, _ = smoke
  for task in results["tasks"].values():
    tuning = task["optimizers"]["adam_tuned"]["tuning"]
    assert task["optimizers"]["adam_tuned"]["learning_rate"] == tuning["chosen"]
    assert tuning["chosen"] in tuning["grid"]
    assert (
      min(tuning["final_train_loss"])
      == tuning["final_train_loss"][tuning["grid"].index(tuning["chosen"])]
    )


def test_same_seed_gives_the_same_numbers(smoke):
  results, _ = smoke
  again = suite.run_suite(
    "quick",
    task_names=["quadratic"],
    optimizer_names=["garo_init"],
    num_seeds=1,
    steps=20,
    progress=False,
  )
  first = results["tasks"]["quadratic"]["optimizers"]["garo_init"]
  second = again["tasks"]["quadratic"]["optimizers"]["garo_init"]
  for key in ("train_loss", "metric", "hyperparams"):
    assert first[key] == second[key], key


def test_tuning_widens_the_grid_past_an_edge():
  best = 3.0  # above the initial grid's top, 1.0

  def run(learning_rate, seed):
    del seed
    loss = np.array([1.0, (np.log10(learning_rate) - np.log10(best)) ** 2 + 1e-3])
    return train.Curves(np.arange(2), loss, loss, {}, 0.0)

  tuning = suite.tune(run, optimizers.OPTIMIZERS["sgd_momentum_tuned"].grid)
  assert tuning["interior"]
  assert tuning["chosen"] == pytest.approx(10**0.5)
  assert tuning["grid"][-1] == pytest.approx(10.0)


NEW_PEERS = {  # name: the optax function run at its defaults
  "dadapt_adamw": optax.contrib.dadapt_adamw,
  "schedule_free_adamw": optax.contrib.schedule_free_adamw,
  "cocob": optax.contrib.cocob,
}


def test_new_peers_use_optax_defaults_and_lower_the_loss():
  for name, make in NEW_PEERS.items():
    default = inspect.signature(make).parameters["learning_rate"].default
    assert optimizers.OPTIMIZERS[name].learning_rate == default, name
    assert name in optimizers.PEERS, name
  assert "reduce_on_plateau" not in optimizers.PEERS
  results = suite.run_suite(
    "quick",
    task_names=["quadratic"],
    optimizer_names=list(NEW_PEERS),
    num_seeds=1,
    steps=20,
    progress=False,
  )
  for name, record in results["tasks"]["quadratic"]["optimizers"].items():
    curve = np.asarray(record["train_loss"][0])
    assert np.all(np.isfinite(curve)) and curve[-1] < curve[0], name


def _record(curve, metric):
  return {
    "description": "an optimizer",
    "eval_steps": [0, 10],
    "train_loss": [curve],
    "final_train_loss": {"median": curve[-1]},
    "final_metric": {"median": metric},
  }


def test_summary_counts_wins_and_ratios_to_the_best_tuned_baseline():
  finals = {  # task: optimizer: (final train loss, test metric)
    "a": {"sgd": (1.0, 0.8), "adam": (0.5, 0.9), "adam_tuned": (0.1, 0.9),
          "sgd_momentum_tuned": (0.2, 0.9), "garo_init": (0.4, 0.85)},
    "b": {"sgd": (1.0, 3.0), "adam": (0.5, 1.0), "adam_tuned": (0.0, 1.0),
          "sgd_momentum_tuned": (0.3, 1.0), "garo_init": (0.6, 2.0)},
  }  # fmt: skip
  results = {
    "config": {"optimizers": list(finals["a"])},
    "tasks": {
      name: {
        "split": "held_out" if name == "a" else "meta_train",
        "higher_is_better": name == "a",
        "optimizers": {
          opt: _record([2.0, loss], metric) for opt, (loss, metric) in opts.items()
        },
      }
      for name, opts in finals.items()
    },
  }
  summary = report.summarize(results)["summary"]["garo_init"]
  assert summary["all"]["wins"] == {
    "adam": {"loss": 1, "metric": 0, "tasks": 2},
    "sgd": {"loss": 2, "metric": 2, "tasks": 2},
  }
  # Task b's best tuned loss, 0, is floored at 1e-6 of the initial loss, 2.
  assert summary["all"]["loss_ratio_to_best_tuned"] == pytest.approx(
    {"a": 4.0, "b": 0.6 / 2e-6}
  )
  assert summary["all"]["geomean_loss_ratio_to_best_tuned"] == pytest.approx(
    np.sqrt(4.0 * 0.6 / 2e-6)
  )
  assert summary["held_out"]["geomean_loss_ratio_to_best_tuned"] == pytest.approx(4)
  assert results["tasks"]["a"]["target_loss"] == 0.5
  assert results["tasks"]["a"]["optimizers"]["garo_init"]["steps_to_target"] == {
    "per_seed": [10],
    "median": 10.0,
    "reached": 1,
  }


def _results(finals, splits):
  """Summarized results of one seed: ``finals[task][optimizer]`` is the final
  train loss, and the test metric (lower is better)."""
  results = {
    "config": {
      "command": "python -m benchmarks.suite --full",
      "mode": "full",
      "seeds": [0],
      "optimizers": list(next(iter(finals.values()))),
      "skipped_optimizers": {},
    },
    "machine": {"cpu": "a CPU", "cores": 1, "jax": "0", "optax": "0"},
    "wall_seconds": 60.0,
    "cpu_seconds": 60.0,
    "tasks": {
      name: {
        "split": splits[name],
        "higher_is_better": False,
        "optimizers": {opt: _record([2.0, loss], loss) for opt, loss in opts.items()},
      }
      for name, opts in finals.items()
    },
  }
  return report.summarize(results)


def test_best_peer_is_the_peer_of_lowest_held_out_geomean():
  # Loss ratios to adam_tuned (0.1): held out, prodigy 2 and 8 (geo-mean 4),
  # cocob 3 and 3; meta-train task m, where prodigy is far better, does not
  # count. reduce_on_plateau is better still, but not a tuning-free peer.
  opts = ("adam_tuned", "adam", "sgd", "prodigy", "cocob", "reduce_on_plateau",
          "garo_init")  # fmt: skip
  finals = {
    "a": dict(zip(opts, (0.1, 0.5, 1.0, 0.2, 0.3, 0.1, 0.25), strict=True)),
    "b": dict(zip(opts, (0.1, 0.5, 1.0, 0.8, 0.3, 0.1, 0.4), strict=True)),
    "m": dict(zip(opts, (0.1, 0.5, 1.0, 0.1, 10.0, 0.1, 0.05), strict=True)),
  }
  results = _results(finals, {"a": "held_out", "b": "held_out", "m": "meta_train"})
  assert report.best_peer(results) == results["best_peer"] == "cocob"
  garo = results["summary"]["garo_init"]
  assert garo["held_out"]["wins"]["cocob"] == {"loss": 1, "metric": 1, "tasks": 2}
  assert garo["all"]["wins"]["cocob"] == {"loss": 2, "metric": 2, "tasks": 3}

  summary = report.summary_markdown(results)
  assert "the best tuning-free peer, `cocob` (of `prodigy`, `cocob`:" in summary
  assert "beats `cocob` (best peer): loss, metric |" in summary
  assert "| `garo_init` | held-out | 2/2, 2/2 | 2/2, 2/2 | 1/2, 1/2 | 3.16 |" in summary
  headline = report.headline_markdown(results).split("\n")
  assert (
    "| beats adam(1e-3) | beats sgd(0.01) | beats `cocob` (best peer) |"
    in (headline[4])
  )
  rows = {line.split("`")[1]: line.split(" | ")[-3:] for line in headline[6:-1]}
  assert list(rows) == ["reduce_on_plateau", "cocob", "garo_init", "adam", "sgd"]
  assert rows["garo_init"] == ["2/2", "2/2", "1/2 |"]
  assert rows["cocob"][-1] == "— |"


def test_merge_adds_rows_and_keeps_the_others(tmp_path):
  common = ["--quick", "--steps", "20", "--out", str(tmp_path)]
  suite.main([*common, "--tasks", "quadratic", "--seeds", "1", "--optimizers",
              "adam", "cocob"])  # fmt: skip
  before = report.read(tmp_path / "suite_results.json")
  suite.main([*common, "--optimizers", "dadapt_adamw", "cocob", "--merge"])
  after = report.read(tmp_path / "suite_results.json")
  rows = after["tasks"]["quadratic"]["optimizers"]
  assert (
    list(rows) == after["config"]["optimizers"] == ["adam", "dadapt_adamw", "cocob"]
  )
  assert rows["adam"] == before["tasks"]["quadratic"]["optimizers"]["adam"]
  assert [run["optimizers"] for run in after["config"]["runs"]] == [
    ["adam", "cocob"],
    ["dadapt_adamw", "cocob"],
  ]
  assert after["config"]["runs"][1]["command"].endswith("cocob --merge")
  assert (
    "then `python -m benchmarks.suite --quick"
    in (tmp_path / "suite_summary.md").read_text()
  )
  with pytest.raises(ValueError, match="steps of quadratic"):
    suite.main(["--quick", "--steps", "10", "--out", str(tmp_path), "--optimizers",
                "sgd", "--merge"])  # fmt: skip
  with pytest.raises(ValueError, match="Cannot drop prodigy: no such rows"):
    suite.main([*common, "--optimizers", "sgd", "--merge", "--drop", "prodigy"])
  with pytest.raises(ValueError, match="Cannot drop cocob: this run has"):
    suite.main([*common, "--optimizers", "cocob", "--merge", "--drop", "cocob"])
  # Nothing was written by the refused merges.
  assert report.read(tmp_path / "suite_results.json") == after


def test_merge_on_another_machine_is_refused_before_the_runs(tmp_path, monkeypatch):
  common = ["--quick", "--steps", "5", "--out", str(tmp_path)]
  suite.main([*common, "--tasks", "quadratic", "--seeds", "1", "--optimizers", "sgd"])
  path = tmp_path / "suite_results.json"
  record = json.loads(path.read_text())
  record["machine"]["cpu"] = "another CPU"
  path.write_text(json.dumps(record))

  def runs(*args, **kwargs):
    raise AssertionError("the runs started")

  monkeypatch.setattr(suite, "run_suite", runs)
  with pytest.raises(ValueError, match=r"differ in cpu: .* made on another CPU"):
    suite.main([*common, "--optimizers", "adam", "--merge"])
  assert json.loads(path.read_text()) == record


def test_merge_drops_rows_of_optimizers_that_no_longer_exist(tmp_path):
  common = ["--quick", "--steps", "20", "--out", str(tmp_path)]
  suite.main([*common, "--tasks", "quadratic", "--seeds", "1", "--optimizers",
              "adam", "cocob"])  # fmt: skip
  suite.main([*common, "--optimizers", "sgd", "--merge", "--drop", "cocob"])
  after = report.read(tmp_path / "suite_results.json")
  rows = after["tasks"]["quadratic"]["optimizers"]
  assert list(rows) == after["config"]["optimizers"] == ["sgd", "adam"]
  assert "| `cocob`" not in (tmp_path / "suite_report.md").read_text()
  assert "| `adam`" in (tmp_path / "suite_report.md").read_text()
  with pytest.raises(SystemExit):
    suite.main([*common, "--tasks", "quadratic", "--optimizers", "sgd", "--drop",
                "adam"])  # fmt: skip


def test_task_split_is_a_partition():
  parts = (tasks.META_TRAIN, tasks.VALIDATION, tasks.HELD_OUT)
  assert sum(map(len, parts)) == len(set().union(*parts))
  assert set().union(*parts) == set(tasks.TASK_NAMES)
  assert {tasks.split(n) for n in tasks.VALIDATION} == {"validation"}
  assert {
    "logreg_breast_cancer",
    "mlp_mnist1d",
    "conv_digits",
    "char_lm",
    "diabetes",
    "rosenbrock",
  } <= set(tasks.HELD_OUT)


@pytest.mark.parametrize(
  ("kwargs", "valid"),
  [
    ({"task_names": ["quadratic", "nope"]}, tasks.TASK_NAMES),
    ({"optimizer_names": ["adam", "nope"]}, optimizers.OPTIMIZER_NAMES),
  ],
)
def test_unknown_names_list_the_valid_ones(kwargs, valid):
  with pytest.raises(ValueError, match="nope") as error:
    suite.run_suite("quick", progress=False, **kwargs)
  for name in valid:
    assert name in str(error.value)


def test_cli_rejects_unknown_names(capsys):
  with pytest.raises(SystemExit) as exit_info:
    suite.main(["--quick", "--optimizers", "adamm"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "adamm" in err and "garo_per_leaf" in err and "prodigy" in err


def test_effective_step_floor_prefers_the_stable_momentum():
  """On the bound lr = S (1 - β): β = 0.5 diverges on Rosenbrock at S = 1
  (lr 0.5 against curvature ~15), β = 0.9 does not and is picked."""
  from benchmarks import effective_step

  task = tasks.get("rosenbrock")
  loss, momentum = effective_step.best_on_bound(
    task, 1.0, seeds=1, momenta=(0.5, 0.9), steps=200
  )
  assert momentum == 0.9
  assert np.isfinite(loss) and loss < task.loss(task.init(jax.random.key(0)), None)


def test_compare_puts_earlier_garo_results_against_the_later_baselines():
  from benchmarks import compare

  def run(garo_losses, tuned=0.1):
    results = {
      "config": {
        "held_out_tasks": ["a", "b"],
        "optimizers": ["adam_tuned", "garo_init"],
      },
      "tasks": {
        name: {
          "split": "held_out",
          "higher_is_better": False,
          "optimizers": {
            "adam_tuned": _record([2.0, tuned], 0.0),
            "garo_init": _record([2.0, loss], 0.0),
          },
        }
        for name, loss in garo_losses.items()
      },
    }
    return report.summarize(results)

  before = run({"a": 0.4, "b": 0.8}, tuned=1.0)  # its own baselines are ignored
  after = run({"a": 0.2, "b": 0.2})
  variants = compare.compare(before, after, without=["b"])["variants"]
  assert variants["garo_init"]["before"]["shared"][
    "geomean_loss_ratio_to_best_tuned"
  ] == pytest.approx(4.0)
  assert variants["garo_init"]["before"]["all"][
    "geomean_loss_ratio_to_best_tuned"
  ] == pytest.approx(np.sqrt(4.0 * 8.0))
  assert variants["garo_init"]["after"]["all"][
    "geomean_loss_ratio_to_best_tuned"
  ] == pytest.approx(2.0)


@pytest.mark.parametrize("optimizer", ["garo", "garo_adamw"])
def test_other_meta_seeds_run_as_the_shipped_controller_does(optimizer):
  """Another meta-seed's controller is a file, which gets none of the shipped
  controller's defaults by itself: its suite rows add them, and the shipped
  weights run that way are the shipped transformation."""
  from garo_optax import pretrained

  defaults = optimizers.shipped_defaults(optimizer)
  for seed in optimizers.META_SEEDS:
    row = optimizers.OPTIMIZERS.get(f"{optimizer}_seed{seed}")
    if row is not None:
      assert row.make.keywords.items() >= defaults.items(), row.name
  make = {"garo": garo_optax.garo, "garo_adamw": garo_optax.garo_adamw}[optimizer]
  # Ten times the home rate: a run without the defaults stays there.
  lr = 10 * pretrained.BOUNDS[optimizer].home_learning_rate
  params = {"w": jnp.zeros(4)}

  def trajectory(tx):
    """Hyperparameters over 300 steps of a quadratic."""

    def step(carry, _):
      p, state = carry
      loss, grads = jax.value_and_grad(lambda p: 25.0 * jnp.sum((p["w"] - 3.0) ** 2))(p)
      updates, state = tx.update(grads, state, p, value=loss)
      return (optax.apply_updates(p, updates), state), garo_optax.hyperparams(state)

    return jax.lax.scan(step, (params, tx.init(params)), length=300)[1]

  shipped = trajectory(make(lr))
  from_file = trajectory(make(lr, controller=pretrained.FILES[optimizer], **defaults))
  bare = trajectory(make(lr, controller=pretrained.FILES[optimizer]))
  for key, value in from_file.items():
    np.testing.assert_array_equal(value, shipped[key])
  assert any(not np.array_equal(bare[k], shipped[k]) for k in shipped)


def test_the_shipped_meta_seeds_are_the_shipped_files():
  """The suite's garo_pretrained and garo_adamw rows are the meta-seeds the
  model card names: their files are the package's, byte for byte."""
  from garo_optax import pretrained

  garo = optimizers.META_SEEDS_DIR / f"seed{optimizers.SHIPPED_META_SEED}.npz"
  assert garo.read_bytes() == pretrained.FILES["garo"].read_bytes()
  adamw = (
    optimizers.ADAMW_META_SEEDS_DIR
    / optimizers.ADAMW_META_SEED_FILES[optimizers.SHIPPED_ADAMW_META_SEED]
  )
  assert adamw.read_bytes() == pretrained.FILES["garo_adamw"].read_bytes()
  # Every other meta-seed has a file of its own.
  files = [
    optimizers.ADAMW_META_SEEDS_DIR / f
    for f in optimizers.ADAMW_META_SEED_FILES.values()
  ]
  assert all(f.exists() for f in files) and len(set(files)) == 3
