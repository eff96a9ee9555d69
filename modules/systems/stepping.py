"""Stepping evaluation clips as fresh streams, on the fast path by default.

The stepped protocols (frame, transient, extended) treat each clip as a new stream. ``ClipStreams`` steps them
through a copy of the net with eval BatchNorm folded into the convs (``modules.continual.fold_batchnorm``; the
trained net and its ``state_dict`` stay as they are) and, when compiling, through ``modules.continual.fast_step``:
the first ``delay + 1`` steps of every stream run eagerly (the warm-up), the steady-state step as one compiled
program shared by all streams of the same batch shape (a smaller last batch is padded with zero rows, which are
independent streams, and dropped). Outputs equal the plain eager ``net.forward_steps(clip)`` up to rounding
(tests/test_system.py). The copy is made again whenever the net's weights changed (an optimiser step or a load
bumps each tensor's version counter); compile for evaluation outside a fit, since the compiled programs hold the
weights as constants and a new copy compiles again.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from modules.continual import fast_step, fold_batchnorm

__all__ = ["ClipStreams"]

#: compile only for clips with at least this many steady-state steps per stream: the frame protocol's clips
#: (``delay + 1`` frames) have one, and a compilation (a minute for X3D-S on 2 CPU cores) would not pay off
MIN_COMPILED_STEPS = 8


class ClipStreams:
    """Steps clips ``(B, C, T, ...)`` as fresh streams of ``net`` (see the module docstring); ``fast_path=False``
    steps ``net`` itself, eagerly, as ``net.forward_steps`` does."""

    def __init__(
        self, fast_path: bool = True, compile: bool = False, compile_timeout_s: float = 300.0, backend: str = "inductor"
    ) -> None:
        self.fast_path, self.compile, self.compile_timeout_s, self.backend = (
            fast_path,
            compile,
            compile_timeout_s,
            backend,
        )
        self.source: nn.Module | None = None
        self._net: nn.Module | None = None
        self._weights: tuple[Any, ...] = ()
        self._steppers: dict[tuple[Any, ...], Any] = {}

    def reset(self, net: nn.Module) -> None:
        """Step ``net`` from now on (a new folded copy at the next clip; no compiled program kept)."""
        self.source, self._net, self._steppers = net, None, {}

    def net(self) -> nn.Module:
        """The net that steps: the folded copy on the fast path (made again if the source's weights changed),
        else the source net. Sweeps that change the temporal fill or pool window set them here."""
        if self.source is None:
            raise RuntimeError("ClipStreams.reset(net) first")
        if not self.fast_path:
            return self.source
        weights = (_weights_version(self.source), _temporal_config(self.source))
        if self._net is None or weights != self._weights:
            self._net, self._steppers = fold_batchnorm(copy.deepcopy(self.source).eval(), inplace=True), {}
            self._weights = weights
        return self._net

    @torch.no_grad()
    def outputs(self, clip: Tensor, compile: bool | None = None) -> Tensor | None:
        """Every output of a fresh stream per clip row, stacked on dim 2; None if the clip is shorter than the
        warm-up. ``compile=False`` forbids the compiled steady state the constructor's ``compile`` allows."""
        net = self.net()
        if not self.fast_path:
            net.clean_state()
            out = net.forward_steps(clip)
            net.clean_state()  # the state belongs to this batch's streams only
            return out
        compile = self.compile and (compile is None or compile)  # an argument can forbid, never force, compiling
        stepper = self._stepper(net, clip, compile and clip.shape[2] - net.delay - 1 >= MIN_COMPILED_STEPS)
        rows = clip.shape[0]
        width = stepper.static_in.shape[0] if stepper.compiled else rows
        if rows < width:  # pad with independent zero streams to the compiled batch size
            clip = torch.cat([clip, clip.new_zeros(width - rows, *clip.shape[1:])])
        stepper.clean_state()
        outs = [o for t in range(clip.shape[2]) if (o := stepper(clip[:, :, t])) is not None]
        stepper.clean_state()
        return torch.stack(outs, dim=2)[:rows] if outs else None

    def _stepper(self, net: nn.Module, clip: Tensor, compile: bool) -> Any:
        """One stepper per temporal configuration (fill, pool windows) and step shape: a sweep that changes them
        gets its own compiled program; a smaller batch reuses the program of the larger one."""
        config = _temporal_config(net)
        for (cfg, shape), stepper in self._steppers.items():
            same = cfg == config and shape[1:] == tuple(clip[:, :, 0].shape[1:]) and shape[0] >= clip.shape[0]
            if same and (stepper.compiled or not compile):
                return stepper
        example = clip[:, :, 0].clone()
        stepper = fast_step(net, example, compile, self.compile_timeout_s, self.backend)
        self._steppers[(config, tuple(example.shape))] = stepper
        return stepper


def _weights_version(net: nn.Module) -> tuple[tuple[int, int], ...]:
    """Identity and version counter of every parameter and buffer: any in-place update or replacement shows."""
    return tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))


def _temporal_config(net: nn.Module) -> tuple[tuple[Any, Any], ...]:
    """The temporal fill and pool window of every continual module (what the transient and extended sweeps set)."""
    return tuple(
        (getattr(m, "temporal_fill", None), getattr(m, "temporal_window", None))
        for m in net.modules()
        if hasattr(m, "clean_state")
    )
