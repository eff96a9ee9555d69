"""``experiments.run``: the entry points from Python, each run in its own directory."""

import json

import pytest

import experiments
from tests.conftest import TINY


def test_train_then_evaluate_the_best_checkpoint_from_python(tmp_path):
    fit = experiments.run("train", "experiment=conv_stack_synthetic", "logger=csv", *TINY, output_dir=tmp_path / "fit")
    assert fit.output_dir == tmp_path / "fit"
    assert json.loads((fit.output_dir / "metrics.json").read_text()) == pytest.approx(fit.metrics)
    assert {"val/top1", "test/top1"} <= set(fit.metrics)
    assert fit.best_checkpoint.parent == fit.output_dir / "checkpoints" and fit.last_checkpoint.is_file()

    test = experiments.run(
        "eval", "experiment=conv_stack_synthetic", "logger=csv", "data.num_test=16", f"ckpt_path={fit.best_checkpoint}"
    )
    assert test.output_dir.is_relative_to(tmp_path / "outputs" / "eval")  # LOG_DIR is tmp_path in tests
    assert test.metrics["test/top1"] == pytest.approx(fit.metrics["test/top1"])  # same weights, same test set


def test_a_run_never_reuses_a_directory(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a run"):
        experiments.run("train", "experiment=conv_stack_synthetic", output_dir=tmp_path / "taken")


def test_unknown_entry_point_names_the_known_ones():
    with pytest.raises(ValueError, match="eval"):
        experiments.run("fit")
