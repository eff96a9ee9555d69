"""Delay and Skip: align streams whose outputs are emitted at different steps (residuals, parallel branches)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import StatefulModule, check_fill, in_place_ok

__all__ = ["Delay", "Skip"]


class Delay(StatefulModule, nn.Module):
    """Emit each step ``delay`` steps later (``None`` before that).

    ``forward`` is the identity, except that ``shrink`` drops the last ``shrink`` frames, which a stream
    never releases: stepping with ``pad_end=True`` flushes ``delay - shrink`` frames, so it equals ``forward``.
    """

    _state_names = ("_buffer",)

    def __init__(self, delay: int, temporal_fill: str = "zeros", shrink: int = 0) -> None:
        super().__init__()
        if delay < 0 or not 0 <= shrink <= delay:
            raise ValueError(f"Delay needs 0 <= shrink <= delay, got delay={delay}, shrink={shrink}")
        self._delay = delay
        self.shrink = shrink
        self.temporal_fill = check_fill(temporal_fill)
        self._init_state_attrs()

    @property
    def delay(self) -> int:
        return self._delay

    @property
    def receptive_field(self) -> int:
        return self._delay + 1

    def _end_padding(self) -> int:
        return self._delay - self.shrink

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        return {"_buffer": ("s0", "s1", self._delay, ...)}  # the last `delay` steps as they came

    def forward(self, clip: Tensor) -> Tensor:
        return clip[:, :, : clip.shape[2] - self.shrink] if self.shrink else clip

    def _step(self, step: Tensor) -> Tensor | None:
        n = self._delay
        if n == 0:
            return step
        if self._buffer is None:
            shape = (step.shape[0], step.shape[1], n, *step.shape[2:])
            self._buffer = (
                step.unsqueeze(2).expand(shape).clone() if self.temporal_fill == "replicate" else step.new_zeros(shape)
            )
        t = self._tick()
        buf = self._buffer
        out = buf[:, :, 0].clone() if t >= n else None
        if in_place_ok(buf, step):
            if n > 1:
                buf[:, :, :-1] = buf[:, :, 1:].clone()
            buf[:, :, -1] = step
        else:
            self._buffer = torch.cat((buf[:, :, 1:], step.unsqueeze(2)), dim=2)
        return out

    def extra_repr(self) -> str:
        return f"{self._delay}, temporal_fill={self.temporal_fill!r}" + (
            f", shrink={self.shrink}" if self.shrink else ""
        )


class Skip(StatefulModule, nn.Module):
    """Drop the first ``steps`` steps: ``forward`` is ``clip[:, :, steps:]``."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"Skip needs steps >= 0, got {steps}")
        self.steps = steps
        self._init_state_attrs()

    @property
    def delay(self) -> int:
        return self.steps

    def forward(self, clip: Tensor) -> Tensor:
        return clip[:, :, self.steps :]

    def _step(self, step: Tensor) -> Tensor | None:
        return step if self._tick() >= self.steps else None

    def extra_repr(self) -> str:
        return str(self.steps)
