"""The whole chain on the embedded default, on CPU: ``python -m experiments.demo`` (``make demo``).

1. trains X3D-tiny on Moving Digits clips (generated on first use) and tests it under the clip protocol;
2. evaluates the same checkpoint as CoX3D-tiny, stepwise, under the frame protocol (same weights and keys);
3. profiles both (GFLOPs per prediction, params, throughput);
4. writes ``results.csv`` and ``acc_vs_flops.png`` into the run directory and prints where they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import utils
from experiments.eval import evaluate
from experiments.plots import accuracy_vs_macs
from experiments.profile import profile
from experiments.train import train

log = logging.getLogger(__name__)


def _stage(name: str, experiment: str, out: Path, extra: list[str]) -> DictConfig:
    cfg = hydra.compose(name, overrides=[f"experiment={experiment}", f"paths.output_dir={out}", *extra])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _best_checkpoint(run: Path) -> Path:
    best = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    if not best:
        raise FileNotFoundError(f"training wrote no checkpoint under {run / 'checkpoints'}")
    return best[-1]


def demo(cfg: DictConfig) -> pd.DataFrame:
    out = Path(cfg.paths.output_dir)
    extra = list(cfg.overrides)
    log.info("1/3 training the clip model (Moving Digits is generated on first use)")
    clip_metrics = train(_stage("train.yaml", cfg.train_experiment, out / "train", [*extra, *cfg.train_overrides]))
    ckpt = _best_checkpoint(out / "train")
    log.info(f"2/3 evaluating {ckpt.name} stepwise as the continual twin")
    frame_metrics = evaluate(
        _stage("eval.yaml", cfg.continual_experiment, out / "eval_frame", [*extra, f"ckpt_path={ckpt}"])
    )
    log.info("3/3 profiling both")
    rows: list[dict[str, Any]] = []
    for experiment, mode, metrics in (
        (cfg.train_experiment, "clip", clip_metrics),
        (cfg.continual_experiment, "frame", frame_metrics),
    ):
        overrides = [*extra, *cfg.profile_overrides, f"mode={mode}", f"device={cfg.device}"]
        stage = _stage("profile.yaml", experiment, out / f"profile_{mode}", overrides)
        result = profile(stage)
        rows.append({
            "model": result["model"], "protocol": mode, "top1": metrics["test/top1"],
            "gflops": result["gflops_per_prediction"], "params": result["params"],
            "predictions_per_s": result["throughput_median"], "predictions_per_s_iqr": result["throughput_iqr"],
            "device": result["device"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    accuracy_vs_macs(table, out / "acc_vs_flops.png", num_classes=10, dataset="Moving Digits")
    print(table.to_string(index=False))
    files = {"results": out / "results.csv", "figure": out / "acc_vs_flops.png", "best checkpoint": ckpt}
    files |= {f"{stage} run": out / stage for stage in ("train", "eval_frame", "profile_clip", "profile_frame")}
    headline = {
        f"{r['model']} ({r['protocol']})": f"top-1 {r['top1']:.3f}, {r['gflops'] * 1e3:.3g} MFLOPs, "
        f"{r['predictions_per_s']:.4g} predictions/s (median)"
        for r in rows
    }
    utils.report_run("demo", out, files, headline)
    return table


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo.yaml")
def main(cfg: DictConfig) -> None:
    log.info("demo config:\n" + OmegaConf.to_yaml(cfg))
    demo(cfg)


if __name__ == "__main__":
    main()
