"""The prune-recover loop of "Structured Pruning Adapters" (Hedegaard et al., arXiv 2211.10155), on Lightning.

``PruneRecover`` runs one (net, dataset, criterion, learning method, seed) the published way
(LukasHedegaard/channel-spa-experiments ``src/prune_resnet.py``):

1. fit ``epochs_initial`` epochs → the density-1.0 row;
2. for each step of the schedule: one ranking pass over the training split (criterion scores, no optimiser step),
   prune the globally lowest-scored ``step_frac`` of the filters, test (``acc_pre_recovery``), recover
   ``epochs_recovery`` epochs, test (``acc``) → one row; after the last step one more recovery, whose accuracy is
   the last row's (as published).

Every fit is a fresh ``Trainer`` from ``make_trainer`` (so a fresh optimiser and schedule per phase, as published)
and every test runs Lightning's test loop; the ranking pass is a plain loop (no optimiser). Each row carries
ΔParams and FLOPs in the published (legacy) and the exact convention and the parameters of the physically pruned,
fused export; it is written to ``output_file`` as soon as its step completes and logged as ``prune/*``. Accuracies
are fractions (``acc_unit`` column). ``summary()`` compares the masked and the exported model at the last density.

A killed run keeps what it finished and resumes exactly: after each row, the state the next step starts from (the
net's weights, adapters and BatchNorm statistics, the masks, the rows, the loggers' step and every RNG: torch,
CUDA, numpy, python) goes to ``<output_file stem>_state.pt`` beside the rows, atomically; ``run()`` with
``resume`` continues after the last completed step, and gives the rows an uninterrupted run gives (bit for bit on
the CPU). ``mark_complete()`` writes ``<output_file stem>_complete.json`` once the whole run is done: a results file
without it is a partial run (``paper/spa.py collect`` refuses it).

``load_source_pretrained`` is the transfer setting's first step where no published weights exist (the embedded
digits task): train the net once on a source task and cache the weights.

Lightning-aware, Hydra-free: ``experiments/spa.py`` composes the pieces.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import nn
from torch.optim import Optimizer

from modules.adapters import merge_adapters
from modules.profiling import count_params, time_calls
from modules.pruning import (
    ChannelGraph,
    ChannelMasks,
    ChannelScorer,
    PruneSchedule,
    apply_masks,
    export_pruned,
    select,
)
from modules.pruning.counting import delta_params, masked_flops
from modules.systems.image import ImageClassificationSystem

__all__ = ["ACC_UNIT", "PruneRecover", "ResumeError", "TrainerFactory", "complete_marker", "load_source_pretrained"]

log = logging.getLogger(__name__)

#: A fresh ``pl.Trainer`` per call; keyword arguments override the configured ones (``max_epochs``, ``logger``, ...).
TrainerFactory = Callable[..., pl.Trainer]
#: The unit of the accuracy columns of the rows (``paper/spa.py`` reads files without the column as percent).
ACC_UNIT = "fraction"
TOP1, LOSS = "test/top1", "test/loss"
#: The counts of each row (``PruneRecover.counts``)
COUNTS = ("delta_params_legacy", "delta_params_exact", "flops_legacy", "flops_exact", "fused_params", "exported_params")
MASK_MODES = ("enforced", "legacy")
COUPLINGS = ("none", "group")
CRITERIA = ("weight", "grad", "taylor", "lrp")


class ResumeError(RuntimeError):
    """A run directory whose saved state cannot be resumed as asked (another run's, or a finished one)."""


def complete_marker(output_file: str | Path) -> Path:
    """The file that marks the run of ``output_file`` (its rows) complete."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}_complete.json")


def state_file(output_file: str | Path) -> Path:
    """Where the run of ``output_file`` keeps the state its next step starts from."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}_state.pt")


class PruneRecover:
    """The prune-recover schedule of one run over ``system`` (a LightningModule with a ``net`` and an ``optimizer``
    partial, logging ``test/top1`` and ``test/loss``) and ``datamodule`` (with a ``rank_dataloader``, else its
    training loader ranks).

    ``scorer(net, graph, masks)`` makes the ranking pass's ``ChannelScorer`` (a partial naming the criterion).
    ``input_shape`` ``(C, H, W)`` is one input for the channel graph and the exact counts; ``flops_probe_shape``
    the legacy FLOPs probe (the published 3 x 32 x 32; None: ``input_shape``). ``step_frac``, ``total_pr`` and
    ``max_steps`` (None: the whole schedule) set the schedule; ``norm``, ``coupling``, ``mask_mode``, ``mask_bn``,
    ``rank_in_train_mode`` and ``final_recovery`` the published or corrected behaviour (``configs/pruning``).
    ``recovery_weight_decay`` replaces the optimiser's weight decay in the recovery phases (the arXiv-era code
    used none; None keeps it). ``columns`` open every row (what identifies the run: arch, dataset, criterion,
    method, rank, init_range, seed); ``loggers`` get the rows as ``prune/*`` and the fits' curves, on one step
    axis (batches trained) across the phases.
    """

    def __init__(
        self,
        system: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        make_trainer: TrainerFactory,
        scorer: Callable[[nn.Module, ChannelGraph, ChannelMasks], ChannelScorer],
        *,
        epochs_initial: int,
        epochs_recovery: int,
        input_shape: Sequence[int],
        flops_probe_shape: Sequence[int] | None = None,
        step_frac: float = 0.05,
        total_pr: float = 0.9501,
        max_steps: int | None = None,
        norm: bool = True,
        coupling: str = "none",
        mask_mode: str = "enforced",
        mask_bn: bool = True,
        rank_in_train_mode: bool = True,
        final_recovery: bool = True,
        recovery_weight_decay: float | None = None,
        output_file: str | Path | None = None,
        columns: Mapping[str, Any] | None = None,
        loggers: Sequence[Logger] = (),
        resume: bool | str = "auto",
    ) -> None:
        if not hasattr(system, "net") or not hasattr(system, "optimizer"):
            raise ValueError(
                f"{type(system).__name__} has no `net` or no `optimizer` partial; PruneRecover needs a system of "
                "modules.systems (e.g. ImageClassificationSystem)"
            )
        if len(input_shape) != 3:
            raise ValueError(f"input_shape is one image (C, H, W), got {tuple(input_shape)}")
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None (the whole schedule), got {max_steps}")
        _check_choices(scorer, step_frac, total_pr, coupling, mask_mode, epochs_initial, epochs_recovery)
        if resume not in (True, False, "auto"):
            raise ValueError(
                f"resume must be true, false or 'auto' (resume a partial run if there is one), got {resume!r}"
            )
        if resume is True and output_file is None:
            raise ValueError("resume=true needs output_file: the run's state is kept beside its rows")
        self.system, self.datamodule, self.make_trainer, self.scorer = system, datamodule, make_trainer, scorer
        self.epochs_initial, self.epochs_recovery = int(epochs_initial), int(epochs_recovery)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.flops_probe_shape = tuple(int(s) for s in flops_probe_shape or input_shape)
        self.step_frac, self.total_pr, self.max_steps = step_frac, total_pr, max_steps
        self.norm, self.coupling, self.mask_mode, self.mask_bn = norm, coupling, mask_mode, mask_bn
        self.rank_in_train_mode, self.final_recovery = rank_in_train_mode, final_recovery
        self.recovery_weight_decay = recovery_weight_decay
        self.output_file = None if output_file is None else Path(output_file)
        self.columns = dict(columns or {})
        self.loggers = list(loggers)
        self.resume = resume
        self.rows: list[dict[str, Any]] = []
        #: batches trained so far over every phase: the step the loggers see
        self.log_step = 0
        #: where Lightning put the module (the first trainer decides); the ranking pass and the counts run there
        self.device: torch.device | None = None
        self._fits = 0
        self.graph: ChannelGraph | None = None
        self.masks: ChannelMasks | None = None

    @property
    def net(self) -> nn.Module:
        return self.system.net

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """The whole schedule; returns ``summary()``. The rows are in ``self.rows`` and ``output_file``. With
        ``resume`` (``"auto"``: when ``output_file``'s run left a state) the run continues after its last completed
        step."""
        saved = self._saved_state()
        if saved is None:
            self.fit(self.epochs_initial)
        else:
            self._trainer(logger=False)  # where Lightning puts the module: the first trainer decides
        self._on_device()
        probe = torch.zeros(1, *self.input_shape, device=self.device)
        graph = self.graph = ChannelGraph(self.net, probe)
        masks = self.masks = ChannelMasks.from_graph(graph)
        schedule = PruneSchedule.from_masks(masks, self.step_frac, self.total_pr)
        steps = schedule.num_steps if self.max_steps is None else min(schedule.num_steps, int(self.max_steps))
        log.info(f"{schedule.total_filters} filters, {schedule.per_step} pruned per step, {steps} steps")
        if saved is None:
            self._add_row(0, None, self.test())
            done = 0
        else:
            done = self._restore(saved)
            log.info(f"resumed {self.output_file} after step {done}/{steps} (density {masks.density:.3f})")
        if self.recovery_weight_decay is not None:
            # a later keyword wins in a partial: only the decay changes
            self.system.optimizer = functools.partial(self.system.optimizer, weight_decay=self.recovery_weight_decay)
        for k in range(done + 1, steps + 1):
            scorer = self.scorer(self.net, graph, masks)
            # LRP ran on a folded copy in the published code, so the net's BN statistics did not move there
            self.rank(scorer, train_mode=self.rank_in_train_mode and scorer.criterion != "lrp")
            chosen = select(scorer.normalised(self.norm), masks, schedule.per_step, self.coupling, graph=graph)
            masks.prune_many(chosen)
            apply_masks(self.net, graph, masks, mode=self.mask_mode, mask_bn=self.mask_bn)
            pre = self.test()[TOP1]
            self.fit(self.epochs_recovery)
            if k == steps and self.final_recovery:  # the published extra recovery at the last density
                self.fit(self.epochs_recovery)
            row = self._add_row(k, pre, self.test())
            log.info(
                f"step {k}/{steps}: density {row['density']:.3f}, test top-1 {pre:.4f} after pruning, "
                f"{row['acc']:.4f} after recovery"
            )
        return self.summary()

    # --- phases -------------------------------------------------------------------------------------------------
    def _trainer(self, **overrides: Any) -> pl.Trainer:
        trainer = self.make_trainer(**overrides)
        if self.device is None:
            self.device = trainer.strategy.root_device
        return trainer

    def fit(self, epochs: int) -> None:
        """One phase: a fresh Trainer, so a fresh optimiser and schedule (as published), for ``epochs`` epochs."""
        if epochs <= 0:
            return
        trainer = self._trainer(max_epochs=epochs)
        if self._fits:  # one model summary per run: every phase trains the same parameters
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelSummary)]
        # A fresh Trainer logs from step 0: continue from the last phase, so the run's curves share one x axis.
        # (The counter is the one Lightning's checkpoints restore when a fit resumes.)
        trainer.fit_loop.epoch_loop._batches_that_stepped = self.log_step
        self.system.train()  # Lightning keeps the modules' modes: after a ranking pass the net is in eval
        trainer.fit(self.system, datamodule=self.datamodule)
        self.log_step = trainer.fit_loop.epoch_loop._batches_that_stepped
        self._fits += 1

    def test(self, net: nn.Module | None = None) -> dict[str, float]:
        """Lightning's test loop over the datamodule's test split: ``test/top1`` (a fraction), ``test/loss``, ...
        of the system's net, or of ``net`` in its place (e.g. the pruned export)."""
        # no loggers: the rows log these, named for what they are (prune/*). No inference mode: the enforced masks
        # cache their factors, and one made from an inference tensor could not take part in the next fit's autograd
        trainer = self._trainer(logger=False, inference_mode=False)
        original = self.system.net
        if net is not None:
            self.system.net = net
        try:
            (results,) = trainer.test(self.system, datamodule=self.datamodule, verbose=False)
        finally:
            self.system.net = original
        self._on_device()
        return {k: float(v) for k, v in results.items()}

    def rank(self, scorer: ChannelScorer, *, train_mode: bool) -> None:
        """The criterion pass: one epoch over the training split with training transforms, no optimiser step. In
        train mode (as published) the BatchNorm running statistics move on the way."""
        self._on_device()
        loader_of = getattr(self.datamodule, "rank_dataloader", self.datamodule.train_dataloader)
        self.net.train(train_mode)
        for x, y in loader_of():
            scorer.update(x.to(self.device), y.to(self.device))
        self.net.eval()

    def _on_device(self) -> None:
        # Lightning hands the module back on the CPU after each fit and test
        if self.device is not None:
            self.system.to(self.device)

    # --- rows ---------------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """ΔParams and FLOPs of the masked net in both conventions, and the fused and exported parameter counts."""
        net, graph, masks = self.net, self.graph, self.masks
        exact_probe, legacy_probe = (1, *self.input_shape), (1, *self.flops_probe_shape)
        return {
            "delta_params_legacy": delta_params(net, masks, convention="legacy", graph=graph),
            "delta_params_exact": delta_params(net, masks, convention="exact", graph=graph, input_size=exact_probe),
            "flops_legacy": masked_flops(net, masks, input_size=legacy_probe, convention="legacy"),
            "flops_exact": masked_flops(net, masks, input_size=exact_probe, convention="exact", graph=graph),
            "fused_params": count_params(merge_adapters(net)),
            "exported_params": count_params(export_pruned(net, graph, masks)),
        }

    def _add_row(self, step: int, pre: float | None, test: Mapping[str, float]) -> dict[str, Any]:
        row = {
            **self.columns,
            "mask_mode": self.mask_mode,
            "coupling": self.coupling,
            "step": step,
            "density": self.masks.density,
            "acc_pre_recovery": pre,
            "acc": test[TOP1],
            "loss": test[LOSS],
            **self.counts(),
            "acc_unit": ACC_UNIT,
        }
        self.rows.append(row)
        self._write_rows()
        self._save_state(step)
        metrics = {"prune/step": step, "prune/density": row["density"], "prune/top1": row["acc"]}
        if pre is not None:
            metrics["prune/top1_pre_recovery"] = pre
        metrics["prune/loss"] = row["loss"]
        metrics.update({f"prune/{k}": v for k, v in row.items() if k in COUNTS})
        self._log(metrics)
        return row

    def _write_rows(self) -> None:
        """Rewrite ``output_file`` with every row so far (atomically: a reader never sees half a file)."""
        if self.output_file is None:
            return
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output_file.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.output_file)

    def _log(self, metrics: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.log_metrics(dict(metrics), step=self.log_step)
            logger.save()

    # --- resuming -----------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What makes two runs the same run: a saved state of another is never resumed."""
        return {
            "columns": {k: str(v) for k, v in self.columns.items()},
            "schedule": [self.step_frac, self.total_pr, self.max_steps, self.epochs_initial, self.epochs_recovery],
            "options": [self.norm, self.coupling, self.mask_mode, self.mask_bn, self.rank_in_train_mode,
                        self.final_recovery, self.recovery_weight_decay],
            "input_shape": list(self.input_shape),
        }  # fmt: skip

    def _save_state(self, step: int) -> None:
        """The state the step after ``step`` starts from, beside the rows (atomically)."""
        if self.output_file is None:
            return
        state = {
            "identity": self._identity(),
            "step": step,
            "rows": self.rows,
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "masks": self.masks.state_dict(),
            "log_step": self.log_step,
            "rng": _rng_state(),
        }
        path = state_file(self.output_file)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        tmp.replace(path)

    def _saved_state(self) -> dict[str, Any] | None:
        """The state to resume from, per ``resume``; None to start afresh."""
        if self.output_file is None or self.resume is False:
            return None
        path, marker = state_file(self.output_file), complete_marker(self.output_file)
        if marker.exists():
            raise ResumeError(f"{self.output_file.parent} holds a complete run ({marker}); start a new run in another "
                              "directory (or delete that one)")  # fmt: skip
        if not path.exists():
            if self.resume is True:
                raise ResumeError(f"resume=true but {path} does not exist: no step of a run in "
                                  f"{self.output_file.parent} completed; start it without resume")  # fmt: skip
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["identity"] != self._identity():
            raise ResumeError(
                f"{path} is the state of another run ({state['identity']}), not of this one ({self._identity()}); "
                "resume it with its own config or start in a new directory"
            )
        return state

    def _restore(self, state: Mapping[str, Any]) -> int:
        """Load a saved state into the net, masks, rows, loggers' step and RNGs; returns its last completed step."""
        self.net.load_state_dict(state["net"])
        self.masks.load_state_dict(state["masks"])
        if self.mask_mode == "legacy":
            # the restored weights hold the rows zeroed so far (and whatever recovery regrew): zero nothing again
            self.masks.touched.clear()
        apply_masks(self.net, self.graph, self.masks, mode=self.mask_mode, mask_bn=self.mask_bn)
        self.rows = [dict(row) for row in state["rows"]]
        self._write_rows()  # the rows on disk are the state's (a kill between the two writes left one more)
        self.log_step, self._fits = int(state["log_step"]), max(self._fits, 1)
        self._on_device()
        _set_rng_state(state["rng"])
        return int(state["step"])

    def mark_complete(self, summary: Mapping[str, float] | None = None) -> Path | None:
        """Mark the run complete (``complete_marker``): its rows are final. Call after the run's last output."""
        if self.output_file is None:
            return None
        marker = complete_marker(self.output_file)
        marker.write_text(json.dumps({"rows": len(self.rows), "summary": dict(summary or {})}, indent=2) + "\n")
        return marker

    # --- the end ------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, float]:
        """The last density's accuracy for the masked and the exported model, and both models' speed per batch;
        logged, with the rows as a wandb table where wandb logs."""
        if not self.rows:
            raise RuntimeError("PruneRecover.summary() needs a finished run(); no row was written yet")
        self._on_device()
        exported = export_pruned(self.net, self.graph, self.masks).to(self.device)
        x, _ = next(iter(self.datamodule.test_dataloader()))
        x = x.to(self.device)
        summary = {
            "final/density": self.rows[-1]["density"],
            "final/top1_masked": self.rows[-1]["acc"],
            "final/top1_exported": self.test(net=exported)[TOP1],
            "final/params_masked": count_params(self.net),
            "final/params_exported": count_params(exported),
            "final/ms_per_batch_masked": _ms_per_batch(self.net, x),
            "final/ms_per_batch_exported": _ms_per_batch(exported, x),
            "final/batch_size": len(x),
        }
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                names = list(self.rows[0])
                logger.log_table(key="prune/table", columns=names, data=[[r[n] for n in names] for r in self.rows])
        self._log(summary)
        return summary


def _check_choices(
    scorer: Any,
    step_frac: float,
    total_pr: float,
    coupling: str,
    mask_mode: str,
    epochs_initial: int,
    epochs_recovery: int,
) -> None:
    """The schedule and options, checked before any training (a wrong one would fail only after the fine-tune)."""
    criterion = getattr(scorer, "keywords", {}).get("criterion")
    problems = [
        f"criterion {criterion!r}: use one of {CRITERIA}"
        if criterion is not None and criterion not in CRITERIA
        else "",
        f"coupling {coupling!r}: use one of {COUPLINGS}" if coupling not in COUPLINGS else "",
        f"mask_mode {mask_mode!r}: use one of {MASK_MODES}" if mask_mode not in MASK_MODES else "",
        f"step_frac {step_frac!r}: use a number in (0, 1]" if not _in_unit(step_frac) else "",
        f"total_pr {total_pr!r}: use a number in (0, 1]" if not _in_unit(total_pr) else "",
        f"epochs_initial {epochs_initial!r}: use an integer >= 0" if not _count(epochs_initial) else "",
        f"epochs_recovery {epochs_recovery!r}: use an integer >= 0" if not _count(epochs_recovery) else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("PruneRecover: invalid " + "; ".join(problems))


def _in_unit(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rng_state() -> dict[str, Any]:
    """Every RNG a phase draws from, in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": random.getstate(),
    }  # fmt: skip


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                         "pos": n["pos"]}, "has_gauss": n["has_gauss"], "gauss": n["gauss"]})  # fmt: skip
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@torch.no_grad()
def _ms_per_batch(net: nn.Module, x: torch.Tensor, repeats: int = 10) -> float:
    """Mean milliseconds per forward of the batch ``x`` after two untimed calls."""
    net.eval()
    seconds = time_calls(lambda: net(x), x.device, warmup=2, repeats=repeats, min_time_s=0.0)
    return sum(seconds) / len(seconds) * 1e3


# --- pretraining on a source task -----------------------------------------------------------------------------------
def load_source_pretrained(
    net: nn.Module,
    *,
    build: Callable[..., nn.Module],
    source: pl.LightningDataModule,
    make_trainer: TrainerFactory,
    epochs: int,
    optimizer: Callable[..., Optimizer],
    scheduler: Callable[..., Any] | None,
    cache_dir: str | Path,
    label: str,
    head: str = "fc",
    seed: int = 0,
) -> list[str]:
    """Load into ``net`` the weights of ``build(num_classes=<source's>)`` trained ``epochs`` epochs on ``source``
    (an ``ImageClassificationSystem`` with ``optimizer`` and ``scheduler``), all but the ``head`` (a new task gets a
    new head, as published, even where the class counts match). Returns the keys left as ``net`` had them.

    The weights are trained once and cached in ``cache_dir`` as ``<label>_<digest>.pt``, the digest over the whole
    recipe, so that a changed recipe never reads stale weights; parallel runs write atomically. The training is
    seeded with ``seed`` inside a forked RNG: the run's own seed decides its head, adapters and data order
    whether the weights were cached or not.
    """
    source.setup("fit")
    recipe = _describe((build, type(source), dict(source.hparams), epochs, optimizer, scheduler, head, seed))
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{label}_{digest}.pt"
    if not path.exists():
        log.info(f"pretraining {label} on its source task for {epochs} epochs (cached at {path})")
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            torch.manual_seed(seed)
            classes = source.num_classes
            system = ImageClassificationSystem(build(num_classes=classes), classes, optimizer, scheduler)
            # no loggers (a one-off step outside the run's curves), so no learning-rate monitor either
            trainer = make_trainer(max_epochs=epochs, logger=False, callbacks=[], enable_model_summary=False)
            trainer.fit(system, datamodule=source)
            (results,) = make_trainer(logger=False, callbacks=[]).test(system, datamodule=source, verbose=False)
        log.info(f"pretrained {label}: source test top-1 {results['test/top1']:.4f}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(system.net.state_dict(), tmp)
        tmp.replace(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own, prefix = net.state_dict(), f"{head}."
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(prefix)}
    missing = net.load_state_dict(state, strict=False).missing_keys
    if not state:
        raise ValueError(f"{path} shares no weights with {type(net).__name__}: is `build` the net it was trained as?")
    log.info(f"loaded {label} from {path}; new: {missing}")
    return missing


def _describe(obj: Any) -> str:
    """A text of ``obj`` that is the same in every process (no memory addresses): partials with their arguments,
    functions and classes by their import path."""
    if isinstance(obj, functools.partial):
        args = [*map(_describe, obj.args), *(f"{k}={_describe(v)}" for k, v in sorted(obj.keywords.items()))]
        return f"{_describe(obj.func)}({', '.join(args)})"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(map(_describe, obj)) + ")"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))) + "}"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)
