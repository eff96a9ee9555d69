"""Train a model: ``python -m experiments.train experiment=<name> [overrides]``.

Seeds, instantiates data, model, callbacks, loggers and trainer from the composed config, fits (resuming from
``ckpt_path=`` if given), tests the best checkpoint (with ``test_checkpoint: last``, the last epoch's weights), and
writes ``config.yaml`` (resolved) and ``metrics.json`` into the run directory. Returns ``optimized_metric`` for
sweepers.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from experiments import inputs, utils

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as configured; returns every logged metric (``stage/name``) as floats."""
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
    try:
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(trainer.callback_metrics)
        if cfg.get("test"):
            which = cfg.get("test_checkpoint", "best")
            trainer.test(model, datamodule=datamodule, ckpt_path=_test_checkpoint(trainer, which))
            metrics.update(trainer.callback_metrics)
            utils.write_protocol_results(getattr(model, "protocol_results", []), output_dir, loggers)
    finally:
        utils.finish_loggers(loggers)
    # rank 0 writes; every rank returns the same (synchronised) metrics
    utils.write_metrics(metrics, output_dir)
    return utils.float_metrics(metrics)


def _test_checkpoint(trainer: pl.Trainer, which: str) -> str | None:
    """The monitored best checkpoint, or None: the current weights (``which="last"``: the last epoch's; also when
    none was saved, e.g. fast_dev_run)."""
    if which not in ("best", "last"):
        raise ValueError(f"test_checkpoint must be 'best' or 'last', got {which!r}")
    if which == "last":
        log.info("Testing the weights of the last epoch (test_checkpoint: last)")
        return None
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best:
        log.warning("No best checkpoint was saved; testing the current weights")
        return None
    log.info(f"Testing the best checkpoint {best}")
    return best


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    headline = utils.headline(metrics, ["test/top1", "test/mAP", "test/mcAP", "val/top1", cfg.get("optimized_metric")])
    utils.report_run("train", cfg.paths.output_dir, utils.run_files(cfg), headline)
    return utils.metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
