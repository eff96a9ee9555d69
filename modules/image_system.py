"""The LightningModule of the SPA study: image classification with the published optimisation recipe.

Each ``Trainer.fit`` is one phase (the initial fine-tune or one recovery) and gets a fresh optimiser and schedule,
as the published prune-recover loop did (spec ``spa.md`` §3.3): ``SGD(lr, momentum 0.9, weight decay)`` over the
trainable parameters and ``StepLR(step_size=max(1, epochs // 4), gamma=0.2)`` stepped per epoch. Set
``phase_epochs`` before each fit. Frozen parameters (an adapter's base weights) get no gradient and no decay.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = ["ImageClassifier"]


class ImageClassifier(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_step_div: int = 4,
        lr_gamma: float = 0.2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.phase_epochs = 1
        # the arXiv-era recovery phases used no weight decay; experiments switch it per phase
        self.phase_weight_decay = weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        acc = (logits.argmax(1) == y).float().mean() * 100
        self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=self.phase_weight_decay)
        step = max(1, self.phase_epochs // hp.lr_step_div)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=hp.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, net: nn.Module | None = None) -> dict[str, float]:
        """Top-1 accuracy (%) and mean cross-entropy of ``net`` (default: this system's) over ``loader``, in eval
        mode on this module's device; the training mode is restored afterwards."""
        net = self.net if net is None else net
        was_training = net.training
        net.eval()
        correct, total, loss = 0, 0, 0.0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = net(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        net.train(was_training)
        if total == 0:
            raise ValueError("evaluation loader yielded no samples")
        return {"acc": 100.0 * correct / total, "loss": loss / total}
