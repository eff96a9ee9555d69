"""Recycling positional encoding for continual Transformers.

Continual Transformers (Hedegaard et al., arXiv 2201.06268): a stream has no fixed position 0, so the
position of step ``t`` is ``(t + index) % num_embeds``, a cyclic offset that keeps counting across clips and
steps. With ``num_embeds >= 2 n - 1`` for a window of ``n`` steps, the relative position of any two steps in a
window is unambiguous. ``forward`` also moves the offset (by ``forward_update_index_steps`` per call), so that
training sees every offset, which is what makes the encoding usable for an unbounded stream.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import StatefulModule, store

__all__ = ["CyclicPositionalEncoding", "RecyclingPositionalEncoding", "cyclic_positional_encoding"]


def cyclic_positional_encoding(
    num_embeds: int, embed_dim: int, mean_pooling: bool = True, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The fixed ``(num_embeds, embed_dim)`` table of Cyclic Positional Encoding (Ma et al., arXiv 2110.02544).

    Channel pair ``j`` (sin, cos) uses a period ``P_j`` spaced linearly from ``num_embeds ** (1 / (E // 2))`` to
    ``num_embeds``; position ``p`` is sampled at ``x = p * ceil(num_embeds / P_j) * P_j / num_embeds`` of the
    triangle-warped wave ``sin|cos(2 pi / P_j * |x mod 2 P_j - P_j|)``, whose angle returns to a multiple of
    ``2 pi`` every ``P_j``, so the sampled range (a whole number of periods) makes the last position a neighbour
    of the first. Then each position is averaged with its +-2 cyclic neighbours (``mean_pooling``) and the mean
    over positions is removed. The sampling is exact here, where the original code picks points of a 0.01 grid.
    """
    if num_embeds < 1 or embed_dim < 1:
        raise ValueError(f"num_embeds and embed_dim must be positive, got {num_embeds} and {embed_dim}")
    pairs = max(embed_dim // 2, 1)
    periods = torch.linspace(num_embeds ** (1 / pairs), num_embeds, pairs, dtype=torch.float64)
    channel = torch.arange(embed_dim)
    period = periods[(channel // 2).clamp(max=pairs - 1)]  # (E,)
    span = torch.ceil(num_embeds / period) * period  # a whole number of periods per channel
    x = torch.arange(num_embeds, dtype=torch.float64).unsqueeze(1) * span / num_embeds  # (N, E)
    angle = 2 * math.pi / period * (torch.remainder(x, 2 * period) - period).abs()
    table = torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))
    if mean_pooling:
        table = torch.stack([table.roll(-shift, 0) for shift in range(-2, 3)]).mean(0)
    return (table - table.mean(0)).to(dtype)


class CyclicPositionalEncoding(nn.Module):
    """The fixed cyclic table as a module: ``forward(ids)`` looks up rows, like ``nn.Embedding``.

    The table is a persistent buffer named ``pattern`` (``pe.pattern`` inside ``RecyclingPositionalEncoding``),
    so checkpoints that carry it load as they are.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        mean_pooling: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        table = cyclic_positional_encoding(num_embeddings, embedding_dim, mean_pooling, dtype or torch.float32)
        self.register_buffer("pattern", table.to(device))

    @property
    def weight(self) -> Tensor:
        return self.pattern

    def forward(self, ids: Tensor) -> Tensor:
        return self.pattern[ids]


class RecyclingPositionalEncoding(StatefulModule, nn.Module):
    """Add ``pe[(t + index) % num_embeds]`` to step ``t`` (Continual Transformers, Hedegaard et al., arXiv 2201.06268).

    ``pe`` is an ``nn.Embedding(num_embeds, embed_dim)`` when ``learned`` (key ``pe.weight``), else the fixed
    ``CyclicPositionalEncoding`` (key ``pe.pattern``). Layout is channels first: clips ``(B, E, T)``, steps
    ``(B, E)``.

    * ``forward(clip)`` adds rows ``index .. index + T - 1`` (mod ``num_embeds``), then advances ``index`` by
      ``forward_update_index_steps`` (training sees varied offsets; use 0 to keep it fixed);
    * ``forward_step(step)`` adds row ``index`` and advances it by 1;
    * ``forward_steps(clip)`` equals ``T`` calls of ``forward_step`` and advances by ``T`` (0 with
      ``update_state=False``).

    From the same ``index``, all three add the same rows. Clips longer than ``num_embeds`` reuse positions.
    Delay 0, receptive field 1.

    The offset is kept twice, never read back from the device: as a Python int (``index``, the step counter
    ``_t`` modulo ``num_embeds``) for clips, and, once a step has run, as a one-element device tensor that
    ``forward_step`` reads and advances in place, so that a step never synchronises with the host and one
    captured CUDA graph serves every offset.
    """

    _state_names = ("_index",)

    def __init__(
        self,
        embed_dim: int,
        num_embeds: int,
        learned: bool = True,
        forward_update_index_steps: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if num_embeds < 1:
            raise ValueError(f"RecyclingPositionalEncoding: num_embeds must be >= 1, got {num_embeds}")
        self.embed_dim = embed_dim
        self.num_embeds = num_embeds
        self.learned = learned
        self.forward_update_index_steps = forward_update_index_steps
        self.pe: nn.Embedding | CyclicPositionalEncoding
        if learned:
            self.pe = nn.Embedding(num_embeds, embed_dim, device=device, dtype=dtype)
        else:
            self.pe = CyclicPositionalEncoding(num_embeds, embed_dim, device=device, dtype=dtype)
        self._init_state_attrs()

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_embeds={self.num_embeds}, learned={self.learned}, "
            f"forward_update_index_steps={self.forward_update_index_steps}"
        )

    @property
    def index(self) -> int:
        """The position offset of the next step."""
        return self._t

    def _check(self, x: Tensor, dims: int, what: str) -> None:
        if x.dim() != dims or x.shape[1] != self.embed_dim:
            shape = "(B, E, T)" if dims == 3 else "(B, E)"
            raise ValueError(
                f"RecyclingPositionalEncoding expects a {what} {shape} with E={self.embed_dim}, got {tuple(x.shape)}"
            )

    def _add(self, clip: Tensor) -> Tensor:
        ids = torch.remainder(torch.arange(clip.shape[2], device=clip.device) + self._t, self.num_embeds)
        return clip + self.pe(ids).transpose(0, 1)

    def _advance(self, steps: int) -> None:
        self._t = (self._t + steps) % self.num_embeds
        if self._index is not None and steps:
            self._index = store(self._index, torch.remainder(self._index + steps, self.num_embeds))

    def forward(self, clip: Tensor) -> Tensor:
        self._check(clip, 3, "clip")
        out = self._add(clip)
        self._advance(self.forward_update_index_steps)
        return out

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        self._check(step, 2, "step")
        index = self._index
        if index is None:  # the first step of a stream: the only host-to-device copy
            index = torch.full((1,), self._t, dtype=torch.long, device=step.device)
        out = step + self.pe.weight.index_select(0, index)
        if update_state:
            self._index = store(self._index, torch.remainder(index + 1, self.num_embeds))
            self._t = (self._t + 1) % self.num_embeds
        return out

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        self._check(clip, 3, "clip")
        if clip.shape[2] == 0:
            return None  # like stepping zero steps (stack_steps of no outputs)
        out = self._add(clip)
        if update_state:
            self._advance(clip.shape[2])
        return out
