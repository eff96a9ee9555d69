"""The spatio-temporal block of every skeleton net, offline and continual (continual-skeletons ``models/base.py``).

``SpatioTemporalBlock``: ``relu(tcn(gcn(x)) + residual(x))``. The TCN is a (9, 1) convolution with temporal
padding 4 (the originals) or 0 (the * variants) and temporal stride 1 or 2, then BN. The residual is none
(layer 1), the identity, or a (1, 1) convolution + BN with the TCN's stride where width or rate change. Without
padding the TCN shortens the clip by 4 frames per side, and the residual is centre-cropped by the same amount
(``residual_shrink``), so that each output adds the middle frame of its window.

``CoSpatioTemporalBlock`` is its continual twin (Hedegaard, Heidari & Iosifidis, "Continual Spatio-Temporal
Graph Convolutional Networks", Pattern Recognition 2023): the GCN runs per step, the TCN is a ``co.Conv2d``, and
the residual is delayed (and, without padding, its first frames skipped) so that it meets the TCN output of the
same window centre. Same modules, same ``state_dict`` keys (``gcn.*``, ``tcn.{t_conv,bn}.*``,
``residual.{t_conv,bn}.*``); the aligning ``Skip``/``Delay`` has no weights and stays out of the module tree.

``Layers`` / ``CoLayers`` construct the pieces of the offline net and of its twin, so that one builder serves
both and their structure and key names cannot drift apart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn

from modules import continual as co

from .gcn import init_weights

__all__ = ["KERNEL", "CoLayers", "CoSpatioTemporalBlock", "Layers", "SpatioTemporalBlock"]

KERNEL = 9  # temporal kernel of every TCN
_HALF = (KERNEL - 1) // 2


def _centre_shrink(padding: int) -> int:
    if not 0 <= padding <= _HALF:
        raise ValueError(f"temporal padding must be in 0..{_HALF} for a kernel of {KERNEL}, got {padding}")
    return _HALF - padding


class SpatioTemporalBlock(nn.Module):
    """``relu(tcn(gcn(x)) + residual(x[..., s:T-s, :]))`` with ``s = residual_shrink`` (module docstring).

    ``residual``: ``None`` (no residual), ``"identity"``, or a module (the strided / widening projection).
    """

    def __init__(self, gcn: nn.Module, tcn: nn.Module, residual: nn.Module | str | None, residual_shrink: int) -> None:
        super().__init__()
        if isinstance(residual, str) and residual != "identity":
            raise ValueError(f"residual must be None, 'identity' or a module, got {residual!r}")
        self.gcn = gcn
        self.tcn = tcn
        if isinstance(residual, nn.Module):
            self.residual = residual
        self.residual_kind = "none" if residual is None else "identity" if residual == "identity" else "projection"
        self.residual_shrink = residual_shrink
        self.relu = nn.ReLU()

    def _shortcut(self, x: Tensor) -> Tensor | None:
        if self.residual_kind == "none":
            return None
        s = self.residual_shrink
        x = x[:, :, s : x.shape[2] - s] if s else x
        return x if self.residual_kind == "identity" else self.residual(x)

    def forward(self, x: Tensor) -> Tensor:
        z = self.tcn(self.gcn(x))
        r = self._shortcut(x)
        return self.relu(z if r is None else z + r)

    def extra_repr(self) -> str:
        return f"residual={self.residual_kind}, residual_shrink={self.residual_shrink}"


class CoSpatioTemporalBlock(co.ContainerModule, SpatioTemporalBlock):
    """Continual ``SpatioTemporalBlock`` (module docstring): emits at the TCN's steps (delay ``8 - padding``,
    its stride), the residual delayed to the centre of each TCN window."""

    def __init__(self, gcn: nn.Module, tcn: nn.Module, residual: nn.Module | str | None, residual_shrink: int,
                 temporal_fill: str = "zeros") -> None:  # fmt: skip
        residual_module = residual if isinstance(residual, nn.Module) else None
        if residual_module is not None:
            residual_module = co.continual(residual_module, temporal_fill=temporal_fill)
        super().__init__(co.local(gcn), co.continual(tcn, temporal_fill=temporal_fill),
                         residual_module if residual_module is not None else residual, residual_shrink)  # fmt: skip
        self.relu = co.local(self.relu)
        self._aligner = [self._make_aligner(temporal_fill)] if self.residual_kind != "none" else []

    def _make_aligner(self, temporal_fill: str) -> nn.Module:
        """``Skip`` + ``Delay`` in the residual branch's own steps (one per ``rate`` input steps): the TCN output
        of window ``[i·s - p, i·s - p + 8]`` meets residual frame ``i·s - p + 4``, ``4`` input steps after it."""
        rate = 1 if self.residual_kind == "identity" else self.residual.stride[0]
        if self.residual_kind == "projection" and self.residual.delay != 0:
            raise ValueError(f"the residual projection must be pointwise in time, it delays by {self.residual.delay}")
        if rate != self.tcn.stride[0] or self.residual_shrink % rate or _HALF % rate:
            raise ValueError(
                f"residual stride {rate} cannot meet a TCN of stride {self.tcn.stride[0]} and residual shrink "
                f"{self.residual_shrink}: give the projection the TCN's stride, which must divide {_HALF}"
            )
        skip = self.residual_shrink // rate
        parts = [co.Skip(skip)] if skip else []
        parts.append(co.Delay(_HALF // rate, temporal_fill, shrink=skip))
        return co.Sequential(*parts)

    # --- temporal properties (those of the GCN → TCN path; the residual is aligned to it) ---------------
    @property
    def delay(self) -> int:
        return self.tcn.delay

    @property
    def receptive_field(self) -> int:
        return self.tcn.receptive_field

    @property
    def padding(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.tcn.padding[0],)

    @property
    def stride(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.tcn.stride[0],)

    def _stateful(self) -> list[nn.Module]:
        projection = [self.residual] if self.residual_kind == "projection" else []
        return [self.tcn, *projection, *self._aligner]

    # --- stepping ------------------------------------------------------------------------------------
    def _residual_step(self, step: Tensor) -> Tensor | None:
        if self.residual_kind == "projection":
            step = self.residual.forward_step(step)
            if step is None:
                return None
        return self._aligner[0].forward_step(step)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            # The residual path advances on every step, whether or not the TCN emits.
            r = self._residual_step(step) if self.residual_kind != "none" else None
            z = self.tcn.forward_step(self.gcn.forward_step(step))
            if z is None:
                return None
            return self.relu.forward_step(z if r is None else z + r)

        return self._snapshot_call(run, update_state)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            r = None
            if self.residual_kind != "none":
                x = self.residual.forward_steps(clip, pad_end=pad_end) if self.residual_kind == "projection" else clip
                r = None if x is None else self._aligner[0].forward_steps(x, pad_end=pad_end)
            z = self.tcn.forward_steps(self.gcn.forward_steps(clip), pad_end=pad_end)
            if z is None:
                return None
            return self.relu.forward_steps(z if r is None else z + r)

        return self._snapshot_call(run, update_state)


def _tcn(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> OrderedDict[str, nn.Module]:
    """``t_conv`` ((kernel, 1), bias) + ``bn``, both initialised as the original (kaiming, γ = 1)."""
    conv = nn.Conv2d(c_in, c_out, (kernel, 1), stride=(stride, 1), padding=(padding, 0))
    bn = nn.BatchNorm2d(c_out)
    init_weights(conv)
    init_weights(bn)
    return OrderedDict(t_conv=conv, bn=bn)


class Layers:
    """Constructors of the offline nets; ``CoLayers`` swaps in the continual ones."""

    continual = False

    def __init__(self, temporal_fill: str = "zeros") -> None:
        self.temporal_fill = co.base.check_fill(temporal_fill)

    def seq(self, modules: OrderedDict[str, nn.Module]) -> nn.Module:
        return nn.Sequential(modules)

    def block(
        self,
        gcn: Callable[[int, int], nn.Module],
        c_in: int,
        c_out: int,
        *,
        stride: int = 1,
        padding: int = _HALF,
        residual: bool = True,
    ) -> nn.Module:
        """A block ``c_in → c_out`` with the GCN ``gcn(c_in, c_out)``, the TCN's ``stride`` and temporal
        ``padding``; a projection residual where the width or the rate changes (continual-skeletons
        ``SpatioTemporalBlock``)."""
        shrink = _centre_shrink(padding)
        tcn = self.seq(_tcn(c_out, c_out, KERNEL, stride, padding))
        if not residual:
            res: nn.Module | str | None = None
        elif c_in == c_out and stride == 1:
            res = "identity"
        else:
            res = self.seq(_tcn(c_in, c_out, 1, stride, 0))
        return self._block(gcn(c_in, c_out), tcn, res, shrink)

    def _block(self, gcn: nn.Module, tcn: nn.Module, res: nn.Module | str | None, shrink: int) -> nn.Module:
        return SpatioTemporalBlock(gcn, tcn, res, shrink)


class CoLayers(Layers):
    continual = True

    def seq(self, modules: OrderedDict[str, nn.Module]) -> nn.Module:
        return co.Sequential(
            OrderedDict((k, co.continual(m, temporal_fill=self.temporal_fill)) for k, m in modules.items())
        )

    def _block(self, gcn: nn.Module, tcn: nn.Module, res: nn.Module | str | None, shrink: int) -> nn.Module:
        return CoSpatioTemporalBlock(gcn, tcn, res, shrink, temporal_fill=self.temporal_fill)
