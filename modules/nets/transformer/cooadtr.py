"""CoOadTR-b1/b2: OadTR-b1/b2 as Continual Transformers that predict at every step of a feature stream.

Hedegaard, Bakhtiarnia & Iosifidis, "Continual Transformers: Redundancy-Free Attention for Online Inference",
ICLR 2023, arXiv 2201.06268 (github.com/LukasHedegaard/CoOadTR, branch ``main``,
``transformer_models/ViT.py::CoVisionTransformer``; blocks of github.com/LukasHedegaard/continual-transformers).

Per step: ``co.Linear`` (dim_feature -> 1024) -> recycling positional encoding (``num_embeddings`` rows, fixed
cyclic or learned) -> Dropout -> encoder -> LayerNorm -> ``co.Linear`` (1024 -> K). The encoder is b1: one
Single-output layer; b2: a Retroactive layer, then a Single-output layer (``co.TransformerEncoder``). Both are
POST-norm (``LN(x + MHA(x))``, ``LN(y + FF(y))``, GELU feed-forward of 1024), and their attention has no bias at
all: the original passes ``in_proj_bias=False`` as ``nn.MultiheadAttention(bias=...)``, which drops the in- and the
out-projection biases (the published parameter counts depend on it: 9,468,950 / 15,766,550 at 3072-d).

What differs from OadTR-b1/b2 (``oadtr.py``): post-norm instead of pre-norm, the recycling positional encoding
instead of a learned one per window position, no attention biases, no class token and no decoder (and none of the
unused parameters OadTR-b keeps). The two are separate architectures: neither is converted from the other.

The contract (``co.CoModule``): ``forward_step((B, dim_feature)) -> (B, K)``, or ``None`` for the first ``n - 1``
steps (``delay = n - 1``, ``n = sequence_len``); ``forward_steps(clip)`` stacks the outputs, ``(B, K, T - n + 1)``;
``forward(clip (B, dim_feature, T >= n)) -> (B, K, T - n + 1)``, one output per complete window, each the encoder's
newest position on that window, equal to ``forward_steps`` from the same positional-encoding offset.

The recycling offset: step ``t`` of a stream adds PE row ``(index + t) mod num_embeddings``. As in the original,
``forward`` also moves ``index`` by one per call, in eval mode too (training sees every offset; a window evaluated
twice gets two offsets); ``clean_state()`` returns it to 0. The original's ``forward_steps`` fails on clips longer
than ``num_embeddings`` steps; here a stream of any length recycles the rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ... import continual as co
from ...profiling.conventions import register_ptflops_rule
from ..registry import register_model
from .blocks import check_feature_clip, check_feature_step, feature_input_spec, window_tokens

__all__ = ["CoOadTR", "WindowEncoder", "build_cooadtr", "published_step_macs"]

POSITIONAL_ENCODINGS = ("recycling_fixed", "recycling_learned")


class WindowEncoder(co.TransformerEncoder):
    """``co.TransformerEncoder`` whose ``forward`` is per window: ``(B, E, T) -> (B, E, T - n + 1)``, the newest
    position of the encoder on each window of ``n`` steps, which is what ``forward_step`` emits (the core's
    ``forward`` returns all ``T`` positions of one sequence, as ``nn.TransformerEncoder``)."""

    def forward(self, clip: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None) -> Tensor:
        if mask is not None or src_key_padding_mask is not None:
            raise ValueError("WindowEncoder.forward takes no masks: every window is a full sliding window")
        n = self.sequence_len
        outputs = []
        for windows in window_tokens(clip.transpose(1, 2), n):
            x = windows
            for layer in self.layers[:-1]:
                x = layer.forward_tokens(x)
            x = self.layers[-1].forward_last_token(x)
            outputs.append(x if self.norm is None else self.norm(x))
        # each chunk is (w * B, E), windows first
        batch = clip.shape[0]
        return torch.cat([o.unflatten(0, (-1, batch)) for o in outputs]).permute(1, 2, 0)


def _encoder(
    embed_dim: int, num_heads: int, ff_dim: int, num_layers: int, dropout: float, sequence_len: int
) -> WindowEncoder:
    layers = []
    for _ in range(num_layers):
        layer = co.TransformerEncoderLayer(
            embed_dim, num_heads, ff_dim, dropout, activation="gelu", sequence_len=sequence_len
        )
        # No attention biases (in- and out-projection) while the feed-forward and norms keep theirs: the layer's
        # `bias` would drop them all, so the attention is replaced; the encoder sets its mode (retroactive first).
        layer.self_attn = co.SingleOutputMultiheadAttention(
            embed_dim, num_heads, sequence_len, bias=False, dropout=dropout
        )
        # The original adds the attention output to its input without dropout (only the attention weights drop).
        layer.dropout1 = nn.Dropout(0.0)
        layers.append(layer)
    return WindowEncoder(layers)


class ContinualFeatureNet(co.CoModule):
    """The stepping shared by the continual feature nets (CoOadTR, the Continual Nyströmformer): ``linear_encoding``
    (``co.Linear``) -> ``position_encoding`` (recycling) -> ``pe_dropout`` -> a continual ``encoder`` ->
    ``pre_head_ln`` -> ``mlp_head`` (``co.Linear``), over windows of ``sequence_len`` steps of ``dim_feature``."""

    dim_feature: int
    sequence_len: int

    @property
    def receptive_field(self) -> int:
        return self.sequence_len

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        """Feed one step ``(B, dim_feature)``; the newest window's logits ``(B, K)``, or ``None`` while warming up."""
        check_feature_step(step, self.dim_feature, type(self).__name__)
        x = self.position_encoding.forward_step(self.linear_encoding.forward_step(step), update_state)
        x = self.encoder.forward_step(self.pe_dropout(x), update_state)
        if x is None:
            return None
        return self.mlp_head.forward_step(self.pre_head_ln(x))

    def get_state(self) -> list[Any]:
        return [self.position_encoding.get_state(), self.encoder.get_state()]

    def set_state(self, state: Any) -> None:
        if state is None:
            self.clean_state()
            return
        self.position_encoding.set_state(state[0])
        self.encoder.set_state(state[1])

    def clean_state(self) -> None:
        self.position_encoding.clean_state()
        self.encoder.clean_state()


class CoOadTR(ContinualFeatureNet, nn.Module):
    """CoOadTR-b1/b2 (module docstring). Keys: ``linear_encoding.*``, ``position_encoding.pe.{pattern|weight}``,
    ``encoder.layers.{i}.{self_attn.in_proj_weight, self_attn.out_proj.weight, linear1.*, linear2.*, norm1.*,
    norm2.*}``, ``pre_head_ln.*``, ``mlp_head.*`` (``weights.py`` maps the original's nested indices onto them)."""

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
    ) -> None:
        super().__init__()
        if positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, got {positional_encoding!r}")
        if num_layers not in (1, 2):
            raise ValueError(f"CoOadTR has 1 (b1) or 2 (b2) encoder layers, got num_layers={num_layers}")
        self.dim_feature = dim_feature
        self.sequence_len = sequence_len
        self.linear_encoding = co.Linear(dim_feature, embed_dim)
        self.position_encoding = co.RecyclingPositionalEncoding(
            embed_dim, num_embeddings, learned=positional_encoding == "recycling_learned"
        )
        self.pe_dropout = nn.Dropout(dropout)
        self.encoder = _encoder(embed_dim, num_heads, ff_dim, num_layers, dropout, sequence_len)
        self.pre_head_ln = nn.LayerNorm(embed_dim)
        self.mlp_head = co.Linear(embed_dim, num_classes)

    def forward(self, clip: Tensor) -> Tensor:
        """``(B, dim_feature, T >= n) -> (B, K, T - n + 1)``: the logits of every complete window."""
        check_feature_clip(clip, self.dim_feature, type(self).__name__)
        if clip.shape[2] < self.sequence_len:
            raise ValueError(
                f"{type(self).__name__} needs at least sequence_len={self.sequence_len} steps, got {clip.shape[2]}"
            )
        x = self.pe_dropout(self.position_encoding(self.linear_encoding(clip)))
        x = self.encoder(x)  # (B, E, T - n + 1)
        return self.mlp_head(self.pre_head_ln(x.transpose(1, 2)).transpose(1, 2))


def build_cooadtr(
    *,
    num_layers: int,
    dim_feature: int = 3072,
    num_classes: int = 22,
    sequence_len: int = 64,
    embed_dim: int = 1024,
    num_heads: int = 8,
    ff_dim: int = 1024,
    dropout: float = 0.1,
    positional_encoding: str = "recycling_fixed",
    num_embeddings: int = 127,
) -> CoOadTR:
    """A CoOadTR of ``num_layers`` (1 or 2) continual encoder layers."""
    return CoOadTR(
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
    )


_SPEC = feature_input_spec()


@register_model("cooadtr_b1", input_spec=_SPEC)
def cooadtr_b1(
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
) -> CoOadTR:
    """CoOadTR-b1: one Single-output layer; 9,468,950 parameters at 3072-d (10,517,526 at 4096-d), 22 classes."""
    return build_cooadtr(num_layers=1, **locals())


@register_model("cooadtr_b2", input_spec=_SPEC)
def cooadtr_b2(
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
) -> CoOadTR:
    """CoOadTR-b2: a Retroactive then a Single-output layer; 15,766,550 parameters at 3072-d (16,815,126 at
    4096-d), 22 classes."""
    return build_cooadtr(num_layers=2, **locals())


# --- the published FLOPs (ptflops convention) ----------------------------------------------------------------
def published_step_macs(encoder: WindowEncoder) -> int:
    """Products that ptflops charged one step of the original encoder (CoOadTR's logs, spec of the paper's Table 6).

    The original registered hooks for its attentions (``continual_transformers/ptflops.py``: each call is charged
    the ``flops()`` formula of ``CoReMultiheadAttention`` / ``CoSiMultiheadAttention``); ptflops charged the rest
    module by module. Per step, with E = embed_dim, F = ff_dim, n = sequence_len, H heads of d = E / H:

    * b1, Single-output step: ``3 E^2 + H (2 n d + 2 d) + E (E + 1)``, then the feed-forward ``2 E F``;
    * b2, Retroactive step: ``3 E^2 + H (7 n d + 2 n - 3 d) + n E (E + 1)`` and its feed-forward on the ``n``
      updated tokens ``2 n E F``; then the original runs the Single-output block in ``forward`` mode on the ``n``
      tokens: charged ``3 n E^2 + H (2 n d + 2 d) + E (E + 1)`` (the in-projection of all ``n`` tokens, although one
      query is used), and its feed-forward's ``co.Linear``s, applied to a one-step clip ``(B, E, 1)``, were read by
      ptflops' linear hook as ``numel(input) * output.shape[-1]`` = ``E`` and ``F`` (the time dim is last).

    Executed MACs of our b2 step are ~15 % lower: its last layer projects the queries of the newest token only and
    its feed-forward runs once (``modules.continual.transformer``); b1 executes what is charged (within 0.1 %).
    Norms and biases are not part of this count: the convention adds them as for any module.
    """
    layer = encoder.layers[0]
    embed, heads, n = layer.self_attn.embed_dim, layer.self_attn.num_heads, encoder.sequence_len
    ff, d = layer.linear1.out_features, embed // heads
    in_bias = 3 * embed if layer.self_attn.in_proj_bias is not None else 0
    if encoder.num_layers == 1:
        return 3 * embed**2 + in_bias + heads * (2 * n * d + 2 * d) + embed * (embed + 1) + 2 * embed * ff
    retroactive = 3 * embed**2 + in_bias + heads * (7 * n * d + 2 * n - 3 * d) + n * embed * (embed + 1)
    single_output = 3 * n * embed**2 + n * in_bias + heads * (2 * n * d + 2 * d) + embed * (embed + 1)
    return retroactive + 2 * n * embed * ff + single_output + embed + ff


def _ptflops_rule(module: nn.Module, inputs: tuple, output: Any) -> int | None:
    """A step (input ``(B, E)``) that emitted is charged ``published_step_macs`` per stream; a clip or a warm-up
    step is charged what it executes."""
    if output is None or inputs[0].dim() != 2:
        return None
    return inputs[0].shape[0] * published_step_macs(module)


register_ptflops_rule(WindowEncoder, _ptflops_rule)
