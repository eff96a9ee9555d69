"""Nyströmformer-b1/b2 and Continual Nyströmformer-b1/b2 for online action detection on pre-extracted features.

Carreto Picón, Oleksiienko, Hedegaard, Bakhtiarnia & Iosifidis, "Continual Low-Rank Scaled Dot-product Attention",
arXiv 2412.03214, 2024 (github.com/Atamarado/continual_nystrom, ``CoOadTR/``: a fork of CoOadTR, whose
``main.py --model nystromformer | continual_nystrom`` built these nets), on top of Continual Transformers
(Hedegaard, Bakhtiarnia & Iosifidis, ICLR 2023, arXiv 2201.06268). The attention is Nyström's (Xiong et al., AAAI
2021), see ``modules.continual.nystrom`` for what it and its continual steps compute.

Both models are CoOadTR-b1/b2 (``cooadtr.py``) with Nyström attention: ``linear_encoding`` (dim_feature -> 1024) ->
recycling positional encoding -> Dropout -> 1 or 2 POST-norm encoder layers (GELU feed-forward of 1024; b2: the
first layer computes all ``n`` positions, the second the newest only) -> ``pre_head_ln`` -> ``mlp_head``. In the
original both are the very same ``CoVisionTransformer(nystrom=True)``; they differ only in the positional
encoding: ``recycling_learned`` for ``nystromformer``, ``recycling_fixed`` for ``continual_nystrom``. Here the
offline nets (``nystromformer_b1/b2``) score one window, ``forward(clip (B, dim_feature, n)) -> (B, K)`` (the
newest step), like OadTR-b1/b2; the continual ones (``conystromformer_b1/b2``) predict at every step of a stream.

Defaults that follow the original code (each is a build argument):

* ``attention_projections=False``: the original's attention uses the layer input itself as queries, keys and
  values, in one head over the whole embedding, with no output projection (``num_heads`` then has no effect);
  ``True`` gives ``num_heads`` heads with ``nn.MultiheadAttention``'s projections.
* ``pseudo_inverse=False``: the original's offline attention with segment-mean landmarks, which trained and scored
  every reported number, multiplies by ``softmax(Q~ K~^T)`` itself, not its pseudo-inverse. Fixed landmarks always
  use the pseudo-inverse, as the original's ``fix_landmarks`` does.
* ``num_landmarks=8``: the original's argparse default is 10, but its experiments sweep {2, 4, 8, 16, 32}, and a
  continual net with continual landmarks needs ``num_landmarks`` to divide ``sequence_len`` (64).
* ``fixed_landmarks=False``: landmarks are segment means of each window. ``True`` builds every layer with fixed
  landmarks (buffers, zeros until k-means sets them or a checkpoint loads them).

Continual nets: ``forward_step((B, dim_feature)) -> (B, K)`` or ``None`` for the first ``n - 1`` steps;
``forward(clip (B, dim_feature, T >= n)) -> (B, K, T - n + 1)`` computes what ``forward_steps`` emits from a clean
state at the same positional offset: with continual landmarks, window ``w``'s first layer uses the landmarks of the
last refresh step (every ``n // m`` steps, see ``ContinualNystromAttention.stream_landmarks``), which are the
window's own segment means when ``T == n`` (training windows) and on refresh steps. The positional offset moves by
one per ``forward`` call, in eval mode too, as in the original and CoOadTR; ``clean_state()`` returns it to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ... import continual as co
from ...continual.nystrom import NystromAttention, NystromTransformerEncoderLayer
from ..registry import register_model
from .blocks import check_feature_clip, feature_input_spec, window_tokens
from .cooadtr import ContinualFeatureNet

__all__ = ["CoNystromformer", "Nystromformer", "build_nystromformer"]

POSITIONAL_ENCODINGS = ("recycling_fixed", "recycling_learned")


class Nystromformer(nn.Module):
    """Nyströmformer-b1/b2 on one window (module docstring). Keys: ``linear_encoding.*``,
    ``position_encoding.pe.{weight|pattern}``, ``encoder.layers.{i}.{self_attn.*, linear1.*, linear2.*, norm1.*,
    norm2.*}`` (``self_attn``: ``q_landmarks``, ``k_landmarks``, ``landmarks_fixed`` and, with projections,
    ``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``), ``pre_head_ln.*``, ``mlp_head.*``."""

    def __init__(
        self,
        *,
        dim_feature: int,
        num_classes: int,
        sequence_len: int,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        num_layers: int,
        dropout: float,
        positional_encoding: str,
        num_embeddings: int,
        num_landmarks: int,
        fixed_landmarks: bool,
        attention_projections: bool,
        pseudo_inverse: bool,
    ) -> None:
        super().__init__()
        if positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, got {positional_encoding!r}")
        if num_layers not in (1, 2):
            raise ValueError(f"{type(self).__name__} has 1 (b1) or 2 (b2) encoder layers, got num_layers={num_layers}")
        if not 1 <= num_landmarks < sequence_len:
            raise ValueError(
                f"num_landmarks must be in [1, sequence_len={sequence_len}), got {num_landmarks} (the original falls "
                "back to exact softmax attention at num_landmarks >= sequence_len: use cooadtr_b1/b2 for that)"
            )
        self.dim_feature = dim_feature
        self.sequence_len = sequence_len
        self.linear_encoding = co.Linear(dim_feature, embed_dim)
        self.position_encoding = co.RecyclingPositionalEncoding(
            embed_dim, num_embeddings, learned=positional_encoding == "recycling_learned"
        )
        self.pe_dropout = nn.Dropout(dropout)
        layers = []
        for _ in range(num_layers):
            layer = NystromTransformerEncoderLayer(
                embed_dim,
                num_heads,
                ff_dim,
                dropout,
                activation="gelu",
                sequence_len=sequence_len,
                num_landmarks=num_landmarks,
                projections=attention_projections,
                pseudo_inverse=pseudo_inverse,
            )
            layer.dropout1 = nn.Dropout(0.0)  # the original adds the attention output without dropout
            layers.append(layer)
        self.encoder = co.TransformerEncoder(layers)  # b2: the first layer steps retroactively
        self.pre_head_ln = nn.LayerNorm(embed_dim)
        self.mlp_head = co.Linear(embed_dim, num_classes)
        if fixed_landmarks:
            for attention in self.landmark_attentions():
                attention.set_landmarks(attention.q_landmarks, attention.k_landmarks)

    # --- landmark fitting (modules.systems.landmarks) --------------------------------------------------------
    def landmark_attentions(self) -> list[NystromAttention]:
        """The Nyström attentions, first layer first (what k-means fits, one layer after the other)."""
        return [layer.self_attn for layer in self.encoder.layers]

    def parameters_before_landmarks(self, index: int) -> list[nn.Parameter]:
        """What ``freeze_weights`` freezes when layer ``index``'s landmarks are fixed: everything that computes
        the queries and keys the landmarks were fitted to, i.e. the input encoding, the earlier layers and the
        layer's own in-projection (all of it: values share the tensor). The original froze the input encoding and
        the earlier layers (its attention has no projections to freeze)."""
        layers = self.encoder.layers
        if not 0 <= index < len(layers):
            raise IndexError(f"{type(self).__name__} has {len(layers)} Nyström layers, got index {index}")
        modules: list[nn.Module] = [self.linear_encoding, self.position_encoding, *layers[:index]]
        params = [p for m in modules for p in m.parameters()]
        attention = layers[index].self_attn
        if attention.projections:
            params.append(attention.in_proj_weight)
            if attention.in_proj_bias is not None:
                params.append(attention.in_proj_bias)
        return params

    # --- offline ---------------------------------------------------------------------------------------------
    def _tokens(self, clip: Tensor) -> Tensor:
        """Input encoding of a clip: ``(B, dim_feature, T) -> (B, T, E)``; moves the positional offset by one."""
        check_feature_clip(clip, self.dim_feature, type(self).__name__)
        return self.pe_dropout(self.position_encoding(self.linear_encoding(clip))).transpose(1, 2)

    def _newest(self, tokens: Tensor, landmarks: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Encoder output of the newest position of windows ``(N, n, E) -> (N, E)``; ``landmarks`` for layer 1."""
        layers = self.encoder.layers
        if len(layers) == 1:
            return layers[0].forward_last_token(tokens, landmarks)
        return layers[1].forward_last_token(layers[0].forward_tokens(tokens, landmarks=landmarks))

    def forward(self, clip: Tensor) -> Tensor:
        """``(B, dim_feature, n) -> (B, K)``: the logits of the newest step of the window."""
        if clip.dim() == 3 and clip.shape[2] != self.sequence_len:
            raise ValueError(
                f"{type(self).__name__} scores windows of sequence_len={self.sequence_len} steps, got {clip.shape[2]}"
            )
        return self.mlp_head(self.pre_head_ln(self._newest(self._tokens(clip))))


class CoNystromformer(ContinualFeatureNet, Nystromformer):
    """Continual Nyströmformer-b1/b2 (module docstring): the same modules and keys as ``Nystromformer``; steps as
    CoOadTR does (``ContinualFeatureNet``)."""

    def forward(self, clip: Tensor) -> Tensor:
        """``(B, dim_feature, T >= n) -> (B, K, T - n + 1)``: the logits that ``forward_steps`` emits for ``clip``
        from a clean state (at the current positional offset)."""
        check_feature_clip(clip, self.dim_feature, type(self).__name__)
        n, batch = self.sequence_len, clip.shape[0]
        if clip.shape[2] < n:
            raise ValueError(f"{type(self).__name__} needs at least sequence_len={n} steps, got {clip.shape[2]}")
        tokens = self._tokens(clip)
        first = self.encoder.layers[0].self_attn
        outputs, start = [], 0
        for windows in window_tokens(tokens, n):  # chunks of (w * B, n, E), windows first
            count = windows.shape[0] // batch
            q_landmarks, k_landmarks = first.stream_landmarks(tokens, start, start + count)  # (B, w, H, m, d)
            landmarks = tuple(x.transpose(0, 1).flatten(0, 1) for x in (q_landmarks, k_landmarks))
            outputs.append(self._newest(windows, landmarks).unflatten(0, (count, batch)))  # type: ignore[arg-type]
            start += count
        newest = torch.cat(outputs)  # (W, B, E)
        return self.mlp_head(self.pre_head_ln(newest).permute(1, 2, 0))


def build_nystromformer(
    *,
    num_layers: int,
    continual: bool,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_fixed",
    num_embeddings: int = 127,
    num_landmarks: int = 8,
    fixed_landmarks: bool = False,
    attention_projections: bool = False,
    pseudo_inverse: bool = False,
) -> Nystromformer:
    """A (Continual) Nyströmformer of ``num_layers`` (1 or 2) encoder layers."""
    cls = CoNystromformer if continual else Nystromformer
    return cls(
        dim_feature=dim_feature,
        num_classes=num_classes,
        sequence_len=sequence_len,
        embed_dim=embed_dim,
        num_heads=num_heads,
        ff_dim=ff_dim,
        num_layers=num_layers,
        dropout=dropout,
        positional_encoding=positional_encoding,
        num_embeddings=num_embeddings,
        num_landmarks=num_landmarks,
        fixed_landmarks=fixed_landmarks,
        attention_projections=attention_projections,
        pseudo_inverse=pseudo_inverse,
    )


_SPEC = feature_input_spec()


@register_model("nystromformer_b1", input_spec=_SPEC)
def nystromformer_b1(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_learned",
    num_embeddings: int = 127,
    num_landmarks: int = 8,
    fixed_landmarks: bool = False,
    attention_projections: bool = False,
    pseudo_inverse: bool = False,
) -> Nystromformer:
    """Nyströmformer-b1 (the original's ``--model nystromformer --num_layers 1``): one Nyström layer, one window."""
    return build_nystromformer(num_layers=1, continual=False, **locals())


@register_model("nystromformer_b2", input_spec=_SPEC)
def nystromformer_b2(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_learned",
    num_embeddings: int = 127,
    num_landmarks: int = 8,
    fixed_landmarks: bool = False,
    attention_projections: bool = False,
    pseudo_inverse: bool = False,
) -> Nystromformer:
    """Nyströmformer-b2 (``--model nystromformer --num_layers 2``): two Nyström layers, one window."""
    return build_nystromformer(num_layers=2, continual=False, **locals())


@register_model("conystromformer_b1", input_spec=_SPEC)
def conystromformer_b1(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_fixed",
    num_embeddings: int = 127,
    num_landmarks: int = 8,
    fixed_landmarks: bool = False,
    attention_projections: bool = False,
    pseudo_inverse: bool = False,
) -> CoNystromformer:
    """Continual Nyströmformer-b1 (``--model continual_nystrom --num_layers 1``): one single-output layer."""
    return build_nystromformer(num_layers=1, continual=True, **locals())  # type: ignore[return-value]


@register_model("conystromformer_b2", input_spec=_SPEC)
def conystromformer_b2(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_fixed",
    num_embeddings: int = 127,
    num_landmarks: int = 8,
    fixed_landmarks: bool = False,
    attention_projections: bool = False,
    pseudo_inverse: bool = False,
) -> CoNystromformer:
    """Continual Nyströmformer-b2 (``--model continual_nystrom --num_layers 2``): a retroactive, then a
    single-output layer."""
    return build_nystromformer(num_layers=2, continual=True, **locals())  # type: ignore[return-value]
