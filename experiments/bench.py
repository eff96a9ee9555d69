"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair in ``configs/bench.yaml``, device and batch size, in one run: the clip model's clips/s and the
twin's predictions/s (B streams stepped at once), eager, on the default path (both compiled; the twin through
``modules.continual.fast_step``) and (CUDA) as a CUDA graph, with the per-round ratios (median [min-max]) and
the FLOP ratio (``modules.profiling.speedup``). Both nets get the same treatment (``fold_bn`` folds BatchNorm
in both, as ``build(..., inference=True)`` does). Prints a table, writes ``bench.json`` and appends the rows to
``history_file`` (CSV), so that figures over time can be drawn. ``profile=true`` also writes ``profile.md``: where
the time of one compiled clip call and one compiled step goes, by kind of work (``modules.profiling.step_profile``;
CPU only), which shows what keeps the measured ratio below the FLOP ratio.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from experiments import utils
from experiments.inputs import clip_input_shape
from modules.continual import CompiledStep
from modules.continual.replay import compile_graph
from modules.nets import build
from modules.profiling.speedup import Timing, append_history, compare, format_table
from modules.profiling.step_profile import format_rows, profile_clip, profile_step

log = logging.getLogger(__name__)


def _timing(cfg: DictConfig, device: str) -> Timing:
    compiled = bool(cfg.compile) and device in cfg.compile_devices
    options = dict(cfg.compile_options or {})
    return Timing(
        warmup=int(cfg.warmup), rounds=int(cfg.rounds), round_seconds=float(cfg.round_seconds), compile=compiled,
        backend=str(cfg.compile_backend), options=options, cuda_graph=bool(cfg.cuda_graph),
        compile_timeout_s=float(cfg.compile_timeout_s), onnx=bool(cfg.onnx) and device == "cpu",
    )  # fmt: skip


def bench_pair(pair: DictConfig, device: str, batch_size: int, cfg: DictConfig) -> dict[str, Any]:
    fold_bn = bool(cfg.fold_bn)
    shape = pair.get("input_shape") or clip_input_shape(pair.clip)
    clip_net, twin = build(pair.clip, inference=fold_bn).eval(), build(pair.continual, inference=fold_bn).eval()
    row = compare(clip_net, twin, list(shape), device, batch_size, _timing(cfg, device))
    return {"clip_model": pair.clip, "continual_model": pair.continual, "fold_bn": fold_bn, **row}


def profile_pair(pair: DictConfig, batch_size: int, cfg: DictConfig) -> str:
    """Markdown tables of where the time goes in one call of the compiled clip model and one compiled step of
    its twin (CPU, ``compile_backend``, inductor's kernels profiled one by one), by kind of work."""
    from torch._inductor import config as inductor_config

    shape = pair.get("input_shape") or clip_input_shape(pair.clip)
    clip_net, twin = build(pair.clip, inference=True), build(pair.continual, inference=True)
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
    # the commit of the code this process runs: taken before timing, since the checkout may move during a long run
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": _commit(), "torch": torch.__version__}
    rows = []
    for device in cfg.devices:
        if device == "cuda" and not torch.cuda.is_available():
            log.info("no CUDA device here: skipping the cuda measurements")
            continue
        for batch_size in sorted({int(b) for pair in cfg.pairs for b in pair.get("batch_sizes") or cfg.batch_sizes}):
            for pair in (p for p in cfg.pairs if batch_size in (p.get("batch_sizes") or cfg.batch_sizes)):
                log.info(f"benchmarking {pair.clip} vs {pair.continual} on {device}, batch {batch_size}")
                rows.append(bench_pair(pair, device, int(batch_size), cfg))
    print(format_table(rows))
    path = Path(cfg.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": {**meta, "threads": torch.get_num_threads()}, "rows": rows}, indent=2) + "\n")
    log.info(f"wrote {path}")
    if cfg.history_file:
        append_history(rows, Path(cfg.history_file), {**meta, "rounds": int(cfg.rounds)})
    if cfg.get("profile"):
        _write_profiles(cfg, meta)
    return rows


def _write_profiles(cfg: DictConfig, meta: dict[str, Any]) -> None:
    tables = [f"# Where the time goes ({meta['date']}, commit {meta['commit']}, torch {meta['torch']})"]
    for batch_size in sorted({int(b) for pair in cfg.pairs for b in pair.get("batch_sizes") or cfg.batch_sizes}):
        for pair in (p for p in cfg.pairs if batch_size in (p.get("batch_sizes") or cfg.batch_sizes)):
            log.info(f"profiling {pair.clip} vs {pair.continual} on cpu, batch {batch_size}")
            tables.append(profile_pair(pair, batch_size, cfg))
    text = "\n\n".join(tables) + "\n"
    print(text)
    path = _profile_path(cfg)
    path.write_text(text)
    log.info(f"wrote {path}")


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
    headline = {
        f"{r['clip_model']}/{r['continual_model']} {r['device']} B={r['batch_size']}": ", ".join(
            f"{label} {r[key]:.3g}x" for key, label in ratios.items() if key in r
        )
        + f" (FLOPs {r['flop_ratio']:.3g}x)"
        for r in rows
    }
    files = {"results": cfg.output_file, "history": cfg.history_file}
    if cfg.get("profile"):
        files["profile"] = str(_profile_path(cfg))
    utils.report_run("bench", cfg.paths.output_dir, files, headline)


if __name__ == "__main__":
    main()
