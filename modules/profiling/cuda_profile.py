"""Where the time of a call goes on a CUDA device: ``profile_cuda(fn)`` and ``format_cuda_profiles``.

A continual step at batch 1 is hundreds of small kernels; whether it is bound by the GPU's arithmetic or by the
host launching them shows in three numbers per call: the wall time (timed without the profiler), the time the
GPU was busy (the union of its kernels' and copies' intervals, so overlapping kernels count once) and the
difference, the GPU's idle time between kernels (launch gaps, host work, synchronisation). Beside them: kernels
and copies per call, and the kernels that take the most GPU time (e.g. a slow depthwise convolution).

The summary (``summarize``) is a plain function of the device events, so it is the same for any source of
events; ``profile_cuda`` collects them with ``torch.profiler`` (CUPTI), which also records the kernels of a
replayed CUDA graph.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import timing

__all__ = ["DeviceEvent", "busy_us", "format_cuda_profiles", "profile_cuda", "summarize"]

#: device events that move or set memory rather than compute (CUPTI's names for them)
_COPY_PREFIXES = ("Memcpy", "Memset", "memcpy", "memset")


@dataclass(frozen=True)
class DeviceEvent:
    """One kernel or copy on the device: its name, start and duration in microseconds."""

    name: str
    start_us: float
    duration_us: float

    @property
    def is_copy(self) -> bool:
        return self.name.startswith(_COPY_PREFIXES)


def busy_us(events: Iterable[DeviceEvent]) -> float:
    """Microseconds during which at least one of ``events`` ran (the union of their intervals)."""
    total, end = 0.0, float("-inf")
    for event in sorted(events, key=lambda e: e.start_us):
        stop = event.start_us + event.duration_us
        if stop <= end:
            continue
        total += stop - max(event.start_us, end)
        end = stop
    return total


def summarize(events: list[DeviceEvent], calls: int, wall_ms: float, top: int = 8) -> dict[str, Any]:
    """Per call: ``wall_ms`` (given: timed without the profiler), ``busy_ms`` (GPU busy), ``idle_ms`` (wall less
    busy, at least 0), ``kernels`` and ``copies`` (launches), and the ``top`` kernels by GPU time: name, launches
    per call, mean microseconds per launch, share of the kernels' time."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    kernels = [e for e in events if not e.is_copy]
    by_name: dict[str, list[float]] = defaultdict(list)
    for event in kernels:
        by_name[event.name].append(event.duration_us)
    kernel_us = sum(sum(d) for d in by_name.values())
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    busy_ms = busy_us(events) / 1e3 / calls
    return {
        "wall_ms": wall_ms,
        "busy_ms": busy_ms,
        "idle_ms": max(0.0, wall_ms - busy_ms),
        "kernels": len(kernels) / calls,
        "copies": (len(events) - len(kernels)) / calls,
        "top_kernels": [
            {
                "name": name,
                "per_call": len(durations) / calls,
                "mean_us": statistics.fmean(durations),
                "share": sum(durations) / kernel_us if kernel_us else 0.0,
            }
            for name, durations in ranked
        ],
    }


def profile_cuda(fn: Callable[[], Any], calls: int = 20, warmup: int = 3, top: int = 8) -> dict[str, Any]:
    """``summarize`` for ``calls`` calls of ``fn`` (warmed up first) on the current CUDA device: the wall time is
    the median of calls timed without the profiler just before, the device events come from ``torch.profiler``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise RuntimeError("profile_cuda needs a CUDA device")
    device = torch.device("cuda")
    seconds = timing.time_calls(fn, device, warmup=warmup, repeats=calls, min_time_s=0.0, max_calls=calls)
    wall_ms = statistics.median(seconds) * 1e3
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = [
        DeviceEvent(e.name, float(e.time_range.start), float(e.time_range.elapsed_us()))
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    ]
    if not events:
        raise RuntimeError("the profiler recorded no CUDA kernels: is CUPTI available to torch.profiler here?")
    return summarize(events, calls, wall_ms, top)


def format_cuda_profiles(profiles: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Markdown: one row per variant (wall, GPU busy and idle ms per call, kernels and copies per call), then each
    variant's slowest kernels."""
    lines = [title, ""] if title else []
    lines += [
        "| variant | wall ms | GPU busy ms | GPU idle ms | kernels / call | copies / call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in profiles.items():
        if "error" in p:  # the profiler could not follow this variant
            lines.append(f"| {name} | not profiled: {p['error'].splitlines()[0].replace('|', '/')} | | | | |")
            continue
        lines.append(
            f"| {name} | {p['wall_ms']:.3f} | {p['busy_ms']:.3f} | {p['idle_ms']:.3f} | {p['kernels']:.0f} "
            f"| {p['copies']:.0f} |"
        )
    for name, p in ((n, p) for n, p in profiles.items() if "error" not in p):
        lines += ["", f"{name}: kernels by GPU time", "", "| kernel | per call | mean us | share |"]
        lines.append("|---|---:|---:|---:|")
        for k in p["top_kernels"]:
            short = (k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "...").replace("|", "/")
            lines.append(f"| `{short}` | {k['per_call']:.0f} | {k['mean_us']:.1f} | {k['share']:.0%} |")
    return "\n".join(lines)
