"""Choosing a controller on the validation tasks: runs, checkpoints, the split."""

import pytest

from benchmarks import select_controller


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


def test_held_out_tasks_are_refused_before_any_run(tmp_path):
  with pytest.raises(ValueError, match="mlp_mnist1d are held out"):
    select_controller.main(
      [str(tmp_path / "missing.npz"), "--tasks", "wine_logreg", "mlp_mnist1d"]
    )
