"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair, in one run on each device: the clip model's clips/s on ``(B, 3, frames, crop, crop)`` and the
continual twin's frames/s (a warmed-up ``forward_step`` per prediction), both at ``batch_size`` (default 1),
each call including the host→device input copy and device→host output copy; their ratio is the speed-up per
prediction. On CUDA the twin is also timed as a replayed CUDA graph (``modules.continual.CudaGraphStep``).

With ``compile`` (on the devices in ``compile_devices``), both nets are also timed compiled by inductor, the same
treatment for each: the clip model through ``torch.compile``, the twin's warmed-up step through
``modules.continual.CompiledStep``; ``speedup_compiled`` is the ratio of those two rates. The first calls compile
(excluded from the timing, logged); on CUDA the compiled step is also timed replayed as a CUDA graph
(``frames_per_s_compiled_graph``). ``speedup_best`` divides the twin's best rate by the clip model's best rate.
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

from modules.continual import CompiledStep, CudaGraphStep, fold_batchnorm
from modules.nets import build
from modules.profiling import _time_calls, profile_model

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


def _compiled_rates(
    clip_net: torch.nn.Module, twin: torch.nn.Module, pair: DictConfig, device: str, cfg: DictConfig
) -> dict[str, float]:
    """Clips/s of the compiled clip model and predictions/s of the twin's compiled step (``cfg.compile_backend``,
    default inductor), host copies included."""
    batch, crop = int(cfg.batch_size), int(pair.crop)
    host_clip = torch.randn(batch, 3, int(pair.frames), crop, crop)
    host_step = torch.randn(batch, 3, crop, crop)
    dev = torch.device(device)
    rates = {}
    with torch.no_grad():
        start = time.perf_counter()
        backend = str(cfg.get("compile_backend", "inductor"))
        clip_fn = torch.compile(clip_net.to(dev), backend=backend, dynamic=False)
        clip_fn(host_clip.to(dev))
        stepper = CompiledStep(twin, host_step.to(dev), backend=backend)
        steps = int(twin.stride[0])
        for _ in range(steps):  # each phase's program compiles on its first call
            stepper(host_step.to(dev))
        log.info(f"compiled {pair.clip} and {pair.continual}'s step in {time.perf_counter() - start:.0f} s")

        def predict() -> torch.Tensor | None:  # stride[0] steps make one prediction, as in the eager timing
            out = None
            for _ in range(steps):
                out = stepper(host_step.to(dev))
            return None if out is None else out.to("cpu")

        calls = {"clips_per_s_compiled": lambda: clip_fn(host_clip.to(dev)).to("cpu"), "frames_per_s_compiled": predict}
        for key, fn in calls.items():
            seconds = _time_calls(fn, dev, int(cfg.warmup), int(cfg.repeats))
            rates[key] = statistics.fmean(batch / s for s in seconds)  # as profile_model's throughput_mean
        if dev.type == "cuda" and cfg.cuda_graph:  # the fused kernels of a step as one CUDA graph launch
            stepper = CompiledStep(twin, host_step.to(dev), backend=backend, cuda_graph=True)
            seconds = _time_calls(predict, dev, int(cfg.warmup), int(cfg.repeats))
            rates["frames_per_s_compiled_graph"] = statistics.fmean(batch / s for s in seconds)
    return rates


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
    if cfg.get("compile", False) and device in cfg.get("compile_devices", ["cpu"]):
        row.update(_compiled_rates(_inference_net(pair.clip, fold_bn), twin_net, pair, device, cfg))
        row["speedup_compiled"] = row["frames_per_s_compiled"] / row["clips_per_s_compiled"]
    if device == "cuda" and cfg.cuda_graph:
        step_shape = (cfg.batch_size, 3, int(pair.crop), int(pair.crop))
        with torch.no_grad():
            row["frames_per_s_graph"] = _graph_rate(twin_net.eval(), step_shape, cfg.warmup, cfg.repeats)
        row["speedup_graph"] = row["frames_per_s_graph"] / row["clips_per_s"]
    # each net at its fastest measured setting (eager, compiled, CUDA graph): the ratio a user gets
    frame_keys = ("frames_per_s", "frames_per_s_compiled", "frames_per_s_graph", "frames_per_s_compiled_graph")
    best_frames = max(row[k] for k in frame_keys if k in row)
    row["speedup_best"] = best_frames / max(row[k] for k in ("clips_per_s", "clips_per_s_compiled") if k in row)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    """Rates and ratios: eager, compiled (both nets by inductor) and, on CUDA, the twin replayed as a CUDA graph."""
    head = f"{'pair':<26} {'device':<7} {'clips/s':>9} {'frames/s':>9} {'ratio':>6}"
    head += (
        f" {'compiled c/s':>12} {'f/s':>8} {'ratio':>6} {'graph f/s':>10} {'ratio':>6} {'best':>6} {'FLOP ratio':>10}"
    )
    lines = [head]
    for r in rows:
        line = f"{r['clip_model'] + '/' + r['continual_model']:<26} {r['device']:<7} {r['clips_per_s']:>9.2f} "
        line += f"{r['frames_per_s']:>9.2f} {r['speedup']:>6.2f} "
        line += _cells(r, ("clips_per_s_compiled", 12), ("frames_per_s_compiled", 8), ("speedup_compiled", 6))
        graph = max((r[k] for k in ("frames_per_s_graph", "frames_per_s_compiled_graph") if k in r), default=None)
        line += " " + (f"{graph:>10.1f} {graph / r['clips_per_s']:>6.2f}" if graph else " " * 17)
        lines.append(f"{line} {r['speedup_best']:>6.2f} {r['flop_ratio']:>10.1f}")
    return "\n".join(lines)


def _cells(row: dict[str, Any], *columns: tuple[str, int]) -> str:
    """Right-aligned values, blanks where the row has no such measurement."""
    fmt = {True: "{:>{w}.2f}", False: "{:>{w}}"}
    return " ".join(fmt[key in row].format(row.get(key, ""), w=width) for key, width in columns)


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
