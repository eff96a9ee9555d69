"""One SPA run: ``python -m experiments.spa [experiment=spa_digits] [pruning=taylor] [adapter=splora_r8] [seed=1]``.

A run is one (model, dataset, criterion, learning method, rank, seed) of "Structured Pruning Adapters"
(Hedegaard et al., arXiv 2211.10155). This file only wires: it seeds, instantiates the datamodule, the pretrained
net (``spa_model``), its adapters (``adapter``), the image system, loggers and a trainer factory from the composed
config, runs ``modules.prune_recover.PruneRecover`` (the published prune-recover loop), and writes ``config.yaml``
and ``metrics.json`` into the run directory. The rows, one per density, go to ``spa_results.csv`` as each step
completes (the tidy table ``paper/spa.py`` collects), and ``spa_results_complete.json`` marks the run finished.
Returns ``optimized_metric`` (the final test top-1).

The config is checked before anything is built (``experiments/config_checks.py``: the criterion, adapter and
schedule fail before the fine-tune, not after). A killed run resumes after its last completed step when started
again in its run directory (``hydra.run.dir=<run>``; ``resume``: auto, the default, when the directory holds a
partial run; true: require one; false: never), with the rows an uninterrupted run gives.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from experiments import config_checks, utils
from modules.prune_recover import PruneRecover

log = logging.getLogger(__name__)
# ~40 Trainers per run (a fit and tests per phase): their start-up banners (accelerators, "max_epochs reached")
# would bury the progress bars; the model summary and the bars have loggers of their own
for _name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda", "lightning.pytorch"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def spa(cfg: DictConfig) -> dict[str, float]:
    """The whole prune-recover schedule of ``cfg``; returns the run's summary (``final/*``)."""
    config_checks.check(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    loggers = utils.instantiate_loggers(cfg.get("logger"))

    def make_trainer(**overrides: Any) -> pl.Trainer:
        """A fresh Trainer per phase, with fresh callbacks; ``overrides`` win (``max_epochs``, ``logger``, ...)."""
        kwargs = {"callbacks": utils.instantiate_callbacks(cfg.get("callbacks")), "logger": loggers, **overrides}
        return hydra.utils.instantiate(cfg.trainer, **kwargs)

    log.info(f"Instantiating datamodule <{cfg.spa_data.datamodule._target_}>")
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.spa_data.datamodule)
    datamodule.setup("fit")
    # the order below is the order the run's seed is drawn in: head, then adapters
    build = hydra.utils.instantiate(cfg.spa_model.net)
    net = build(num_classes=datamodule.num_classes)
    if cfg.spa_model.get("pretraining"):
        hydra.utils.instantiate(cfg.spa_model.pretraining)(net, build=build, make_trainer=make_trainer)
    convert = hydra.utils.instantiate(cfg.adapter.convert)
    if convert is not None:
        net = convert(net)
    system = hydra.utils.instantiate(cfg.system)(net=net, num_classes=datamodule.num_classes)
    driver: PruneRecover = hydra.utils.instantiate(cfg.prune_recover)(
        system=system,
        datamodule=datamodule,
        make_trainer=make_trainer,
        scorer=hydra.utils.instantiate(cfg.pruning.scorer),
        loggers=loggers,
        resume=cfg.get("resume", "auto"),
    )

    utils.save_config(cfg, cfg.paths.output_dir)
    utils.log_hyperparameters(cfg, loggers)
    try:
        summary = driver.run()
    finally:
        utils.finish_loggers(loggers)
    utils.write_metrics(summary, cfg.paths.output_dir)
    driver.mark_complete(summary)  # last: a run without the marker is partial (resumable, refused by collect)
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="spa.yaml")
def main(cfg: DictConfig) -> float | None:
    summary = spa(cfg)
    headline = utils.headline(summary, ["final/density", "final/top1_masked", "final/params_exported"])
    files = {"results": cfg.prune_recover.output_file, **utils.run_files(cfg)}
    utils.report_run("spa", cfg.paths.output_dir, files, headline)
    return utils.metric_value(summary, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
