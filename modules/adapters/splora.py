"""Structured Pruning Low-Rank Adapters, SPLoRA (Hedegaard et al., arXiv 2211.10155;
sp_adapters v0.7.1 ``sp_adapters/splora.py``).

ΔW = B·A with A (1, r, Ci/G) and B (1, Co, r): plain LoRA without an α/r scale. Pruning output channel c removes
row c of B, pruning input channel j removes column j of A, so a pruned layer keeps r·(n_in + n_out) learned
weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import (
    DEFAULT_INIT_RANGE,
    DEFAULT_RANK,
    Adapter,
    AdapterLayer,
    ConvAdapter,
    LinearAdapter,
    init_adapter_,
    resolve_rank,
)

__all__ = [
    "LowRankMatrix",
    "SPLoRAConv1d",
    "SPLoRAConv2d",
    "SPLoRAConv3d",
    "SPLoRALinear",
    "SPLoRAMultiheadAttention",
]


class LowRankMatrix(nn.Module):
    """The learned factors of a SPLoRA adapter: ``rows`` A (1, r, in) and ``cols`` B (1, out, r).

    ``forward()`` returns B·A (out, in). The leading 1 and the 3-D kaiming init (fan_in = r·in) follow the
    library's ``LowRankMatrix`` (``sp_adapters/lora.py``) so that initial values are distributed as in the
    published runs.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: float = DEFAULT_RANK,
        init_range: float | None = DEFAULT_INIT_RANGE,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = resolve_rank(rank, out_features)
        self.init_range = init_range
        self.rows = nn.Parameter(torch.empty(1, self.rank, in_features, device=device, dtype=dtype))
        self.cols = nn.Parameter(torch.empty(1, out_features, self.rank, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A ~ kaiming_uniform_(a=√5), i.e. U(±1/√(r·in)); B ~ U(±init_range) (kaiming too if init_range is falsy)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.rows, a=math.sqrt(5))
        init_adapter_(self.cols, self.init_range)

    def forward(self) -> Tensor:
        return self.cols[0] @ self.rows[0]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class _SPLoRA(AdapterLayer):
    """What SPLoRA adds to a layer family: the low-rank adapter, its count and its constructor from a layer."""

    adapter: LowRankMatrix

    def _attach_adapter(self, init_range: float | None, rank: float = DEFAULT_RANK) -> None:
        self.adapter = LowRankMatrix(
            self._in_size, self._out_size, rank, init_range, device=self.weight.device, dtype=self.weight.dtype
        )
        self.rank = self.adapter.rank
        self.init_range = init_range

    def _adapter_count(self, n_in: int, n_out: int) -> int:
        return self.rank * (n_in + n_out)

    def _adapter_repr(self) -> str:
        return f"rank={self.rank}, init_range={self.init_range}"

    @classmethod
    def from_module(
        cls, layer: nn.Module, rank: float = DEFAULT_RANK, init_range: float | None = DEFAULT_INIT_RANGE
    ) -> _SPLoRA:
        """Adapt ``layer``: W cloned and frozen, b cloned as a new trainable Parameter, same device and dtype.

        Raises ``ValueError`` for kernels that are not square and odd (the converters catch it) and ``TypeError``
        for a layer of the wrong type.
        """
        return cls._build_from(layer, rank=rank, init_range=init_range)


class SPLoRALinear(_SPLoRA, LinearAdapter, nn.Linear):
    """nn.Linear with frozen W and a rank-r adapter: y = x(W + BA)ᵀ + b."""

    _plain = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: float = DEFAULT_RANK,
        init_range: float | None = DEFAULT_INIT_RANGE,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._freeze_base()
        self._attach_adapter(init_range, rank=rank)

    def forward(self, input: Tensor) -> Tensor:
        self._ensure_frozen()
        if self.training:
            # library v0.7 "low-memory" path: two thin matmuls, ΔW (Co×Ci) is never materialised
            low = F.linear(input, self.adapter.rows[0])
            return F.linear(input, self.weight, self.bias) + F.linear(low, self.adapter.cols[0])
        return F.linear(input, self.adapted_weight(), self.bias)


class _SPLoRAConv(_SPLoRA, ConvAdapter):
    """SPLoRA on a conv: B·A on the kernel's centre tap, a rank-r pointwise path."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        rank: float = DEFAULT_RANK,
        init_range: float | None = DEFAULT_INIT_RANGE,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            init_range=init_range,
            device=device,
            dtype=dtype,
            rank=rank,
        )


class SPLoRAConv1d(_SPLoRAConv, nn.Conv1d):
    """nn.Conv1d with frozen W and a rank-r centre-tap adapter."""

    _plain = nn.Conv1d


class SPLoRAConv2d(_SPLoRAConv, nn.Conv2d):
    """nn.Conv2d with frozen W and a rank-r centre-tap adapter."""

    _plain = nn.Conv2d


class SPLoRAConv3d(_SPLoRAConv, nn.Conv3d):
    """nn.Conv3d with frozen W and a rank-r centre-tap adapter."""

    _plain = nn.Conv3d


class SPLoRAMultiheadAttention(Adapter):
    """nn.MultiheadAttention whose q/k/v/out projections are SPLoRALinear layers (ViT only).

    q/k/v have no bias of their own: ``in_proj_bias`` (3E) holds theirs, as in torch. ``in_proj_weight`` is the
    concatenated adapted q/k/v weight when kdim = vdim = embed_dim. Forward takes and returns what
    nn.MultiheadAttention's does (batch_first, masks, need_weights, average_attn_weights, is_causal).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        rank: float = DEFAULT_RANK,
        init_range: float | None = DEFAULT_INIT_RANGE,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._same_dims = self.kdim == embed_dim and self.vdim == embed_dim
        # Always False: torch's fused fast paths (nn.TransformerEncoderLayer in eval under no_grad) test this flag
        # and then read out_proj.weight, the frozen base weight, skipping the adapters. False keeps them on the
        # general path, which calls our forward; readers then use q/k/v_proj_weight, which are adapted.
        self._qkv_same_embed_dim = False
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        self.init_range = init_range

        def proj(in_features: int, with_bias: bool) -> SPLoRALinear:
            return SPLoRALinear(in_features, embed_dim, with_bias, rank=rank, init_range=init_range, **factory)

        self.q_proj = proj(embed_dim, False)
        self.k_proj = proj(self.kdim, False)
        self.v_proj = proj(self.vdim, False)
        self.register_parameter("in_proj_bias", nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None)
        self.out_proj = proj(embed_dim, bias)
        for name in ("bias_k", "bias_v"):
            self.register_parameter(
                name, nn.Parameter(torch.empty(1, 1, embed_dim, **factory)) if add_bias_kv else None
            )
        self.rank = self.q_proj.rank
        self._reset_base()

    def _reset_base(self) -> None:
        """Base initialisation as nn.MultiheadAttention._reset_parameters (the adapters keep their own)."""
        with torch.no_grad():
            for p in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.xavier_uniform_(p.weight)
            if self.in_proj_bias is not None:
                nn.init.zeros_(self.in_proj_bias)
                nn.init.zeros_(self.out_proj.bias)
            if self.bias_k is not None:
                nn.init.xavier_normal_(self.bias_k)
                nn.init.xavier_normal_(self.bias_v)

    @property
    def projections(self) -> tuple[SPLoRALinear, SPLoRALinear, SPLoRALinear, SPLoRALinear]:
        return self.q_proj, self.k_proj, self.v_proj, self.out_proj

    @property
    def in_proj_weight(self) -> Tensor | None:
        """cat(q, k, v) adapted weights (3E, E), or None when kdim/vdim differ from embed_dim (as in torch)."""
        if not self._same_dims:
            return None
        return torch.cat([self.q_proj.adapted_weight(), self.k_proj.adapted_weight(), self.v_proj.adapted_weight()])

    @property
    def q_proj_weight(self) -> Tensor:
        """Adapted query projection (E, E)."""
        return self.q_proj.adapted_weight()

    @property
    def k_proj_weight(self) -> Tensor:
        """Adapted key projection (E, kdim)."""
        return self.k_proj.adapted_weight()

    @property
    def v_proj_weight(self) -> Tensor:
        """Adapted value projection (E, vdim)."""
        return self.v_proj.adapted_weight()

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        for p in self.projections:
            p._ensure_frozen()
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # torch's general (non-fused) path with separate projection weights covers every kdim/vdim case
        out, weights = F.multi_head_attention_forward(
            query,
            key,
            value,
            self.embed_dim,
            self.num_heads,
            None,
            self.in_proj_bias,
            self.bias_k,
            self.bias_v,
            self.add_zero_attn,
            self.dropout,
            self.out_proj.adapted_weight(),
            self.out_proj.bias,
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            use_separate_proj_weight=True,
            q_proj_weight=self.q_proj.adapted_weight(),
            k_proj_weight=self.k_proj.adapted_weight(),
            v_proj_weight=self.v_proj.adapted_weight(),
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        return out, weights

    @classmethod
    def from_module(
        cls, mha: nn.MultiheadAttention, rank: float = DEFAULT_RANK, init_range: float | None = DEFAULT_INIT_RANGE
    ) -> SPLoRAMultiheadAttention:
        """Adapt ``mha``: in_proj split into frozen q/k/v weights, out_proj frozen; biases cloned trainable."""
        if isinstance(mha, Adapter):
            raise TypeError(f"{type(mha).__name__} is already an adapter; fuse it (to_module()) before re-adapting")
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"{cls.__name__}.from_module needs an nn.MultiheadAttention, got {type(mha).__name__}")
        ref = mha.out_proj.weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            mha.dropout,
            mha.in_proj_bias is not None,
            mha.bias_k is not None,
            mha.add_zero_attn,
            mha.kdim,
            mha.vdim,
            mha.batch_first,
            rank=rank,
            init_range=init_range,
            device=ref.device,
            dtype=ref.dtype,
        )
        if mha._qkv_same_embed_dim:
            qkv = mha.in_proj_weight.chunk(3)
        else:
            qkv = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        with torch.no_grad():
            for dst, src in zip(new.projections, (*qkv, mha.out_proj.weight), strict=True):
                dst.weight.copy_(src)
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(mha, name) is not None:
                    getattr(new, name).copy_(getattr(mha, name))
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def to_module(self) -> nn.MultiheadAttention:
        """nn.MultiheadAttention with the adapted q/k/v/out weights and current biases."""
        ref = self.out_proj.weight
        mha = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            self.dropout,
            self.in_proj_bias is not None,
            self.bias_k is not None,
            self.add_zero_attn,
            self.kdim,
            self.vdim,
            self.batch_first,
            device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            if self._same_dims:
                mha.in_proj_weight.copy_(self.in_proj_weight)
            else:
                for dst, p in zip((mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight), self.projections):
                    dst.copy_(p.adapted_weight())
            mha.out_proj.weight.copy_(self.out_proj.adapted_weight())
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(self, name) is not None:
                    getattr(mha, name).copy_(getattr(self, name))
            if self.out_proj.bias is not None:
                mha.out_proj.bias.copy_(self.out_proj.bias)
        return mha.train(self.training)

    def learned_parameter_count(self, in_mask: Tensor | None = None, out_mask: Tensor | None = None) -> int:
        """ΔParams under masks on the module's embed_dim-wide interface: ``in_mask`` over the inputs (query, and
        key/value where kdim/vdim = embed_dim, i.e. self-attention), ``out_mask`` over out_proj's outputs. The
        inner head dims (q/k/v outputs, out_proj inputs) and the q/k/v and bias_k/v biases are counted in full."""
        count = self.q_proj.learned_parameter_count(in_mask, None)
        count += self.k_proj.learned_parameter_count(in_mask if self.kdim == self.embed_dim else None, None)
        count += self.v_proj.learned_parameter_count(in_mask if self.vdim == self.embed_dim else None, None)
        count += self.out_proj.learned_parameter_count(None, out_mask)
        extra = (self.in_proj_bias, self.bias_k, self.bias_v)
        return count + sum(p.numel() for p in extra if p is not None and p.requires_grad)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, vdim={self.vdim}, "
            f"batch_first={self.batch_first}, rank={self.rank}, init_range={self.init_range}"
        )
