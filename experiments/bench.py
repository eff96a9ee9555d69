"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair in ``configs/bench.yaml``, device, precision and batch size, in one run: the clip model's clips/s
and the twin's predictions/s (B streams stepped at once), eager, on the default path (both compiled; the twin
through ``modules.continual.fast_step``) and (CUDA) both nets as CUDA graphs, with the per-round ratios (median
[min-max]) and the FLOP ratio (``modules.profiling.speedup``). Both nets get the same treatment (``fold_bn`` folds
BatchNorm in both, as ``build(..., inference=True)`` does). Prints a table, writes ``bench.json`` (rewritten after
every row, ``complete: false`` until the run ends, so a run stopped early keeps what it measured) and appends each
row to ``history_file`` (CSV) as it is measured, so that figures over time can be drawn. A pair that cannot run
in a precision on a device (an op without a kernel for that dtype) is skipped and listed under ``skipped``.
``profile=true`` also writes ``profile.md``: on CPU where the time of one compiled clip call and one compiled
step goes, by kind of work (``modules.profiling.step_profile``); on CUDA, per variant, GPU busy vs idle time,
kernels per call and the slowest kernels (``modules.profiling.cuda_profile``). ``configs/bench_gpu.yaml``
(``make bench-gpu``) is the GPU measurement.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from experiments import utils
from experiments.inputs import clip_input_shape
from modules.continual import CompiledStep, set_depthwise_step
from modules.continual.conv import DEPTHWISE_STEPS
from modules.continual.replay import compile_graph
from modules.nets import build
from modules.profiling.cuda_profile import format_cuda_profiles
from modules.profiling.speedup import (
    Timing,
    append_history,
    compare,
    format_markdown,
    format_table,
    precision_mode,
)
from modules.profiling.step_profile import format_rows, profile_clip, profile_step

log = logging.getLogger(__name__)


def _timing(cfg: DictConfig, device: str, batch_size: int) -> Timing:
    compiled = bool(cfg.compile) and device in cfg.compile_devices
    options = dict(cfg.compile_options or {})
    profiled = bool(cfg.get("profile")) and device == "cuda" and _profiled_batch(cfg, batch_size)
    return Timing(
        warmup=int(cfg.warmup), rounds=int(cfg.rounds), round_seconds=float(cfg.round_seconds), compile=compiled,
        backend=str(cfg.compile_backend), options=options, cuda_graph=bool(cfg.cuda_graph),
        compile_timeout_s=float(cfg.compile_timeout_s), onnx=bool(cfg.onnx) and device == "cpu",
        profile_cuda=profiled,
    )  # fmt: skip


def _profiled_batch(cfg: DictConfig, batch_size: int) -> bool:
    sizes = cfg.get("profile_batch_sizes")
    return sizes is None or batch_size in sizes


def bench_pair(
    pair: DictConfig, device: str, batch_size: int, cfg: DictConfig, precision: str = "fp32"
) -> dict[str, Any]:
    """One row: the pair's rates and ratios on ``device`` at ``batch_size`` in ``precision``; a row with only
    ``skipped`` (the reason) where the nets cannot run in that precision there."""
    fold_bn = bool(cfg.fold_bn)
    shape = list(pair.get("input_shape") or clip_input_shape(pair.clip))
    clip_net, twin = build(pair.clip, inference=fold_bn).eval(), build(pair.continual, inference=fold_bn).eval()
    setup, label = _twin_setup(pair)
    if precision != "fp32" and (why := _unsupported(clip_net, twin, shape, device, precision)):
        return _skipped_row(pair, device, batch_size, precision, why)
    row = compare(clip_net, twin, shape, device, batch_size, _timing(cfg, device, batch_size), precision, setup)
    return {"clip_model": pair.clip, "continual_model": pair.continual + label, "fold_bn": fold_bn, **row}


def _skipped_row(pair: DictConfig, device: str, batch_size: int, precision: str, why: str) -> dict[str, Any]:
    """What a row that could not be measured records: where, and why."""
    names = {"clip_model": pair.clip, "continual_model": pair.continual + _twin_setup(pair)[1]}
    return {**names, "device": device, "batch_size": batch_size, "precision": precision, "skipped": why}


def _twin_setup(pair: DictConfig) -> tuple[Any, str]:
    """A pair's ``depthwise_step`` (``co.set_depthwise_step``: ``unrolled`` lets a compiler fuse the depthwise
    convolutions' step with the work around them) as a setup of the twin, and the label its rows carry."""
    mode = pair.get("depthwise_step")
    if mode is None:
        return None, ""
    if mode not in DEPTHWISE_STEPS:
        raise ValueError(f"pair {pair.clip}/{pair.continual}: depthwise_step={mode!r} is none of {DEPTHWISE_STEPS}")

    def setup(twin: torch.nn.Module) -> None:
        if not set_depthwise_step(twin, mode):
            raise ValueError(
                f"pair {pair.clip}/{pair.continual}: depthwise_step set, but the twin has no depthwise conv"
            )

    return setup, f"[depthwise_step={mode}]"


def _unsupported(
    clip_net: torch.nn.Module, twin: torch.nn.Module, shape: list[int], device: str, precision: str
) -> str:
    """Why one clip call or one step in ``precision`` fails on ``device`` for want of a kernel (e.g. CPU has no
    bfloat16 ``avg_pool3d``), or an empty string where both run."""
    with precision_mode(precision) as dtype, torch.no_grad():
        clip = torch.randn(1, *shape, device=device, dtype=dtype)
        try:
            copy.deepcopy(clip_net).to(device, dtype)(clip)
            step_net = copy.deepcopy(twin).to(device, dtype)
            step_net.clean_state()
            step_net.forward_step(clip[:, :, 0])
        except NotImplementedError as err:
            return f"{precision} on {device}: {str(err).splitlines()[0]}"
    return ""


def profile_pair(pair: DictConfig, batch_size: int, cfg: DictConfig) -> str:
    """Markdown tables of where the time goes in one call of the compiled clip model and one compiled step of
    its twin (CPU, ``compile_backend``, inductor's kernels profiled one by one), by kind of work."""
    from torch._inductor import config as inductor_config

    shape = pair.get("input_shape") or clip_input_shape(pair.clip)
    clip_net, twin = build(pair.clip, inference=True), build(pair.continual, inference=True)
    setup, _ = _twin_setup(pair)
    if setup is not None:
        setup(twin)
    clip = torch.randn(batch_size, *shape)
    backend, options = str(cfg.compile_backend), dict(cfg.compile_options or {}) or None
    # per-kernel profiling changes the generated code, so both nets are compiled anew under it
    with inductor_config.patch({"cpp.enable_kernel_profile": True}), torch.no_grad():
        compiled_clip = _compile_clip(clip_net, clip, backend, options)
        stepper = CompiledStep(twin, clip[:, :, 0].clone(), backend=backend, options=options)
        clip_rows = profile_clip(compiled_clip, clip)
        step_rows = profile_step(stepper, clip[:, :, 0].clone())
    name = f"{pair.clip} / {pair.continual}, batch {batch_size}, {torch.get_num_threads()} threads"
    return "\n\n".join(
        [format_rows(clip_rows, f"### {pair.clip}: one compiled clip call ({name})"),
         format_rows(step_rows, f"### {pair.continual}: one compiled step ({name})")]
    )  # fmt: skip


def _compile_clip(net: torch.nn.Module, clip: torch.Tensor, backend: str, options: dict[str, Any] | None) -> Any:
    """``net`` traced to aten ops on ``clip`` and compiled as ``CompiledStep`` compiles a step: without dynamo,
    whose guards would recompile the net once the profiler is on (and count the compilation as the call)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    return compile_graph(make_fx(net)(clip), [clip], backend, options)


def bench(cfg: DictConfig) -> list[dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark"))
    if cfg.get("require_cuda") and "cuda" in cfg.devices and not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device here, and this bench (require_cuda=true, e.g. configs/bench_gpu.yaml) measures on one: "
            "run it on a GPU machine, or `make bench-cox3d` for the CPU measurement"
        )
    # the commit of the code this process runs: taken before timing, since the checkout may move during a long run
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": _commit(), "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None, "threads": torch.get_num_threads(),
    }  # fmt: skip
    path = Path(cfg.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for device, precision, batch_size, pair in _plan(cfg, skipped):
        log.info(f"benchmarking {pair.clip} vs {pair.continual} on {device}, {precision}, batch {batch_size}")
        try:
            row = bench_pair(pair, device, batch_size, cfg, precision)
        except torch.cuda.OutOfMemoryError as err:  # e.g. a large clip model's batch and its CUDA graphs' pools
            row = _skipped_row(pair, device, batch_size, precision, f"out of GPU memory: {err}")
        _release(device)
        if "skipped" in row:
            log.warning(f"skipped {pair.clip} vs {pair.continual}: {row['skipped']}")
            skipped.append(row)
        else:
            rows.append(row)
            if cfg.history_file:
                append_history([row], Path(cfg.history_file), {**meta, "rounds": int(cfg.rounds)})
        _write_results(path, meta, rows, skipped, complete=False)
    if rows:
        print(format_table(rows))
    if skipped:
        print(f"skipped ({len(skipped)}): " + "; ".join(_skip_label(s) for s in skipped))
    _write_results(path, meta, rows, skipped, complete=True)
    log.info(f"wrote {path}")
    if rows:  # the table for a README, with the run's provenance
        _markdown_path(cfg).write_text(format_markdown(rows, meta))
    if cfg.get("profile"):
        _write_profiles(cfg, meta, rows)
    return rows


def _release(device: str) -> None:
    """Drop what one row compiled and captured before the next: dynamo's cache of programs per Python function is
    bounded (``torch._dynamo.config.cache_size_limit``; past it the function runs eagerly) and X3D-S/M/L share
    one ``forward``, and CUDA graphs hold their memory pools until collected."""
    torch._dynamo.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _plan(cfg: DictConfig, skipped: list[dict[str, Any]]) -> Iterator[tuple[str, str, int, DictConfig]]:
    """(device, precision, batch size, pair) in the order measured; what cannot be measured here goes to
    ``skipped`` with the reason."""
    for device in cfg.devices:
        if device == "cuda" and not torch.cuda.is_available():
            log.info("no CUDA device here: skipping the cuda measurements")
            skipped.append({"device": "cuda", "skipped": "no CUDA device here"})
            continue
        for precision in cfg.get("precisions") or ["fp32"]:
            if precision == "tf32" and device != "cuda":
                skipped.append({"device": device, "precision": precision, "skipped": "tf32 is a CUDA setting"})
                continue
            sizes = sorted({int(b) for pair in cfg.pairs for b in pair.get("batch_sizes") or cfg.batch_sizes})
            only = cfg.get("only_batch_sizes")
            for batch_size in (b for b in sizes if only is None or b in only):
                for pair in (p for p in cfg.pairs if batch_size in (p.get("batch_sizes") or cfg.batch_sizes)):
                    yield device, str(precision), batch_size, pair


def _skip_label(skip: dict[str, Any]) -> str:
    keys = ("clip_model", "continual_model", "device", "precision", "batch_size")
    where = " ".join(f"{skip[k]}" for k in keys if k in skip)
    return f"{where}: {skip['skipped']}"


def _write_results(
    path: Path, meta: dict[str, Any], rows: list[dict[str, Any]], skipped: list[dict[str, Any]], complete: bool
) -> None:
    """bench.json, replaced whole (written beside it, then moved) after every row."""
    text = json.dumps({"meta": meta, "complete": complete, "rows": rows, "skipped": skipped}, indent=2) + "\n"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    tmp.replace(path)


def _write_profiles(cfg: DictConfig, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    tables = [f"# Where the time goes ({meta['date']}, commit {meta['commit']}, torch {meta['torch']})"]
    if "cpu" in cfg.devices:
        for _, _, batch_size, pair in _plan(_cpu_fp32(cfg), []):
            if _profiled_batch(cfg, batch_size):
                log.info(f"profiling {pair.clip} vs {pair.continual} on cpu, batch {batch_size}")
                tables.append(profile_pair(pair, batch_size, cfg))
    for row in (r for r in rows if "cuda_profile" in r):
        title = (
            f"### {row['clip_model']} / {row['continual_model']} on {row['device_name']}, {row['precision']}, "
            f"batch {row['batch_size']} (CUDA {meta['cuda']}): per call"
        )
        tables.append(format_cuda_profiles(row["cuda_profile"], title))
    if len(tables) == 1:
        log.info("profile=true, but nothing was profiled (no CPU device, no CUDA row in profile_batch_sizes)")
        return
    text = "\n\n".join(tables) + "\n"
    print(text)
    path = _profile_path(cfg)
    path.write_text(text)
    log.info(f"wrote {path}")


def _cpu_fp32(cfg: DictConfig) -> DictConfig:
    """``cfg`` narrowed to what the CPU profile covers: the CPU, float32."""
    narrowed = cfg.copy()
    narrowed.devices, narrowed.precisions = ["cpu"], ["fp32"]
    return narrowed


def _markdown_path(cfg: DictConfig) -> Path:
    return Path(cfg.output_file).with_suffix(".md")


def _profile_path(cfg: DictConfig) -> Path:
    return Path(cfg.output_file).with_name("profile.md")


def _commit() -> str | None:
    """The repository's commit (``+dirty`` with uncommitted changes), None outside a git checkout."""
    try:
        dirty = "+dirty" if _git("status", "--porcelain", "-uno") else ""
        return _git("rev-parse", "--short", "HEAD").strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True).stdout


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench.yaml")
def main(cfg: DictConfig) -> None:
    rows = bench(cfg)
    ratios = {"speedup": "eager", "speedup_default": "default", "speedup_best": "best"}
    ratios.update({"speedup_graph": "graph", "speedup_compiled_graph": "compiled graph"})
    headline = {
        f"{r['clip_model']}/{r['continual_model']} {r['device']} B={r['batch_size']}{_precision_label(r)}": ", ".join(
            f"{label} {r[key]:.3g}x" for key, label in ratios.items() if key in r
        )
        + f" (FLOPs {r['flop_ratio']:.3g}x)"
        for r in rows
    }
    files = {"results": cfg.output_file, "table": str(_markdown_path(cfg)), "history": cfg.history_file}
    if cfg.get("profile"):
        files["profile"] = str(_profile_path(cfg))
    utils.report_run("bench", cfg.paths.output_dir, files, headline)


def _precision_label(row: dict[str, Any]) -> str:
    return "" if row["precision"] == "fp32" else f" {row['precision']}"


if __name__ == "__main__":
    main()
