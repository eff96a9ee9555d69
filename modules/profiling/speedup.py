"""A clip model against its continual twin, measured in one run: ``compare(clip_net, twin, input_shape, ...)``.

For one device and batch size ``B``: the clip model's clips/s on ``(B, *input_shape)`` and the twin's
predictions/s (frames/s for a temporal stride of 1; warmed-up steps of ``B`` streams), each call including the
host→device input copy and the device→host output copy; their ratio is the speed-up per prediction.

Variants, each timed where asked for: eager (``speedup``); ``compile``: the default path, both nets compiled by
inductor (``torch.compile`` for the clip model, ``modules.continual.fast_step`` for the twin, which is what a user
gets: a ``CompiledStep`` when compilation finishes within ``compile_timeout_s``, else eager;
``speedup_compiled``); ``cuda_graph`` on CUDA: the twin's step replayed as a CUDA graph (``speedup_graph``).
``speedup_default`` is the ratio of the default path (compiled where it compiled, else eager; ``default_path``
says which) and ``speedup_best`` divides the twin's best rate by the clip model's best rate. On CUDA the clip
model gets the same treatment as the step: recorded as a CUDA graph, eager (``clips_per_s_graph``) and compiled
(``clips_per_s_compiled_graph``); ``speedup_graph`` and ``speedup_compiled_graph`` compare graph with graph.

``precision`` (``precision_mode``): ``fp32`` (IEEE float32: TF32 off for matrix products and cuDNN convolutions,
unlike PyTorch's default for cuDNN), ``tf32`` (float32 storage, TF32 matrix units; CUDA only) or ``bf16`` (weights
and inputs bfloat16). The FLOP counts come from the float32 nets either way. ``profile_cuda=True`` adds, per
variant, where a call's time goes on the GPU (``cuda_profile``: busy vs idle, kernels per call, slowest kernels).
A variant that cannot run (a CUDA-graph capture that fails) is left out and named in ``skipped_variants``.

All variants are timed interleaved (``timing.time_rounds``) after untimed warm-up calls (compilation included).
Rates are medians of the per-call rates (with IQR and call counts); every ratio is taken within each round (both
nets timed in the same stretch of the machine's time) and reported as the median over rounds with its min and max.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.continual import CompiledStep, CudaGraphCall, CudaGraphStep, OnnxStepRunner, fast_step
from modules.continual.replay import warm_until_output

from . import timing
from .profile import profile_model

__all__ = [
    "HISTORY_COLUMNS",
    "PRECISIONS",
    "RATIOS",
    "Timing",
    "append_history",
    "compare",
    "format_table",
    "precision_mode",
]

log = logging.getLogger(__name__)

Predict = Callable[[], Any]
CLIP_RATES = ("clips_per_s", "clips_per_s_compiled", "clips_per_s_graph", "clips_per_s_compiled_graph")
FRAME_RATES = ("frames_per_s", "frames_per_s_compiled", "frames_per_s_graph", "frames_per_s_compiled_graph")
#: the twin's exported step in onnxruntime: reported beside the others, not part of the default path
ONNX_RATE = "frames_per_s_onnx"
#: ratio name -> (twin's rate, clip model's rate); "best" takes the best of each side within a round
RATIOS = {
    "speedup": ("frames_per_s", "clips_per_s"),
    "speedup_compiled": ("frames_per_s_compiled", "clips_per_s_compiled"),
    "speedup_graph": ("frames_per_s_graph", "clips_per_s_graph"),
    "speedup_compiled_graph": ("frames_per_s_compiled_graph", "clips_per_s_compiled_graph"),
    "speedup_onnx": ("frames_per_s_onnx", "clips_per_s"),
}


#: precision name -> the dtype of weights and inputs (``precision_mode`` sets the TF32 switches)
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


@contextlib.contextmanager
def precision_mode(precision: str) -> Iterator[torch.dtype]:
    """Within: TF32 on for CUDA matrix products and cuDNN convolutions if ``precision`` is ``tf32``, off
    otherwise (restored after); yields the dtype the nets and inputs take."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {sorted(PRECISIONS)}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield PRECISIONS[precision]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class Timing:
    """How to time: ``warmup`` untimed calls per variant, then ``rounds`` interleaved rounds of ``round_seconds``;
    ``compile`` adds the compiled variants (``backend``, ``options`` for both nets; the twin's compilation falls
    back to eager after ``compile_timeout_s``); ``cuda_graph`` the CUDA-graph replay of the twin's step (CUDA only,
    temporal stride 1) and of the clip model; ``onnx`` the twin's exported step in onnxruntime (CPU;
    ``frames_per_s_onnx``); ``profile_cuda`` where each variant's time goes on the GPU (CUDA only)."""

    warmup: int = 3
    rounds: int = 5
    round_seconds: float = 1.0
    compile: bool = False
    backend: str = "inductor"
    options: dict[str, Any] = field(default_factory=dict)
    cuda_graph: bool = True
    compile_timeout_s: float = 600.0
    onnx: bool = False
    profile_cuda: bool = False


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


def _warmed(stepper: Callable[[torch.Tensor], Any], step: torch.Tensor, delay: int) -> Callable[[torch.Tensor], Any]:
    """``stepper`` fed ``step`` until its stream emits (a fresh stream: ``delay + 1`` steps)."""
    for _ in range(delay + 1):
        if stepper(step) is not None:
            return stepper
    raise RuntimeError(f"{type(stepper).__name__} emitted nothing in delay + 1 = {delay + 1} steps")


def _variants(clip_net: nn.Module, twin: nn.Module, host_clip: torch.Tensor, dev: torch.device, how: Timing) -> dict:
    """Rate name -> one prediction, for every variant asked for and possible on ``dev``; ``default_path`` -> how
    the default path runs; ``skipped`` -> variant -> why it could not run."""
    host_step = host_clip[:, :, 0].contiguous()
    if host_clip.is_pinned():
        host_step = host_step.pin_memory()
    steps = int(twin.stride[0])
    twin.clean_state()
    warm_until_output(twin, host_step.to(dev))  # every later block of `steps` steps ends on an output
    calls: dict[str, Any] = {
        "clips_per_s": _clip_call(clip_net, host_clip, dev),
        "frames_per_s": _stepper(twin.forward_step, host_step, dev, steps),
    }
    skipped: dict[str, str] = {}
    options = how.options or None  # the same settings for both nets
    default = "eager (compile=false)"
    clip_fn = None
    if how.compile:
        clip_fn = torch.compile(clip_net, backend=how.backend, dynamic=False, options=options)
        calls["clips_per_s_compiled"] = _clip_call(clip_fn, host_clip, dev)
        # each variant steps its own copy: a compiled stepper owns its net's stream
        fast = fast_step(copy.deepcopy(twin), host_step.to(dev), True, how.compile_timeout_s, how.backend, options)
        default = "compiled" if fast.compiled else f"eager ({fast.reason})"
        if fast.compiled:
            calls["frames_per_s_compiled"] = _stepper(
                _warmed(fast, host_step.to(dev), fast.delay), host_step, dev, steps
            )
    if how.onnx and dev.type == "cpu":  # the exported step (co.export) in onnxruntime, state fed back
        runner = OnnxStepRunner.from_net(copy.deepcopy(twin), host_step)
        calls["frames_per_s_onnx"] = _stepper(runner, host_step, dev, steps)
    if dev.type == "cuda" and how.cuda_graph:
        graphs = _cuda_graphs(clip_net, clip_fn, twin, (host_clip, host_step), how, steps)
        calls.update({name: call for name, call in graphs.items() if not isinstance(call, str)})
        skipped.update({name: why for name, why in graphs.items() if isinstance(why, str)})
    return {"calls": calls, "default_path": default, "skipped": skipped}


def _clip_call(fn: Callable[[torch.Tensor], Any], host_clip: torch.Tensor, dev: torch.device) -> Predict:
    return lambda: fn(host_clip.to(dev, non_blocking=True)).to("cpu")


def _cuda_graphs(
    clip_net: nn.Module,
    clip_fn: Any,
    twin: nn.Module,
    host: tuple[torch.Tensor, torch.Tensor],
    how: Timing,
    steps: int,
) -> dict[str, Predict | str]:
    """Both nets recorded as CUDA graphs, eager and (``compile``) compiled: rate name -> prediction, or -> why
    the variant could not be recorded (a capture error is reported, not raised: the other variants still run)."""
    (host_clip, host_step), dev = host, torch.device("cuda")
    makers: dict[str, Callable[[], Predict]] = {
        "clips_per_s_graph": lambda: _clip_call(CudaGraphCall(clip_net, host_clip.to(dev)), host_clip, dev),
    }
    if steps == 1:
        makers["frames_per_s_graph"] = lambda: _stepper(
            CudaGraphStep(copy.deepcopy(twin), host_step.to(dev)), host_step, dev, 1
        )
    if how.compile and clip_fn is not None:
        makers["clips_per_s_compiled_graph"] = lambda: _clip_call(
            CudaGraphCall(clip_fn, host_clip.to(dev)), host_clip, dev
        )
        makers["frames_per_s_compiled_graph"] = lambda: _stepper(
            CompiledStep(
                copy.deepcopy(twin), host_step.to(dev), backend=how.backend, cuda_graph=True,
                options=how.options or None,
            ),
            host_step, dev, steps,
        )  # fmt: skip
    out: dict[str, Predict | str] = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except RuntimeError as err:  # e.g. an op that synchronises with the host cannot be captured
            log.warning(f"  {name}: not measured, the CUDA graph could not be recorded: {err}")
            out[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if steps != 1:
        out["frames_per_s_graph"] = f"CudaGraphStep needs temporal stride 1, the twin has {steps}"
    return out


def _cuda_profiles(calls: dict[str, Predict]) -> dict[str, dict[str, Any]]:
    """``cuda_profile.profile_cuda`` of each variant; a variant the profiler cannot follow gets ``{"error": ...}``
    (the rates are measured already: a profile is not worth losing them)."""
    from .cuda_profile import profile_cuda

    out: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for name, fn in calls.items():
            try:
                out[name] = profile_cuda(fn)
            except RuntimeError as err:
                log.warning(f"  {name}: no CUDA profile: {err}")
                out[name] = {"error": f"{type(err).__name__}: {err}"}
    return out


def _rates(calls: dict[str, Predict], batch: int, dev: torch.device, how: Timing) -> dict[str, Any]:
    """``name`` (the median of the per-call rates), ``name_iqr``, ``name_calls`` and ``name_busy``
    (``timing.throughput_stats``) for each call, and the ratios of ``RATIOS`` taken per round."""
    with torch.inference_mode():  # as a deployed stream runs (CompiledStep leaves it for its own programs)
        for name, fn in calls.items():
            spent = timing.warm_up(fn, max(1, how.warmup))  # the first call compiles, for compiled variants
            log.info(f"  {name}: warm-up (compilation included) {spent:.1f} s")
        seconds = timing.time_rounds(calls, dev, how.rounds, how.round_seconds)
    rates: dict[str, Any] = {}
    for name, per_round in seconds.items():
        stats = timing.throughput_stats([s for one in per_round for s in one], batch)
        rates[name] = stats["throughput_median"]
        rates.update({f"{name}_{k}": stats[f"throughput_{k}"] for k in ("iqr", "busy")})
        rates[f"{name}_calls"] = stats["timed_calls"]
    round_rates = {name: [batch * len(r) / sum(r) for r in per_round] for name, per_round in seconds.items()}
    rates.update(_round_ratios(round_rates))
    return rates


def _round_ratios(round_rates: dict[str, list[float]]) -> dict[str, float]:
    """Each ratio of ``RATIOS`` (and ``speedup_best``) within each round: median, min and max over rounds."""
    per_round: dict[str, list[float]] = {
        ratio: [f / c for f, c in zip(round_rates[frames], round_rates[clips])]
        for ratio, (frames, clips) in RATIOS.items()
        if frames in round_rates and clips in round_rates
    }
    frames = [round_rates[k] for k in FRAME_RATES if k in round_rates]
    clips = [round_rates[k] for k in CLIP_RATES if k in round_rates]
    per_round["speedup_best"] = [max(f) / max(c) for f, c in zip(zip(*frames), zip(*clips))]
    out: dict[str, float] = {}
    for ratio, values in per_round.items():
        out.update({ratio: statistics.median(values), f"{ratio}_min": min(values), f"{ratio}_max": max(values)})
    return out


def compare(
    clip_net: nn.Module,
    twin: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    how: Timing | None = None,
    precision: str = "fp32",
    twin_setup: Callable[[nn.Module], Any] | None = None,
) -> dict[str, Any]:
    """Rates, their ratios and the FLOP ratio of ``clip_net`` on clips ``(batch_size, *input_shape)`` (``(C, T,
    *spatial)``) vs ``twin`` stepping frames ``(batch_size, C, *spatial)`` on ``device`` in ``precision``
    (module docstring). ``twin_setup(twin)`` changes how the twin computes (e.g. ``co.set_depthwise_step``) after
    its FLOPs are counted: the arithmetic is the net's, however its kernels express it."""
    how = how or Timing()
    dev = torch.device(device)
    if precision == "tf32" and dev.type != "cuda":
        raise ValueError(f"precision tf32 is a CUDA setting (TF32 matrix units): on {dev.type} it would be fp32")
    clip_net, twin = clip_net.to(dev).eval(), twin.to(dev).eval()
    # FLOPs from the profiler; the rates come from the interleaved timing below
    counts = {"batch_size": batch_size, "device": dev, "warmup": 0, "repeats": 1, "min_time_s": 0.0}
    clip = profile_model(clip_net, mode="clip", input_shape=input_shape, **counts)
    frame = profile_model(twin, mode="frame", input_shape=input_shape, **counts)
    row: dict[str, Any] = {
        "device": str(dev),
        "device_name": timing.machine_name(dev),
        "batch_size": batch_size,
        "precision": precision,
        "clip_gflops": clip["gflops_per_prediction"],
        "frame_gflops": frame["gflops_per_prediction"],
        "flop_ratio": clip["gflops_per_prediction"] / frame["gflops_per_prediction"],
    }
    if twin_setup is not None:
        twin_setup(twin)
    with precision_mode(precision) as dtype, torch.no_grad():
        clip_net, twin = clip_net.to(dtype), twin.to(dtype)
        host_clip = torch.randn(batch_size, *input_shape).to(dtype)
        if dev.type == "cuda":  # page-locked, as a stream decoding into pinned buffers would hand frames over
            host_clip = host_clip.pin_memory()
        variants = _variants(clip_net, twin, host_clip, dev, how)
        row["default_path"] = variants["default_path"]
        row["skipped_variants"] = variants["skipped"]
        row.update(_rates(variants["calls"], batch_size, dev, how))
        if how.profile_cuda and dev.type == "cuda":
            row["cuda_profile"] = _cuda_profiles(variants["calls"])
    key = "speedup_compiled" if row["default_path"] == "compiled" else "speedup"
    row.update({f"speedup_default{k}": row[f"{key}{k}"] for k in ("", "_min", "_max")})
    # the default path's rates per stream (B streams stepped together, B clips per call)
    suffix = "_compiled" if row["default_path"] == "compiled" else ""
    row["frames_per_s_per_stream"] = row[f"frames_per_s{suffix}"] / batch_size
    row["clips_per_s_per_stream"] = row[f"clips_per_s{suffix}"] / batch_size
    return row


_RATIO_COLUMNS = [f"{r}{k}" for r in (*RATIOS, "speedup_default", "speedup_best") for k in ("", "_min", "_max")]
#: the columns of a bench history CSV (one row per pair, device and batch size of a run), in order
HISTORY_COLUMNS = [
    "date", "commit", "torch", "cuda", "device_name", "device", "clip_model", "continual_model", "batch_size",
    "precision", "rounds", "default_path", *CLIP_RATES, *FRAME_RATES, ONNX_RATE, "frames_per_s_per_stream",
    "clips_per_s_per_stream", *_RATIO_COLUMNS, "flop_ratio",
]  # fmt: skip


def append_history(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    """Append ``rows`` (with ``meta``: date, commit, torch, cuda, rounds) to the CSV at ``path`` in
    ``HISTORY_COLUMNS`` (blank where a row lacks a measurement). A file written before some columns existed (its
    columns a subset of these) is first rewritten in the current layout, its rows kept and the new columns blank
    (``precision`` blank: float32 as PyTorch sets it, the only precision measured then); a file with other
    columns is refused rather than mixed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != HISTORY_COLUMNS and not set(header) <= set(HISTORY_COLUMNS):
            raise ValueError(
                f"{path} has the columns {header}, not a bench history's {HISTORY_COLUMNS}: pass another "
                "history_file (or move the old one aside)"
            )
        if header != HISTORY_COLUMNS:
            _upgrade(path)
    new = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows({**meta, **row} for row in rows)
    log.info(f"appended {len(rows)} rows to {path}")


def _upgrade(path: Path) -> None:
    """Rewrite a history of older columns in ``HISTORY_COLUMNS``: same rows, new columns blank; written to a
    temporary file first, so an interruption leaves the old file whole."""
    with path.open(newline="") as f:
        old = list(csv.DictReader(f))
    tmp = path.with_name(path.name + ".upgrading")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(old)
    tmp.replace(path)
    log.info(f"{path}: rewrote {len(old)} rows in the current columns (the new ones blank)")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rates and ratios (median over rounds [min-max]): eager, compiled (both nets by inductor; the default path
    where it compiled), the default path, the best of each net, the FLOP ratio; on CUDA both nets' best CUDA graph
    (eager or compiled) and their ratio. Rows name their pair in ``clip_model`` and ``continual_model``."""
    width = max((len(f"{r['clip_model']}/{r['continual_model']}") for r in rows), default=4)
    head = f"{'pair':<{width}} {'device':<6} {'B':>3} {'prec.':<5} {'clips/s':>8} {'frames/s':>9} {'eager ratio':>18}"
    head += f" {'comp. c/s':>9} {'f/s':>8} {'compiled ratio':>18} {'onnx f/s':>8}"
    head += f" {'graph c/s':>9} {'f/s':>9} {'graph ratio':>18} {'default':>7} {'best':>6} {'FLOP':>6}"
    lines = [head]
    for r in rows:
        pair = f"{r['clip_model']}/{r['continual_model']}"
        line = f"{pair:<{width}} {r['device']:<6} {r['batch_size']:>3} {r.get('precision', 'fp32'):<5} "
        line += f"{r['clips_per_s']:>8.2f} {r['frames_per_s']:>9.1f} "
        line += f"{_ratio(r, 'speedup'):>18} "
        line += _cells(r, ("clips_per_s_compiled", 9), ("frames_per_s_compiled", 8))
        line += f" {_ratio(r, 'speedup_compiled'):>18} "
        line += _cells(r, (ONNX_RATE, 8)) + " "
        line += _best_cell(r, ("clips_per_s_graph", "clips_per_s_compiled_graph"), 9) + " "
        line += _best_cell(r, ("frames_per_s_graph", "frames_per_s_compiled_graph"), 9) + " "
        graph = max(("speedup_graph", "speedup_compiled_graph"), key=lambda k: r.get(k, float("-inf")))
        line += f"{_ratio(r, graph):>18}"
        lines.append(f"{line} {r['speedup_default']:>7.2f} {r['speedup_best']:>6.2f} {r['flop_ratio']:>6.1f}")
    return "\n".join(lines)


def _best_cell(row: dict[str, Any], keys: tuple[str, ...], width: int) -> str:
    """The largest of the row's ``keys`` (rates), blank where it has none of them."""
    best = max((row[k] for k in keys if k in row), default=None)
    return f"{best:>{width}.1f}" if best is not None else " " * width


#: the markdown table's rate columns: header -> the rate keys it shows, eager / compiled / graph / compiled graph
_MARKDOWN_RATES = {
    "clip model clips/s": ("clips_per_s", "clips_per_s_compiled", "clips_per_s_graph", "clips_per_s_compiled_graph"),
    "twin frames/s": ("frames_per_s", "frames_per_s_compiled", "frames_per_s_graph", "frames_per_s_compiled_graph"),
}


def format_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The rows as a markdown table for a README, headed by the run's provenance (``meta``: date, commit, torch,
    cuda): per row the rates of each net eager / compiled / CUDA graph / compiled CUDA graph ("-" where not
    measured), the ratio each net at its fastest (``speedup_best``, median [min-max] over rounds), the default
    path's and the FLOP ratio."""
    devices = ", ".join(sorted({str(r.get("device_name", r["device"])) for r in rows}))
    lines = [
        f"{devices}; {meta.get('date')}, commit {meta.get('commit')}, torch {meta.get('torch')}"
        + (f", CUDA {meta['cuda']}" if meta.get("cuda") else ""),
        "",
        "| pair | B | precision | " + " | ".join(f"{h} (eager / compiled / graph / compiled graph)" for h in
                                                _MARKDOWN_RATES) + " | best ratio | default ratio | FLOP ratio |",
        "|---|---:|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        rates = [" / ".join(f"{r[k]:.1f}" if k in r else "-" for k in keys) for keys in _MARKDOWN_RATES.values()]
        lines.append(
            f"| {r['clip_model']} / {r['continual_model']} | {r['batch_size']} | {r.get('precision', 'fp32')} | "
            + " | ".join(rates)
            + f" | **{_ratio(r, 'speedup_best')}** | {_ratio(r, 'speedup_default')} | {r['flop_ratio']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _ratio(row: dict[str, Any], key: str) -> str:
    """``median [min-max]`` of a per-round ratio, blank where the row lacks it."""
    if key not in row:
        return ""
    return f"{row[key]:.2f} [{row[key + '_min']:.2f}-{row[key + '_max']:.2f}]"


def _cells(row: dict[str, Any], *columns: tuple[str, int]) -> str:
    """Right-aligned values, blanks where the row has no such measurement."""
    fmt = {True: "{:>{w}.2f}", False: "{:>{w}}"}
    return " ".join(fmt[key in row].format(row.get(key, ""), w=width) for key, width in columns)
