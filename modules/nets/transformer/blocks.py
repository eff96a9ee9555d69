"""Pieces shared by the online action detection transformers (OadTR, CoOadTR, the Nyströmformers).

* ``feature_input_spec``: the registry facts of a net that reads pre-extracted features, ``(B, dim_feature, T)``.
* ``check_feature_clip`` / ``check_feature_step``: a wrong input width is an error that names ``dim_feature``.
* ``SelfAttention``, ``PreNormEncoder``, ``LearnedPositionalEncoding``: the OadTR encoder (Wang et al., "OadTR:
  Online Action Detection with Transformers", ICCV 2021; github.com/wangxiang1230/OadTR) with the original
  ``state_dict`` keys (``net.{2i}.fn.norm.*``, ``net.{2i}.fn.fn.qkv.weight``, ``net.{2i}.fn.fn.proj.*``,
  ``net.{2i+1}.fn.fn.net.{0,3}.*``). Its attention takes the layer that computes it as an argument, so other
  attentions (Nyström) reuse the pre-norm block.
* ``window_tokens``: the windows of ``n`` steps of a token sequence, in chunks, for the offline computation of a
  continual net (one output per complete window).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..registry import InputSpec

__all__ = [
    "FeedForward",
    "LearnedPositionalEncoding",
    "PreNormEncoder",
    "SelfAttention",
    "check_feature_clip",
    "check_feature_step",
    "feature_input_spec",
    "window_tokens",
]


def feature_input_spec(dim_feature: int = 3072, sequence_len: int = 64) -> InputSpec:
    """Features of width ``dim_feature`` per step, windows of ``sequence_len`` steps (THUMOS14 A.Net: 3072)."""
    return InputSpec(crop_size=1, clip_length=sequence_len, sampling_stride=1, channels=dim_feature, features=True)


def check_feature_clip(clip: Tensor, dim_feature: int, name: str) -> None:
    """Raise unless ``clip`` is ``(B, dim_feature, T)``; the message names the build argument that fits it."""
    if clip.dim() != 3 or clip.shape[1] != dim_feature:
        fix = f"; build it with dim_feature={clip.shape[1]}" if clip.dim() == 3 else ""
        raise ValueError(
            f"{name} expects features (B, dim_feature={dim_feature}, T), got {tuple(clip.shape)}{fix} "
            "(THUMOS14/TVSeries: anet 3072, kin 4096, anet_audio 7168, kin_audio 8192)"
        )


def check_feature_step(step: Tensor, dim_feature: int, name: str) -> None:
    """Raise unless ``step`` is ``(B, dim_feature)``; the message names the build argument that fits it."""
    if step.dim() != 2 or step.shape[1] != dim_feature:
        fix = f"; build it with dim_feature={step.shape[1]}" if step.dim() == 2 else ""
        raise ValueError(
            f"{name}.forward_step expects a step (B, dim_feature={dim_feature}), got {tuple(step.shape)}{fix}"
        )


def window_tokens(tokens: Tensor, n: int, chunk: int = 256) -> Iterator[Tensor]:
    """The windows of ``n`` consecutive tokens of ``tokens`` (B, T, E), oldest first, as batches ``(B * w, n, E)``
    of at most ``chunk`` windows per stream (memory stays O(chunk n E) for a whole video); windows ``i`` of
    every stream come out in the order ``(window, batch)``, i.e. ``unflatten(0, (w, B))`` recovers them."""
    _, length, embed = tokens.shape
    if length < n:
        raise ValueError(f"a window needs {n} steps, got a clip of {length}")
    count = length - n + 1
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        # (B, w, n, E) without a copy, then windows first so that outputs stack along time
        windows = tokens.unfold(1, n, 1)[:, start:stop].permute(1, 0, 3, 2)
        yield windows.reshape(-1, n, embed)


class LearnedPositionalEncoding(nn.Module):
    """``x + pe(position_ids[:, :T])`` with a learned table of ``num_embeddings`` rows (OadTR's encoding; keys
    ``pe.weight`` and the buffer ``position_ids``). A sequence shorter than the table uses its first rows."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.pe = nn.Embedding(num_embeddings, embedding_dim)
        self.register_buffer("position_ids", torch.arange(num_embeddings).expand((1, -1)))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.num_embeddings:
            raise ValueError(
                f"LearnedPositionalEncoding has {self.pe.num_embeddings} positions, got a sequence of {x.shape[1]}"
            )
        return x + self.pe(self.position_ids[:, : x.shape[1]])


class SelfAttention(nn.Module):
    """Multi-head self-attention of OadTR (keys ``qkv.weight``, no bias, and ``proj.weight/bias``).

    ``(B, T, E) -> (B, T, E)``; ``dropout`` on the attention weights and on the output.
    """

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"SelfAttention: embed_dim={dim} must be divisible by num_heads={heads}")
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(batch, length, dim)))


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (keys ``net.0.*``, ``net.3.*``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class _PreNorm(nn.Module):
    """``dropout(fn(norm(x)))`` (OadTR's PreNormDrop; with dropout 0 its PreNorm, which has no dropout)."""

    def __init__(self, dim: int, fn: nn.Module, dropout: float | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if dropout is not None:
            self.dropout = nn.Dropout(dropout)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        out = self.fn(self.norm(x))
        return self.dropout(out) if hasattr(self, "dropout") else out


class PreNormEncoder(nn.Module):
    """OadTR's pre-norm Transformer encoder (``transformer_models/Transformer.py::TransformerModel``).

    ``depth`` blocks of ``x + Dropout(Attention(LN(x)))`` then ``x + FF(LN(x))`` (GELU), on batch-first tokens
    ``(B, T, E)``. ``attention(dim, heads, dropout)`` builds each block's attention (default: ``SelfAttention``).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        attention: Callable[[int, int, float], nn.Module] = SelfAttention,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"PreNormEncoder needs depth >= 1, got {depth}")
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(_Residual(_PreNorm(dim, attention(dim, heads, attn_dropout), dropout)))
            layers.append(_Residual(_PreNorm(dim, FeedForward(dim, mlp_dim, dropout))))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
