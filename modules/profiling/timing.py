"""Timing: warm-up, per-call seconds (alone or interleaved with other calls), rates with their spread, and the
signs that a machine was busy while timing. One set of helpers for the profiler, the benchmark and the SPA study.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "BUSY_SLACK_CORES",
    "BUSY_SPREAD",
    "busy_reasons",
    "competing_cores",
    "machine_cpu_seconds",
    "throughput_stats",
    "time_calls",
    "time_interleaved",
    "warm_up",
]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued kernels, so that a clock reading covers whole calls (CPU: nothing to wait)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def warm_up(fn: Callable[[], Any], calls: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Run ``fn`` ``calls`` times untimed (caches, autotuning, compilation happen here); returns the seconds spent."""
    start = clock()
    for _ in range(calls):
        fn()
    return clock() - start


#: A profile whose per-call rates have an interquartile range above this fraction of their median is flagged
#: ``throughput_busy``. Measured with co_conv_stack (make profile-demo) on 2 CPU cores: IQR/median 0.15-0.25 with
#: the cores to itself, 0.31-1.9 while a matmul loop in another process competed for them.
BUSY_SPREAD = 0.3
#: A CPU profile is also flagged when other processes kept more cores busy during the timing than torch's
#: threads leave free, plus this many cores of slack for background daemons. Competing processes can slow every
#: call alike, which no spread shows: make profile-demo on 2 cores measured co_conv_stack's clip at 13.9
#: predictions/s with an IQR of 13.88-13.9 against 460-1170 otherwise, while other jobs ran.
BUSY_SLACK_CORES = 0.5


def time_calls(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    min_time_s: float = 1.0,
    max_calls: int = 100_000,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds per call, synchronising CUDA so that each sample covers the whole call.

    After ``warmup`` untimed calls, calls are timed until at least ``repeats`` calls and ``min_time_s`` seconds
    of timing have passed (so that a fast net gets enough samples for a stable median), or ``max_calls`` calls.
    """
    if repeats < 1 or max_calls < repeats:
        raise ValueError(f"need 1 <= repeats <= max_calls, got repeats={repeats}, max_calls={max_calls}")
    sync = _synchronizer(device)
    warm_up(fn, warmup)
    seconds: list[float] = []
    began = clock()
    while len(seconds) < max_calls and (len(seconds) < repeats or clock() - began < min_time_s):
        sync()
        start = clock()
        fn()
        sync()
        seconds.append(clock() - start)
    return seconds


def throughput_stats(seconds: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Median and quartiles of the per-call rates (``batch_size`` / seconds, predictions/s), their interquartile
    range, the number of timed calls and ``throughput_busy``: IQR / median above ``BUSY_SPREAD``.

    The median, unlike the mean of rates, is not pulled by a few calls that a busy machine slowed down (or by
    the fast outliers that the reciprocal inflates). Quartiles interpolate linearly between calls (numpy's
    default, ``statistics.quantiles(method="inclusive")``).
    """
    if not seconds:
        raise ValueError("no timed calls: throughput needs at least one")
    rates = sorted(batch_size / s for s in seconds)
    q1, median, q3 = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 3
    return {
        "throughput_median": median,
        "throughput_q1": q1,
        "throughput_q3": q3,
        "throughput_iqr": q3 - q1,
        "throughput_busy": q3 - q1 > BUSY_SPREAD * median,
        "timed_calls": len(rates),
        "timed_seconds": math.fsum(seconds),
    }


def machine_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent since boot, all cores together (Linux ``/proc/stat``: user, nice,
    system, irq, softirq and steal time); None where the OS does not tell."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def competing_cores(
    fn: Callable[[], Any],
    machine_seconds: Callable[[], float | None] = machine_cpu_seconds,
    own_seconds: Callable[[], float] = time.process_time,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Any, float | None]:
    """``fn()`` and how many cores other processes kept busy meanwhile: the machine's CPU seconds less this
    process's (all its threads), per second of wall time; None where the OS does not tell."""
    machine, own, start = machine_seconds(), own_seconds(), clock()
    out = fn()
    machine_end, own_end, end = machine_seconds(), own_seconds(), clock()
    if machine is None or machine_end is None or end <= start:
        return out, None
    return out, max(0.0, (machine_end - machine) - (own_end - own)) / (end - start)


def busy_reasons(stats: dict[str, Any], device: torch.device, competing: float | None) -> list[str]:
    """Why the timed calls may not show the net's speed: a wide spread, or (on CPU) other processes' load."""
    reasons = []
    if stats["throughput_busy"]:
        spread = stats["throughput_iqr"] / stats["throughput_median"]
        reasons.append(f"the per-call rates spread over an IQR of {spread:.0%} of their median (> {BUSY_SPREAD:.0%})")
    free = (os.cpu_count() or 1) - torch.get_num_threads()
    if device.type == "cpu" and competing is not None and competing > free + BUSY_SLACK_CORES:
        reasons.append(
            f"other processes kept {competing:.2f} cores busy, where torch's {torch.get_num_threads()} threads leave "
            f"{free} of {os.cpu_count()} free"
        )
    return reasons


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    device: torch.device,
    rounds: int,
    round_seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, timed in ``rounds`` interleaved rounds of at least ``round_seconds``
    (and two calls) each, so that a machine whose speed drifts during the run (a shared VM) slows all of them
    alike. Warm the calls up first (``warm_up``)."""
    per_round = time_rounds(calls, device, rounds, round_seconds, clock)
    return {name: [s for one in rounds_ for s in one] for name, rounds_ in per_round.items()}


def time_rounds(
    calls: Mapping[str, Callable[[], Any]],
    device: torch.device,
    rounds: int,
    round_seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[list[float]]]:
    """``time_interleaved``, the seconds of each call kept per round: ``{name: [[s, ...] per round]}``, so that a
    ratio of two calls can be taken within each round (both timed in the same stretch of the machine's time)."""
    sync = _synchronizer(device)
    seconds: dict[str, list[list[float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            spent, this_round = 0.0, []
            while spent < round_seconds or len(this_round) < 2:
                sync()
                start = clock()
                fn()
                sync()
                this_round.append(clock() - start)
                spent += this_round[-1]
            seconds[name].append(this_round)
    return seconds


def machine_name(device: torch.device) -> str:
    """The device's model name and, on CPU, the cores torch uses: e.g. ``AMD EPYC 7B13 (2 threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"
