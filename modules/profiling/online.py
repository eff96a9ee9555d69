"""Online inference on a stream, as a continual net runs in deployment: one frame in, one prediction out.

``run_stream(stepper, frames, fps=...)`` steps ``stepper`` (``modules.continual.fast_step``, or anything called
like ``net.forward_step``) on each frame, timing the decoding of the frame and the step apart (wall clock,
``time.perf_counter``), and keeps per frame the top-k classes with their softmax scores. Its ``stats`` give the
per-frame latency percentiles and the real-time factor, RTF = stream duration at the model's frame rate /
processing time: above 1 the net keeps up with the stream. ``rtf_net`` counts the steps alone, ``rtf`` the whole
pipeline (decoding, transform, step). ``segment_accuracy`` scores the predictions against known action segments,
and ``plot_predictions`` draws the class scores over time.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "StreamResult",
    "latency_stats",
    "machine",
    "plot_predictions",
    "run_stream",
    "segment_accuracy",
    "summary",
]

#: What ``segment_accuracy`` calls a frame: before the first prediction, soon after a segment starts, or after that
PHASES = ("warm_up", "transition", "steady")


@dataclass
class StreamResult:
    """``rows``: one dict per frame (the CSV columns); ``scores``: ``(frames, classes)`` softmax scores, NaN where
    the net gave no prediction; ``stats``: latency, throughput and real-time factors (see ``run_stream``)."""

    rows: list[dict[str, Any]]
    scores: np.ndarray
    stats: dict[str, Any]


def run_stream(
    stepper: Callable[[Tensor], Tensor | None],
    frames: Iterable[Tensor],
    *,
    fps: float,
    labels: Sequence[str] | None = None,
    topk: int = 5,
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
) -> StreamResult:
    """Step ``stepper`` on each ``(C, H, W)`` frame of ``frames`` (a stream played at ``fps``) as a batch of one.

    A row per frame: ``frame``, ``time_s`` (its time in the stream), ``warm_up`` (before the first prediction),
    ``first_prediction`` (true on the first predicting frame only), ``top1_label``, ``top1_score``, ... up to
    ``topk`` (softmax scores; empty where no prediction), ``step_ms`` (moving the frame to ``device`` and the step,
    synchronised, so a GPU step is timed to its end) and ``decode_ms`` (getting the frame from ``frames``).
    """
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows, scores, step_s, decode_s = [], [], [], []
    first: int | None = None
    iterator = iter(frames)
    start = time.perf_counter()
    with tqdm(total=total, desc="stream", unit="frame", disable=not progress) as bar, torch.no_grad():
        while True:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            t1 = time.perf_counter()
            if frame is None:
                break
            out = stepper(frame.unsqueeze(0).to(device, non_blocking=True))
            sync()
            t2 = time.perf_counter()
            probs = None if out is None else torch.softmax(out.reshape(-1).float(), 0).cpu().numpy()
            if probs is not None and first is None:
                first = len(rows)
            rows.append(_row(len(rows), fps, probs, labels, topk, first, (t2 - t1) * 1e3, (t1 - t0) * 1e3))
            scores.append(probs)
            step_s.append(t2 - t1)
            decode_s.append(t1 - t0)
            bar.update()
    wall = time.perf_counter() - start
    if not rows:
        raise ValueError("the stream has no frames: nothing to step")
    width = next((len(p) for p in scores if p is not None), 0)
    matrix = np.array([np.full(width, np.nan) if p is None else p for p in scores], dtype=np.float64)
    return StreamResult(rows, matrix, _stats(rows, step_s, decode_s, wall, fps, first))


def _row(
    index: int,
    fps: float,
    probs: np.ndarray | None,
    labels: Sequence[str] | None,
    topk: int,
    first: int | None,
    step_ms: float,
    decode_ms: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {"frame": index, "time_s": index / fps, "warm_up": first is None}
    row["first_prediction"] = first == index
    best = np.argsort(-probs, kind="stable")[:topk] if probs is not None else []
    for rank in range(topk):
        has = rank < len(best)
        row[f"top{rank + 1}_label"] = _label(int(best[rank]), labels) if has else None
        row[f"top{rank + 1}_score"] = float(probs[best[rank]]) if has else math.nan
    return row | {"step_ms": step_ms, "decode_ms": decode_ms}


def _label(index: int, labels: Sequence[str] | None) -> str:
    if labels is None:
        return str(index)
    if index >= len(labels):
        raise ValueError(f"the net predicts class {index} but only {len(labels)} labels were given: {list(labels)}")
    return labels[index]


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max of per-frame times (ms); NaN for none."""
    if len(ms) == 0:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "max"), math.nan)
    values = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(values.mean()),
            "max": float(values.max())}  # fmt: skip


def _stats(
    rows: list[dict[str, Any]], step_s: list[float], decode_s: list[float], wall: float, fps: float, first: int | None
) -> dict[str, Any]:
    frames, duration, net = len(rows), len(rows) / fps, sum(step_s)
    predicting = [s * 1e3 for s, row in zip(step_s, rows, strict=True) if not row["warm_up"]]
    return {
        "frames": frames,
        "predictions": sum(row["top1_label"] is not None for row in rows),
        "first_prediction_frame": first,
        "fps": fps,
        "duration_s": duration,
        "step_ms": latency_stats([s * 1e3 for s in step_s]),
        "step_ms_after_warm_up": latency_stats(predicting),
        "decode_ms": latency_stats([s * 1e3 for s in decode_s]),
        "net_s": net,
        "decode_s": sum(decode_s),
        "wall_s": wall,
        "frames_per_s": frames / wall,
        "frames_per_s_net": frames / net,
        "rtf": duration / wall,
        "rtf_net": duration / net,
    }


def segment_accuracy(
    rows: list[dict[str, Any]], segments: Sequence[dict[str, Any]], *, delay: int, fps: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Top-1 accuracy per frame against true ``segments`` (``label``, ``start_s``, ``end_s``: the action shown
    from ``start_s`` until before ``end_s``); returns the accuracies and the rows with ``true_label`` and ``phase``.

    Phases: ``warm_up`` (no prediction yet), ``transition`` (fewer than ``delay`` frames after a segment start: the
    net still sees the previous action) and ``steady``. ``accuracy`` is over steady frames, ``accuracy_transition``
    over transition frames, ``accuracy_after_warm_up`` over both; frames outside every segment or without a
    prediction (a strided net's skipped steps) count in none.
    """
    annotated, hits = [], {phase: [] for phase in PHASES}
    for row in rows:
        segment = next((s for s in segments if s["start_s"] <= row["time_s"] + 1e-9 < s["end_s"]), None)
        truth = None if segment is None else segment["label"]
        if row["warm_up"]:
            phase = "warm_up"
        elif segment is not None and (row["time_s"] - segment["start_s"]) * fps < delay - 1e-6:
            phase = "transition"
        else:
            phase = "steady"
        annotated.append(row | {"true_label": truth, "phase": phase})
        if truth is not None and row["top1_label"] is not None:
            hits[phase].append(row["top1_label"] == truth)
    scored = hits["transition"] + hits["steady"]
    stats = {
        "accuracy": _mean(hits["steady"]),
        "accuracy_transition": _mean(hits["transition"]),
        "accuracy_after_warm_up": _mean(scored),
        "frames_scored": {phase: len(hits[phase]) for phase in ("transition", "steady")},
        "transition_frames": delay,
    }
    return stats, annotated


def _mean(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


def machine(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where a timing was taken: host, CPU, threads, accelerator, torch version."""
    device = torch.device(device)
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }


def plot_predictions(
    result: StreamResult,
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    segments: Sequence[dict[str, Any]] | None = None,
    title: str = "",
) -> Path:
    """The scores over time of every class that is top-1 on some frame, the warm-up span shaded, and, given
    ``segments``, the true boundaries (dashed) with the true label above each segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.array([row["time_s"] for row in result.rows])
    scores = result.scores
    fig, ax = plt.subplots(figsize=(10, 4))
    predicted = ~np.isnan(scores).all(axis=1) if scores.size else np.zeros(len(times), bool)
    winners = sorted(set(np.nanargmax(scores[predicted], axis=1).tolist())) if predicted.any() else []
    for k in winners:
        ax.plot(times, scores[:, k], label=_label(k, labels), linewidth=1.2)
    first = result.stats["first_prediction_frame"]
    warm_end = times[first] if first is not None else times[-1]
    ax.axvspan(times[0], warm_end, color="0.85", label=f"warm-up ({first if first is not None else len(times)} frames)")
    for segment in segments or []:
        ax.axvline(segment["start_s"], color="k", linestyle="--", linewidth=0.8)
        middle = (segment["start_s"] + min(segment["end_s"], times[-1])) / 2
        top = ax.get_xaxis_transform()  # x in data, y in axes units: the label sits above the plot
        ax.text(middle, 1.03, segment["label"], ha="center", va="bottom", fontsize=8, transform=top)
    ax.set(xlabel="time (s)", ylabel="softmax score", ylim=(0, 1), xlim=(times[0], times[-1]))
    ax.set_title(title, pad=18 if segments else 6)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary(record: dict[str, Any]) -> str:
    """What a stream run prints: latency percentiles per frame, the real-time factors and, for known segments, the
    accuracy (``record``: ``StreamResult.stats`` with ``compiled`` and the ``segment_accuracy`` stats or None)."""
    step, decode = record["step_ms"], record["decode_ms"]
    lines = [
        f"latency per frame (step, ms): p50 {step['p50']:.3g}  p95 {step['p95']:.3g}  p99 {step['p99']:.3g}  "
        f"(mean {step['mean']:.3g}, max {step['max']:.3g}; {'compiled' if record['compiled'] else 'eager'})",
        f"decoding per frame (ms): p50 {decode['p50']:.3g}  p95 {decode['p95']:.3g}  mean {decode['mean']:.3g}",
        f"real-time factor: {record['rtf_net']:.3g}x (net alone), {record['rtf']:.3g}x (decoding + net); "
        f"{record['frames']} frames = {record['duration_s']:.3g} s at {record['fps']:g} fps processed in "
        f"{record['wall_s']:.3g} s",
    ]
    if record["accuracy"] is not None:
        acc, counts = record["accuracy"], record["accuracy"]["frames_scored"]
        lines.append(
            f"top-1 per frame: {_pct(acc['accuracy'])} steady ({counts['steady']} frames), "
            f"{_pct(acc['accuracy_transition'])} within {acc['transition_frames']} frames of a boundary "
            f"({counts['transition']} frames)"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
