"""Benchmark clip models against their continual twins: ``python -m experiments.bench`` (``make bench-cox3d``).

For each pair in ``configs/bench.yaml`` and each device, in one run: the clip model's clips/s and the twin's
predictions/s at the same batch size, eager, compiled and (CUDA) replayed as a CUDA graph, and their ratios
(``modules.profiling.speedup``). Both nets get the same treatment (``fold_bn`` folds BatchNorm in both). A pair's
input is the clip model's registered input facts unless it gives ``input_shape``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from experiments import utils
from experiments.inputs import clip_input_shape
from modules.continual import fold_batchnorm
from modules.nets import build
from modules.profiling.speedup import Timing, compare, format_table

log = logging.getLogger(__name__)


def _inference_net(name: str, fold_bn: bool) -> torch.nn.Module:
    """The registered net in eval mode; with ``fold_bn`` its BatchNorms folded into the convs."""
    net = build(name).eval()
    return fold_batchnorm(net, inplace=True) if fold_bn else net


def _timing(cfg: DictConfig, device: str) -> Timing:
    compiled = bool(cfg.compile) and device in cfg.compile_devices
    options = dict(cfg.compile_options or {})
    return Timing(
        warmup=int(cfg.warmup), rounds=int(cfg.rounds), round_seconds=float(cfg.round_seconds), compile=compiled,
        backend=str(cfg.compile_backend), options=options, cuda_graph=bool(cfg.cuda_graph),
    )  # fmt: skip


def bench_pair(pair: DictConfig, device: str, cfg: DictConfig) -> dict[str, Any]:
    fold_bn = bool(cfg.fold_bn)
    shape = pair.get("input_shape") or clip_input_shape(pair.clip)
    clip_net, twin = _inference_net(pair.clip, fold_bn), _inference_net(pair.continual, fold_bn)
    row = compare(clip_net, twin, list(shape), device, int(cfg.batch_size), _timing(cfg, device))
    return {"clip_model": pair.clip, "continual_model": pair.continual, "fold_bn": fold_bn, **row}


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
    print(format_table(rows))
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
