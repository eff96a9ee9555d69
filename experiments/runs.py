"""What a run writes and says: its system, resolved config, metrics, protocol results, and the summary that
ends every run (where it wrote, its headline metrics)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

__all__ = [
    "FAMILY_KEYS",
    "float_metrics",
    "headline",
    "instantiate_system",
    "metric_value",
    "report_run",
    "resolved",
    "run_files",
    "save_config",
    "write_metrics",
    "write_protocol_results",
]

log = logging.getLogger(__name__)


#: Keys of a family's model config that choose its net (``configs/model/x3d.yaml``: ``size``, interpolated into
#: ``net.name``); they are not arguments of the system.
FAMILY_KEYS = ("size", "variant")


def instantiate_system(model_cfg: DictConfig) -> Any:
    """The LightningModule that ``cfg.model`` describes, without the family keys that only name its net."""
    keys = [k for k in FAMILY_KEYS if k in model_cfg]
    if not keys:
        return hydra.utils.instantiate(model_cfg)
    # resolved while still attached to the whole config, whose keys its interpolations name
    node = OmegaConf.to_container(model_cfg, resolve=True)
    for key in keys:
        del node[key]
    return hydra.utils.instantiate(OmegaConf.create(node))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write the fully resolved config to ``<output_dir>/config.yaml`` (Hydra's .hydra/ keeps the unresolved)."""
    path = Path(output_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved(cfg))))
    return path


def float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, Tensor) else v) for k, v in sorted(metrics.items())}


@rank_zero_only
def write_metrics(metrics: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``{name: float}`` to ``<output_dir>/metrics.json``."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(float_metrics(metrics), indent=2) + "\n")
    return path


@rank_zero_only
def write_protocol_results(rows: list[dict[str, Any]], output_dir: str | Path, loggers: list[Logger]) -> Path | None:
    """Write a protocol sweep's tidy table (one row per setting) to ``protocol_results.csv`` and log it to wandb."""
    if not rows:
        return None
    import pandas as pd

    frame = pd.DataFrame(rows)
    path = Path(output_dir) / "protocol_results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="test/protocol_results", dataframe=frame)
    return path


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The optimised metric; a name the run did not log is an error listing the logged ones."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged metrics: {sorted(metrics)}")
    return float_metrics({name: metrics[name]})[name]


# --- the end of a run ------------------------------------------------------------------------------------------
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
