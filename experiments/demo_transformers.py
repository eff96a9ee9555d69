"""The Continual Transformers study on generated features, on CPU: ``python -m experiments.demo_transformers``
(``make demo-transformers``; ``configs/demo_transformers.yaml``).

1. for each net (two processes at a time): trains it with the study's recipe at demo scale, tests the last epoch
   on 64-step windows (the paper's protocol), then on whole test videos step by step (``eval=stream``; a
   continual net steps once per feature step, an offline one re-runs its window at every step);
2. profiles each net at batch 1: MACs and time per prediction (per window for OadTR, per step for CoOadTR);
3. writes ``results.csv`` and ``map_vs_flops.png`` into the run directory.
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
from omegaconf import DictConfig, OmegaConf

from experiments import utils
from experiments.demo_skeletons import _stage
from experiments.eval import evaluate
from experiments.plots import map_vs_macs
from experiments.train import train
from modules.profiling import profile_model

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_net(job: dict[str, Any]) -> dict[str, Any]:
    """Train one net, test it on windows and on streams, profile it; returns its results row."""
    torch.set_num_threads(job["threads"])
    if not GlobalHydra.instance().is_initialized():  # a worker process
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return run_net(job)
    out, common = Path(job["out"]), [*job["overrides"], *job["net_overrides"]]
    train_cfg = _stage("train.yaml", job["experiment"], out / "train", [*common, *job["train_overrides"]])
    window = train(train_cfg)
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    stream_cfg = _stage(
        "eval.yaml", job["experiment"], out / "eval_stream", [*common, "eval=stream", f"ckpt_path={ckpt}"]
    )
    stream = evaluate(stream_cfg)
    continual = str(train_cfg.model.variant).startswith("co")
    net = hydra.utils.instantiate(train_cfg.model.net)
    shape = (int(train_cfg.data.dim_feature), int(train_cfg.data.sequence_len))
    profiled = profile_model(net, mode="frame" if continual else "clip", input_shape=shape, device=job["device"],
                             **job["profile"])  # fmt: skip
    return {
        "model": job["label"], "registry_name": str(train_cfg.model.variant), "sequence_len": shape[1],
        "prediction": "step" if continual else "window",
        "window_mAP": window["test/mAP"], "window_mcAP": window["test/mcAP"],
        "stream_mAP": stream["test/mAP"], "stream_mcAP": stream["test/mcAP"],
        "mmacs_per_prediction": profiled["macs_per_prediction"] / 1e6, "params": profiled["params"],
        "predictions_per_s": profiled["throughput_median"], "throughput_busy": profiled["throughput_busy"],
        "device": profiled["device"], "run_dir": str(out),
    }  # fmt: skip


def demo(cfg: DictConfig) -> pd.DataFrame:
    out = Path(cfg.paths.output_dir)
    threads = 1 if cfg.parallel > 1 else torch.get_num_threads()
    jobs = [
        {"label": label, "out": str(out / label.replace(", ", "_").replace(" ", "_")), "experiment": net.experiment,
         "net_overrides": list(net.overrides), "overrides": list(cfg.overrides),
         "train_overrides": list(cfg.train_overrides), "profile": OmegaConf.to_container(cfg.profile),
         "device": cfg.device, "threads": threads}
        for label, net in cfg.nets.items()
    ]  # fmt: skip
    log.info(f"training, testing and profiling {', '.join(cfg.nets)} ({cfg.parallel} at a time)")
    if cfg.parallel > 1:
        with ProcessPoolExecutor(cfg.parallel, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(run_net, jobs))
    else:
        rows = [run_net(job) for job in jobs]
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    map_vs_macs(table, out / "map_vs_flops.png", dataset="Generated THUMOS-layout features")
    print(table.drop(columns=["run_dir"]).to_string(index=False))
    headline = {r["model"]: f"mAP {r['window_mAP']:.3f} (windows) / {r['stream_mAP']:.3f} (streams), "
                f"{r['mmacs_per_prediction']:.3g} MMACs per {r['prediction']}" for r in rows}  # fmt: skip
    files = {"results": out / "results.csv", "figure": out / "map_vs_flops.png"}
    utils.report_run("demo_transformers", out, files, headline)
    return table


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo_transformers.yaml")
def main(cfg: DictConfig) -> None:
    log.info("demo config:\n" + OmegaConf.to_yaml(cfg))
    demo(cfg)


if __name__ == "__main__":
    main()
