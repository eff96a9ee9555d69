"""OadTR and its decoder-free baselines OadTR-b1/b2 (offline windows of pre-extracted features).

OadTR: Wang, Zhang, Qing, Shao, Zuo, Gao, Sang, "OadTR: Online Action Detection with Transformers", ICCV 2021
(github.com/wangxiang1230/OadTR; as trained in the Continual Transformers paper, Hedegaard, Bakhtiarnia &
Iosifidis, ICLR 2023, arXiv 2201.06268: branch ``original`` of github.com/LukasHedegaard/CoOadTR).

* ``oadtr``: ``linear_encoding`` (dim_feature -> 1024), a learned class token APPENDED after the ``n`` steps, a
  learned positional encoding of ``n + 1`` rows, 3 pre-norm encoder layers (8 heads, MLP 1024, GELU), ``pre_head_ln``,
  then a 5-layer decoder (4 heads, d_model 1024, d_ff 1024 as kernel-1 convolutions, GELU) whose 8 learned queries
  attend to each other causally and to the encoder tokens; ``classifier`` scores each query (each predicts one of
  the next 8 steps) and ``mlp_head`` scores ``cat(encoder class token, mean of the decoder outputs)``.
* ``oadtr_b1`` / ``oadtr_b2`` (branch ``no-decoder-no-cls-token``): no decoder and no class token, 1 / 2 encoder
  layers, the prediction is the token of the last step. They keep the original's unused parameters (``cls_token``,
  ``classifier``, a PE of ``n + 1`` rows of which the first ``n`` are used), so that checkpoints of that branch load
  as they are and the parameter counts are the published ones (9,560,108 / 15,858,732 at 3072-d, 22 classes).

Keys are the original ones (``linear_encoding.*``, ``cls_token``, ``position_encoding.{pe.weight,position_ids}``,
``encoder.net.*``, ``pre_head_ln.*``, ``decoder.layers.*``, ``decoder.norm.*``, ``decoder_cls_token``,
``decoder_position_encoding.*``, ``classifier.*``, ``mlp_head.*``): an original ``state_dict`` loads with
``strict=True``. The original's ``decoder_position_encoding`` is built but never applied; so here.

Layout is channels first: ``forward(clip (B, dim_feature, n)) -> (B, K)`` logits of the newest step;
``oadtr.forward_with_decoder(clip) -> ((B, K), (B, K, Q))`` adds the decoder's per-query logits (Q = 8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_model
from .blocks import LearnedPositionalEncoding, PreNormEncoder, check_feature_clip, feature_input_spec

__all__ = ["OadTR", "OadTRDecoder", "build_oadtr"]


class _DecoderAttention(nn.Module):
    """OadTR's ``AttentionLayer(FullAttention)``: separate q/k/v/out projections (keys ``query_projection``,
    ``key_projection``, ``value_projection``, ``out_projection``), softmax attention, causal when ``causal``."""

    def __init__(self, d_model: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)
        self.n_heads = heads
        self.causal = causal
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor) -> Tensor:
        batch, length, _ = queries.shape
        q = self.query_projection(queries).view(batch, length, self.n_heads, -1)
        k = self.key_projection(keys).view(batch, keys.shape[1], self.n_heads, -1)
        v = self.value_projection(keys).view(batch, keys.shape[1], self.n_heads, -1)
        scores = torch.einsum("blhe,bshe->bhls", q, k)
        if self.causal:  # FullAttention(mask_flag=True): query i sees queries 0..i
            mask = torch.ones(length, keys.shape[1], dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        weights = self.dropout(torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-1))
        out = torch.einsum("bhls,bshd->blhd", weights, v).reshape(batch, length, -1)
        return self.out_projection(out)


class _DecoderLayer(nn.Module):
    """Post-norm decoder layer of OadTR (``transformer_models/decoder.py``): causal self-attention, cross-attention
    to the encoder tokens, and a GELU feed-forward of kernel-1 convolutions (keys ``conv1``, ``conv2``)."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = _DecoderAttention(d_model, heads, dropout, causal=True)
        self.cross_attention = _DecoderAttention(d_model, heads, dropout, causal=False)
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(self.self_attention(x, x)))
        x = self.norm2(x + self.dropout(self.cross_attention(x, memory)))
        y = self.dropout(F.gelu(self.conv1(x.transpose(1, 2))))
        y = self.dropout(self.conv2(y).transpose(1, 2))
        return self.norm3(x + y)


class OadTRDecoder(nn.Module):
    """``layers`` decoder layers and a final LayerNorm (keys ``layers.{i}.*``, ``norm.*``)."""

    def __init__(self, d_model: int, heads: int, d_ff: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        for layer in self.layers:
            queries = layer(queries, memory)
        return self.norm(queries)


class OadTR(nn.Module):
    """OadTR (``decoder_layers > 0``) or OadTR-b1/b2 (``decoder_layers=0``); see the module docstring.

    ``forward(clip (B, dim_feature, sequence_len)) -> (B, K)``. With a decoder, ``forward_with_decoder(clip) ->
    ((B, K), (B, K, Q))`` also returns the ``Q = num_queries`` future-step logits.
    """

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
        decoder_layers: int = 0,
        decoder_heads: int = 4,
        decoder_ff_dim: int = 1024,
        num_queries: int = 8,
    ) -> None:
        super().__init__()
        self.dim_feature = dim_feature
        self.sequence_len = sequence_len
        self.has_decoder = decoder_layers > 0
        self.linear_encoding = nn.Linear(dim_feature, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # used by OadTR only; b1/b2 keep it unused
        self.position_encoding = LearnedPositionalEncoding(sequence_len + 1, embed_dim)
        self.pe_dropout = nn.Dropout(dropout)
        self.encoder = PreNormEncoder(embed_dim, num_layers, num_heads, ff_dim, dropout, dropout)
        self.pre_head_ln = nn.LayerNorm(embed_dim)
        if self.has_decoder:
            self.decoder = OadTRDecoder(embed_dim, decoder_heads, decoder_ff_dim, decoder_layers, dropout)
            self.decoder_cls_token = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
            self.decoder_position_encoding = LearnedPositionalEncoding(num_queries, embed_dim)  # built, never applied
            self.after_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)  # per decoder query; b1/b2 keep it unused
        self.mlp_head = nn.Linear(2 * embed_dim if self.has_decoder else embed_dim, num_classes)

    def _encode(self, clip: Tensor) -> Tensor:
        check_feature_clip(clip, self.dim_feature, type(self).__name__)
        if clip.shape[2] != self.sequence_len:
            raise ValueError(
                f"{type(self).__name__} takes windows of sequence_len={self.sequence_len} steps, got {clip.shape[2]}; "
                f"build it with sequence_len={clip.shape[2]} or feed {self.sequence_len}-step windows"
            )
        x = self.linear_encoding(clip.transpose(1, 2))
        if self.has_decoder:  # the class token is appended after the steps
            x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], 1)
        x = self.pe_dropout(self.position_encoding(x))
        return self.pre_head_ln(self.encoder(x))

    def forward(self, clip: Tensor) -> Tensor:
        """Logits ``(B, K)`` of the newest step of ``clip`` ``(B, dim_feature, sequence_len)``."""
        if self.has_decoder:
            return self.forward_with_decoder(clip)[0]
        return self.mlp_head(self._encode(clip)[:, -1])

    def forward_with_decoder(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, K), decoder logits (B, K, Q))``: the newest step and the ``Q`` steps after it."""
        if not self.has_decoder:
            raise AttributeError(f"{type(self).__name__} was built without a decoder (decoder_layers=0)")
        x = self._encode(clip)
        dec = self.after_dropout(self.decoder(self.decoder_cls_token.expand(x.shape[0], -1, -1), x))
        logits = self.mlp_head(torch.cat([x[:, -1], dec.mean(1)], 1))
        return logits, self.classifier(dec).transpose(1, 2)


def build_oadtr(
    *,
    num_layers: int,
    decoder_layers: int,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    decoder_heads: int = 4,
    decoder_ff_dim: int = 1024,
    num_queries: int = 8,
) -> OadTR:
    """An OadTR of ``num_layers`` encoder layers and ``decoder_layers`` decoder layers (0: OadTR-b)."""
    return OadTR(
        dim_feature=dim_feature,
        num_classes=num_classes,
        sequence_len=sequence_len,
        embed_dim=embed_dim,
        num_heads=num_heads,
        ff_dim=ff_dim,
        num_layers=num_layers,
        dropout=dropout,
        decoder_layers=decoder_layers,
        decoder_heads=decoder_heads,
        decoder_ff_dim=decoder_ff_dim,
        num_queries=num_queries,
    )


_SPEC = feature_input_spec()


@register_model("oadtr", input_spec=_SPEC)
def oadtr(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    num_layers: int = 3,
    decoder_layers: int = 5,
    decoder_heads: int = 4,
    decoder_ff_dim: int = 1024,
    num_queries: int = 8,
) -> OadTR:
    """OadTR (3 encoder layers, 5 decoder layers, 8 queries): 74,709,036 parameters at 3072-d, 22 classes."""
    return build_oadtr(**locals())


@register_model("oadtr_b1", input_spec=_SPEC)
def oadtr_b1(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
) -> OadTR:
    """OadTR-b1: one pre-norm layer, no decoder, no class token: 9,560,108 parameters at 3072-d, 22 classes."""
    return build_oadtr(num_layers=1, decoder_layers=0, **locals())


@register_model("oadtr_b2", input_spec=_SPEC)
def oadtr_b2(
    *,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
) -> OadTR:
    """OadTR-b2: two pre-norm layers, no decoder, no class token: 15,858,732 parameters at 3072-d, 22 classes."""
    return build_oadtr(num_layers=2, decoder_layers=0, **locals())
