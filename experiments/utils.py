"""Wiring shared by the entry points: loggers (with the wandb offline rule), callbacks, run files."""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

__all__ = [
    "finish_loggers",
    "has_wandb_credentials",
    "instantiate_callbacks",
    "instantiate_loggers",
    "log_hyperparameters",
    "metric_value",
    "save_config",
    "wandb_mode",
    "write_metrics",
    "write_protocol_results",
]


def has_wandb_credentials() -> bool:
    """Whether wandb could log in without asking: ``WANDB_API_KEY`` or a netrc entry for the wandb host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        # netrc.netrc() reads $NETRC or ~/.netrc; a missing or unreadable file means no credentials.
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> str:
    """The rule that keeps wandb from prompting: ``WANDB_MODE`` if set, else online with credentials, else offline.

    Passed to every ``wandb.init`` explicitly: wandb caches the environment of its first run in a process.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_wandb_credentials() else "offline"


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """One logger per ``_target_`` entry of the ``logger`` group; a WandbLogger with ``offline: null`` runs in
    ``wandb_mode()`` (offline runs write under its ``save_dir``, to ``wandb sync`` later)."""
    loggers = []
    for name, conf in (cfg or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ValueError(f"logger.{name} has no _target_; every logger config entry must be one logger")
        overrides: dict[str, Any] = {}
        if conf.get("_target_", "").endswith("WandbLogger") and conf.get("offline", False) is None:
            # `mode` goes to wandb.init; WandbLogger(offline=True) would instead set WANDB_MODE process-wide.
            overrides = {"offline": False, "mode": wandb_mode()}
        loggers.append(hydra.utils.instantiate(conf, **overrides))
    return loggers


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """One callback per ``_target_`` entry of the ``callbacks`` group."""
    callbacks = []
    for name, conf in (cfg or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ValueError(f"callbacks.{name} has no _target_; every callbacks entry must be one callback")
        callbacks.append(hydra.utils.instantiate(conf))
    return callbacks


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write the fully resolved config to ``<output_dir>/config.yaml`` (Hydra's .hydra/ keeps the unresolved)."""
    path = Path(output_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved(cfg))))
    return path


def log_hyperparameters(cfg: DictConfig, loggers: list[Logger]) -> None:
    """Send the resolved config to every logger (wandb config, CSV hparams.yaml)."""
    params = resolved(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)


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


def finish_loggers(loggers: list[Logger]) -> None:
    """Close wandb runs, so that the next run in this process (tests, multirun) starts a fresh one."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
