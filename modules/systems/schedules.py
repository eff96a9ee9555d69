"""Per-step learning-rate schedules whose lengths follow the fit (continual-skeletons' ride optimisers, spec B4).
Both peak at the optimiser's learning rate, so a config sets the rate once (the optimiser's ``lr``). ``adamw``
takes SGD's keywords, so that a config swaps the optimiser by its ``_target_`` alone.

A scheduler partial (Hydra ``_partial_: true``) that takes ``total_steps`` (``torch.optim.lr_scheduler.OneCycleLR``)
or ``steps_per_epoch`` (``cyclic_lr``) and leaves them open gets them from the Trainer
(``ClassificationSystem.make_scheduler``): the batches per epoch are known only once the data is attached.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

__all__ = ["LENGTH_KEYS", "adamw", "cyclic_lr", "one_cycle", "open_lengths"]

#: the schedule lengths a partial may leave to the fit (OneCycleLR's alternative to total_steps included)
LENGTH_KEYS = ("total_steps", "steps_per_epoch", "epochs")


def adamw(params: Any, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> AdamW:
    """AdamW whose first-moment decay is SGD's ``momentum`` (a config's SGD keys carry over unchanged)."""
    return AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


def _peaks(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def one_cycle(optimizer: Optimizer, *, total_steps: int, **kwargs: Any) -> OneCycleLR:
    """ride's ``SgdOneCycleOptimizer``: ``OneCycleLR`` over the fit's steps, peaking at the optimiser's lr
    (``kwargs``: OneCycleLR's shape, e.g. ``pct_start``)."""
    return OneCycleLR(optimizer, max_lr=_peaks(optimizer), total_steps=total_steps, **kwargs)


def cyclic_lr(
    optimizer: Optimizer,
    *,
    steps_per_epoch: int,
    base_fraction: float = 0.25,
    up_fraction: float = 0.25,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> CyclicLR:
    """CoST-GCN's ``SgdCyclicLrOptimizer``: one cycle per epoch from ``base_fraction·lr`` up to the optimiser's
    ``lr`` in the first ``up_fraction`` of the epoch's steps and back down in the rest, the momentum cycling
    inversely (between torch's defaults, 0.8 and 0.9)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    up = max(1, round(steps_per_epoch * up_fraction))
    peaks = _peaks(optimizer)
    return CyclicLR(
        optimizer,
        base_lr=[lr * base_fraction for lr in peaks],
        max_lr=peaks,
        step_size_up=up,
        step_size_down=max(1, steps_per_epoch - up),
        cycle_momentum=True,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )


def open_lengths(scheduler: Callable[..., Any] | None) -> list[str]:
    """The ``total_steps`` / ``steps_per_epoch`` that ``scheduler`` takes and its partial leaves open; none when
    it sets any of them (OneCycleLR takes total_steps or epochs with steps_per_epoch: the user's choice wins)."""
    if not isinstance(scheduler, functools.partial):
        return []
    try:
        parameters = inspect.signature(scheduler.func).parameters
    except (TypeError, ValueError):
        return []
    if any(scheduler.keywords.get(k) is not None for k in LENGTH_KEYS):
        return []
    return [k for k in ("total_steps", "steps_per_epoch") if k in parameters]
