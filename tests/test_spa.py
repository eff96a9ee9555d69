"""The SPA study's wiring: configs compose, one run follows the schedule, a tiny sweep feeds paper/spa.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch

from modules.nets import build

from .conftest import CONFIGS, REPO, run_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


SPA_EXPERIMENTS = [e for e in _options("experiment") if e.startswith("spa_")]
# a few seconds per run: 2 prune steps, 1-epoch phases, a 1-epoch digits pretraining
FAST = [
    "logger=csv",
    "progress=false",
    "pruning.max_steps=2",
    "spa_data.epochs_initial=1",
    "spa_model.digits_pretraining.epochs=1",
]


@pytest.mark.parametrize("option", _options("spa_data"))
def test_spa_data_options_compose(compose_cfg, option: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"spa_data={option}"])
    dm = hydra.utils.instantiate(cfg.spa_data.datamodule)
    assert cfg.spa_data.name == option
    assert {"lr", "epochs_initial", "epochs_recovery", "image_size", "flops_probe_size"} <= set(cfg.spa_data)
    if option == "digits":
        dm.setup("fit")
        assert dm.num_classes == 5 and dm.input_shape == (3, 8, 8)
    else:  # no dataset here: the error names where it was looked for
        with pytest.raises(FileNotFoundError, match=r"datamodules/README\.md"):
            dm.setup("fit")


@pytest.mark.parametrize("option", _options("spa_model"))
def test_spa_model_options_name_registered_nets(compose_cfg, option: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"spa_model={option}"])
    with torch.device("meta"):  # shapes only: random init of VGG-16 alone takes seconds
        net = build(cfg.spa_model.name, num_classes=7, **cfg.spa_model.kwargs)
    assert any(p.shape[0] == 7 for p in net.parameters())


@pytest.mark.parametrize("group", ["adapter", "pruning"])
def test_adapter_and_pruning_options_compose(compose_cfg, group: str) -> None:
    for option in _options(group):
        cfg = compose_cfg("spa.yaml", [f"{group}={option}"])
        if group == "adapter":
            assert cfg.adapter.method in ("finetune", "splora", "sppara") and cfg.adapter.name == option
        else:
            assert cfg.pruning.criterion == option and cfg.pruning.mask_mode in ("enforced", "legacy")


@pytest.mark.parametrize("experiment", SPA_EXPERIMENTS)
def test_spa_experiments_compose(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"experiment={experiment}"])
    assert cfg.spa_data.name in experiment
    if "resnet50" in experiment:  # Table 1 as published
        assert cfg.pruning.mask_mode == "legacy" and cfg.pruning.coupling == "none"


def test_one_run_follows_the_schedule_and_exports_exactly(tmp_path: Path) -> None:
    run_module("experiments.spa", *FAST, "adapter=splora_r8", "pruning=weight", cwd=tmp_path)
    (csv,) = tmp_path.glob("outputs/spa/*/*/spa_results.csv")
    rows = pd.read_csv(csv)
    assert list(rows.step) == [0, 1, 2]
    # resnet_tiny: 720 filters, 36 per step
    assert rows.density.tolist() == pytest.approx([1.0, 684 / 720, 648 / 720])
    assert rows.acc_pre_recovery.isna().tolist() == [True, False, False]
    for column in ("delta_params_legacy", "delta_params_exact", "flops_legacy", "flops_exact", "exported_params"):
        assert rows[column].is_monotonic_decreasing and rows[column].iloc[-1] < rows[column].iloc[0], column
    assert (rows.method == "splora").all() and (rows["rank"] == 8).all()
    summary = json.loads((csv.parent / "metrics.json").read_text())
    # enforced masks: the physically pruned, fused export is the same function
    assert summary["final/acc_exported"] == pytest.approx(summary["final/acc_masked"])
    assert summary["final/params_exported"] < summary["final/params_masked"]


def test_tiny_sweep_feeds_the_paper_table_and_figure(tmp_path: Path) -> None:
    """`make sweep-spa`'s chain, shrunk: a multirun over criterion x method, collect, table and figure."""
    sweep = tmp_path / "sweep"
    run_module(
        "experiments.spa",
        "-m",
        *FAST,
        "pruning=weight,taylor",
        "adapter=finetune,splora_r8",
        "pruning.mask_mode=legacy",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=900,
    )
    assert len(list(sweep.glob("*/spa_results.csv"))) == 4
    results, figures = tmp_path / "results", tmp_path / "figures"
    spa = str(REPO / "paper" / "spa.py")
    published = str(REPO / "paper/results/spa_published.csv")
    collect = ["--results-dir", str(results), "collect", str(sweep)]
    draw = ["--results-dir", str(results), "--figures-dir", str(figures), "--published", published]
    for args in (collect, draw):
        proc = subprocess.run([sys.executable, spa, *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = pd.read_csv(results / "spa_runs_digits.csv")
    assert len(runs) == 4 * 3 and set(runs.method) == {"finetune", "splora"}
    table = pd.read_csv(results / "spa_table1_digits.csv")
    assert not table.empty
    assert (figures / "spa_digits.png").stat().st_size > 10_000
