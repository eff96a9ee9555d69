"""Loggers (with the wandb offline rule), callbacks and the model summary of the entry points."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

from experiments.runs import resolved

__all__ = [
    "CSVLogger",
    "ParamsSummary",
    "finish_loggers",
    "has_wandb_credentials",
    "instantiate_callbacks",
    "instantiate_loggers",
    "log_hyperparameters",
    "progress_bar",
    "wandb_mode",
]

log = logging.getLogger(__name__)
CALLBACK_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "callbacks"


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
        logger = hydra.utils.instantiate(conf, **overrides)
        if isinstance(logger, WandbLogger) and logger._wandb_init.get("anonymous", False) is None:
            # WandbLogger always passes anonymous=None, and wandb (0.31 here) warns that the setting has no effect
            del logger._wandb_init["anonymous"]
        loggers.append(logger)
    return loggers


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSVLogger, continuing the run directory's ``metrics.csv`` when a run resumes there.

    Lightning deletes an existing ``metrics.csv`` when its logger starts, so a run resumed in its own directory lost
    the rows of every epoch before the interruption. A fresh run never finds one: ``runs.claim_run_dir`` refuses a
    directory holding another run's results.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # keep the file and its columns: Lightning's save() appends, rewriting the header when columns are added
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """One callback per ``_target_`` entry of the ``callbacks`` group."""
    callbacks = []
    for name, conf in (cfg or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ValueError(f"callbacks.{name} has no _target_; every callbacks entry must be one callback")
        callbacks.append(hydra.utils.instantiate(conf))
    return callbacks


def progress_bar() -> Callback:
    """The progress bar of ``configs/callbacks/progress_bar.yaml``, for entry points without a callbacks group
    (eval), so that testing looks the same whether it follows training or not."""
    return hydra.utils.instantiate(OmegaConf.load(CALLBACK_CONFIGS / "progress_bar.yaml").progress_bar)


class ParamsSummary(ModelSummary):
    """Lightning's layer and parameter summary, without its FLOPs column and total where they are 0.

    Lightning counts FLOPs only for a module with an ``example_input_array``; ours have none (the input shape
    comes from the data), so it printed 0 per layer and "Total FLOPs: 0". ``experiments.profile`` measures the
    multiply-accumulates per prediction instead.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if not total_flops:
            summary_data = [(name, column) for name, column in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        head, _, last = table.rpartition("\n")
        if not total_flops and last.endswith("Total Flops"):
            table = head
        logging.getLogger("pytorch_lightning.callbacks.model_summary").info("\n" + table)


def log_hyperparameters(cfg: DictConfig, loggers: list[Logger]) -> None:
    """Send the resolved config to every logger (wandb config, CSV hparams.yaml)."""
    params = resolved(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)


def finish_loggers(loggers: list[Logger]) -> None:
    """Close wandb runs, so that the next run in this process (tests, multirun) starts a fresh one."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
