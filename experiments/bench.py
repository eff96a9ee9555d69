"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair, in one run on each device: the clip model's clips/s on ``(B, 3, frames, crop, crop)`` and the
continual twin's frames/s (a warmed-up ``forward_step`` per prediction), both at ``batch_size`` (default 1),
each call including the host→device input copy and device→host output copy; their ratio is the speed-up per
prediction. On CUDA the twin is also timed as a replayed CUDA graph (``modules.continual.CudaGraphStep``).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from modules.continual import CudaGraphStep, fold_batchnorm
from modules.nets import build
from modules.profiling import profile_model

log = logging.getLogger(__name__)


def _graph_rate(net: torch.nn.Module, shape: tuple[int, ...], warmup: int, repeats: int) -> float:
    """Frames/s of the twin's step replayed as a CUDA graph, host copies included."""
    host = torch.randn(shape)
    net.clean_state()
    graphed = CudaGraphStep(net, host.cuda())
    seconds = []
    for i in range(warmup + repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        graphed(host.cuda(non_blocking=True)).to("cpu")
        torch.cuda.synchronize()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return shape[0] / statistics.fmean(seconds)


def _inference_net(name: str, fold_bn: bool) -> torch.nn.Module:
    """The registered net in eval mode; with ``fold_bn`` its BatchNorms folded into the convs (the same
    treatment for the clip model and its twin, so the ratio compares like with like)."""
    net = build(name).eval()
    return fold_batchnorm(net, inplace=True) if fold_bn else net


def bench_pair(pair: DictConfig, device: str, cfg: DictConfig) -> dict[str, Any]:
    clip_shape = (3, int(pair.frames), int(pair.crop), int(pair.crop))
    kwargs = {"batch_size": cfg.batch_size, "device": device, "warmup": cfg.warmup, "repeats": cfg.repeats}
    fold_bn = bool(cfg.get("fold_bn", False))
    clip = profile_model(_inference_net(pair.clip, fold_bn), mode="clip", input_shape=clip_shape, **kwargs)
    twin_net = _inference_net(pair.continual, fold_bn)
    frame = profile_model(twin_net, mode="frame", input_shape=clip_shape, **kwargs)
    row = {
        "clip_model": pair.clip,
        "continual_model": pair.continual,
        "device": device,
        "device_name": clip["device_name"],
        "batch_size": cfg.batch_size,
        "fold_bn": fold_bn,
        "clip_gflops": clip["gflops_per_prediction"],
        "frame_gflops": frame["gflops_per_prediction"],
        "flop_ratio": clip["gflops_per_prediction"] / frame["gflops_per_prediction"],
        "clips_per_s": clip["throughput_mean"],
        "clips_per_s_std": clip["throughput_std"],
        "frames_per_s": frame["throughput_mean"],
        "frames_per_s_std": frame["throughput_std"],
    }
    row["speedup"] = row["frames_per_s"] / row["clips_per_s"]
    if device == "cuda" and cfg.cuda_graph:
        step_shape = (cfg.batch_size, 3, int(pair.crop), int(pair.crop))
        with torch.no_grad():
            row["frames_per_s_graph"] = _graph_rate(twin_net.eval(), step_shape, cfg.warmup, cfg.repeats)
        row["speedup_graph"] = row["frames_per_s_graph"] / row["clips_per_s"]
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'pair':<26} {'device':<7} {'clips/s':>9} {'frames/s':>9} {'ratio':>6} {'graph f/s':>10} "
             f"{'ratio':>6} {'FLOP ratio':>10}"]  # fmt: skip
    for r in rows:
        graph = (
            f"{r['frames_per_s_graph']:>10.1f} {r['speedup_graph']:>6.2f}" if "frames_per_s_graph" in r else " " * 17
        )
        lines.append(
            f"{r['clip_model'] + '/' + r['continual_model']:<26} {r['device']:<7} {r['clips_per_s']:>9.2f} "
            f"{r['frames_per_s']:>9.2f} {r['speedup']:>6.2f} {graph} {r['flop_ratio']:>10.1f}"
        )
    return "\n".join(lines)


def bench(cfg: DictConfig) -> list[dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    rows = []
    for device in cfg.devices:
        if device == "cuda" and not torch.cuda.is_available():
            log.info("no CUDA device here: skipping the cuda measurements")
            continue
        for pair in cfg.pairs:
            log.info(f"benchmarking {pair.clip} vs {pair.continual} on {device}")
            rows.append(bench_pair(pair, device, cfg))
    print(_table(rows))
    path = Path(cfg.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    log.info(f"wrote {path}")
    return rows


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench.yaml")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
