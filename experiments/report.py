"""The summary that ends every run: where it wrote (paths relative to the launch directory) and its headline
metrics."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

__all__ = ["headline", "json_metrics", "report_run", "run_files"]

log = logging.getLogger(__name__)


def _shown(path: str | Path) -> str:
    """``path`` relative to the launch directory when it lies below it (Hydra runs stay there), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _value(value: Any) -> str:
    if isinstance(value, Tensor):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@rank_zero_only
def report_run(
    title: str, output_dir: str | Path, files: dict[str, str | Path | None], metrics: dict[str, Any] | None = None
) -> str:
    """End a run with where it wrote and what it measured: the run directory, each of ``files`` (label -> path)
    that exists, and the headline ``metrics``; paths relative to the launch directory.

    Logged (so Hydra's console and ``<run>/<task>.log`` both get it) where logging shows INFO records, else
    printed. Returns the text.
    """
    present = {label: path for label, path in files.items() if path is not None and Path(path).exists()}
    shown = {label: _value(value) for label, value in (metrics or {}).items() if value is not None}
    width = max(map(len, [*present, *shown]), default=0)
    lines = [f"{title} finished; run directory: {_shown(output_dir)}"]
    lines += [f"  {label:<{width}}  {_shown(path)}" for label, path in present.items()]
    lines += [f"  {label:<{width}}  {value}" for label, value in shown.items()]
    text = "\n".join(lines)
    if log.isEnabledFor(logging.INFO) and logging.getLogger().hasHandlers():
        log.info(text)
    else:
        print(text)
    return text


def headline(metrics: dict[str, Any], names: list[str | None]) -> dict[str, Any]:
    """The metrics of ``names`` that the run logged, in that order, each once."""
    return {name: metrics[name] for name in dict.fromkeys(names) if name and name in metrics}


def run_files(cfg: DictConfig) -> dict[str, Path | None]:
    """The files a train or eval run may have written: config, metrics, checkpoints, CSV logs, wandb's offline run."""
    out = Path(cfg.paths.output_dir)
    checkpoints = Path(OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None) or out / "checkpoints")
    saved = sorted(p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt") if checkpoints.is_dir() else []
    # save_top_k=1 (configs/callbacks/model_checkpoint.yaml) keeps one monitored checkpoint: the best; a larger k all
    best = {"best checkpoint": saved[0]} if len(saved) == 1 else {f"checkpoint {p.stem}": p for p in saved}
    offline = sorted((out / "wandb").glob("offline-run-*"))
    return {
        "config": out / "config.yaml",
        "metrics": out / "metrics.json",
        **best,
        "last checkpoint": checkpoints / "last.ckpt",
        "CSV log": out / "csv" / "metrics.csv",
        "protocol results": out / "protocol_results.csv",
        "wandb offline run": offline[-1] if offline else None,
    }


def json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """``metrics`` as strict JSON can hold them: a NaN or infinite value (a diverged loss, a metric over no
    samples) becomes ``null`` with a warning naming the metrics, instead of the bare ``NaN`` that JSON readers
    (``jq``, JavaScript, ``json.loads(..., parse_constant=...)``) reject. Write with ``json.dumps(...,
    allow_nan=False)``."""
    bad = sorted(k for k, v in metrics.items() if v is not None and not math.isfinite(v))
    if bad:
        message = f"metrics {bad} are not finite ({[metrics[k] for k in bad]}); metrics.json records them as null"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.warning(message)
    return {k: None if k in bad else v for k, v in metrics.items()}
