"""Runs that survive faults: a directory of their own, kill -9 then exact resume, last.ckpt at the latest epoch, and
the overall best checkpoint tested after a resume into a new directory."""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from pytorch_lightning.trainer.states import TrainerFn

from experiments import runs
from experiments.resume import RNGState
from experiments.train import train
from tests.conftest import CONFIGS, REPO, TINY, run_module


class KillAtEpochStart(pl.Callback):
    """kill -9 this process when epoch ``epoch`` starts: every earlier epoch finished and was checkpointed, and
    nothing gets a chance to clean up (the fault a cluster's OOM killer or pre-emption gives)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def _epoch_rows(run_dir: Path) -> dict[int, dict[str, str]]:
    """Per epoch, the CSV log's values (as written: exact decimal strings) of its train and val metrics."""
    rows: dict[int, dict[str, str]] = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if not row["epoch"]:
                continue  # the learning-rate monitor's rows carry a step only
            values = {k: v for k, v in row.items() if k.startswith(("train/", "val/")) and v}
            if values:  # not the test stage's rows
                rows.setdefault(int(row["epoch"]), {}).update(values)
    return rows


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --- 1. every run a directory of its own -------------------------------------------------------------------------
def _hydra_dirs() -> tuple[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train.yaml", return_hydra_config=True)
    GlobalHydra.instance().clear()
    return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")


def test_runs_started_in_the_same_second_get_different_directories():
    (run_a, sweep_a), (run_b, sweep_b) = _hydra_dirs(), _hydra_dirs()
    assert run_a != run_b and sweep_a != sweep_b
    # still sorted by start time: <date>/<H-M-S>_<microseconds>
    assert re.search(r"/outputs/train/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d_\d{6}$", run_a), run_a
    assert re.search(r"/multirun/train/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d_\d{6}$", sweep_a), sweep_a


def test_a_run_refuses_a_directory_holding_another_runs_results(compose_cfg, tmp_path):
    overrides = ["experiment=conv_stack_synthetic", "logger=csv", *TINY]
    train(compose_cfg("train.yaml", overrides))
    first = _metrics(tmp_path / "run")
    with pytest.raises(
        FileExistsError, match=r"holds another run's results \(metrics.json, csv/metrics.csv, checkpoints/epoch_000"
    ):
        train(compose_cfg("train.yaml", overrides))
    assert _metrics(tmp_path / "run") == first
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_a_directory_in_use_by_a_live_run_is_refused(tmp_path):
    held, refused = runs.claim_run_dir(tmp_path / "run"), pytest.raises(FileExistsError, match="in use by another run")
    with held, refused, runs.claim_run_dir(tmp_path / "run"):
        pass
    assert f"(pid {os.getpid()})" in str(refused.excinfo.value)
    with runs.claim_run_dir(tmp_path / "run"):  # released when the first run ends (or dies: the OS drops the lock)
        pass


def test_resuming_may_continue_in_the_interrupted_runs_directory(compose_cfg, tmp_path):
    # Lightning's CSVLogger deletes an existing metrics.csv; experiments.loggers.CSVLogger continues it
    overrides = [
        "experiment=conv_stack_synthetic",
        "logger=csv",
        "logger.csv._target_=experiments.loggers.CSVLogger",
        *TINY,
    ]
    train(compose_cfg("train.yaml", overrides))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    metrics = train(compose_cfg("train.yaml", [*overrides, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert sorted(_epoch_rows(tmp_path / "run")) == [0, 1]  # the CSV log goes on
    assert (
        torch.load(last, weights_only=False)["epoch"] == 1
        and _metrics(tmp_path / "run")["test/top1"] == (metrics["test/top1"])
    )


# --- 3. last.ckpt is the latest epoch ----------------------------------------------------------------------------
def test_last_ckpt_is_the_latest_epoch_when_the_monitor_stops_improving(compose_cfg, tmp_path):
    # lr=0 (AdamW's decay is lr-scaled too): the weights never change, so val/top1 improves after epoch 0 never
    overrides = ["experiment=conv_stack_synthetic", "logger=csv", *TINY, "trainer.max_epochs=3", "model.optimizer.lr=0"]
    train(compose_cfg("train.yaml", overrides))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 3 * 4)  # 32 samples / batch 8 = 4 steps per epoch


# --- 2. kill -9, resume from last.ckpt, same numbers -------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_then_resume_from_last_ckpt_repeats_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kill callback lives in this test module
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["experiment=conv_stack_synthetic", "logger=csv", *TINY, "trainer.max_epochs=4",
              "trainer.deterministic=true", "seed=7"]  # fmt: skip
    run_module("experiments.train", *common, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path)

    kill = ["+callbacks.kill._target_=tests.reliability.test_runs.KillAtEpochStart", "+callbacks.kill.epoch=2"]
    with pytest.raises(AssertionError, match="exited -9"):
        run_module("experiments.train", *common, *kill, f"hydra.run.dir={tmp_path / 'killed'}", cwd=tmp_path)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1  # epochs 0 and 1 finished
    full = _epoch_rows(tmp_path / "full")
    # the CSV log keeps every checkpointed epoch (it is flushed with each checkpoint, not only every 100 steps)
    assert _epoch_rows(tmp_path / "killed") == {epoch: full[epoch] for epoch in (0, 1)}

    run_module("experiments.train", *common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    resumed = _epoch_rows(tmp_path / "resumed")
    assert sorted(resumed) == [2, 3]
    assert {epoch: full[epoch] for epoch in resumed} == resumed
    full_metrics, resumed_metrics = _metrics(tmp_path / "full"), _metrics(tmp_path / "resumed")
    assert {k: v for k, v in resumed_metrics.items() if k.startswith("test/")} == {
        k: v for k, v in full_metrics.items() if k.startswith("test/")
    }


# --- 4. the overall best checkpoint after a resume into a new directory ------------------------------------------
def test_a_run_resumed_into_a_new_directory_tests_the_overall_best(compose_cfg, tmp_path):
    # A monitor that is best at epoch 0 whatever the training does (the lowest epoch), i.e. before the resume:
    # the resumed part's epochs must not replace it.
    overrides = ["experiment=conv_stack_synthetic", "logger=csv", *TINY, "optimized_metric=epoch", "optimized_mode=min"]
    train(compose_cfg("train.yaml", overrides, subdir="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    returned = train(compose_cfg("train.yaml", [*overrides, "trainer.max_epochs=3", f"ckpt_path={last}"], "resumed"))
    assert sorted(_epoch_rows(tmp_path / "resumed")) == [1, 2]

    best = tmp_path / "first" / "checkpoints" / "epoch_000.ckpt"
    metrics = _metrics(tmp_path / "resumed")
    # the tested weights are the best checkpoint's: the first run tested the same file
    assert metrics["test/loss"] == _metrics(tmp_path / "first")["test/loss"]
    assert (metrics["tested_checkpoint"], metrics["tested_checkpoint_score"]) == (str(best), 0.0)
    assert metrics == pytest.approx(returned) and {"test/top1", "val/top1"} <= set(metrics)


def test_rng_state_restores_every_generator_and_names_a_missing_one():
    class Data:
        def __init__(self) -> None:
            self._generator = torch.Generator().manual_seed(3)  # a DataLoader's own (datamodules.images)

    def draws(data: Data) -> list:
        own = torch.rand(2, generator=data._generator).tolist()
        return [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(), own]

    data = Data()
    trainer = SimpleNamespace(datamodule=data, state=SimpleNamespace(fn=TrainerFn.FITTING))
    checkpoint: dict = {}
    RNGState().on_save_checkpoint(trainer, None, checkpoint)
    checkpoint = pickle.loads(pickle.dumps(checkpoint))  # as written to and read from disk
    expected = draws(data)
    RNGState().on_load_checkpoint(trainer, None, checkpoint)
    assert draws(data) == expected

    trainer.datamodule = SimpleNamespace()  # another data config: no generator of its own
    with pytest.raises(KeyError, match=r"random state of datamodule._generator, which SimpleNamespace does not"):
        RNGState().on_load_checkpoint(trainer, None, checkpoint)
