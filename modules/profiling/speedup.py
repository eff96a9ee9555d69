"""A clip model against its continual twin, measured in one run: ``compare(clip_net, twin, input_shape, ...)``.

For one device: the clip model's clips/s on ``(B, *input_shape)`` and the twin's predictions/s (frames/s for a
temporal stride of 1; warmed-up ``forward_step`` calls), both at batch ``B``, each call including the host→device
input copy and the device→host output copy; their ratio is the speed-up per prediction.

Variants, each timed where asked for: ``compile`` times both nets compiled by inductor, the same treatment for
each (``torch.compile`` for the clip model, ``modules.continual.CompiledStep`` for the twin's step;
``speedup_compiled``); ``cuda_graph`` on CUDA times the twin's step replayed as a CUDA graph (``CudaGraphStep``,
and the compiled step as a CUDA graph when compiling). ``speedup_best`` divides the twin's best rate by the clip
model's best rate. All variants are timed interleaved (``timing.time_interleaved``), after untimed warm-up calls
(compilation included).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modules.continual import CompiledStep, CudaGraphStep
from modules.continual.replay import warm_until_output

from . import timing
from .profile import profile_model

__all__ = ["Timing", "compare", "format_table"]

log = logging.getLogger(__name__)

Predict = Callable[[], Any]
CLIP_RATES = ("clips_per_s", "clips_per_s_compiled")
FRAME_RATES = ("frames_per_s", "frames_per_s_compiled", "frames_per_s_graph", "frames_per_s_compiled_graph")


@dataclass(frozen=True)
class Timing:
    """How to time: ``warmup`` untimed calls per variant, then ``rounds`` interleaved rounds of ``round_seconds``;
    ``compile`` adds the inductor-compiled variants (``backend``, ``options`` for both nets); ``cuda_graph`` the
    CUDA-graph replay of the twin's step (CUDA only, temporal stride 1)."""

    warmup: int = 3
    rounds: int = 5
    round_seconds: float = 1.0
    compile: bool = False
    backend: str = "inductor"
    options: dict[str, Any] = field(default_factory=dict)
    cuda_graph: bool = True


def _stepper(step: Callable[[torch.Tensor], Any], host_step: torch.Tensor, dev: torch.device, steps: int) -> Predict:
    """One prediction: ``steps`` (the twin's temporal stride) steps, one of which emits (any one: a compiled
    step's phases need not end on the emitting step)."""

    def predict() -> Any:
        out = None
        for _ in range(steps):
            emitted = step(host_step.to(dev, non_blocking=True))
            out = emitted if emitted is not None else out
        if out is None:
            raise RuntimeError(f"no output in {steps} steps past the warm-up")
        return out.to("cpu")

    return predict


def _variants(clip_net: nn.Module, twin: nn.Module, host_clip: torch.Tensor, dev: torch.device, how: Timing) -> dict:
    """Rate name -> one prediction, for every variant asked for and possible on ``dev``."""
    host_step = host_clip[:, :, 0]
    steps = int(twin.stride[0])
    twin.clean_state()
    warm_until_output(twin, host_step.to(dev))  # every later block of `steps` steps ends on an output
    calls = {
        "clips_per_s": lambda: clip_net(host_clip.to(dev, non_blocking=True)).to("cpu"),
        "frames_per_s": _stepper(twin.forward_step, host_step, dev, steps),
    }
    options = how.options or None  # the same settings for both nets
    if how.compile:
        clip_fn = torch.compile(clip_net, backend=how.backend, dynamic=False, options=options)
        calls["clips_per_s_compiled"] = lambda: clip_fn(host_clip.to(dev, non_blocking=True)).to("cpu")
        # each variant steps its own copy: a CompiledStep or CudaGraphStep owns its net's stream
        step = CompiledStep(copy.deepcopy(twin), host_step.to(dev), backend=how.backend, options=options)
        calls["frames_per_s_compiled"] = _stepper(step, host_step, dev, steps)
    if dev.type == "cuda" and how.cuda_graph and steps == 1:
        calls["frames_per_s_graph"] = _stepper(CudaGraphStep(copy.deepcopy(twin), host_step.cuda()), host_step, dev, 1)
        if how.compile:
            twin_copy = copy.deepcopy(twin)
            step = CompiledStep(twin_copy, host_step.cuda(), backend=how.backend, cuda_graph=True, options=options)
            calls["frames_per_s_compiled_graph"] = _stepper(step, host_step, dev, 1)
    return calls


def _rates(calls: dict[str, Predict], batch: int, dev: torch.device, how: Timing) -> dict[str, Any]:
    """``name`` (the median of the per-call rates), ``name_iqr``, ``name_calls`` and ``name_busy``
    (``timing.throughput_stats``) for each call."""
    with torch.inference_mode():  # as a deployed stream runs (CompiledStep leaves it for its own programs)
        for name, fn in calls.items():
            spent = timing.warm_up(fn, max(1, how.warmup))  # the first call compiles, for compiled variants
            log.info(f"  {name}: warm-up (compilation included) {spent:.1f} s")
        seconds = timing.time_interleaved(calls, dev, how.rounds, how.round_seconds)
    rates: dict[str, Any] = {}
    for name, samples in seconds.items():
        stats = timing.throughput_stats(samples, batch)
        rates[name] = stats["throughput_median"]
        rates.update({f"{name}_{k}": stats[f"throughput_{k}"] for k in ("iqr", "busy")})
        rates[f"{name}_calls"] = stats["timed_calls"]
    return rates


def compare(
    clip_net: nn.Module,
    twin: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    how: Timing | None = None,
) -> dict[str, Any]:
    """Rates, their ratios and the FLOP ratio of ``clip_net`` on clips ``(batch_size, *input_shape)`` (``(C, T,
    *spatial)``) vs ``twin`` stepping frames ``(batch_size, C, *spatial)`` on ``device`` (module docstring)."""
    how = how or Timing()
    dev = torch.device(device)
    clip_net, twin = clip_net.to(dev).eval(), twin.to(dev).eval()
    # FLOPs (and the device name) from the profiler; the rates come from the interleaved timing below
    counts = {"batch_size": batch_size, "device": dev, "warmup": 0, "repeats": 1, "min_time_s": 0.0}
    clip = profile_model(clip_net, mode="clip", input_shape=input_shape, **counts)
    frame = profile_model(twin, mode="frame", input_shape=input_shape, **counts)
    row: dict[str, Any] = {
        "device": str(dev),
        "device_name": clip["device_name"],
        "batch_size": batch_size,
        "clip_gflops": clip["gflops_per_prediction"],
        "frame_gflops": frame["gflops_per_prediction"],
        "flop_ratio": clip["gflops_per_prediction"] / frame["gflops_per_prediction"],
    }
    with torch.no_grad():
        calls = _variants(clip_net, twin, torch.randn(batch_size, *input_shape), dev, how)
    row.update(_rates(calls, batch_size, dev, how))
    row["speedup"] = row["frames_per_s"] / row["clips_per_s"]
    if "frames_per_s_compiled" in row:
        row["speedup_compiled"] = row["frames_per_s_compiled"] / row["clips_per_s_compiled"]
    if "frames_per_s_graph" in row:
        row["speedup_graph"] = row["frames_per_s_graph"] / row["clips_per_s"]
    # each net at its fastest measured setting (eager, compiled, CUDA graph): the ratio a user gets
    best_frames = max(row[k] for k in FRAME_RATES if k in row)
    row["speedup_best"] = best_frames / max(row[k] for k in CLIP_RATES if k in row)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rates and ratios: eager, compiled (both nets by inductor) and, on CUDA, the twin replayed as a CUDA graph.
    Rows name their pair in ``clip_model`` and ``continual_model``."""
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
