"""The distributed path: Lightning DDP with two CPU processes (gloo) through the real train command."""

from __future__ import annotations

import json

from tests.conftest import run_module


def test_two_process_cpu_ddp_trains_tests_and_writes_metrics(tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_module(
        "experiments.train",
        "experiment=conv_stack_synthetic",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_train=32",
        "data.batch_size=8",
        "logger=csv",
        "callbacks.progress_bar.refresh_rate=0",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, log[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train/loss", "val/top1", "test/top1"} <= set(metrics)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
