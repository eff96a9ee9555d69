"""The train and eval entry points on the synthetic datamodule: run files, resume, checkpoint evaluation."""

from __future__ import annotations

import csv
import json
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities._pytree import _tree_flatten
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from experiments.eval import evaluate
from experiments.eval import main as eval_main
from experiments.train import main as train_main
from experiments.train import train
from experiments.utils import (
    ParamsSummary,
    has_wandb_credentials,
    instantiate_callbacks,
    instantiate_loggers,
    progress_bar,
    quiet_known_noise,
    report_run,
    wandb_mode,
)
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
    assert cfg.model.eval_protocol == "frame" and cfg.eval.clip_length is None  # derived: net.delay + 1
    metrics = train(cfg)
    assert cfg.eval.clip_length == 10
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


# --- the end of a run and what it prints -------------------------------------------------------------------------
def _summary(text: str, title: str) -> dict[str, str]:
    """The entries (label -> path or value) of the summary that ``report_run`` printed for ``title``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{title} finished; run directory: "))
    entries = {"run directory": lines[start].split("run directory: ", 1)[1]}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        entries[label] = value
    return entries


def test_report_run_lists_only_existing_files_relative_to_the_launch_dir(tmp_path, tmp_path_factory, capsys):
    run = tmp_path / "outputs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    outside = tmp_path_factory.mktemp("elsewhere") / "table.csv"
    outside.write_text("a\n")
    files = {"metrics": run / "metrics.json", "last checkpoint": run / "checkpoints" / "last.ckpt", "table": outside}
    text = report_run("train", run, files, {"test/top1": torch.tensor(0.123456), "epochs": 3, "absent": None})
    assert capsys.readouterr().out == text + "\n"  # printed: no logging configured to show it
    assert _summary(text, "train") == {
        "run directory": "outputs/run",
        "metrics": "outputs/run/metrics.json",  # relative to the launch directory (the test's cwd)
        "table": str(outside),  # outside it: absolute
        "test/top1": "0.1235",
        "epochs": "3",
    }


def test_train_and_eval_runs_end_with_where_they_wrote(compose_cfg, tmp_path, capsys):
    overrides = ["experiment=conv_stack_synthetic", "logger=csv", *TINY]
    train_main(compose_cfg("train.yaml", overrides))
    summary = _summary(capsys.readouterr().out, "train")
    assert summary == {
        "run directory": "run",
        "config": "run/config.yaml",
        "metrics": "run/metrics.json",
        "best checkpoint": "run/checkpoints/epoch_000.ckpt",
        "last checkpoint": "run/checkpoints/last.ckpt",
        "CSV log": "run/csv/metrics.csv",
        "tested checkpoint": "run/checkpoints/epoch_000.ckpt",  # after a resume, maybe the interrupted run's
        "test/top1": f"{_metrics(tmp_path / 'run')['test/top1']:.4g}",
        "val/top1": f"{_metrics(tmp_path / 'run')['val/top1']:.4g}",
    }
    assert all((tmp_path / path).is_file() for label, path in summary.items() if label.startswith(("c", "m", "b", "l")))

    best = tmp_path / summary["best checkpoint"]
    eval_main(compose_cfg("eval.yaml", [*overrides[:2], *TINY[:4], f"ckpt_path={best}"], "eval"))
    assert _summary(capsys.readouterr().out, "eval") == {
        "run directory": "eval",
        "config": "eval/config.yaml",
        "metrics": "eval/metrics.json",
        "CSV log": "eval/csv/metrics.csv",
        "test/top1": f"{_metrics(tmp_path / 'eval')['test/top1']:.4g}",
    }


def test_eval_tests_with_the_training_progress_bar(compose_cfg, capfd):
    train_bar = instantiate_callbacks(compose_cfg("train.yaml", ["experiment=conv_stack_synthetic"]).callbacks)
    (expected,) = [cb for cb in train_bar if isinstance(cb, TQDMProgressBar)]
    bar = progress_bar()
    assert type(bar) is type(expected) and bar.refresh_rate == expected.refresh_rate == 10
    evaluate(compose_cfg("eval.yaml", ["experiment=conv_stack_synthetic", "logger=csv", *TINY[:4]], "eval"))
    out = capfd.readouterr().out
    assert "Testing DataLoader 0: 100%|" in out  # tqdm's bar, not Lightning's rich default ("Testing ━━━")


NOISE = ("💡", "litlogger", "litmodels", "FLOPs", "Flops", "LeafSpec", "callbacks used to create the checkpoint")


def test_a_run_prints_no_tips_flops_or_library_deprecations(compose_cfg, tmp_path, capfd, caplog, recwarn):
    quiet_known_noise()  # as on import: pytest dropped the warning filters that importing installed during collection
    caplog.set_level(logging.INFO)
    cfg = compose_cfg("train.yaml", ["experiment=conv_stack_synthetic", "logger=csv", *TINY])
    train(cfg)
    best = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    evaluate(compose_cfg("eval.yaml", ["experiment=conv_stack_synthetic", "logger=csv", f"ckpt_path={best}"], "eval"))
    out, err = capfd.readouterr()
    text = out + err + caplog.text + "\n".join(str(w.message) for w in recwarn)
    assert "Trainable params" in text, "the parameter summary must stay"
    assert [noise for noise in NOISE if noise in text] == []


@contextmanager
def _messages(name: str) -> Iterator[list[str]]:
    """The INFO+ messages that reach logger ``name``'s handlers (i.e. pass its filters) inside the context."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_noise_filters_drop_only_what_they_name():
    with _messages("pytorch_lightning.utilities.rank_zero") as seen:
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert seen == ["GPU available: False, used: False"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        _tree_flatten(1)  # Lightning builds torch's deprecated LeafSpec here
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)  # not Lightning's
    assert [w.filename for w in caught] == [__file__]


def test_params_summary_drops_only_flops_that_were_not_counted():
    columns = [(" ", ["0"]), ("Name", ["net"]), ("Type", ["Sequential"]), ("Params", ["4.2 K"]), ("FLOPs", ["0"])]
    modes = {"train": 1, "eval": 0}
    with _messages("pytorch_lightning.callbacks.model_summary") as seen:
        ParamsSummary.summarize(columns, 4200, 4200, 0.017, modes, total_flops=0)
        ParamsSummary.summarize([*columns[:-1], ("FLOPs", ["5 M"])], 4200, 4200, 0.017, modes, total_flops=5e6)
    uncounted, counted = seen
    assert "Sequential" in uncounted and "Trainable params" in uncounted and "Modules in eval mode" in uncounted
    assert "FLOPs" not in uncounted and "Flops" not in uncounted
    assert "5 M" in counted and "5.0 M" in counted and "Total Flops" in counted


def test_wandb_logger_passes_no_anonymous_setting(compose_cfg):
    # WandbLogger passes anonymous=None, which wandb answers with "The anonymous setting has no effect"
    cfg = compose_cfg("train.yaml", ["experiment=conv_stack_synthetic", "logger=wandb"])
    (wandb_logger,) = [lg for lg in instantiate_loggers(cfg.logger) if type(lg).__name__ == "WandbLogger"]
    assert "anonymous" not in wandb_logger._wandb_init and wandb_logger._wandb_init["mode"] == "disabled"
