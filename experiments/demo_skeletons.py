"""The continual ST-GCN study on the synthetic skeletons, on CPU: ``python -m experiments.demo_skeletons``
(``make demo-skeletons``; ``configs/demo_skeletons.yaml``).

1. for each stream (joint, bone; in parallel processes): trains ST-GCN* on whole samples, tests the checkpoint
   offline (clip protocol) and as CoST-GCN* stepped frame by frame (frame protocol), saving the test logits;
2. fuses the streams by summing their logits (``experiments.streams``; the paper's S = 2);
3. profiles both nets (GFLOPs per prediction, params, throughput);
4. writes ``results.csv`` and ``acc_vs_flops.png`` into the run directory.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import streams, utils
from experiments.demo import _best_checkpoint
from experiments.eval import evaluate
from experiments.plots import accuracy_vs_macs
from experiments.profile import profile
from experiments.train import train

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = {"clip": "ST-GCN*", "frame": "CoST-GCN*"}


def _stage(name: str, experiment: str, out: Path, extra: list[str]) -> DictConfig:
    cfg = hydra.compose(name, [f"experiment={experiment}", f"paths.output_dir={out}", *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as hydra.main would: the run's paths read it
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg


def run_stream(job: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Train on one stream, then test offline and frame by frame; returns each protocol's test metrics."""
    torch.set_num_threads(job["threads"])
    if not GlobalHydra.instance().is_initialized():  # a worker process
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return run_stream(job)
    out, common = Path(job["out"]), [*job["overrides"], f"data.stream={job['stream']}"]
    train_run = out / f"train_{job['stream']}"
    train(_stage("train.yaml", job["train"], train_run, [*common, "test=false", *job["train_overrides"]]))
    ckpt = [f"ckpt_path={_best_checkpoint(train_run)}"]
    runs = {
        "clip": ("train", out / f"eval_clip_{job['stream']}"),
        "frame": ("continual", out / f"eval_frame_{job['stream']}"),
    }
    return {p: evaluate(_stage("eval.yaml", job[e], run, [*common, *ckpt])) for p, (e, run) in runs.items()}


def _row(protocol: str, profiled: dict[str, Any], stream: str, top1: float, top5: float, nets: int) -> dict[str, Any]:
    """A results row; the fused streams run ``nets`` nets: their FLOPs and params add up (throughput not measured)."""
    return {"model": f"{NAMES[protocol]} {stream}", "protocol": protocol, "stream": stream, "top1": top1, "top5": top5,
            "gflops": nets * profiled["gflops_per_prediction"], "params": nets * profiled["params"],
            "predictions_per_s": profiled["throughput_median"] if nets == 1 else float("nan"),
            "device": profiled["device"]}  # fmt: skip


def demo(cfg: DictConfig) -> pd.DataFrame:
    out = Path(cfg.paths.output_dir)
    jobs = [
        {"out": str(out), "stream": s, "train": cfg.train_experiment, "continual": cfg.continual_experiment,
         "overrides": list(cfg.overrides), "train_overrides": list(cfg.train_overrides),
         "threads": 1 if cfg.parallel > 1 else torch.get_num_threads()}
        for s in cfg.streams
    ]  # fmt: skip
    log.info(f"1/3 training and testing the {', '.join(cfg.streams)} streams ({cfg.parallel} at a time)")
    if cfg.parallel > 1:
        with ProcessPoolExecutor(cfg.parallel, mp_context=get_context("spawn")) as pool:
            metrics = dict(zip(cfg.streams, pool.map(run_stream, jobs)))
    else:
        metrics = {job["stream"]: run_stream(job) for job in jobs}
    log.info("2/3 profiling both nets")
    profiled = {}
    for protocol, experiment in (("clip", cfg.train_experiment), ("frame", cfg.continual_experiment)):
        overrides = [*cfg.overrides, *cfg.profile_overrides, f"mode={protocol}", f"device={cfg.device}"]
        profiled[protocol] = profile(_stage("profile.yaml", experiment, out / f"profile_{protocol}", overrides))
    log.info("3/3 fusing the streams")
    rows = []
    for protocol, result in profiled.items():
        for stream in cfg.streams:
            m = metrics[stream][protocol]
            rows.append(_row(protocol, result, stream, m["test/top1"], m["test/top5"], 1))
        fused = streams.fuse([out / f"eval_{protocol}_{s}" for s in cfg.streams])
        rows.append(_row(protocol, result, "+".join(cfg.streams), fused["top1"], fused["top5"], len(cfg.streams)))
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    shown = table[table["stream"].isin([cfg.streams[0], "+".join(cfg.streams)])]
    accuracy_vs_macs(shown, out / "acc_vs_flops.png", num_classes=12, dataset="Synthetic skeletons")
    print(table.to_string(index=False))
    headline = {r["model"] + f" ({r['protocol']})": f"top-1 {r['top1']:.3f}, {r['gflops'] * 1e3:.3g} MFLOPs"
                for r in rows}  # fmt: skip
    utils.report_run("demo_skeletons", out, {"results": out / "results.csv", "figure": out / "acc_vs_flops.png"},
                     headline)  # fmt: skip
    return table


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo_skeletons.yaml")
def main(cfg: DictConfig) -> None:
    log.info("demo config:\n" + OmegaConf.to_yaml(cfg))
    demo(cfg)


if __name__ == "__main__":
    main()
