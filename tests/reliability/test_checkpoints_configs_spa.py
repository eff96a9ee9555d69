"""Issue 13, defects 8-10: checkpoint errors that name the file and the fix, config values checked when composed,
and SPA runs that keep their finished rows, resume exactly after kill -9 and are collected only when complete."""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiments import config_checks
from experiments.report import json_metrics
from modules.nets import build, load_pretrained
from modules.nets.weights import CheckpointError, head_keys
from modules.prune_recover import PruneRecover, ResumeError, complete_marker
from modules.pruning import ChannelScorer
from modules.systems import ImageClassificationSystem, phase_step_lr

from ..conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


# --- 8: checkpoint errors -----------------------------------------------------------------------------------------
@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """The state dict of a 5-class ResNet-tiny, as ``torch.save`` writes it."""
    torch.manual_seed(0)
    path = tmp_path / "resnet_tiny.pth"
    torch.save(build("resnet_tiny", num_classes=5).state_dict(), path)
    return path


def test_a_truncated_checkpoint_names_the_file(tiny_weights: Path) -> None:
    data = tiny_weights.read_bytes()
    tiny_weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{tiny_weights}.*truncated or corrupt.*fetch or write it again"):
        load_pretrained(build("resnet_tiny", num_classes=5), tiny_weights)


def test_an_empty_checkpoint_names_the_file(tiny_weights: Path) -> None:
    tiny_weights.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{tiny_weights} is empty \\(0 bytes\\)"):
        load_pretrained(build("resnet_tiny", num_classes=5), tiny_weights)


def _lightning_checkpoint(path: Path) -> Path:
    """A real Lightning checkpoint of this framework's image system after one training step."""
    torch.manual_seed(0)
    system = ImageClassificationSystem(
        build("resnet_tiny", num_classes=3), 3, functools.partial(torch.optim.SGD, lr=0.1)
    )
    data = TensorDataset(torch.randn(4, 3, 8, 8), torch.arange(4) % 3)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0)  # fmt: skip
    trainer.fit(system, DataLoader(data, batch_size=4))
    trainer.save_checkpoint(path)
    return path


def test_a_lightning_checkpoint_as_weights_says_ckpt_path(tmp_path: Path) -> None:
    ckpt = _lightning_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=f"{ckpt} is a Lightning training checkpoint.*ckpt_path={ckpt}"):
        load_pretrained(build("resnet_tiny", num_classes=3), ckpt)
    config_checks.check_ckpt_path(ckpt)  # and it is what ckpt_path= takes


def test_an_official_lightning_checkpoint_still_loads_as_weights(tmp_path: Path) -> None:
    """continual-skeletons publishes Lightning .ckpt files (keys without prefix): a format, not a run to resume;
    Lightning keeps their hyper-parameters in an AttributeDict, which the weights-only reader allows as a dict."""
    from pytorch_lightning.utilities.parsing import AttributeDict

    torch.manual_seed(0)
    state = build("st_gcn", num_classes=60).state_dict()
    path = tmp_path / "stgcn_ntu60_xsub_joint.ckpt"
    torch.save({"pytorch-lightning_version": "1.4.0", "state_dict": state,
                "hyper_parameters": AttributeDict(lr=0.1, graph="ntu")}, path)  # fmt: skip
    net = build("st_gcn", num_classes=60)
    report = load_pretrained(net, path, strict=True)
    assert report.converter == "continual-skeletons" and report.missing == []
    torch.testing.assert_close(net.fc.weight, state["fc.weight"])


def test_ckpt_path_is_checked_before_lightning_reads_it(tiny_weights: Path, tmp_path: Path) -> None:
    # a plain state dict: Lightning itself fails with KeyError: 'pytorch-lightning_version'
    with pytest.raises(CheckpointError, match=f"ckpt_path={tiny_weights} is not a Lightning checkpoint.*"
                       f"model.net.weights={tiny_weights}"):  # fmt: skip
        config_checks.check_ckpt_path(tiny_weights)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty} is empty"):
        config_checks.check_ckpt_path(empty)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(_lightning_checkpoint(tmp_path / "whole.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=f"{truncated} \\(5000 bytes\\) is truncated or corrupt"):
        config_checks.check_ckpt_path(truncated)
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nothing\.ckpt does not exist"):
        config_checks.check_ckpt_path(tmp_path / "nothing.ckpt")
    config_checks.check_ckpt_path(None)


def test_weights_skip_the_head_for_another_class_count(tiny_weights: Path) -> None:
    net = build("resnet_tiny", num_classes=3)
    # the 5-class head does not fit: strict refuses the partial import, skip_head asks for it
    with pytest.raises(ValueError, match=r"lacks 2 of ResNet's keys: \['fc\.bias', 'fc\.weight'\]; strict"):
        load_pretrained(net, tiny_weights, strict=True)
    head = net.fc.weight.detach().clone()
    report = load_pretrained(net, tiny_weights, skip_head=True, strict=True)
    assert head_keys(net) == ["fc.bias", "fc.weight"] and report.missing == []
    torch.testing.assert_close(net.fc.weight, head)  # its own head, as built
    source = torch.load(tiny_weights, weights_only=True)
    torch.testing.assert_close(net.conv1.weight, source["conv1.weight"])


def test_weights_skip_the_head_of_a_family_that_checks_class_counts(tmp_path: Path) -> None:
    # the OadTR converter refuses another class count unless the head is skipped; its file pickles a Namespace
    source = build("oadtr_b1", num_classes=5, dim_feature=16, embed_dim=32, num_heads=2, sequence_len=4)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": source.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=1e-4)}, path)
    net = build("oadtr_b1", num_classes=7, dim_feature=16, embed_dim=32, num_heads=2, sequence_len=4)
    with pytest.raises(ValueError, match="scores 5 classes: build with num_classes=5"):
        load_pretrained(net, path)
    report = load_pretrained(net, path, skip_head=True, strict=True)
    assert set(head_keys(net)) == {"classifier.weight", "classifier.bias", "mlp_head.weight", "mlp_head.bias"}
    assert report.missing == [] and len(report.loaded) == len(net.state_dict()) - 4


def test_strict_weights_refuse_missing_keys(tiny_weights: Path) -> None:
    state = torch.load(tiny_weights, weights_only=True)
    del state["layer2.0.conv2.weight"]
    torch.save(state, tiny_weights)
    net = build("resnet_tiny", num_classes=5)
    with pytest.warns(UserWarning, match="1 keys missing"):
        load_pretrained(net, tiny_weights)
    with pytest.raises(ValueError, match=f"{tiny_weights} .* lacks 1 of ResNet's keys: \\['layer2.0.conv2.weight'\\]"):
        load_pretrained(net, tiny_weights, strict=True)


def test_weights_are_unpickled_without_arbitrary_classes(tiny_weights: Path) -> None:
    # before: weights_only=False ran any pickled class; a date stands in for one
    state = torch.load(tiny_weights, weights_only=True)
    torch.save({"state_dict": state, "saved": datetime.date(2024, 1, 1)}, tiny_weights)
    refused = f"{tiny_weights} pickles classes beyond tensors.*GLOBAL datetime.date.*SAFE_GLOBALS"
    with pytest.raises(CheckpointError, match=refused):
        load_pretrained(build("resnet_tiny", num_classes=5), tiny_weights)


# --- 9: configs checked when composed -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' \\(str\\): expected null or an integer >= 0"),
        (["model.optimizer.lr=fast"], "model.optimizer.lr='fast' \\(str\\): expected a finite number >= 0"),
        (
            ["model.optimizer.weight_decay=-1"],
            "model.optimizer.weight_decay=-1 \\(int\\): expected a finite number >= 0",
        ),
        (["trainer.devices=0"], "trainer.devices=0 \\(int\\)"),
        (["trainer.precision=17"], "trainer.precision=17 \\(int\\): expected one of 64, 32"),
        (["data.batch_size=0", "seed=-3"], "seed=-3.*\n  data.batch_size=0"),
        (["data.num_workers=two"], "data.num_workers='two'"),
    ],
)
def test_a_wrong_config_value_names_its_key(compose_cfg, overrides: list[str], message: str) -> None:
    cfg = compose_cfg("train.yaml", ["experiment=conv_stack_synthetic", *overrides])
    with pytest.raises(config_checks.ConfigError, match=message):
        config_checks.check(cfg)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("train.yaml", ["experiment=conv_stack_synthetic"]), ("train.yaml", ["experiment=cox3d_tiny_moving_digits"]),
     ("eval.yaml", []), ("spa.yaml", ["experiment=spa_digits"]), ("spa.yaml", ["adapter=finetune", "pruning=lrp"])],
)  # fmt: skip
def test_the_shipped_configs_pass_the_checks(compose_cfg, name: str, overrides: list[str]) -> None:
    config_checks.check(compose_cfg(name, overrides))


@pytest.mark.slow
def test_every_experiment_passes_the_checks(compose_cfg) -> None:
    """No false alarm: each experiment row composes into values the checks accept (~30 s for 90 rows)."""
    root = REPO / "configs" / "experiment"
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml") if not p.name.startswith("_"))
    for name in names:
        entry = "spa.yaml" if name.startswith("spa_") else "train.yaml"
        config_checks.check(compose_cfg(entry, [f"experiment={name}"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [("pruning.criterion=tayler", "pruning.criterion='tayler'.*'taylor'"),
     ("pruning.step_frac=0", "pruning.step_frac=0 \\(int\\): expected a number in \\(0, 1\\]"),
     ("adapter.method=lora", "adapter.method='lora'"), ("pruning.mask_mode=hard", "pruning.mask_mode='hard'")],
)  # fmt: skip
def test_spa_checks_its_criterion_adapter_and_schedule_before_training(
    compose_cfg, override: str, message: str
) -> None:
    from experiments.spa import spa

    cfg = compose_cfg("spa.yaml", ["experiment=spa_digits", "logger=csv", override])
    with pytest.raises(config_checks.ConfigError, match=message):
        spa(cfg)  # before any pretraining, fine-tune or output
    assert not (Path(cfg.paths.output_dir) / "config.yaml").exists()


def test_the_driver_checks_its_schedule_before_training() -> None:
    calls: list[dict[str, Any]] = []
    system = ImageClassificationSystem(_tiny_net(), 4, functools.partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match=r"invalid criterion 'tayler'.*; coupling 'groups'"):
        PruneRecover(system, _TinyData(), lambda **kw: calls.append(kw), functools.partial(ChannelScorer,
                     criterion="tayler"), epochs_initial=1, epochs_recovery=1, input_shape=(3, 6, 6),
                     coupling="groups")  # fmt: skip
    assert calls == []


def test_metrics_json_holds_no_bare_nan() -> None:
    with pytest.warns(RuntimeWarning, match="metrics \\['test/loss', 'val/top1'\\] are not finite.*null"):
        safe = json_metrics({"test/loss": math.nan, "test/top1": 0.5, "val/top1": math.inf})
    assert json.loads(json.dumps(safe, allow_nan=False)) == {"test/loss": None, "test/top1": 0.5, "val/top1": None}


# --- 10: SPA runs keep what they finished -------------------------------------------------------------------------
def _tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


class _TinyData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        y = torch.arange(48) % 4
        x = torch.randn(48, 3, 6, 6, generator=g) + y[:, None, None, None]
        self.train, self.test = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=8, shuffle=True)  # the order draws from torch's global RNG

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=8)


class _Killed(Exception):
    pass


#: what identifies a run in its rows (paper/spa.py RUN_KEY)
_COLUMNS = {"arch": "tiny", "dataset": "blobs", "criterion": "taylor", "method": "finetune", "rank": 0,
            "init_range": None, "seed": 0}  # fmt: skip


def _driver(csv: Path, kill_at_fit: int | None = None, **kwargs: Any) -> PruneRecover:
    """A fresh run (seeded as experiments/spa.py seeds) whose ``kill_at_fit``-th fit dies."""
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    system = ImageClassificationSystem(_tiny_net(), 4, optimizer, functools.partial(phase_step_lr, steps=4, gamma=0.2))
    fits = [0]

    def make_trainer(**overrides: Any) -> pl.Trainer:
        if "max_epochs" in overrides:
            fits[0] += 1
            if fits[0] == kill_at_fit:
                raise _Killed
        defaults = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_checkpointing": False,
                    "limit_val_batches": 0, "enable_model_summary": False, "deterministic": True}  # fmt: skip
        return pl.Trainer(**{**defaults, **overrides})

    options = {"epochs_initial": 2, "epochs_recovery": 1, "input_shape": (3, 6, 6), "step_frac": 0.25,
               "output_file": csv, "columns": _COLUMNS, **kwargs}  # fmt: skip
    scorer = functools.partial(ChannelScorer, criterion="taylor")
    driver = PruneRecover(system, _TinyData(), make_trainer, scorer, **options)
    driver.fit_calls = fits  # the fits it made
    return driver


def _untimed(summary: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in summary.items() if "ms_per_batch" not in k}


@pytest.mark.parametrize("mask_mode", ["enforced", "legacy"])
def test_a_run_that_died_resumes_with_the_rows_of_an_uninterrupted_one(tmp_path: Path, mask_mode: str) -> None:
    whole = _driver(tmp_path / "whole" / "spa_results.csv", mask_mode=mask_mode)
    summary = whole.run()
    whole.mark_complete(summary)
    killed = tmp_path / "killed" / "spa_results.csv"
    with pytest.raises(_Killed):  # during the second recovery: steps 0 and 1 done
        _driver(killed, kill_at_fit=3, mask_mode=mask_mode).run()
    assert pd.read_csv(killed).step.tolist() == [0, 1] and not complete_marker(killed).exists()
    resumed = _driver(killed, resume=True, mask_mode=mask_mode)
    assert _untimed(resumed.run()) == _untimed(summary)
    assert resumed.fit_calls == [3]  # the recoveries of steps 2 and 3 and the final one: steps 0 and 1 were not redone
    assert killed.read_bytes() == (tmp_path / "whole" / "spa_results.csv").read_bytes()


def test_resume_refuses_another_runs_state_and_a_finished_run(tmp_path: Path) -> None:
    csv = tmp_path / "spa_results.csv"
    with pytest.raises(_Killed):
        _driver(csv, kill_at_fit=2).run()
    with pytest.raises(ResumeError, match="is the state of another run"):
        _driver(csv, epochs_recovery=2).run()
    with pytest.raises(ResumeError, match=r"resume=true but .*spa_results_state\.pt does not exist"):
        _driver(tmp_path / "new" / "spa_results.csv", resume=True).run()
    driver = _driver(csv)
    driver.mark_complete(driver.run())
    with pytest.raises(ResumeError, match="holds a complete run"):
        _driver(csv).run()


def _paper_spa() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_spa_for_resume", REPO / "paper" / "spa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collect_refuses_unfinished_runs_and_jobs_without_results(tmp_path: Path) -> None:
    spa = _paper_spa()
    sweep = tmp_path / "sweep"
    for job in ("0", "1", "2"):
        (sweep / job / ".hydra").mkdir(parents=True)
    whole = _driver(sweep / "0" / "spa_results.csv", max_steps=1)
    whole.mark_complete(whole.run())
    with pytest.raises(_Killed):  # killed after its first row
        _driver(sweep / "1" / "spa_results.csv", kill_at_fit=2, columns={**_COLUMNS, "seed": 1}).run()
    # job 2 failed before its first row
    problems = r"(?s)1 unfinished run\(s\) and 1 job\(s\) without results.*sweep/1: unfinished run \(1 rows"
    with pytest.raises(spa.SpaInputError, match=problems + r".*sweep/2: job directory without spa_results\.csv"):
        spa.collect(sweep, out=tmp_path / "runs.csv")
    [out] = spa.collect(sweep, out=tmp_path / "runs.csv", skip_incomplete=True)
    assert pd.read_csv(out).seed.tolist() == [0, 0]


FAST = ["logger=csv", "callbacks.progress_bar.refresh_rate=0", "pruning.max_steps=2", "spa_data.epochs_initial=1",
        "spa_model.pretraining.epochs=1", "trainer.deterministic=true"]  # fmt: skip


def _spa(run_dir: Path, cwd: Path) -> subprocess.Popen:
    """Start the shrunk digits run in ``run_dir`` from ``cwd``; its output goes to ``cwd/<run name>.log``."""
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "experiments.spa", "experiment=spa_digits", *FAST, f"hydra.run.dir={run_dir}"]
    with (cwd / f"{run_dir.name}.log").open("a") as log:  # a file, not a pipe nobody reads while it runs
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_spa_killed_mid_schedule_resumes_bit_for_bit(tmp_path: Path) -> None:
    """The digits default shrunk to 2 steps: kill -9 after step 1's row, start it again in its directory."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    logs = tmp_path / "a" / "whole.log", tmp_path / "b" / "killed.log"
    # side by side (each pretrains the digits net into its own cache: the same weights)
    reference, proc = _spa(whole, tmp_path / "a"), _spa(killed, tmp_path / "b")
    rows, deadline = killed / "spa_results.csv", time.monotonic() + 300
    while not (rows.exists() and len(pd.read_csv(rows)) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, logs[1].read_text()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reference.wait(timeout=300) == 0, logs[0].read_text()
    assert len(pd.read_csv(rows)) == 2 and not (killed / "spa_results_complete.json").exists()
    assert _spa(killed, tmp_path / "b").wait(timeout=300) == 0, logs[1].read_text()
    assert "resumed" in logs[1].read_text()
    assert rows.read_bytes() == (whole / "spa_results.csv").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert {k: v for k, v in a.items() if "ms_per" not in k} == {k: v for k, v in b.items() if "ms_per" not in k}
    assert (killed / "spa_results_complete.json").exists()
