"""One SPA run: ``python -m experiments.spa [experiment=spa_digits] [pruning=taylor] [adapter=splora_r8] [seed=1]``.

A run is one (model, dataset, criterion, learning method, rank, seed) of "Structured Pruning Adapters"
(Hedegaard et al., arXiv 2211.10155), following the published loop (spec ``spa.md`` §2.1):

1. build the pretrained net, convert its convs to SPLoRA/SPPaRA adapters (or keep them for fine-pruning);
2. fine-tune ``epochs_initial`` epochs → the density-1.0 row;
3. for each of the schedule's steps: one ranking pass over the training split (criterion scores, no optimiser
   step), prune the globally lowest-scored 5 % of the filters, test (``acc_pre_recovery``), recover
   ``epochs_recovery`` epochs, test (``acc``) → one row; after the last step one more recovery, whose accuracy is
   the last row's (as published).

Every row carries ΔParams and FLOPs in the published (legacy) and the exact convention and the parameters of the
physically pruned, fused export. Rows go to ``spa_results.csv`` (the tidy table ``paper/spa.py`` collects) and to
the loggers; ``metrics.json`` holds the run's summary, with the masked and exported models' measured speed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import nn
from tqdm.auto import tqdm

from experiments import utils
from modules.adapters import fuse, splora, sppara
from modules.image_system import ImageClassifier
from modules.nets import build
from modules.pruning import (
    ChannelGraph,
    ChannelMasks,
    ChannelScorer,
    PruneSchedule,
    apply_masks,
    count_parameters,
    export_pruned,
    select,
)
from modules.pruning.counting import count_flops, delta_params

log = logging.getLogger(__name__)
# ~20 Trainers per run: their start-up banners (accelerators, tips) would bury the progress bar
for _name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda", "lightning.pytorch"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# --- the net ------------------------------------------------------------------------------------------------
def _digits_pretrained(cfg: DictConfig) -> Path:
    """The net pretrained on the digits' pretrain classes, trained once and cached under ``paths.data_dir``."""
    m, d = cfg.spa_model, cfg.spa_data
    pre = m.digits_pretraining
    classes = "".join(str(c) for c in d.datamodule.pretrain_classes)
    path = Path(cfg.paths.data_dir) / "spa_pretrained" / f"{m.name}_digits{classes}_s{d.image_size}_e{pre.epochs}.pt"
    if path.exists():
        return path
    log.info(f"pretraining {m.name} on digits {classes} (cached at {path})")
    dm = hydra.utils.instantiate(d.datamodule, task="pretrain", split_seed=0, seed=0)
    dm.setup("fit")
    torch.manual_seed(0)
    system = ImageClassifier(build(m.name, num_classes=dm.num_classes), lr=pre.lr, weight_decay=5e-4)
    _fit(system, dm, pre.epochs, cfg)
    acc = system.evaluate(dm.test_dataloader())["acc"]
    log.info(f"pretrained {m.name}: test top-1 {acc:.1f} % on digits {classes}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(system.net.state_dict(), tmp)
    tmp.replace(path)  # atomic: parallel sweep jobs never read half a file
    return path


def build_net(cfg: DictConfig, num_classes: int) -> nn.Module:
    """The registry net with its pretrained weights (torchvision's, or the digits pretraining) and a new head."""
    m = cfg.spa_model
    kwargs = dict(m.get("kwargs") or {})
    if m.pretrained == "digits":
        net = build(m.name, num_classes=num_classes, **kwargs)
        state = torch.load(_digits_pretrained(cfg), map_location="cpu", weights_only=True)
        own, head = net.state_dict(), f"{m.get('head', 'fc')}."
        # a new task gets a new head (as published), even where the class counts happen to match
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(head)}
        missing = net.load_state_dict(state, strict=False).missing_keys
        log.info(f"loaded digits-pretrained weights; new: {missing}")
        return net
    return build(m.name, num_classes=num_classes, pretrained=bool(m.pretrained), **kwargs)


def adapt(net: nn.Module, adapter: DictConfig) -> nn.Module:
    """Convert the convs to adapters (the published CNN runs adapt ``nn.Conv2d`` only; head and BN stay dense)."""
    types = (nn.Conv2d,)
    if adapter.method == "splora":
        return splora(net, adapter.rank, adapter.init_range, types=types, inplace=True)
    if adapter.method == "sppara":
        return sppara(net, adapter.init_range, types=types, inplace=True)
    if adapter.method != "finetune":
        raise ValueError(f"adapter.method must be finetune, splora or sppara, got {adapter.method!r}")
    return net


# --- phases -------------------------------------------------------------------------------------------------
def _fit(system: ImageClassifier, dm: pl.LightningDataModule, epochs: int, cfg: DictConfig) -> dict[str, float]:
    """One phase: a fresh Trainer (so a fresh optimiser and StepLR, as published) for ``epochs`` epochs."""
    if epochs <= 0:
        return {}
    system.phase_epochs = epochs
    system.train()  # Lightning keeps the modules' modes: after a ranking or test pass they would stay in eval
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(cfg.progress_phases),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **cfg.trainer,
    )
    trainer.fit(system, train_dataloaders=dm.train_dataloader())
    system.to(_device(cfg))  # Lightning hands the module back on the CPU
    return utils.float_metrics(trainer.callback_metrics)


def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu else "cpu")


def _rank(system: ImageClassifier, dm: pl.LightningDataModule, scorer: ChannelScorer, train_mode: bool) -> None:
    """The criterion pass: one epoch over the training split with training transforms, no optimiser step. In
    train mode (as published) the BatchNorm running statistics move on the way."""
    system.net.train(train_mode)
    for x, y in dm.rank_dataloader():
        scorer.update(x.to(system.device), y.to(system.device))
    system.net.eval()


# --- counting -----------------------------------------------------------------------------------------------
def _counts(net: nn.Module, graph: ChannelGraph, masks: ChannelMasks, cfg: DictConfig) -> dict[str, int]:
    method, size = cfg.adapter.method, int(cfg.spa_data.image_size)
    legacy_probe = (1, 3, int(cfg.spa_data.flops_probe_size), int(cfg.spa_data.flops_probe_size))
    exact_probe = (1, 3, size, size)
    exported = export_pruned(net, graph, masks)
    return {
        "delta_params_legacy": delta_params(net, masks, method=method, convention="legacy", graph=graph),
        "delta_params_exact": delta_params(
            net, masks, method=method, convention="exact", graph=graph, input_size=exact_probe
        ),
        "flops_legacy": count_flops(net, masks, input_size=legacy_probe, convention="legacy"),
        "flops_exact": count_flops(net, masks, input_size=exact_probe, convention="exact", graph=graph),
        "fused_params": count_parameters(fuse(net)),
        "exported_params": count_parameters(exported),
    }


def _row(cfg: DictConfig, step: int, masks: ChannelMasks, **values: Any) -> dict[str, Any]:
    a, p = cfg.adapter, cfg.pruning
    return {
        "arch": cfg.spa_model.name,
        "dataset": cfg.spa_data.name,
        "criterion": p.criterion,
        "method": a.method,
        "rank": int(a.rank) if a.method == "splora" else 0,
        "init_range": a.init_range if a.method != "finetune" else None,
        "seed": cfg.seed,
        "mask_mode": p.mask_mode,
        "coupling": p.coupling,
        "step": step,
        "density": masks.density,
        **values,
    }


def _log_row(loggers: list[Logger], row: dict[str, Any], global_epoch: int) -> None:
    metrics = {
        "prune/step": row["step"],
        "prune/density": row["density"],
        "metrics/acc_post_recovery": row["acc"],
        "metrics/loss": row["loss"],
        **{f"metrics/{k}": row[k] for k in ("delta_params_legacy", "delta_params_exact", "flops_legacy")},
        **{f"metrics/{k}": row[k] for k in ("flops_exact", "fused_params", "exported_params")},
    }
    if row.get("acc_pre_recovery") is not None:
        metrics["metrics/acc_pre_recovery"] = row["acc_pre_recovery"]
    for logger in loggers:
        logger.log_metrics(metrics, step=global_epoch)


@torch.no_grad()
def _ms_per_batch(net: nn.Module, x: torch.Tensor, repeats: int = 10) -> float:
    net.eval()
    for _ in range(2):
        net(x)
    start = time.perf_counter()
    for _ in range(repeats):
        net(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


# --- the run ------------------------------------------------------------------------------------------------
def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """The whole prune-recover schedule; returns the rows written to ``output_file``."""
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    dm = hydra.utils.instantiate(cfg.spa_data.datamodule)
    dm.setup("fit")
    net = adapt(build_net(cfg, dm.num_classes), cfg.adapter)
    d = cfg.spa_data
    system = ImageClassifier(net, lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay).to(_device(cfg))
    loggers = utils.instantiate_loggers(cfg.get("logger"))
    utils.save_config(cfg, cfg.paths.output_dir)
    utils.log_hyperparameters(cfg, loggers)
    p = cfg.pruning
    rows: list[dict[str, Any]] = []
    try:
        _fit(system, dm, d.epochs_initial, cfg)
        global_epoch = int(d.epochs_initial)
        probe = torch.zeros(1, 3, int(d.image_size), int(d.image_size), device=system.device)
        graph = ChannelGraph(net, probe)
        masks = ChannelMasks.from_graph(graph)
        schedule = PruneSchedule.from_masks(masks, p.step_frac, p.total_pr)
        steps = min(schedule.num_steps, int(p.max_steps)) if p.get("max_steps") is not None else schedule.num_steps
        log.info(f"{schedule.total_filters} filters, {schedule.per_step} pruned per step, {steps} steps")
        test = system.evaluate(dm.test_dataloader())
        rows.append(_row(cfg, 0, masks, acc_pre_recovery=None, **test, **_counts(net, graph, masks, cfg)))
        _log_row(loggers, rows[-1], global_epoch)
        recovery_wd = d.weight_decay if d.get("recovery_weight_decay") is None else d.recovery_weight_decay
        system.phase_weight_decay = recovery_wd
        bar = tqdm(
            range(1, steps + 1), desc=f"{p.criterion}/{cfg.adapter.name} prune-recover", disable=not cfg.progress
        )
        for k in bar:
            scorer = ChannelScorer(net, graph, masks, p.criterion)
            # LRP ran on a folded copy in the published code, so the net's BN statistics did not move there
            _rank(system, dm, scorer, bool(p.rank_in_train_mode) and p.criterion != "lrp")
            masks.prune_many(select(scorer.normalised(bool(p.norm)), masks, schedule.per_step, p.coupling, graph=graph))
            apply_masks(net, graph, masks, mode=p.mask_mode, mask_bn=bool(p.mask_bn))
            pre = system.evaluate(dm.test_dataloader())["acc"]
            _fit(system, dm, d.epochs_recovery, cfg)
            global_epoch += int(d.epochs_recovery)
            if k == steps and p.final_recovery:  # the published extra recovery at the last density
                _fit(system, dm, d.epochs_recovery, cfg)
                global_epoch += int(d.epochs_recovery)
            test = system.evaluate(dm.test_dataloader())
            rows.append(_row(cfg, k, masks, acc_pre_recovery=pre, **test, **_counts(net, graph, masks, cfg)))
            _log_row(loggers, rows[-1], global_epoch)
            bar.set_postfix(density=f"{masks.density:.2f}", pre=f"{pre:.1f}", acc=f"{test['acc']:.1f}")
        _write(cfg, rows, loggers, _summary(system, dm, graph, masks, rows))
    finally:
        utils.finish_loggers(loggers)
    return rows


def _summary(
    system: ImageClassifier, dm: pl.LightningDataModule, graph: ChannelGraph, masks: ChannelMasks, rows: list[dict]
) -> dict[str, float]:
    """The final density's accuracy for the masked and the exported model, and both models' speed per batch."""
    exported = export_pruned(system.net, graph, masks).to(system.device)
    x, _ = next(iter(dm.test_dataloader()))
    x = x.to(system.device)
    return {
        "final/density": rows[-1]["density"],
        "final/acc_masked": rows[-1]["acc"],
        "final/acc_exported": system.evaluate(dm.test_dataloader(), net=exported)["acc"],
        "final/params_masked": count_parameters(system.net),
        "final/params_exported": count_parameters(exported),
        "final/ms_per_batch_masked": _ms_per_batch(system.net, x),
        "final/ms_per_batch_exported": _ms_per_batch(exported, x),
        "final/batch_size": len(x),
    }


def _write(cfg: DictConfig, rows: list[dict[str, Any]], loggers: list[Logger], summary: dict[str, float]) -> None:
    frame = pd.DataFrame(rows)
    path = Path(cfg.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="prune/table", dataframe=frame)
        logger.log_metrics(summary)
    utils.write_metrics(summary, cfg.paths.output_dir)
    log.info(f"wrote {path} ({len(rows)} densities); final: {summary}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="spa.yaml")
def main(cfg: DictConfig) -> float:
    rows = run(cfg)
    last = rows[-1]
    headline = {"density": last["density"], "top-1 (%)": last["acc"], "exported params": last["exported_params"]}
    utils.report_run("spa", cfg.paths.output_dir, {"results": cfg.output_file, **utils.run_files(cfg)}, headline)
    return float(rows[-1]["acc"])


if __name__ == "__main__":
    main()
