"""The online action detection system of the Continual Transformers study (OadTR and CoOadTR on THUMOS14 and
TVSeries features; Hedegaard et al., ICLR 2023, arXiv 2201.06268, and the CoOadTR code).

Training runs the net offline on windows of ``sequence_len`` steps (``(features (B, E, n), target (B, K),
decoder_target (B, K, Q))``) with a soft-target cross-entropy on the logits of the newest step,
``-(target · log_softmax(logits)).sum(1).mean()`` (CoOadTR's ``SetCriterion.loss_labels``; the targets are one- or
multi-hot and, as there, not normalised: a frame with two actions adds two terms unless ``normalize_targets``).
A net with ``forward_with_decoder`` (OadTR with its decoder; not one whose ``has_decoder`` is False) adds
``decoder_loss_weight`` (0.5, OadTR's ``classification_pred_loss_coef``) times the same loss over its ``Q``
future-step predictions. Rows whose target is the ignore class (THUMOS14's Ambiguous) are left out of both means,
as OadTR does for its decoder targets (OadTR also leaves the Ambiguous logit out of the softmax; CoOadTR, whose
windows never end on Ambiguous, keeps all 22).

Validation and test score frames (``modules.systems.detection_metrics``) under ``eval_mode``:

* ``window``: the batches of training, scored at the newest step: ``net(clip)``; a continual net's clip forward
  over exactly ``n`` steps gives ``(B, K, 1)``. This is CoOadTR's per-epoch evaluation (``train.evaluate``).
* ``stream``: one whole video per batch, ``(features (1, E, T), targets (1, K, T))``. A continual net starts from a
  clean state and steps through the video (``forward_steps``); an offline net scores every sliding window
  (``stream_chunk`` windows per forward, which bounds the memory). The first ``n - 1`` frames have no complete
  window: with ``warmup="pad"`` (default) the video is preceded by ``n - 1`` zero feature steps so that every frame
  gets a score; with ``warmup="skip"`` they are not scored and counted (``stage/skipped_frames``).

Frames whose target is the ignore class are left out of the metrics and counted (``stage/ignored_frames``).
Metrics: ``train/loss``, ``val/loss`` and ``test/loss`` (window mode), ``val/mAP``, ``val/mcAP``, ``test/mAP``,
``test/mcAP`` (fractions), and the test's per-class AP and cAP in ``protocol_results`` (the entry points write
``protocol_results.csv``). ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``), as in
``ClassifierBase``; the recipe of the study is Adam (lr 1e-4, weight decay 1e-4) and ``StepLR(step_size=1,
gamma=0.1)`` per epoch (``configs/model/oadtr.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, SumMetric

from .detection_metrics import TIES, DetectionAP

__all__ = ["EVAL_MODES", "WARMUPS", "OnlineDetectionSystem", "soft_cross_entropy"]

EVAL_MODES = ("window", "stream")
WARMUPS = ("pad", "skip")


def soft_cross_entropy(
    logits: Tensor, target: Tensor, *, ignore_index: int | None = None, normalize: bool = False
) -> Tensor:
    """``-(target · log_softmax(logits)).sum(1)`` averaged over the rows of ``(N, K)``; rows whose target's argmax
    is ``ignore_index`` are left out (0 if all are). ``normalize`` divides each target row by its sum first."""
    target = target.to(torch.float32)
    if normalize:
        target = target / target.sum(1, keepdim=True).clamp_min(torch.finfo(target.dtype).tiny)
    per_row = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
    if ignore_index is None:
        return per_row.mean()
    keep = (target.argmax(1) != ignore_index).to(per_row.dtype)  # a mask, not an index: no host sync
    return (per_row * keep).sum() / keep.sum().clamp_min(1)


class OnlineDetectionSystem(pl.LightningModule):
    """Trains ``net`` on windows and scores frames under ``eval_mode`` (module docstring).

    ``num_classes`` K and ``sequence_len`` n are the data's; ``ignore_index`` (THUMOS14: 21) is taken from the
    datamodule when left None. ``class_slice`` and ``ties`` choose the metric's details
    (``modules.systems.detection_metrics``); ``background_index`` is never scored.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        sequence_len: int = 64,
        eval_mode: str = "window",
        ignore_index: int | None = None,
        background_index: int = 0,
        class_slice: int | None = None,
        ties: str = "grouped",
        decoder_loss_weight: float = 0.5,
        normalize_targets: bool = False,
        warmup: str = "pad",
        stream_chunk: int = 128,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        _check_choice("eval_mode", eval_mode, EVAL_MODES)
        _check_choice("warmup", warmup, WARMUPS)
        _check_choice("ties", ties, TIES)
        _check_choice("scheduler_interval", scheduler_interval, ("epoch", "step"))
        if stream_chunk < 1 or sequence_len < 1:
            raise ValueError(f"stream_chunk and sequence_len must be >= 1, got {stream_chunk} and {sequence_len}")
        if _is_continual(net) and int(net.delay) + 1 != sequence_len:
            raise ValueError(
                f"{type(net).__name__} emits after net.delay + 1 = {int(net.delay) + 1} steps but sequence_len is "
                f"{sequence_len}: build the net with sequence_len={sequence_len} (model.net.sequence_len)"
            )
        # the net is saved in the state_dict and the partials are not hyper-parameters; the entry points log the
        # whole resolved config instead
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ignore_index = ignore_index
        self._build_metrics()
        # nan_strategy="disable": the default NaN check would wait for the device at every step (a NaN loss still
        # shows as a NaN mean)
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(3))
        self.val_skipped, self.test_skipped = SumMetric(nan_strategy="disable"), SumMetric(nan_strategy="disable")
        self.protocol_results: list[dict[str, Any]] = []

    def _build_metrics(self) -> None:
        h = self.hparams
        kwargs = {"background_index": h.background_index, "ignore_index": self.ignore_index}
        kwargs.update(class_slice=h.class_slice, ties=h.ties)
        self.val_ap = DetectionAP(h.num_classes, **kwargs)
        self.test_ap = DetectionAP(h.num_classes, **kwargs)

    @property
    def continual(self) -> bool:
        """Whether the net steps (``forward_steps``, ``clean_state``): streams are then stepped, not windowed."""
        return _is_continual(self.net)

    def setup(self, stage: str) -> None:
        """Check the datamodule against the system: classes, evaluation mode; take its ``ignore_index``."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        name = type(datamodule).__name__
        classes = getattr(datamodule, "num_classes", self.hparams.num_classes)
        if classes != self.hparams.num_classes:
            raise ValueError(
                f"{name} has {classes} classes, the system {self.hparams.num_classes}: set data.num_classes"
            )
        mode = getattr(datamodule, "eval_mode", self.hparams.eval_mode)
        if mode != self.hparams.eval_mode:
            raise ValueError(
                f"{name} gives {mode!r} evaluation batches, the system expects {self.hparams.eval_mode!r}: choose "
                "both with eval=window|stream (data.eval_mode and model.eval_mode follow eval.protocol)"
            )
        if hasattr(datamodule, "ignore_index") and datamodule.ignore_index != self.ignore_index:
            if self.ignore_index is not None:
                raise ValueError(
                    f"{name} ignores class {datamodule.ignore_index}, the system {self.ignore_index}: "
                    "set model.ignore_index to the data's (or null to take it)"
                )
            self.ignore_index = datamodule.ignore_index
            self.hparams["ignore_index"] = self.ignore_index  # recorded in checkpoints
            self._build_metrics()
            self.val_ap.to(self.device)
            self.test_ap.to(self.device)

    # --- predictions -------------------------------------------------------------------------------
    def forward(self, clip: Tensor) -> Tensor:
        """Logits ``(B, K)`` of the newest step of windows ``(B, E, n)``."""
        return _newest(self.net(clip), self.hparams.num_classes, "net(clip)")

    @torch.inference_mode()
    def stream_logits(self, features: Tensor) -> Tensor:
        """Logits ``(B, K, T')`` of whole videos ``(B, E, T)``: ``T' = T`` with ``warmup="pad"``, else
        ``max(T - n + 1, 0)`` (the frames from the first complete window on)."""
        n = self.hparams.sequence_len
        if self.hparams.warmup == "pad":
            features = F.pad(features, (n - 1, 0))  # n - 1 zero feature steps before the first frame
        b, _, t = features.shape
        if t < n:
            return features.new_zeros(b, self.hparams.num_classes, 0)
        if self.continual:
            self.net.clean_state()
            try:
                out = self.net.forward_steps(features)
            finally:
                self.net.clean_state()  # the state belongs to this video only
            return _stream_shape(out, b, self.hparams.num_classes, t - n + 1)
        windows = features.unfold(2, n, 1)  # (B, E, W, n), a view
        chunk = self.hparams.stream_chunk
        logits = [
            self(windows[row, :, start : start + chunk].transpose(0, 1).contiguous())
            for row in range(b)
            for start in range(0, windows.shape[2], chunk)
        ]
        return torch.cat(logits).reshape(b, windows.shape[2], -1).transpose(1, 2)

    # --- steps -------------------------------------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_cross_entropy(
            logits, target, ignore_index=self.ignore_index, normalize=self.hparams.normalize_targets
        )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        clip, target, decoder_target = _window_batch(batch, "train")
        weight = self.hparams.decoder_loss_weight
        if weight and _has_decoder(self.net):
            out, decoded = self.net.forward_with_decoder(clip)
            loss = self.loss(_newest(out, self.hparams.num_classes, "net.forward_with_decoder(clip)[0]"), target)
            loss = loss + weight * self.loss(_rows(decoded), _rows(decoder_target))
        else:
            loss = self.loss(self(clip), target)
        self.train_loss(loss, weight=clip.shape[0])
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def _evaluation_step(self, batch: tuple[Tensor, ...], stage: str) -> None:
        metric: DetectionAP = getattr(self, f"{stage}_ap")
        if self.hparams.eval_mode == "window":
            clip, target, _ = _window_batch(batch, stage)
            logits = self(clip)
            loss_metric = getattr(self, f"{stage}_loss")
            loss_metric(self.loss(logits, target), weight=clip.shape[0])
            self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)
            metric.update(logits, target)
            return
        features, targets = _stream_batch(batch, stage)
        logits = self.stream_logits(features)
        scored = logits.shape[2]
        targets = targets[:, :, targets.shape[2] - scored :]  # the frames that have a score
        getattr(self, f"{stage}_skipped").update(features.shape[0] * (features.shape[2] - scored))
        k = self.hparams.num_classes
        metric.update(logits.transpose(1, 2).reshape(-1, k), targets.transpose(1, 2).reshape(-1, k))

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_start(self) -> None:
        self.protocol_results = []

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def _log_scores(self, stage: str) -> None:
        metric: DetectionAP = getattr(self, f"{stage}_ap")
        if not metric.update_called:
            return
        result = metric.compute()  # gathered over processes: the same on every rank
        logged = {"mAP": result["mAP"], "mcAP": result["mcAP"], "ignored_frames": result["ignored_frames"]}
        if self.hparams.eval_mode == "stream":
            logged["skipped_frames"] = getattr(self, f"{stage}_skipped").compute()
        for name, value in logged.items():
            self.log(f"{stage}/{name}", float(value))
        if stage == "test":
            self.protocol_results = self._class_rows(metric.classes, result)
        metric.reset()
        getattr(self, f"{stage}_skipped").reset()

    def _class_rows(self, classes: list[int], result: dict[str, Tensor]) -> list[dict[str, Any]]:
        """The tidy per-class table of a test: one row per class and metric (AP, cAP), then the means."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        # the class names, when the datamodule has them (OnlineDetectionDataModule.classes, after setup)
        names = getattr(datamodule, "class_names", None) or getattr(datamodule, "classes", None)
        if names is not None and len(names) != self.hparams.num_classes:
            names = None
        base = {"protocol": self.hparams.eval_mode}
        rows = []
        for i, c in enumerate(classes):
            for metric in ("AP", "cAP"):
                row = {**base, "class": c, "metric": metric, "value": float(result[metric][i])}
                row.update(positives=int(result["positives"][i]), **({"name": names[c]} if names else {}))
                rows.append(row)
        rows += [{**base, "metric": m, "value": float(result[m])} for m in ("mAP", "mcAP")]
        return rows

    # --- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.scheduler(optimizer=optimizer), "interval": self.hparams.scheduler_interval}
        # `name` gives the LearningRateMonitor a stage/name key instead of "lr-<Optimizer>"
        return {"optimizer": optimizer, "lr_scheduler": {**scheduler, "name": "train/lr"}}


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")


def _has_decoder(net: nn.Module) -> bool:
    """A net with OadTR's decoder: ``forward_with_decoder``, unless it says ``has_decoder = False`` (OadTR-b)."""
    return hasattr(net, "forward_with_decoder") and bool(getattr(net, "has_decoder", True))


def _is_continual(net: nn.Module) -> bool:
    return hasattr(net, "forward_steps") and hasattr(net, "clean_state")


def _newest(out: Tensor, num_classes: int, what: str) -> Tensor:
    """``(B, K)`` or a continual net's one output ``(B, K, 1)`` -> ``(B, K)``; anything else names its shape."""
    if out.dim() == 3 and out.shape[1:] == (num_classes, 1):
        return out[:, :, 0]
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)}; expected (B, {num_classes}) or (B, {num_classes}, 1). A "
            "continual net gives one output per complete window: feed windows of exactly sequence_len steps."
        )
    return out


def _rows(x: Tensor) -> Tensor:
    """``(B, K, Q)`` -> ``(B·Q, K)``: one row per predicted step."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def _stream_shape(out: Tensor | None, batch: int, num_classes: int, expected: int) -> Tensor:
    if out is None or out.shape != (batch, num_classes, expected):
        shape = None if out is None else tuple(out.shape)
        raise ValueError(
            f"net.forward_steps returned {shape} for a stream with {expected} complete windows; expected "
            f"({batch}, {num_classes}, {expected}): the net's delay must be sequence_len - 1"
        )
    return out


def _window_batch(batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor, Tensor]:
    if len(batch) != 3:
        raise ValueError(
            f"{stage}: window batches are (features (B, E, n), target (B, K), decoder_target (B, K, Q)); got "
            f"{len(batch)} tensors. Evaluation batches follow eval.protocol: a stream datamodule needs eval=stream."
        )
    return batch[0], batch[1], batch[2]


def _stream_batch(batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor]:
    if len(batch) != 2 or batch[0].dim() != 3 or batch[1].dim() != 3:
        shapes = [tuple(b.shape) for b in batch]
        raise ValueError(
            f"{stage}: stream batches are whole videos (features (B, E, T), targets (B, K, T)); got {shapes}. "
            "Evaluation batches follow eval.protocol: a window datamodule needs eval=window."
        )
    return batch[0], batch[1]
