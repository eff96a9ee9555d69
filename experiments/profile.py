"""Profile a model: ``python -m experiments.profile model=<name> mode=clip|frame batch_size=N device=cpu|cuda
output_file=<path.json>``.

Builds the configured net (``cfg.model.net``; no weights needed), measures params, GFLOPs (= GMACs) per
prediction, peak memory and throughput with ``modules.profiling.profile_model``, writes them to
``output_file`` (JSON) and logs them to the configured loggers as ``profile/<field>``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from experiments import utils
from modules.profiling import profile_model

log = logging.getLogger(__name__)


def profile(cfg: DictConfig) -> dict[str, Any]:
    """Profile ``cfg.model.net`` as configured; returns the result written to ``cfg.output_file``."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed)
    net = hydra.utils.instantiate(cfg.model.net)
    result = profile_model(
        net,
        mode=cfg.mode,
        input_shape=tuple(int(s) for s in cfg.input_shape),
        batch_size=cfg.batch_size,
        device=cfg.device,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        min_time_s=cfg.min_time_s,
        fast_path=bool(cfg.fast_path),
        compile=bool(cfg.compile),
        compile_timeout_s=float(cfg.compile_timeout_s),
    )
    result["model"] = OmegaConf.select(cfg, "model.net.name", default=result["model"])
    path = Path(cfg.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        f"{result['model']} ({cfg.mode}, {cfg.device}, batch {cfg.batch_size}): "
        f"{result['gflops_per_prediction']:.4g} GFLOPs/prediction, {result['params'] / 1e6:.3g} M params, "
        f"{result['peak_memory_bytes'] / 2**20:.3g} MiB peak, "
        f"{_throughput(result)} -> {path}"
    )

    utils.save_config(cfg, cfg.paths.output_dir)
    loggers = utils.instantiate_loggers(cfg.get("logger"))
    try:
        utils.log_hyperparameters(cfg, loggers)
        numeric = {f"profile/{k}": v for k, v in result.items() if isinstance(v, int | float)}
        for logger in loggers:
            logger.log_metrics(numeric)
            logger.save()
    finally:
        utils.finish_loggers(loggers)
    return result


def _throughput(result: dict[str, Any]) -> str:
    """Median and interquartile range of the per-call rates, and how many calls they come from."""
    busy = f"; busy machine: {'; '.join(result['busy_reasons'])}" if result["throughput_busy"] else ""
    return (
        f"{result['throughput_median']:.4g} {result['throughput_unit']} median, IQR {result['throughput_q1']:.4g}-"
        f"{result['throughput_q3']:.4g} over {result['timed_calls']} calls{busy}"
    )


@hydra.main(version_base="1.3", config_path="../configs", config_name="profile.yaml")
def main(cfg: DictConfig) -> float | None:
    result = profile(cfg)
    headline = {"GFLOPs per prediction": result["gflops_per_prediction"], "throughput": _throughput(result)}
    utils.report_run("profile", cfg.paths.output_dir, {"profile": cfg.output_file, **utils.run_files(cfg)}, headline)
    return result[cfg.optimized_metric] if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
