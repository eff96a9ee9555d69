"""What every classification system shares: the loss, the metrics and their names, the optimiser and scheduler.

Metrics are named ``stage/name`` and accuracies are fractions in [0, 1]: ``train/loss``, ``train/top1``,
``val/top1``, ``val/top5`` (when there are more than five classes), ``test/top1``, ``test/loss`` ..., and
``stage/map`` for multi-label data (``multi_label=True``: binary cross-entropy, mean average precision over
classes). The learning rate is logged as ``train/lr`` by a ``LearningRateMonitor``.

``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``): ``optimizer(params=...)`` gets the
parameters that train (an adapter's frozen base weights get no gradient and no decay) and ``make_scheduler``
completes the scheduler (``scheduler(optimizer=...)`` here; subclasses may pass more).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

__all__ = ["ClassifierBase", "classification_metrics"]


class ClassifierBase(pl.LightningModule):
    """Cross-entropy training of ``net`` with ``stage/name`` metrics; subclasses choose how a stage predicts
    (``stage_logits``) and may complete the scheduler differently (``make_scheduler``)."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        multi_label: bool = False,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        # Collects the subclass's arguments too. The net is saved in the state_dict and the partials are not
        # serialisable hyper-parameters; logger=False: the entry points log the whole resolved config instead.
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        collection = MetricCollection(classification_metrics(num_classes, multi_label))
        # One set per stage, so that the stages never mix their running sums (ModuleDict keys cannot be
        # "train": nn.Module.train exists).
        self.train_metrics = collection.clone(prefix="train/")
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()

    @property
    def main_metric(self) -> str:
        """The metric that ranks models: ``top1``, or ``map`` for multi-label data."""
        return "map" if self.hparams.multi_label else "top1"

    # --- predictions -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return squeeze_logits(self.net(x), self.hparams.num_classes, "net(x)")

    def stage_logits(self, x: Tensor, target: Tensor, stage: str) -> Tensor:
        """The logits a stage scores; the offline forward here."""
        return self(x)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.hparams.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)

    # --- steps -------------------------------------------------------------------------------------
    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, target = batch
        logits = self.stage_logits(x, target, stage)
        loss = self.loss(logits, target)
        loss_metric, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        loss_metric(loss, weight=target.shape[0])
        metrics(logits, metric_target(target, self.hparams.multi_label))
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
    def make_scheduler(self, optimizer: Optimizer) -> Any:
        """The learning-rate scheduler of one fit, or None."""
        return None if self.scheduler is None else self.scheduler(optimizer=optimizer)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(params=[p for p in self.parameters() if p.requires_grad])
        scheduler = self.make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            # `name` gives the LearningRateMonitor a stage/name key instead of "lr-<Optimizer>"
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "name": "train/lr"},
        }


def classification_metrics(num_classes: int, multi_label: bool) -> dict[str, Any]:
    """The metrics of every stage, as fractions: ``top1`` (and ``top5`` with more than five classes: with five or
    fewer it is always 1), or ``map``."""
    if multi_label:
        return {"map": MultilabelAveragePrecision(num_classes, average="macro")}
    metrics = {"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return metrics


def metric_target(target: Tensor, multi_label: bool) -> Tensor:
    """Multi-hot float targets (the loss wants floats) as the ints the average-precision metric expects."""
    return target.long() if multi_label else target


def squeeze_logits(out: Tensor, num_classes: int, what: str) -> Tensor:
    """``(B, num_classes, 1, ..., 1)`` → ``(B, num_classes)``; anything else is an error naming the shape."""
    if out.dim() < 2 or out.shape[1] != num_classes or any(s != 1 for s in out.shape[2:]):
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)}; expected (B, {num_classes}) with optional singleton "
            "dims after. A continual net whose pool window is shorter than the clip gives several outputs: "
            "match the window to data.clip_length or use eval=frame."
        )
    return out.reshape(out.shape[0], num_classes)
