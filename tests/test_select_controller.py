"""Choosing a controller on the validation tasks: runs, checkpoints, the split."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import garo_optax
from benchmarks import embed_scale, select_controller


def test_snapshots_of_one_folder_are_one_run():
  assert select_controller.run_of("runs/seed0/step500.npz") == "runs/seed0"
  # Final controllers side by side are runs of their own.
  assert select_controller.run_of("results/seed0.npz") == "results/seed0.npz"
  assert (
    select_controller.run_of("runs/seed0/step500b.npz") == "runs/seed0/step500b.npz"
  )


def test_best_per_run_takes_each_runs_lowest_score():
  scores = {
    "a/step50.npz": 3.0,
    "b/step50.npz": 2.0,
    "a/step100.npz": 1.0,
    "b/step100.npz": 2.0,  # a tie: the earlier checkpoint stays
    "final.npz": 9.0,
  }
  assert select_controller.best_per_run(scores) == {
    "a": "a/step100.npz",
    "b": "b/step50.npz",
    "final.npz": "final.npz",
  }


def summary(log_learning_rate_step, momentum_step):
  return {
    "max_log_learning_rate_step": log_learning_rate_step,
    "max_momentum_step": momentum_step,
  }


def test_a_schedule_is_readable_only_within_both_bounds():
  lr_bound = select_controller.MAX_LOG_LEARNING_RATE_STEP
  momentum_bound = select_controller.MAX_MOMENTUM_STEP
  assert select_controller.readable(summary(lr_bound, momentum_bound))
  assert not select_controller.readable(summary(1.01 * lr_bound, 0.0))
  assert not select_controller.readable(summary(0.0, 1.01 * momentum_bound))
  # A task whose change is unknown (NaN) is not readable.
  assert not select_controller.readable(summary(float("nan"), 0.0))


def test_the_score_counts_every_start_of_every_task():
  """Floored at 1e-6 of the initial loss (1 here): b's exact fits count as
  the floor, as the tuned best's does."""
  row = {"best_tuned": 1e-3, "floor": 1e-6, "lr_spread": 1.0}
  tasks = {
    "a": {**row, "garo_lr0.0001": 8e-3, "garo_lr0.001": 4e-3, "garo_lr0.01": 2e-3},
    "b": {**row, "best_tuned": 0.0, "garo_lr0.0001": 0.0, "garo_lr0.001": 0.0},
  }
  assert select_controller.score({"tasks": tasks}) == pytest.approx(64 ** (1 / 5))


def test_a_chattering_controller_ranks_after_every_readable_one():
  records = {
    "a/step50.npz": {"score": 1.0, "readable": False},
    "a/step100.npz": {"score": 5.0, "readable": True},
    "b.npz": {"score": 3.0, "readable": True},
  }
  ranked = sorted(records, key=lambda k: select_controller.rank(records[k]))
  assert ranked == ["b.npz", "a/step100.npz", "a/step50.npz"]
  scores = {path: select_controller.rank(r) for path, r in records.items()}
  # Within a run too: the readable checkpoint is that run's best.
  assert select_controller.best_per_run(scores) == {
    "a": "a/step100.npz",
    "b.npz": "b.npz",
  }


def test_a_controller_that_blows_up_ranks_after_every_safe_one():
  records = {
    "a.npz": {"score": 1.0, "readable": True, "peak_loss_over_first": {"g": 1.4}},
    "b.npz": {"score": 2.0, "readable": True, "peak_loss_over_first": {"g": 1.0}},
    # Not checked (garo_adamw's): counts as safe.
    "c.npz": {"score": 3.0, "readable": True},
    "d.npz": {"score": 0.5, "readable": False},
  }
  assert [select_controller.safe(r) for r in records.values()] == [
    False,
    True,
    True,
    True,
  ]
  ranked = sorted(records, key=lambda k: select_controller.rank(records[k]))
  assert ranked == ["b.npz", "c.npz", "d.npz", "a.npz"]


def test_the_safety_check_measures_the_peak_of_every_run():
  peaks = select_controller.peak_loss_over_first("init", seeds=1, steps=5)
  assert set(peaks) == set(select_controller.SAFETY_GRANULARITIES)
  # The first loss counts, so a peak is at least 1; finite runs give finite peaks.
  assert all(1.0 <= peak < float("inf") for peak in peaks.values())


def test_a_controller_that_stalls_transformers_ranks_after_one_that_trains_them():
  slack = select_controller.TRANSFORMER_SLACK
  records = {
    "a.npz": {"score": 1.0, "readable": True, "transformer_loss_over_adamw": {}},
    "b.npz": {"score": 2.0, "readable": True, "transformer_loss_over_adamw": {}},
  }
  records["a.npz"]["transformer_loss_over_adamw"] = {"w": 0.9, "v": 1.01 * slack}
  records["b.npz"]["transformer_loss_over_adamw"] = {"w": 0.9, "v": slack}
  assert [select_controller.safe(r) for r in records.values()] == [False, True]
  ranked = sorted(records, key=lambda k: select_controller.rank(records[k]))
  assert ranked == ["b.npz", "a.npz"]


def test_the_transformer_check_compares_with_adamw_on_every_problem(
  tmp_path, monkeypatch
):
  """A controller whose heads are zero runs AdamW at its starting rate: the
  check measures a ratio of 1 on every transformer and embedding scale."""
  monkeypatch.setattr(embed_scale, "ARCHITECTURES", ((16, 1, 2, 4, 8, 2),))
  controller = garo_optax.init_controller(jax.random.key(1), head_scale=1.0)
  controller = controller._replace(head_kernel=jnp.zeros_like(controller.head_kernel))
  path = tmp_path / "zero_heads.npz"
  garo_optax.save_controller(path, controller, optimizer="garo_adamw")
  ratios = select_controller.loss_over_adamw(str(path), seeds=1, steps=4)
  assert list(ratios) == [
    f"w16_d1_h2_c4_v8_b2 embed {scale:g}"
    for scale in select_controller.TRANSFORMER_EMBED_SCALES
  ]
  np.testing.assert_allclose(list(ratios.values()), 1.0, rtol=1e-5)


def test_earlier_scores_are_ranked_without_running_again(tmp_path):
  def record(score, momentum_step):
    return {
      "score": score,
      "tasks": {"wine_logreg": {}},
      "geomean_ratio_to_best_tuned": score,
      "max_lr_spread": 1.0,
      # Checked already: not run again.
      "peak_loss_over_first": {"global": 1.0, "per_leaf": 1.0},
      **summary(0.01, momentum_step),
    }

  first, second, out = (tmp_path / f for f in ("a.json", "b.json", "out.json"))
  first.write_text(json.dumps({"x.npz": record(1.0, 0.02), "ships": "x.npz"}))
  second.write_text(json.dumps({"y.npz": record(2.0, 0.005)}))
  select_controller.main(
    ["--scored", str(first), str(second), "--tasks", "wine_logreg", "--out", str(out)]
  )
  ranked = json.loads(out.read_text())
  assert ranked["ships"] == "y.npz"  # x chatters: 0.02 > MAX_MOMENTUM_STEP
  assert [ranked[k]["readable"] for k in ("x.npz", "y.npz")] == [False, True]
  with pytest.raises(ValueError, match=r"scored x\.npz on other tasks"):
    select_controller.main(["--scored", str(first), "--tasks", "wine_mlp"])


def test_held_out_tasks_are_refused_before_any_run(tmp_path):
  with pytest.raises(ValueError, match="mlp_mnist1d are held out"):
    select_controller.main(
      [str(tmp_path / "missing.npz"), "--tasks", "wine_logreg", "mlp_mnist1d"]
    )
