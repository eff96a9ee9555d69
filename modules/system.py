"""A generic clip classification system: loss, top-k metrics, optimiser, and the evaluation protocols.

Training always runs the net offline on whole clips. Validation and test run the configured protocol:

* ``clip``: ``net(clip)`` gives one prediction per clip.
* ``frame`` (the continual protocol, for nets with ``forward_steps``/``clean_state``): each clip is a fresh
  stream: ``net.clean_state()``, then ``net.forward_steps(clip)`` steps through its frames, and the last output
  (the window ending at the newest complete step) is the prediction. The net needs ``net.delay + 1`` frames
  to emit anything, so evaluation clips must be at least that long (``data.eval_clip_length``).

Metrics are named ``stage/name``: ``train/loss``, ``val/top1``, ``val/top5`` (when there are at least five
classes), ``test/top1``, ... under either protocol; the run's config records which protocol produced them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["PROTOCOLS", "ClassificationSystem"]

PROTOCOLS = ("clip", "frame")


class ClassificationSystem(pl.LightningModule):
    """Trains ``net`` with cross-entropy and evaluates it under ``eval_protocol``.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``) completed with the parameters and
    the optimiser; ``scheduler_interval`` is ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        eval_protocol: str = "clip",
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if eval_protocol not in PROTOCOLS:
            raise ValueError(f"eval_protocol must be one of {PROTOCOLS}, got {eval_protocol!r}")
        if eval_protocol == "frame" and not (hasattr(net, "forward_steps") and hasattr(net, "clean_state")):
            raise ValueError(
                f"eval_protocol='frame' needs a continual net (forward_steps, clean_state); {type(net).__name__} "
                "has none. Use its continual twin (e.g. model=co_...) or eval=clip."
            )
        # The net is saved in the state_dict and the partials are not serialisable hyper-parameters.
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        topk = {"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
        if num_classes >= 5:
            topk["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        collection = MetricCollection(topk)
        # One set per stage, so that the stages never mix their running sums (ModuleDict keys cannot be
        # "train": nn.Module.train exists).
        self.train_metrics = collection.clone(prefix="train/")
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()

    # --- predictions -------------------------------------------------------------------------------
    def forward(self, clip: Tensor) -> Tensor:
        """Offline logits ``(B, num_classes)``."""
        return _squeeze_logits(self.net(clip), self.hparams.num_classes, "net(clip)")

    @torch.no_grad()
    def predict_frames(self, clip: Tensor) -> Tensor:
        """Logits of the last output when stepping a fresh stream through ``clip`` (the frame protocol)."""
        self.net.clean_state()
        outputs = self.net.forward_steps(clip)
        self.net.clean_state()  # the state belongs to this batch's streams only
        if outputs is None:
            delay = getattr(self.net, "delay", "?")
            raise ValueError(
                f"frame protocol: the net emitted nothing for a {clip.shape[2]}-frame clip; it needs "
                f"net.delay + 1 = {delay} + 1 frames. Raise data.eval_clip_length."
            )
        last = outputs[:, :, -1]
        return _squeeze_logits(last, self.hparams.num_classes, "net.forward_steps(clip)[:, :, -1]")

    # --- steps -------------------------------------------------------------------------------------
    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        clip, target = batch
        frame = stage != "train" and self.hparams.eval_protocol == "frame"
        logits = self.predict_frames(clip) if frame else self(clip)
        loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        loss_metric, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        loss_metric(loss, weight=target.shape[0])
        metrics(logits, target)
        # Epoch-level only: logging a metric object per step too would rename it to `stage/name_step|_epoch`.
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    # --- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            # `name` gives the LearningRateMonitor a stage/name key instead of "lr-<Optimizer>"
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "name": "train/lr"},
        }


def _squeeze_logits(out: Tensor, num_classes: int, what: str) -> Tensor:
    """``(B, num_classes, 1, ..., 1)`` → ``(B, num_classes)``; anything else is an error naming the shape."""
    if out.dim() < 2 or out.shape[1] != num_classes or any(s != 1 for s in out.shape[2:]):
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)}; expected (B, {num_classes}) with optional singleton "
            "dims after. A continual net whose pool window is shorter than the clip gives several outputs: "
            "match the window to data.clip_length or use eval=frame."
        )
    return out.reshape(out.shape[0], num_classes)
