"""The SPA study's wiring: configs compose and instantiate, the prune-recover driver on a tiny net, one real run
follows the schedule, a tiny sweep feeds paper/spa.py, and the accuracy units the run CSV and the paper agree on."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import hydra
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modules.adapters import SPLoRAConv2d, SPPaRAConv2d, is_adapter
from modules.prune_recover import ACC_UNIT, PruneRecover, load_source_pretrained
from modules.pruning import ChannelScorer, PruneSchedule
from modules.systems import ImageClassificationSystem, phase_step_lr

from .conftest import CONFIGS, REPO, run_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _paper_spa() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_spa_for_units", REPO / "paper" / "spa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPA_EXPERIMENTS = [e for e in _options("experiment") if e.startswith("spa_")]
# a few seconds per run: 2 prune steps, 1-epoch phases, a 1-epoch digits pretraining, no progress bars
FAST = [
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "pruning.max_steps=2",
    "spa_data.epochs_initial=1",
    "spa_model.pretraining.epochs=1",
]


# --- configs ------------------------------------------------------------------------------------------------------
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
def test_spa_model_options_build_registered_nets(compose_cfg, option: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"spa_model={option}"])
    build = hydra.utils.instantiate(cfg.spa_model.net)
    with torch.device("meta"):  # shapes only: random init of VGG-16 alone takes seconds
        # the ImageNet weights are not here; their loading is the registry's (tests/nets)
        net = build(num_classes=7, **({"pretrained": False} if "pretrained" in build.keywords else {}))
    assert any(p.shape[0] == 7 for p in net.parameters())
    if cfg.spa_model.get("pretraining"):  # the digits stand-in for ImageNet weights
        pretrain = hydra.utils.instantiate(cfg.spa_model.pretraining)
        assert pretrain.func is load_source_pretrained and pretrain.keywords["source"].task == "pretrain"


@pytest.mark.parametrize("option", _options("adapter"))
def test_adapter_options_convert_the_convs(compose_cfg, option: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"adapter={option}"])
    assert cfg.adapter.name == option and cfg.adapter.method in ("finetune", "splora", "sppara")
    convert = hydra.utils.instantiate(cfg.adapter.convert)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 4, 2))
    if cfg.adapter.method == "finetune":
        assert convert is None
        return
    net = convert(net)
    expected = SPLoRAConv2d if cfg.adapter.method == "splora" else SPPaRAConv2d
    assert isinstance(net[0], expected) and not is_adapter(net[2])  # Conv2d only, as published
    if cfg.adapter.method == "splora":
        assert net[0].rank == cfg.adapter.rank


@pytest.mark.parametrize("option", _options("pruning"))
def test_pruning_options_name_their_scorer(compose_cfg, option: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"pruning={option}"])
    scorer = hydra.utils.instantiate(cfg.pruning.scorer)
    assert scorer.func is ChannelScorer and scorer.keywords["criterion"] == cfg.pruning.criterion == option
    assert cfg.pruning.mask_mode in ("enforced", "legacy")


@pytest.mark.parametrize("experiment", SPA_EXPERIMENTS)
def test_spa_experiments_compose(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg("spa.yaml", [f"experiment={experiment}"])
    assert cfg.spa_data.name in experiment
    if "resnet50" in experiment:  # Table 1 as published
        assert cfg.pruning.mask_mode == "legacy" and cfg.pruning.coupling == "none"
    # the shared groups: Lightning picks the device; no per-phase checkpoints; the training callbacks otherwise
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.devices == 1 and not cfg.trainer.enable_checkpointing
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    assert any(isinstance(c, ModelSummary) for c in callbacks)
    assert any(isinstance(c, LearningRateMonitor) for c in callbacks)
    assert not any(isinstance(c, ModelCheckpoint) for c in callbacks)


def test_a_trainer_option_chooses_the_device(compose_cfg) -> None:
    assert compose_cfg("spa.yaml", ["trainer=cpu"]).trainer.accelerator == "cpu"
    cfg = compose_cfg("spa.yaml", ["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.limit_val_batches == 0


def test_the_system_is_the_published_recipe(compose_cfg) -> None:
    cfg = compose_cfg("spa.yaml", ["experiment=spa_digits"])
    system = hydra.utils.instantiate(cfg.system)(net=_tiny_net(), num_classes=4)
    assert isinstance(system, ImageClassificationSystem)
    assert system.optimizer.func is torch.optim.SGD
    assert system.optimizer.keywords == {"lr": cfg.spa_data.lr, "momentum": 0.9, "weight_decay": 5e-4}
    assert system.scheduler.func is phase_step_lr and system.scheduler.keywords == {"steps": 4, "gamma": 0.2}


# --- the driver on its own --------------------------------------------------------------------------------------
def _tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


class _TinyData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        y = torch.arange(48) % 4
        x = torch.randn(48, 3, 6, 6, generator=g) + y[:, None, None, None]  # learnable: the class shifts the mean
        self.train, self.test = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=8, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=8)


def _trainer_factory(logger: CSVLogger, calls: list[dict[str, Any]], csv: Path) -> Any:
    """A Trainer per call, as experiments/spa.py makes them, noting the overrides and the rows written so far."""

    def make_trainer(**overrides: Any) -> pl.Trainer:
        rows = len(pd.read_csv(csv)) if csv.exists() else 0
        calls.append({**overrides, "rows_on_disk": rows})
        defaults = {"accelerator": "cpu", "devices": 1, "logger": [logger], "enable_progress_bar": False}
        defaults.update(enable_checkpointing=False, limit_val_batches=0, callbacks=[LearningRateMonitor("epoch")])
        return pl.Trainer(**{**defaults, **overrides})

    return make_trainer


def test_the_driver_follows_the_schedule_and_writes_each_row_as_its_step_completes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    system = ImageClassificationSystem(
        _tiny_net(),
        4,
        functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
        functools.partial(phase_step_lr, steps=4, gamma=0.2),
    )
    csv, calls = tmp_path / "spa_results.csv", []
    logger = CSVLogger(tmp_path, name="csv", version="")
    make_trainer = _trainer_factory(logger, calls, csv)
    driver = PruneRecover(
        system,
        _TinyData(),
        make_trainer,
        functools.partial(ChannelScorer, criterion="taylor"),
        epochs_initial=2,
        epochs_recovery=1,
        input_shape=(3, 6, 6),
        step_frac=0.25,  # 16 filters: 4 per step, int(4 * 0.9501) = 3 steps
        recovery_weight_decay=0.0,
        output_file=csv,
        columns={"arch": "tiny", "seed": 0},
        loggers=[logger],
    )
    summary = driver.run()
    rows = pd.read_csv(csv)
    schedule = PruneSchedule(16, 0.25)
    assert list(rows.step) == [0, 1, 2, 3] and schedule.num_steps == 3
    assert rows.density.tolist() == pytest.approx([schedule.density(k) for k in range(4)])
    assert list(rows.columns[:2]) == ["arch", "seed"] and (rows.acc_unit == ACC_UNIT).all()
    assert rows.acc.between(0, 1).all() and rows.acc_pre_recovery.iloc[1:].between(0, 1).all()
    # a fresh Trainer per phase (initial, 3 recoveries, the extra final one), each seeing the rows done so far
    fits = [c for c in calls if "max_epochs" in c]
    assert [c["max_epochs"] for c in fits] == [2, 1, 1, 1, 1]
    assert [c["rows_on_disk"] for c in fits] == [0, 1, 2, 3, 3]
    assert all(c.get("logger") is False and c.get("inference_mode") is False for c in calls if "max_epochs" not in c)
    # recovery without weight decay (the arXiv-era code), the initial phase with it
    assert system.optimizer.keywords["weight_decay"] == 0.0
    assert summary["final/density"] == pytest.approx(schedule.density(3))
    assert summary["final/top1_exported"] == pytest.approx(summary["final/top1_masked"])  # enforced masks
    # one step axis over the phases: batches trained (4 per epoch x 6 epochs)
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert logged.step.is_monotonic_increasing and logged.step.max() == 4 * 6
    assert logged["prune/density"].dropna().tolist() == pytest.approx(rows.density.tolist())
    assert {"train/loss", "train/top1", "train/lr", "prune/top1", "prune/top1_pre_recovery"} <= set(logged.columns)


# --- the seed ---------------------------------------------------------------------------------------------------
def test_source_pretraining_leaves_the_runs_seed_alone(tmp_path: Path) -> None:
    """Whether the source weights were cached or trained in this process, the run's own seed decides the head,
    the adapters and the data order afterwards (the pretraining trains in a forked RNG)."""
    source = _TinyData()
    source.num_classes = 4
    calls: list[dict[str, Any]] = []
    kwargs = {
        "build": lambda num_classes: _tiny_net() if num_classes == 4 else None,
        "source": source,
        "make_trainer": _trainer_factory(CSVLogger(tmp_path), calls, tmp_path / "none.csv"),
        "epochs": 1,
        "optimizer": functools.partial(torch.optim.SGD, lr=0.05),
        "scheduler": None,
        "cache_dir": tmp_path / "cache",
        "label": "tiny",
        "head": "8",
    }
    draws = []
    for _ in range(2):  # trains and caches, then loads
        torch.manual_seed(1)
        net = _tiny_net()
        new = load_source_pretrained(net, **kwargs)
        draws.append((net[8].weight.clone(), torch.rand(3)))
    assert len(list((tmp_path / "cache").glob("tiny_*.pt"))) == 1 and len(calls) == 2  # one fit and its test
    assert new == ["8.weight", "8.bias"]  # the head stays the run's
    torch.testing.assert_close(draws[0][0], draws[1][0])
    torch.testing.assert_close(draws[0][1], draws[1][1])


# --- one run and a sweep ----------------------------------------------------------------------------------------
def test_one_run_follows_the_schedule_and_exports_exactly(tmp_path: Path) -> None:
    run_module("experiments.spa", *FAST, "adapter=splora_r8", "pruning=weight", cwd=tmp_path)
    (csv,) = tmp_path.glob("outputs/spa/*/*/spa_results.csv")
    rows = pd.read_csv(csv)
    assert list(rows.step) == [0, 1, 2]
    # resnet_tiny: 720 filters, 36 per step
    assert rows.density.tolist() == pytest.approx([1.0, 684 / 720, 648 / 720])
    assert rows.acc_pre_recovery.isna().tolist() == [True, False, False]
    assert (rows.acc_unit == "fraction").all() and rows.acc.between(0.2, 1).all()  # above chance (5 classes)
    for column in ("delta_params_legacy", "delta_params_exact", "flops_legacy", "flops_exact", "exported_params"):
        assert rows[column].is_monotonic_decreasing and rows[column].iloc[-1] < rows[column].iloc[0], column
    assert (rows.method == "splora").all() and (rows["rank"] == 8).all() and (rows.criterion == "weight").all()
    summary = json.loads((csv.parent / "metrics.json").read_text())
    # enforced masks: the physically pruned, fused export is the same function
    assert summary["final/top1_exported"] == pytest.approx(summary["final/top1_masked"])
    assert summary["final/top1_masked"] == pytest.approx(rows.acc.iloc[-1])
    assert summary["final/params_exported"] < summary["final/params_masked"]
    logged = pd.read_csv(csv.parent / "csv" / "metrics.csv")
    assert logged.step.is_monotonic_increasing
    names = {c for c in logged.columns if "/" in c}
    assert {"train/loss", "train/top1", "train/lr", "prune/density", "prune/top1", "final/top1_masked"} <= names
    assert all(name.split("/")[0] in ("train", "prune", "final") for name in names), names


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
    # collected in the paper's unit, percent, and labelled so
    assert (runs.acc_unit == "percent").all() and runs.acc.between(20, 100).all()
    table = pd.read_csv(results / "spa_table1_digits.csv")
    assert not table.empty and table.acc_mean.between(20, 100).all()
    assert (figures / "spa_digits.png").stat().st_size > 10_000


# --- units ------------------------------------------------------------------------------------------------------
def test_the_paper_reads_fractions_and_the_reference_percent_alike(tmp_path: Path) -> None:
    spa = _paper_spa()
    reference = REPO / "paper" / "results" / "spa_runs_digits.csv"
    percent = spa.read_runs(reference)
    assert "acc_unit" not in pd.read_csv(reference, nrows=1).columns  # written before the column existed
    assert percent.acc.max() > 1  # percent, read as it is
    fractions = pd.read_csv(reference, keep_default_na=False, na_values=[""])
    fractions[["acc", "acc_pre_recovery"]] /= 100
    fractions["acc_unit"] = "fraction"
    fractions.to_csv(tmp_path / "fractions.csv", index=False)
    converted = spa.read_runs(tmp_path / "fractions.csv")
    pd.testing.assert_series_equal(converted.acc, percent.acc)
    pd.testing.assert_series_equal(converted.acc_pre_recovery, percent.acc_pre_recovery)
    fractions["acc_unit"] = "permille"
    fractions.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="acc_unit"):
        spa.read_runs(tmp_path / "bad.csv")
