"""Wiring shared by the entry points: loggers (with the wandb offline rule), callbacks, run files, the summary
that ends every run, and the filters for library output that a user cannot act on (``quiet_known_noise``)."""

from __future__ import annotations

import json
import logging
import netrc
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table
from torch import Tensor

__all__ = [
    "ParamsSummary",
    "finish_loggers",
    "has_wandb_credentials",
    "headline",
    "ignore_checkpoint_callback_states",
    "instantiate_callbacks",
    "instantiate_loggers",
    "log_hyperparameters",
    "metric_value",
    "progress_bar",
    "quiet_known_noise",
    "report_run",
    "run_files",
    "save_config",
    "wandb_mode",
    "write_metrics",
    "write_protocol_results",
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


# --- output a user cannot act on -------------------------------------------------------------------------------
#: Lightning's rank-zero info lines to drop, by prefix.
_QUIET_PREFIXES = (
    # "💡 Tip: ... try installing litlogger / litmodels": advertisements for Lightning's cloud services, printed by
    # every Trainer (litmodels' whenever it creates a default checkpoint callback, as in eval)
    "💡 Tip:",
    # Lightning's note that it adds no default summary because configs/callbacks/model_summary.yaml gave ours
    "Trainer already configured with model summary callbacks",
)
# rank_zero_info logs through whichever of these its last importer named
_RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_QUIET_PREFIXES)


def quiet_known_noise() -> None:
    """Drop library output that says nothing a user of this project can act on; real warnings stay.

    Runs when this module is imported (every entry point imports it); calling it again changes nothing.
    """
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes())
    # Lightning 2.6's own pytree helper (pytorch_lightning/utilities/_pytree.py) builds torch's deprecated
    # LeafSpec on every dataloader batch it inspects: a FutureWarning for Lightning's authors, not for a user
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.",
    )


@contextmanager
def ignore_checkpoint_callback_states() -> Iterator[None]:
    """Around testing a checkpoint: Lightning warns that the callbacks which saved it (checkpointing, LR monitor)
    are missing, but their state matters only to resumed fitting; testing reads the weights."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
        yield


quiet_known_noise()
