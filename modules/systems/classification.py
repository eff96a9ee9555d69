"""The clip classification system: the evaluation protocols of continual nets on top of ``ClassifierBase``.

Training always runs the net offline on whole clips. Validation and test run the configured protocol:

* ``clip``: ``net(clip)`` gives one prediction per clip. A continual net whose ``forward`` returns several pool
  windows ``(B, K, T_out)`` (the skeleton twins, spec B3/B7) is scored at ``clip_window``: ``"first"`` (index 0,
  as continual-skeletons' ``CoModelBase.forward``, which the published accuracies use), ``"offline"``
  (``net.offline_index``, the window equal to the offline net) or an index; training uses the same window.
* ``frame`` (the continual protocol, for nets with ``forward_steps``/``clean_state``): each clip is a fresh
  stream: ``net.clean_state()``, then ``net.forward_steps(clip)`` steps through its frames, and the mean of the
  last ``num_forward_frames`` outputs' logits is the prediction. The net needs ``net.delay + 1`` frames to emit
  anything, so evaluation clips must be at least that long (``data.eval_clip_length``). With ``frame_curve`` (other
  protocols ignore it) the test also scores every output of the stream on its own: accuracy against the frames seen
  (``test/top1_frames<n>``, ``protocol_results``), from ``net.delay + 1`` on, every ``stride`` frames.
* ``transient`` (test only; validation uses ``frame``): accuracy against the number of real frames seen after
  the initial state fill, for each ``transient_fills`` (``zeros``/``replicate``): one stepped pass per fill
  gives a prediction after every frame from ``net.delay + 1`` on.
* ``extended`` (test only; validation uses ``frame``): accuracy of the last step for each global-pool window
  in ``extended_windows`` (``modules.continual.set_temporal_window``), e.g. 13 → 64 frames.

``required_clip_length`` (``ClassificationSystem.eval_clip_length``) derives the evaluation clip length each
protocol needs from the built net, so that the entry points can size the clips before any work starts.

Metrics follow ``modules.systems.base`` (``stage/name``, fractions). The sweeps log
``test/top1_<fill>_f<frames>``, ``test/top1_frames<n>`` and ``test/top1_window<w>`` (``map`` for multi-label)
and keep a tidy table in ``protocol_results`` that the entry points write as CSV. Every test keeps its per-sample
logits and targets in ``test_predictions`` (in loader order), which the eval entry point saves for stream fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from modules.continual import set_temporal_fill, set_temporal_window

from .base import ClassifierBase, classification_metrics, metric_target, squeeze_logits
from .schedules import open_lengths
from .stepping import ClipStreams

__all__ = ["PROTOCOLS", "ClassificationSystem", "ClipLengthNeed", "required_clip_length"]

PROTOCOLS = ("clip", "frame", "transient", "extended")
STEPPED = ("frame", "transient", "extended")
CLIP_WINDOWS = ("first", "offline")


class ClassificationSystem(ClassifierBase):
    """Trains ``net`` on whole clips with cross-entropy and evaluates it under ``eval_protocol``.

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
        multi_label: bool = False,
        num_forward_frames: int = 1,
        transient_fills: tuple[str, ...] = ("zeros", "replicate"),
        extended_windows: tuple[int, ...] = (),
        clip_window: str | int | None = None,
        frame_curve: bool = False,
        fast_path: bool = True,
        compile_steps: bool = False,
        compile_timeout_s: float = 300.0,
    ) -> None:
        _check_clip_window(net, clip_window)
        if eval_protocol not in PROTOCOLS:
            raise ValueError(f"eval_protocol must be one of {PROTOCOLS}, got {eval_protocol!r}")
        if eval_protocol in STEPPED and not (hasattr(net, "forward_steps") and hasattr(net, "clean_state")):
            raise ValueError(
                f"eval_protocol={eval_protocol!r} needs a continual net (forward_steps, clean_state); "
                f"{type(net).__name__} has none. Use its continual twin (e.g. model=co_...) or eval=clip."
            )
        if eval_protocol == "extended" and not extended_windows:
            raise ValueError("eval_protocol='extended' needs extended_windows, e.g. [13, 16, 32, 64]")
        # Plain Python values: Hydra passes ListConfigs, which checkpoints could not load with weights_only
        # (the base's save_hyperparameters reads these locals).
        transient_fills = tuple(str(f) for f in transient_fills)
        extended_windows = tuple(int(w) for w in extended_windows)
        super().__init__(
            net,
            num_classes,
            optimizer,
            scheduler,
            scheduler_interval=scheduler_interval,
            label_smoothing=label_smoothing,
            multi_label=multi_label,
        )
        # One metric per sweep setting, created here so that DDP syncs them like the others.
        self.sweep_metrics = nn.ModuleDict(
            {key: classification_metrics(num_classes, multi_label)[self.main_metric] for key in self._sweep_keys()}
        )
        self.protocol_results: list[dict[str, Any]] = []
        self.test_predictions: list[tuple[Tensor, Tensor]] = []
        # the stepped protocols' streams: BatchNorm folded (fast_path), the steady state compiled (compile_steps,
        # outside a fit); modules/systems/stepping.py
        self.clip_streams = ClipStreams(fast_path, compile_steps, compile_timeout_s)

    def _sweep_keys(self) -> list[str]:
        """Sweep settings known up front (windows); transient keys ``<fill>_f<frames>`` depend on the clip
        length and are added by the first test batch."""
        if self.hparams.eval_protocol == "extended":
            return [f"window{w}" for w in self.hparams.extended_windows]
        return []

    def eval_clip_length(self, clip_length: int, *, transient_frames: int | None = None) -> ClipLengthNeed:
        """The evaluation clip length this system's protocol needs with its net (``required_clip_length``);
        ``clip_length`` is the training clip."""
        h = self.hparams
        return required_clip_length(
            self.net,
            h.eval_protocol,
            clip_length=clip_length,
            num_forward_frames=h.num_forward_frames,
            windows=h.extended_windows,
            transient_frames=transient_frames,
        )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_multi_label = getattr(datamodule, "multi_label", None)
        if data_multi_label is not None and bool(data_multi_label) != self.hparams.multi_label:
            raise ValueError(
                f"{type(datamodule).__name__} gives {'multi-hot' if data_multi_label else 'class-index'} targets but "
                f"the system has multi_label={self.hparams.multi_label}; set model.multi_label={data_multi_label}"
            )

    # --- predictions -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``; of a multi-window continual net, those of ``clip_window``."""
        out = self.net(x)
        window = self.hparams.clip_window
        if window is not None and out.dim() == 3:
            index = self.net.offline_index if window == "offline" else 0 if window == "first" else int(window)
            out = out[:, :, index]
        return squeeze_logits(out, self.hparams.num_classes, "net(x)")

    @torch.no_grad()
    def step_outputs(self, clip: Tensor) -> Tensor:
        """Logits ``(B, num_classes, n)`` of every output of a fresh stream stepped through ``clip``."""
        self.stepping_net()
        outputs = self.clip_streams.outputs(clip, compile=self._may_compile())
        if outputs is None:
            delay = getattr(self.net, "delay", "?")
            raise ValueError(
                f"{self.hparams.eval_protocol} protocol: the net emitted nothing for a {clip.shape[2]}-frame clip; "
                f"it needs net.delay + 1 = {delay} + 1 frames. Raise eval.clip_length (null derives it)."
            )
        b, c, n = outputs.shape[:3]
        if c != self.hparams.num_classes or outputs[0, 0, 0].numel() != 1:
            raise ValueError(
                f"net.forward_steps(clip) returned shape {tuple(outputs.shape)}; expected (B, "
                f"{self.hparams.num_classes}, T_out) with optional singleton dims after"
            )
        return outputs.reshape(b, c, n)

    @torch.no_grad()
    def predict_frames(self, clip: Tensor) -> Tensor:
        """The frame protocol: mean logits of the last ``num_forward_frames`` outputs of a fresh stream."""
        return self._last_outputs(self.step_outputs(clip), clip)

    def _last_outputs(self, outputs: Tensor, clip: Tensor) -> Tensor:
        n = self.hparams.num_forward_frames
        if outputs.shape[2] < n:
            raise ValueError(
                f"frame protocol: {outputs.shape[2]} outputs for a {clip.shape[2]}-frame clip, fewer than "
                f"num_forward_frames={n}; the clip needs net.delay + {n} frames"
            )
        return outputs[:, :, -n:].mean(dim=2)

    def stepping_net(self) -> nn.Module:
        """The net the stepped protocols step: on the fast path a folded copy of ``net``, made again whenever
        ``net``'s weights changed (``ClipStreams``)."""
        if self.clip_streams.source is not self.net:
            self.clip_streams.reset(self.net)
        return self.clip_streams.net()

    def _may_compile(self) -> bool:
        """Compile the steady-state step only in an evaluation outside a fit (the weights stay fixed)."""
        return self._trainer is not None and self.trainer.state.fn != "fit"

    # --- steps -------------------------------------------------------------------------------------
    def stage_logits(self, clip: Tensor, target: Tensor, stage: str) -> Tensor:
        """Training: the offline forward; validation and test: the protocol's prediction (the test of the
        transient and extended protocols runs their sweep first)."""
        if stage == "test" and self.hparams.eval_protocol in ("transient", "extended"):
            self._sweep(clip, target)
        if stage == "test" and self.hparams.frame_curve and self.hparams.eval_protocol == "frame":
            logits = self._frame_curve(clip, target)
        elif stage != "train" and self.hparams.eval_protocol in STEPPED:
            logits = self.predict_frames(clip)
        else:
            logits = self(clip)
        if stage == "test":  # kept on the host for the eval entry point (stream fusion); loader order
            self.test_predictions.append((logits.detach().cpu(), target.detach().cpu()))
        return logits

    def _frame_curve(self, clip: Tensor, target: Tensor) -> Tensor:
        """One stepped pass: every output scored against the frames seen so far, the frame prediction returned."""
        outputs = self.step_outputs(clip)
        first, stride = int(self.net.delay) + 1, _stride_of(self.net)
        for j in range(outputs.shape[2]):
            self._update_sweep(f"frames{first + j * stride}", outputs[:, :, j], target)
        return self._last_outputs(outputs, clip)

    # --- test-time sweeps ---------------------------------------------------------------------------
    def _sweep(self, clip: Tensor, target: Tensor) -> None:
        net = self.stepping_net()  # the sweeps set the fill or window of the net that steps
        if self.hparams.eval_protocol == "transient":
            fill_before = _fill_of(net)
            # real frames seen at output j: the first output follows frame delay + 1, the next ones every stride
            first, stride = net.delay + 1, _stride_of(net)
            try:
                for fill in self.hparams.transient_fills:
                    set_temporal_fill(net, fill)
                    outputs = self.step_outputs(clip)
                    for j in range(outputs.shape[2]):
                        self._update_sweep(f"{fill}_f{first + j * stride}", outputs[:, :, j], target)
            finally:
                set_temporal_fill(net, fill_before)
            return
        window_before = _window_of(net)
        try:
            for w in self.hparams.extended_windows:
                set_temporal_window(net, w)
                self._update_sweep(f"window{w}", self.step_outputs(clip)[:, :, -1], target)
        finally:
            set_temporal_window(net, window_before)

    def _update_sweep(self, key: str, logits: Tensor, target: Tensor) -> None:
        if key not in self.sweep_metrics:  # transient frame counts are known once clips arrive
            self.sweep_metrics[key] = classification_metrics(self.hparams.num_classes, self.hparams.multi_label)[
                self.main_metric
            ].to(logits.device)
        self.sweep_metrics[key].update(logits, metric_target(target, self.hparams.multi_label))

    def on_test_epoch_start(self) -> None:
        self.protocol_results = []
        self.test_predictions = []
        for metric in self.sweep_metrics.values():
            metric.reset()

    def on_test_epoch_end(self) -> None:
        name = self.main_metric
        for key, metric in self.sweep_metrics.items():
            value = float(metric.compute())
            self.log(f"test/{name}_{key}", value)
            row: dict[str, Any] = {"protocol": self.hparams.eval_protocol, "metric": name, "value": value}
            if key.startswith("window"):
                row["window"] = int(key.removeprefix("window"))
            elif key.startswith("frames"):
                row["frames_seen"] = int(key.removeprefix("frames"))
            else:
                fill, frames = key.rsplit("_f", 1)
                row.update(fill=fill, frames_seen=int(frames))
            self.protocol_results.append(row)

    # --- optimisation ------------------------------------------------------------------------------
    def make_scheduler(self, optimizer: Optimizer) -> Any:
        """The scheduler partial, completed with the fit's ``total_steps`` / ``steps_per_epoch`` where it takes
        them and leaves them open (``schedules``: OneCycleLR, the cyclic schedule of CoST-GCN)."""
        if self.scheduler is None:
            return None
        lengths = {}
        wanted = open_lengths(self.scheduler)
        if wanted:
            total = int(self.trainer.estimated_stepping_batches)
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 1:
                raise ValueError(f"a per-step schedule follows the fit's length: set trainer.max_epochs, got {epochs}")
            lengths = {"total_steps": total, "steps_per_epoch": max(1, total // epochs)}
        return self.scheduler(optimizer=optimizer, **{k: lengths[k] for k in wanted})


def _check_clip_window(net: nn.Module, clip_window: str | int | None) -> None:
    if isinstance(clip_window, str) and clip_window not in CLIP_WINDOWS:
        raise ValueError(f"clip_window must be None, one of {CLIP_WINDOWS} or an index, got {clip_window!r}")
    if clip_window == "offline" and not hasattr(net, "offline_index"):
        raise ValueError(
            f"clip_window='offline' needs a net that names its offline-equal window (offline_index); "
            f"{type(net).__name__} has none: use clip_window='first', an index, or null"
        )


# --- evaluation clip length ---------------------------------------------------------------------------
class ClipLengthNeed(NamedTuple):
    """The evaluation clip length a protocol needs: ``frames``, how it follows from the net (``reason``), and the
    fewest distinct video frames without which the result means nothing (``min_video_frames``; None: any)."""

    frames: int
    reason: str
    min_video_frames: int | None = None


def required_clip_length(
    net: nn.Module,
    protocol: str,
    *,
    clip_length: int,
    num_forward_frames: int = 1,
    windows: Sequence[int] = (),
    transient_frames: int | None = None,
) -> ClipLengthNeed:
    """The evaluation clip length ``protocol`` needs with ``net``; ``clip_length`` is the training clip.

    * ``clip``: ``clip_length``.
    * ``frame``: a fresh stream emits after ``net.delay + 1`` frames, then every ``stride`` frames, so
      ``net.delay + 1 + (num_forward_frames - 1) * stride`` (``net.delay + num_forward_frames`` at stride 1).
    * ``extended``: the largest ``net.delay + 1`` over the pool ``windows`` (set on the net, then restored), and
      at least the ``frame`` length: its test reports the frame protocol too.
    * ``transient``: ``net.delay + transient_frames``, at least the ``frame`` length. By default the sweep runs
      until the receptive field holds no filled frame (``transient_frames = receptive_field - delay``): from there
      on every fill gives the same output. Its x axis counts real frames, so videos with fewer than
      ``net.delay + 1`` distinct frames make it meaningless (``min_video_frames``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "clip":
        return ClipLengthNeed(clip_length, f"clip protocol: the training clip, data.clip_length = {clip_length}")
    if not hasattr(net, "delay"):
        raise ValueError(f"the {protocol} protocol needs a continual net with a delay; {type(net).__name__} has none")
    if num_forward_frames < 1:
        raise ValueError(f"num_forward_frames must be >= 1, got {num_forward_frames}")
    delay, stride = int(net.delay), _stride_of(net)
    frame = delay + 1 + (num_forward_frames - 1) * stride
    if stride == 1:
        frame_reason = f"net.delay + num_forward_frames = {delay} + {num_forward_frames}"
    else:
        frame_reason = (
            f"net.delay + 1 + (num_forward_frames - 1) x stride = {delay} + 1 + {num_forward_frames - 1} x {stride}"
        )
    if protocol == "frame":
        return ClipLengthNeed(frame, f"frame protocol: {frame_reason}")
    if protocol == "extended":
        return _extended_need(net, windows, frame, frame_reason)
    return _transient_need(net, transient_frames, frame, frame_reason)


def _extended_need(net: nn.Module, windows: Sequence[int], frame: int, frame_reason: str) -> ClipLengthNeed:
    if not windows:
        raise ValueError("the extended protocol needs pool windows, e.g. eval.windows=[13,16,32,64]")
    window_before = _window_of(net)
    try:
        delays = {}
        for w in windows:
            set_temporal_window(net, int(w))
            delays[int(w)] = int(net.delay)
    finally:
        set_temporal_window(net, window_before)
    largest = max(delays, key=lambda w: delays[w])
    needed = delays[largest] + 1
    if frame > needed:
        return ClipLengthNeed(frame, f"extended protocol: the frame protocol it also reports, {frame_reason}")
    return ClipLengthNeed(
        needed,
        f"extended protocol: net.delay + 1 = {delays[largest]} + 1 with the pool window {largest} of {list(delays)}",
    )


def _transient_need(net: nn.Module, transient_frames: int | None, frame: int, frame_reason: str) -> ClipLengthNeed:
    delay, stride = int(net.delay), _stride_of(net)
    if transient_frames is not None:
        if transient_frames < 1:
            raise ValueError(f"transient_frames must be >= 1, got {transient_frames}")
        swept, why = int(transient_frames), "eval.transient_frames"
    elif hasattr(net, "receptive_field"):
        # at least two outputs, so that there is a curve
        swept = max(int(net.receptive_field) - delay, 1 + stride)
        why = f"until the {net.receptive_field}-frame receptive field holds no filled frame"
    else:
        raise ValueError(
            f"{type(net).__name__} has no receptive_field to size the transient sweep; set eval.transient_frames"
        )
    if frame > delay + swept:
        return ClipLengthNeed(
            frame, f"transient protocol: the frame protocol it also reports, {frame_reason}", delay + 1
        )
    reason = f"transient protocol: net.delay + frames swept = {delay} + {swept} ({why})"
    return ClipLengthNeed(delay + swept, reason, delay + 1)


def _fill_of(net: nn.Module) -> str:
    fills = {m.temporal_fill for m in net.modules() if hasattr(m, "temporal_fill") and hasattr(m, "clean_state")}
    return fills.pop() if len(fills) == 1 else "zeros"


def _stride_of(net: nn.Module) -> int:
    """Frames between two outputs of a stream (CoI3D: 2)."""
    return int(getattr(net, "stride", (1,))[0])


def _window_of(net: nn.Module) -> int:
    windows = [m.temporal_window for m in net.modules() if hasattr(m, "temporal_window") and hasattr(m, "clean_state")]
    if not windows or windows[0] is None:
        raise ValueError(f"{type(net).__name__} has no windowed global pool (temporal_window) to extend")
    return windows[0]
