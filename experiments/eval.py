"""Evaluate: ``python -m experiments.eval experiment=<name> [ckpt_path=<file.ckpt>] [model.net.weights=<official>]``.

Loads the checkpoint's weights into the configured model, tests it under the configured protocol, and writes
``config.yaml``, ``metrics.json`` and the per-sample test logits (``test_logits.npy``, ``test_labels.npy``: the
input of ``experiments.streams``) into the run directory. Returns ``optimized_metric`` (``test/top1``).
"""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from experiments import config_checks, data_report, inputs, streams, utils

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path``; returns the test metrics as floats. The run directory is this run's alone."""
    with utils.claim_run_dir(cfg.paths.output_dir):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    config_checks.check(cfg)  # wrong types and impossible values name their key before anything is built
    config_checks.check_ckpt_path(cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    model: pl.LightningModule = utils.instantiate_system(cfg.model)
    # after the model: the evaluation clip length follows from its net and the protocol
    datamodule: pl.LightningDataModule = inputs.instantiate_datamodule(cfg, model)
    loggers = utils.instantiate_loggers(cfg.get("logger"))
    # the bar of training runs (configs/callbacks/progress_bar.yaml) unless callbacks are configured
    callbacks = utils.instantiate_callbacks(cfg.get("callbacks")) or [utils.progress_bar()]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    utils.save_config(cfg, cfg.paths.output_dir)
    utils.log_hyperparameters(cfg, loggers)
    what = cfg.ckpt_path or "the model as built (its configured weights)"
    log.info(f"Testing {what} under the {cfg.eval.protocol} protocol")
    try:
        with utils.ignore_checkpoint_callback_states():
            trainer.test(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        utils.write_protocol_results(getattr(model, "protocol_results", []), cfg.paths.output_dir, loggers)
        streams.write_test_predictions(model, datamodule, cfg.paths.output_dir)  # for stream fusion
    finally:
        utils.finish_loggers(loggers)
    metrics = data_report.report_data(datamodule, dict(trainer.callback_metrics))
    utils.write_metrics(metrics, cfg.paths.output_dir)
    return utils.float_metrics(metrics)


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
def main(cfg: DictConfig) -> float | None:
    metrics = evaluate(cfg)
    headline = utils.headline(metrics, ["test/top1", "test/mAP", "test/mcAP", cfg.get("optimized_metric")])
    utils.report_run("eval", cfg.paths.output_dir, utils.run_files(cfg), headline)
    return utils.metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
