"""What a run builds and writes: its system, resolved config, metrics and protocol results."""

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
    "instantiate_system",
    "metric_value",
    "resolved",
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
