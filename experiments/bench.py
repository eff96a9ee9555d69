"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair, in one run on each device: the clip model's clips/s on ``(B, 3, frames, crop, crop)`` and the
continual twin's predictions/s (frames/s for a temporal stride of 1; warmed-up ``forward_step`` calls), both at
``batch_size`` (default 1), each call including the host→device input copy and device→host output copy; their
ratio is the speed-up per prediction.

Variants, each timed where configured: ``compile`` (on ``compile_devices``) times both nets compiled by inductor,
the same treatment for each (``torch.compile`` for the clip model, ``modules.continual.CompiledStep`` for the
twin's step; ``speedup_compiled``); ``cuda_graph`` on CUDA times the twin's step replayed as a CUDA graph
(``CudaGraphStep``, and the compiled step as a CUDA graph when compiling). ``speedup_best`` divides the twin's
best rate by the clip model's best rate.

Every variant is timed in ``rounds`` interleaved rounds of ``round_seconds`` each, so that a machine whose speed
drifts during the run (a shared VM) slows all of them alike; a rate is the batch size over the median call time.
The first calls (``warmup``, compilation included) are not timed.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from experiments import utils
from modules.continual import CompiledStep, CudaGraphStep, fold_batchnorm
from modules.continual.graph import warm_until_output
from modules.nets import build
from modules.profiling import profile_model, throughput_stats

log = logging.getLogger(__name__)

Predict = Callable[[], Any]


def _inference_net(name: str, fold_bn: bool, device: torch.device) -> torch.nn.Module:
    """The registered net in eval mode; with ``fold_bn`` its BatchNorms folded into the convs (the same
    treatment for the clip model and its twin, so the ratio compares like with like)."""
    net = build(name).eval()
    return (fold_batchnorm(net, inplace=True) if fold_bn else net).to(device)


def _stepper(step: Callable[[torch.Tensor], Any], host_step: torch.Tensor, dev: torch.device, steps: int) -> Predict:
    """One prediction: ``steps`` (the twin's temporal stride) steps, the last of which emits."""

    def predict() -> Any:
        out = None
        for _ in range(steps):
            out = step(host_step.to(dev, non_blocking=True))
        if out is None:
            raise RuntimeError(f"no output after {steps} steps past the warm-up")
        return out.to("cpu")

    return predict


def _variants(
    clip_net: torch.nn.Module, twin: torch.nn.Module, pair: DictConfig, dev: torch.device, cfg: DictConfig
) -> dict[str, Predict]:
    """Rate name -> one prediction, for every variant configured for this device."""
    batch, crop = int(cfg.batch_size), int(pair.crop)
    host_clip = torch.randn(batch, 3, int(pair.frames), crop, crop)
    host_step = torch.randn(batch, 3, crop, crop)
    steps = int(twin.stride[0])
    twin.clean_state()
    warm_until_output(twin, host_step.to(dev))  # every later block of `steps` steps ends on an output
    calls = {
        "clips_per_s": lambda: clip_net(host_clip.to(dev, non_blocking=True)).to("cpu"),
        "frames_per_s": _stepper(twin.forward_step, host_step, dev, steps),
    }
    compiled = bool(cfg.get("compile", False)) and dev.type in cfg.get("compile_devices", ["cpu"])
    if compiled:
        backend = str(cfg.get("compile_backend", "inductor"))
        options = dict(cfg.get("compile_options") or {}) or None  # the same settings for both nets
        clip_fn = torch.compile(clip_net, backend=backend, dynamic=False, options=options)
        calls["clips_per_s_compiled"] = lambda: clip_fn(host_clip.to(dev, non_blocking=True)).to("cpu")
        # each variant steps its own copy: a CompiledStep or CudaGraphStep owns its net's stream
        step = CompiledStep(copy.deepcopy(twin), host_step.to(dev), backend=backend, options=options)
        calls["frames_per_s_compiled"] = _stepper(step, host_step, dev, steps)
    if dev.type == "cuda" and cfg.cuda_graph and steps == 1:
        calls["frames_per_s_graph"] = _stepper(CudaGraphStep(copy.deepcopy(twin), host_step.cuda()), host_step, dev, 1)
        if compiled:
            step = CompiledStep(
                copy.deepcopy(twin), host_step.cuda(), backend=backend, cuda_graph=True, options=options
            )
            calls["frames_per_s_compiled_graph"] = _stepper(step, host_step, dev, 1)
    return calls


def _interleaved_rates(calls: dict[str, Predict], batch: int, dev: torch.device, cfg: DictConfig) -> dict[str, float]:
    """``name`` (the median of the per-call rates), ``name_iqr`` (their interquartile range), ``name_calls`` and
    ``name_busy`` (a spread that says the machine was busy; ``modules.profiling.throughput_stats``) for each call."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():  # as a deployed stream runs (CompiledStep leaves it for its own programs)
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(max(1, int(cfg.warmup))):  # the first call compiles, for compiled variants
                fn()
            log.info(f"  {name}: warm-up (compilation included) {time.perf_counter() - start:.1f} s")
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(int(cfg.rounds)):
            for name, fn in calls.items():
                spent = 0.0
                while spent < float(cfg.round_seconds) or len(seconds[name]) < 2:
                    sync()
                    start = time.perf_counter()
                    fn()
                    sync()
                    seconds[name].append(time.perf_counter() - start)
                    spent += seconds[name][-1]
    rates = {}
    for name, samples in seconds.items():
        stats = throughput_stats(samples, batch)
        rates[name] = stats["throughput_median"]
        rates[f"{name}_iqr"] = stats["throughput_iqr"]
        rates[f"{name}_calls"] = stats["timed_calls"]
        rates[f"{name}_busy"] = stats["throughput_busy"]
    return rates


def bench_pair(pair: DictConfig, device: str, cfg: DictConfig) -> dict[str, Any]:
    dev = torch.device(device)
    clip_shape = (3, int(pair.frames), int(pair.crop), int(pair.crop))
    fold_bn = bool(cfg.get("fold_bn", False))
    clip_net = _inference_net(pair.clip, fold_bn, dev)
    twin = _inference_net(pair.continual, fold_bn, dev)
    # FLOPs (and the device name) from the profiler; the rates come from the interleaved timing below
    counts = {"batch_size": cfg.batch_size, "device": device, "warmup": 0, "repeats": 1, "min_time_s": 0.0}
    clip = profile_model(clip_net, mode="clip", input_shape=clip_shape, **counts)
    frame = profile_model(twin, mode="frame", input_shape=clip_shape, **counts)
    row: dict[str, Any] = {
        "clip_model": pair.clip,
        "continual_model": pair.continual,
        "device": device,
        "device_name": clip["device_name"],
        "batch_size": cfg.batch_size,
        "fold_bn": fold_bn,
        "clip_gflops": clip["gflops_per_prediction"],
        "frame_gflops": frame["gflops_per_prediction"],
        "flop_ratio": clip["gflops_per_prediction"] / frame["gflops_per_prediction"],
    }
    with torch.no_grad():
        calls = _variants(clip_net, twin, pair, dev, cfg)
    row.update(_interleaved_rates(calls, int(cfg.batch_size), dev, cfg))
    row["speedup"] = row["frames_per_s"] / row["clips_per_s"]
    if "frames_per_s_compiled" in row:
        row["speedup_compiled"] = row["frames_per_s_compiled"] / row["clips_per_s_compiled"]
    if "frames_per_s_graph" in row:
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
    rows = bench(cfg)
    ratios = {"speedup": "eager", "speedup_compiled": "compiled", "speedup_graph": "CUDA graph", "speedup_best": "best"}
    headline = {
        f"{r['clip_model']}/{r['continual_model']} {r['device']}": ", ".join(
            f"{label} {r[key]:.3g}x" for key, label in ratios.items() if key in r
        )
        for r in rows
    }
    utils.report_run("bench", cfg.paths.output_dir, {"results": cfg.output_file}, headline)


if __name__ == "__main__":
    main()
