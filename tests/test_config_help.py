"""``--help`` of each entry point lists its own config groups and experiments only."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config_help import ENTRY_POINTS, config_groups_help, experiment_groups

REPO = Path(__file__).resolve().parents[1]
SPA_GROUPS = ("adapter", "pruning", "spa_data", "spa_model")


def _listed(text: str) -> dict[str, list[str]]:
    return {g: o.split(", ") for g, o in re.findall(r"^(\w+): (.+)$", text, flags=re.M)}


def test_train_help_lists_no_spa_group_or_experiment():
    listed = _listed(config_groups_help("train"))
    assert {"data", "model", "eval", "trainer", "callbacks", "logger", "experiment"} <= set(listed)
    assert not set(SPA_GROUPS) & set(listed)
    assert "cox3d_s_kinetics400" in listed["experiment"]
    assert not [e for e in listed["experiment"] if e.startswith("spa_")]
    assert "adapter (spa)" in config_groups_help("train")  # the other entry point is named


def test_spa_help_lists_no_video_group_or_experiment():
    listed = _listed(config_groups_help("spa.yaml"))
    assert set(SPA_GROUPS) <= set(listed) and not {"data", "model", "eval"} & set(listed)
    assert listed["experiment"] == [
        "spa_digits",
        "spa_resnet50_catsdogs",
        "spa_resnet50_cifar10",
        "spa_resnet50_flowers102",
    ]


def test_experiments_inherit_the_groups_of_the_experiment_they_build_on():
    # cox3d_tiny_moving_digits overrides /model and builds on x3d_tiny_moving_digits, which overrides /data
    assert {"model", "data"} <= experiment_groups("cox3d_tiny_moving_digits")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_has_a_primary_config(name):
    assert (REPO / "configs" / f"{name}.yaml").is_file()
    assert config_groups_help(name)


def test_train_help_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--help"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "experiment: " in proc.stdout and "spa_digits" not in proc.stdout and "spa_data:" not in proc.stdout
