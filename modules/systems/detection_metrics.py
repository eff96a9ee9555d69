"""Frame-level online action detection metrics: per-class average precision (AP) and calibrated AP (cAP), and
their means over the action classes (mAP, mcAP), as OadTR and CoOadTR report them on THUMOS14 and TVSeries.

Every scored frame is one sample of every action class; a class ranks all frames by its score. With ``P``
positives (frames labelled with the class) and ``N`` negatives:

* ``AP = 1/P · sum over positives of precision at that positive's rank``, precision ``TP / (TP + FP)``;
* ``cAP``: the same with the calibrated precision ``w·TP / (w·TP + FP)``, ``w = N / P`` (De Geest et al., "Online
  Action Detection", ECCV 2016), which removes the dependence of precision on the class's share of frames.

Scores are the softmax over the logits; the background class (0) and an ignore class (THUMOS14's Ambiguous, 21)
are never scored, and frames whose target is the ignore class (their target's argmax) are left out of the ranking
and counted. A frame is a positive of a class when its target for the class is non-zero (the labels are 0/1).

Two details follow CoOadTR (``utils.frame_level_map_n_cap`` and ``train.evaluate``), each with an option:

* ``class_slice``: CoOadTR scores ``softmax(logits[:, :21])`` against ``targets[:, :21]``, classes 1..20, on THUMOS14
  (the same as the default here: every class but the ignore class in the softmax) and on TVSeries too, whose 30
  action classes 21..30 are then never scored (``class_slice=21`` reproduces that; the default scores 1..30).
* ``ties``: CoOadTR ranks frames with ``np.argsort(-scores)`` and takes each positive's precision at its own rank, so
  tied scores count in whatever order numpy's (unstable) sort leaves them. ``"original"`` does exactly that (numpy
  on the host); ``"grouped"`` (default) treats tied scores as one threshold (the precision after the whole group),
  as ``sklearn.metrics.average_precision_score`` and torchmetrics do, which is deterministic. Without ties both
  give the same values.

A class without positives has an undefined AP (CoOadTR divides 0 by 0 and its mean becomes NaN): here its AP and
cAP are NaN, it is left out of the means, and ``classes_without_positives`` names it. A class without negatives
has ``w = 0``; its calibrated precision is taken as 1 where no false positive precedes (the limit of
``w·TP / (w·TP + FP)`` with ``FP = 0``), where CoOadTR gives NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_average_precision
from torchmetrics.utilities import dim_zero_cat

__all__ = ["TIES", "DetectionAP", "average_precisions", "score_columns"]

TIES = ("grouped", "original")


def score_columns(
    num_classes: int, *, background_index: int = 0, ignore_index: int | None = None, class_slice: int | None = None
) -> tuple[list[int], list[int]]:
    """``(softmax columns, scored classes)``: the logits the softmax runs over and the classes whose AP counts.

    Default: the softmax over every class but ``ignore_index``; scored: those but the background. With
    ``class_slice=s`` (CoOadTR's ``[:, :21]``): the softmax over classes ``0..s-1``, scored those but the
    background and ``ignore_index``.
    """
    if class_slice is None:
        columns = [c for c in range(num_classes) if c != ignore_index]
    else:
        if not 2 <= class_slice <= num_classes:
            raise ValueError(f"class_slice must be in [2, num_classes={num_classes}] or None, got {class_slice}")
        columns = list(range(class_slice))
    classes = [c for c in columns if c not in (background_index, ignore_index)]
    if not classes:
        raise ValueError(f"no action class is left to score of {num_classes} classes (class_slice={class_slice})")
    return columns, classes


def average_precisions(scores: Tensor, positives: Tensor, ties: str = "grouped") -> tuple[Tensor, Tensor]:
    """Per-class ``(AP, cAP)`` of ``scores (N, C)`` against the boolean ``positives (N, C)``; NaN for a class
    without positives. ``ties``: ``"grouped"`` (tied scores are one threshold) or ``"original"`` (CoOadTR's rank
    order from ``np.argsort(-scores)``)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if scores.shape != positives.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} must both be (N, C)")
    ap = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    cap = ap.clone()
    for c in range(scores.shape[1]):
        s, y = scores[:, c], positives[:, c]
        num_pos = int(y.sum())
        if num_pos == 0:
            continue
        w = (y.numel() - num_pos) / num_pos
        if ties == "original":
            ap[c], cap[c] = _ranked(s, y, w)
        else:
            # torchmetrics' exact (threshold-free) AP; the calibrated one from the same grouped curve
            ap[c] = binary_average_precision(s, y.long()).double()
            cap[c] = _grouped_calibrated(s, y, w)
    return ap, cap


def _grouped_calibrated(scores: Tensor, positives: Tensor, w: float) -> Tensor:
    """cAP with tied scores as one threshold: each group's new positives at the precision after the group."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], positives[order].double()
    tp, fp = y.cumsum(0), (1 - y).cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last frame of each group of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    new_tp = torch.diff(tp, prepend=tp.new_zeros(1))
    return (new_tp * _calibrated(tp, fp, w)).sum() / y.sum()


def _ranked(scores: Tensor, positives: Tensor, w: float) -> tuple[float, float]:
    """CoOadTR's loop, vectorised: each positive's (calibrated) precision at its rank in ``np.argsort(-scores)``."""
    s = scores.detach().cpu().numpy()
    order = np.argsort(-s)  # numpy's default sort, as the original: the order of tied scores is numpy's
    y = positives.detach().cpu().numpy()[order].astype(np.float64)
    tp = np.cumsum(y)
    fp = np.arange(1, len(y) + 1) - tp
    num_pos = y.sum()
    ap = float((y * tp / (tp + fp)).sum() / num_pos)
    cap = float((y * _calibrated(torch.from_numpy(tp), torch.from_numpy(fp), w).numpy()).sum() / num_pos)
    return ap, cap


def _calibrated(tp: Tensor, fp: Tensor, w: float) -> Tensor:
    """``w·TP / (w·TP + FP)``; 1 where there is no false positive yet (also for ``w = 0``)."""
    wtp = w * tp
    return torch.where(fp == 0, torch.ones_like(wtp), wtp / (wtp + fp).clamp_min(torch.finfo(wtp.dtype).tiny))


class DetectionAP(Metric):
    """mAP and mcAP over the action classes, accumulated over all frames of a stage (DDP: the frames of every
    process are gathered, ``dist_reduce_fx="cat"``).

    ``update(logits (N, K), target (N, K))`` keeps the softmax scores of the scored classes, which frames are
    positives, and which frames are not the ignore class; nothing is copied to the host. ``compute()`` returns a
    dict of tensors: ``mAP``, ``mcAP`` (fractions in [0, 1]; NaN if no class has a positive), per-class ``AP`` and
    ``cAP`` (in the order of ``classes``; NaN without positives), ``positives`` (frames per class), ``frames``
    (scored) and ``ignored_frames``. See the module docstring for
    ``background_index``, ``ignore_index``, ``class_slice`` and ``ties``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        background_index: int = 0,
        ignore_index: int | None = None,
        class_slice: int | None = None,
        ties: str = "grouped",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if ignore_index is not None and not 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must be a class index below {num_classes} or None, got {ignore_index}")
        self.num_classes = num_classes
        self.background_index = background_index
        self.ignore_index = ignore_index
        self.class_slice = class_slice
        self.ties = ties
        self.columns, self.classes = score_columns(
            num_classes, background_index=background_index, ignore_index=ignore_index, class_slice=class_slice
        )
        # index tensors that follow the metric's device, so that update copies nothing from the host
        scored = [self.columns.index(c) for c in self.classes]
        self.register_buffer("_columns", torch.tensor(self.columns), persistent=False)
        self.register_buffer("_scored", torch.tensor(scored), persistent=False)
        self.register_buffer("_classes", torch.tensor(self.classes), persistent=False)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("positives", default=[], dist_reduce_fx="cat")
        self.add_state("keep", default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, target: Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes or target.shape != logits.shape:
            raise ValueError(
                f"DetectionAP.update expects logits and targets (N, {self.num_classes}), got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        probs = torch.softmax(logits.index_select(1, self._columns).float(), dim=1)
        self.scores.append(probs.index_select(1, self._scored))
        self.positives.append(target.index_select(1, self._classes) > 0)
        if self.ignore_index is None:
            self.keep.append(torch.ones(target.shape[0], dtype=torch.bool, device=target.device))
        else:
            self.keep.append(target.argmax(dim=1) != self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        if not self.scores:
            raise RuntimeError("DetectionAP.compute() before any update: the stage scored no frame")
        keep = dim_zero_cat(self.keep)
        scores, positives = dim_zero_cat(self.scores)[keep], dim_zero_cat(self.positives)[keep]
        ap, cap = average_precisions(scores, positives, self.ties)
        with_positives = ~torch.isnan(ap)  # classes without positives have no AP: left out of the means
        nan = ap.new_tensor(float("nan"))
        return {
            "mAP": ap[with_positives].mean() if with_positives.any() else nan,
            "mcAP": cap[with_positives].mean() if with_positives.any() else nan,
            "AP": ap,
            "cAP": cap,
            "positives": positives.sum(0),
            "frames": keep.sum(),
            "ignored_frames": (~keep).sum(),
        }
