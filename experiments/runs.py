"""What a run builds and writes: its system, resolved config, metrics and protocol results."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from experiments.report import json_metrics

__all__ = [
    "FAMILY_KEYS",
    "claim_run_dir",
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
def write_metrics(metrics: dict[str, Any], output_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``{name: float}`` to ``<output_dir>/metrics.json``, then the ``extra`` entries (not metrics: e.g. which
    checkpoint was tested) as they are."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # strict JSON: a non-finite metric is written as null (with a warning), never as a bare NaN
    entries = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in (extra or {}).items()}
    path.write_text(json.dumps({**json_metrics(float_metrics(metrics)), **entries}, indent=2, allow_nan=False) + "\n")
    return path


#: What marks a directory as holding a run's results (``claim_run_dir``); Hydra's ``.hydra/`` and log are not.
RESULT_FILES = ("metrics.json", "csv/metrics.csv")
#: The file a live run holds an exclusive lock on; the OS drops the lock when the process ends, even on kill -9.
LOCK_FILE = ".run.lock"


@contextmanager
def claim_run_dir(
    output_dir: str | Path, resuming: str | Path | None = None, checkpoint_dir: str | Path | None = None
) -> Iterator[Path]:
    """Hold ``output_dir`` for one run: refuse it while another live run holds it, or when it holds another run's
    results (``metrics.json``, the CSV log, checkpoints in ``checkpoint_dir``, default ``<output_dir>/checkpoints``)
    unless the run resumes from a checkpoint inside it (``resuming``).

    Two runs in one directory crashed on each other's CSV log, mixed their configs and metrics, and a reused
    directory kept the old ``last.ckpt`` beside the new run's ``last-v1.ckpt``. Only rank 0 claims: the other DDP
    ranks run in the same directory by design.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank != 0:
        yield out
        return
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else out / "checkpoints"
    with open(out / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise FileExistsError(
                f"{out} is in use by another run (pid {holder}); start this run in its own directory (the default "
                "hydra.run.dir is unique per run) or wait for that run to end"
            ) from None
        try:
            _check_results(out, checkpoints, resuming)
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield out
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_results(out: Path, checkpoints: Path, resuming: str | Path | None) -> None:
    found = [name for name in RESULT_FILES if (out / name).exists()]
    if checkpoints.is_dir():
        found += [str(p.relative_to(out) if p.is_relative_to(out) else p) for p in sorted(checkpoints.glob("*.ckpt"))]
    if not found:
        return
    if resuming is not None:
        resumed = Path(resuming).resolve()
        if resumed.is_relative_to(out.resolve()) or resumed.is_relative_to(checkpoints.resolve()):
            return  # the interrupted run continues in its own directory
    raise FileExistsError(
        f"{out} holds another run's results ({', '.join(found)}); a run never writes into another's directory. "
        f"Start a new run (the default hydra.run.dir is unique per run), or resume this one with "
        f"ckpt_path={checkpoints / 'last.ckpt'}"
    )


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
