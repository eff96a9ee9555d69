"""Train a model: ``python -m experiments.train experiment=<name> [overrides]``.

Claims the run directory (never another run's: ``runs.claim_run_dir``), seeds, instantiates data, model, callbacks,
loggers and trainer from the composed config, fits (resuming from ``ckpt_path=`` if given: exactly, with the random
states and the best checkpoint so far, ``experiments/resume.py``), tests the best checkpoint (with
``test_checkpoint: last``, the last epoch's weights), and writes ``config.yaml`` (resolved) and ``metrics.json``
(with the file and score it tested) into the run directory. Returns ``optimized_metric`` for sweepers.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from experiments import config_checks, data_report, inputs, utils

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as configured; returns every logged metric (``stage/name``) as floats, and with ``test`` the
    checkpoint tested: ``tested_checkpoint`` (its path; None for the current weights) and its monitored score."""
    checkpoints = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    with utils.claim_run_dir(cfg.paths.output_dir, resuming=cfg.get("ckpt_path"), checkpoint_dir=checkpoints):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    config_checks.check(cfg)  # wrong types and impossible values name their key before anything is built
    config_checks.check_ckpt_path(cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    log.info(f"Instantiating model <{cfg.model._target_}>")
    model: pl.LightningModule = utils.instantiate_system(cfg.model)
    # after the model: the evaluation clip length follows from its net and the protocol
    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: pl.LightningDataModule = inputs.instantiate_datamodule(cfg, model)
    callbacks = utils.instantiate_callbacks(cfg.get("callbacks"))
    loggers = utils.instantiate_loggers(cfg.get("logger"))
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    output_dir = cfg.paths.output_dir
    utils.save_config(cfg, output_dir)
    utils.log_hyperparameters(cfg, loggers)

    metrics: dict[str, Any] = {}
    tested: dict[str, Any] = {}
    try:
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(trainer.callback_metrics)
        if cfg.get("test"):
            tested = _test_checkpoint(trainer, cfg.get("test_checkpoint", "best"))
            trainer.test(model, datamodule=datamodule, ckpt_path=tested["tested_checkpoint"])
            metrics.update(trainer.callback_metrics)
            utils.write_protocol_results(getattr(model, "protocol_results", []), output_dir, loggers)
    finally:
        utils.finish_loggers(loggers)
    metrics = data_report.report_data(datamodule, metrics)  # skipped / missing / unknown-label counts per split
    # rank 0 writes; every rank returns the same (synchronised) metrics
    utils.write_metrics(metrics, output_dir, extra=tested)
    return {**utils.float_metrics(metrics), **tested}


def _test_checkpoint(trainer: pl.Trainer, which: str) -> dict[str, Any]:
    """``tested_checkpoint``: the monitored best checkpoint (after a resume, the best of the whole run), or None:
    the current weights (``which="last"``: the last epoch's; also when none was saved, e.g. fast_dev_run); with
    ``tested_checkpoint_score``, its monitored value."""
    if which not in ("best", "last"):
        raise ValueError(f"test_checkpoint must be 'best' or 'last', got {which!r}")
    none = {"tested_checkpoint": None, "tested_checkpoint_score": None}
    if which == "last":
        log.info("Testing the weights of the last epoch (test_checkpoint: last)")
        return none
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best:
        log.warning("No best checkpoint was saved; testing the current weights")
        return none
    score = getattr(callback, "best_model_score", None)
    score = None if score is None else float(score)
    log.info(f"Testing the best checkpoint {best} ({getattr(callback, 'monitor', None)}={score})")
    return {"tested_checkpoint": best, "tested_checkpoint_score": score}


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    headline = utils.headline(metrics, ["test/top1", "test/mAP", "test/mcAP", "val/top1", cfg.get("optimized_metric")])
    files = {**utils.run_files(cfg), "tested checkpoint": metrics.get("tested_checkpoint")}
    utils.report_run("train", cfg.paths.output_dir, files, headline)
    return utils.metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
