"""Exact resume from a checkpoint: the random states travel in every checkpoint, ``last.ckpt`` is always the latest
epoch, and a run resumed into a new directory keeps the original run's best checkpoint.

``experiments.train`` with ``ckpt_path=<run>/checkpoints/last.ckpt`` then continues as if never interrupted: on CPU
with ``trainer.deterministic=true`` its per-epoch and test metrics equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

__all__ = ["RNG_KEY", "ModelCheckpoint", "RNGState"]

log = logging.getLogger(__name__)

#: Where ``RNGState`` keeps the random states in a checkpoint.
RNG_KEY = "rng_states"


class RNGState(Callback):
    """Saves the random states in every checkpoint and restores them when fitting resumes from one.

    Saved: torch's CPU generator, every CUDA device's, numpy's and python ``random``'s global states, and every
    ``torch.Generator`` the datamodule holds (a DataLoader's or sampler's own generator, as
    ``datamodules.images`` passes one). The training order of a shuffling DataLoader, its workers' base seed
    (drawn when each epoch's iterator is created) and dropout all come from these. Samplers that draw from
    ``(seed, epoch)`` (``DistributedSampler``, ``datamodules.online_detection.OffsetSampler``) need nothing more:
    Lightning restores the epoch and calls ``set_epoch``. Not covered: random states inside persistent DataLoader
    workers, which live in other processes (exact resume needs ``num_workers=0`` or non-persistent workers for
    datasets that draw random numbers).

    A checkpoint is written after an epoch's validation; the next thing that draws random numbers is the next
    epoch's train iterator. Restoring while Lightning loads the checkpoint gives the resumed run that same state
    there: nothing in between draws (the model's initialisation happened before, and Lightning isolates the
    sanity check's random draws).
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(),
            "python": random.getstate(),
            "generators": {name: g.get_state() for name, g in _generators(trainer.datamodule).items()},
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # testing a checkpoint draws nothing that the states would reproduce
        states = checkpoint.get(RNG_KEY)
        if states is None:
            log.warning(
                "The checkpoint holds no random states (saved without experiments.resume.RNGState): the resumed "
                "run will not repeat the interrupted one's data order exactly"
            )
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            if len(states["cuda"]) != torch.cuda.device_count():
                log.warning(f"The checkpoint has {len(states['cuda'])} CUDA RNG states for "
                            f"{torch.cuda.device_count()} devices; CUDA random states not restored")  # fmt: skip
            else:
                torch.cuda.set_rng_state_all(states["cuda"])
        np.random.set_state(_numpy_tuple(states["numpy"]))
        random.setstate(_python_tuple(states["python"]))
        held = _generators(trainer.datamodule)
        for name, state in states["generators"].items():
            if name not in held:
                kind = type(trainer.datamodule).__name__
                raise KeyError(f"The checkpoint holds the random state of datamodule.{name}, which {kind} does not "
                               "have; resume with the data config of the interrupted run")  # fmt: skip
            held[name].set_state(state)


def _generators(datamodule: Any) -> dict[str, torch.Generator]:
    """The datamodule's own ``torch.Generator`` attributes, by name."""
    attributes = getattr(datamodule, "__dict__", {})
    return {name: value for name, value in sorted(attributes.items()) if isinstance(value, torch.Generator)}


def _numpy_state() -> dict[str, Any]:
    # plain types: checkpoints load with torch.load(weights_only=True), which refuses numpy arrays
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}  # fmt: skip


def _numpy_tuple(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


def _python_tuple(state: Any) -> tuple:
    version, internal, gauss = state  # checkpoints may give lists back where tuples went in
    return version, tuple(internal), gauss


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with two fixes for resuming.

    1. ``last.ckpt`` is the latest completed epoch. Lightning (2.6) rewrites it after an epoch only when a
       monitored checkpoint was saved, i.e. when the monitor improved, so "resume from last.ckpt" could restart
       from an earlier epoch. Here it is written after every epoch (and at every ``every_n_train_steps`` point,
       where Lightning already writes it).
    2. A run resumed into a new directory keeps the best checkpoint (and score) of the run it resumes. Lightning
       reloads only ``best_model_path`` when ``dirpath`` changed, so the resumed part's first epoch became the
       best, and the test stage tested the best of the resumed part. The original run's files are never deleted:
       Lightning removes only checkpoints inside this callback's ``dirpath``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.save_last == "link":
            raise ValueError(
                "model_checkpoint.save_last='link' links last.ckpt to the best checkpoint, not the latest epoch; "
                "use save_last=true"
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        if due:
            self._save_last_unless_saved(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # also covers epochs without validation (check_val_every_n_epoch > 1)
        due = not self._should_skip_saving_checkpoint(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if due:
            self._save_last_unless_saved(trainer)

    def _save_last_unless_saved(self, trainer: pl.Trainer) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        # another run's directory: its best checkpoint and score stay the ones to beat (and to test)
        self.best_model_path = state_dict["best_model_path"]
        self.best_model_score = state_dict["best_model_score"]
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        log.info(
            f"Resuming into {self.dirpath}: the best checkpoint so far is {self.best_model_path} "
            f"({self.monitor}={_score(self.best_model_score)}), in the resumed run's directory"
        )


def _score(value: Any) -> float | None:
    return None if value is None else float(value)
