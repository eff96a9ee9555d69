"""The image classification system of the SPA study, and the published per-phase learning-rate schedule.

The prune-recover loop (``modules.prune_recover``) fits each phase (the initial fine-tune, every recovery) with a
fresh ``Trainer``, so each phase gets a fresh optimiser and schedule, as the published loop did (spec ``spa.md``
§3.3). The published recipe is ``SGD(lr, momentum 0.9, weight decay 5e-4)`` over the parameters that train and
``StepLR(step_size=max(1, epochs // 4), gamma=0.2)`` stepped per epoch, where ``epochs`` is the phase's length:
``phase_step_lr`` is that schedule, and ``configs/spa.yaml`` holds both as the default partials.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import StepLR

from .base import ClassifierBase

__all__ = ["ImageClassificationSystem", "phase_step_lr"]


def phase_step_lr(optimizer: Optimizer, *, epochs: int, steps: int = 4, gamma: float = 0.2) -> StepLR:
    """``StepLR(step_size=max(1, epochs // steps), gamma)``: the rate falls by ``gamma`` ``steps`` times per phase
    of ``epochs`` epochs (the published recovery of 20 epochs: ×0.2 every 5)."""
    if epochs < 1 or steps < 1:
        raise ValueError(f"phase_step_lr needs epochs >= 1 and steps >= 1, got epochs={epochs}, steps={steps}")
    return StepLR(optimizer, step_size=max(1, epochs // steps), gamma=gamma)


class ImageClassificationSystem(ClassifierBase):
    """Image classification with ``ClassifierBase``'s loss and metrics (``train/top1``, ``test/top1``, ...,
    fractions).

    ``scheduler`` is completed with ``optimizer=`` and ``epochs=``, this fit's ``trainer.max_epochs``, so that a
    schedule can follow each phase's length (``phase_step_lr``).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
    ) -> None:
        if scheduler is not None and not _takes_epochs(scheduler):
            raise ValueError(
                f"scheduler {scheduler!r} takes no `epochs` argument; the image system completes it with the phase's "
                "epochs. Use modules.systems.image.phase_step_lr or a function of (optimizer, *, epochs)."
            )
        super().__init__(
            net,
            num_classes,
            optimizer,
            scheduler,
            scheduler_interval=scheduler_interval,
            label_smoothing=label_smoothing,
        )

    def make_scheduler(self, optimizer: Optimizer) -> Any:
        if self.scheduler is None:
            return None
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ValueError(
                f"the image system's scheduler follows the fit's length: give the Trainer max_epochs >= 1, got {epochs}"
            )
        return self.scheduler(optimizer=optimizer, epochs=epochs)


def _takes_epochs(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return True
    return "epochs" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
