"""The train and eval entry points on the synthetic datamodule: run files, resume, checkpoint evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from experiments.eval import evaluate
from experiments.train import train
from experiments.utils import has_wandb_credentials, instantiate_loggers, wandb_mode
from tests.conftest import TINY


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def _train_epochs(run_dir: Path) -> set[int]:
    """Epochs in which the CSV logger saw a training epoch end."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["epoch"]) for row in csv.DictReader(f) if row.get("train/loss")}


def test_fast_dev_run_writes_metrics_and_resolved_config(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "train.yaml", ["experiment=conv_stack_synthetic", "logger=csv", "trainer.fast_dev_run=true", *TINY]
    )
    returned = train(cfg)

    run = tmp_path / "run"
    metrics = _metrics(run)
    assert {"train/loss", "train/top1", "val/loss", "val/top1", "test/top1", "test/loss"} <= set(metrics)
    assert metrics == pytest.approx(returned)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("train/top1", "val/top1", "test/top1"))
    text = (run / "config.yaml").read_text()
    assert "${" not in text, "config.yaml must be resolved"
    saved = yaml.safe_load(text)
    assert saved["model"]["net"]["name"] == "conv_stack"
    assert saved["paths"]["output_dir"] == str(run)


def test_continual_twin_trains_on_clips_and_evaluates_stepwise(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "train.yaml", ["experiment=co_conv_stack_synthetic", "logger=csv", "trainer.fast_dev_run=true", *TINY]
    )
    assert cfg.model.eval_protocol == "frame" and cfg.data.eval_clip_length == 10
    metrics = train(cfg)
    assert 0.0 <= metrics["test/top1"] <= 1.0 and "val/top1" in metrics


def test_one_epoch_then_resume_continues_and_eval_reproduces_test(compose_cfg, tmp_path):
    first = compose_cfg("train.yaml", ["experiment=conv_stack_synthetic", "logger=csv", *TINY], subdir="first")
    m1 = train(first)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert _train_epochs(tmp_path / "first") == {0}

    resumed = compose_cfg(
        "train.yaml",
        ["experiment=conv_stack_synthetic", "logger=csv", *TINY, "trainer.max_epochs=2", f"ckpt_path={last}"],
        subdir="resumed",
    )
    train(resumed)
    # A resumed run trains only the missing epoch; a fresh run would log epoch 0 again.
    assert _train_epochs(tmp_path / "resumed") == {1}
    ckpt_first = torch.load(last, map_location="cpu", weights_only=False)
    ckpt_resumed = torch.load(
        tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert ckpt_resumed["global_step"] == 2 * ckpt_first["global_step"] > 0

    # The single epoch's checkpoint is also the best one that train() tested: eval must reproduce its number.
    best = next((tmp_path / "first" / "checkpoints").glob("epoch_*.ckpt"))
    cfg = compose_cfg("eval.yaml", ["experiment=conv_stack_synthetic", *TINY[:4], f"ckpt_path={best}"], "eval")
    metrics = evaluate(cfg)
    assert metrics["test/top1"] == pytest.approx(m1["test/top1"])
    assert _metrics(tmp_path / "eval")["test/top1"] == pytest.approx(m1["test/top1"])

    # Identical state_dict keys: the offline checkpoint evaluates with the continual twin, stepwise.
    cfg = compose_cfg("eval.yaml", ["experiment=co_conv_stack_synthetic", *TINY[:4], f"ckpt_path={best}"], "co_eval")
    assert 0.0 <= evaluate(cfg)["test/top1"] <= 1.0


def test_wandb_goes_offline_into_the_run_dir_without_credentials(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert not has_wandb_credentials() and wandb_mode() == "offline"
    cfg = compose_cfg(
        "train.yaml", ["experiment=conv_stack_synthetic", "logger=wandb", "trainer.fast_dev_run=true", *TINY]
    )
    loggers = instantiate_loggers(cfg.logger)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "WandbLogger"]
    assert loggers[1]._wandb_init["mode"] == "offline"
    train(cfg)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "expected an offline wandb run to sync later"


def test_wandb_rule_respects_credentials_and_wandb_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode() == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_wandb_credentials() and wandb_mode() == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit mode is the user's choice
    assert wandb_mode() == "disabled"


@pytest.mark.slow
def test_synthetic_task_is_learned(compose_cfg):
    cfg = compose_cfg(
        "train.yaml", ["experiment=conv_stack_synthetic", "logger=csv", "callbacks.progress_bar.refresh_rate=0"]
    )
    metrics = train(cfg)
    assert metrics["test/top1"] > 0.6, metrics  # chance is 0.25


def test_transient_protocol_writes_its_table(compose_cfg, tmp_path):
    overrides = ["experiment=co_conv_stack_synthetic", "eval=transient", "eval.clip_length=12", "logger=csv"]
    cfg = compose_cfg("train.yaml", [*overrides, "trainer.fast_dev_run=true", *TINY])
    metrics = train(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "protocol_results.csv").read_text().splitlines()))
    # co_conv_stack (8-frame pool, two k=3 convs) first predicts after 10 frames: 10, 11, 12 for each fill
    assert sorted((r["fill"], int(r["frames_seen"])) for r in rows) == [
        (fill, f) for fill in ("replicate", "zeros") for f in (10, 11, 12)
    ]
    assert float(rows[0]["value"]) == pytest.approx(metrics[f"test/top1_{rows[0]['fill']}_f{rows[0]['frames_seen']}"])
