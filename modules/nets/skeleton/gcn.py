"""The spatial units of the skeleton nets: they mix joints within each frame (``(N, C, T, V)`` in and out).

* ``GraphConvolution`` (ST-GCN; Yan et al., AAAI 2018): per partition ``k``, ``x·(A_k ⊙ M_k)`` then a 1×1 conv,
  summed; BN (γ initialised to 1e-6), a GCN residual (1×1 conv + BN where the width changes), ReLU.
* ``AdaptiveGraphConvolution`` (2s-AGCN; Shi et al., CVPR 2019): ``A_k + B_k + C_k`` with the data-dependent
  ``C_k = softmax_v(θ_k(x)ᵀ φ_k(x) / (c_inter·T))`` taken over all the frames of a call.
* ``FrameAdaptiveGraphConvolution`` (AGCN*, continual-skeletons ``models/a_gcn_mod``): ``C_k`` per frame,
  ``softmax_w(θ_k(x_t)ᵀ φ_k(x_t) / c_inter)``; ``defective_contraction=True`` reproduces the original's
  ``einsum("nctv,nvwt->nctv")`` (spec B7), which sums ``A_k + B_k + C_k`` over ``w`` instead of aggregating joints.
* ``GcnUnitAttention`` (S-TR; Plizzari, Cannici & Matteucci, "Skeleton-based action recognition via
  spatial and temporal transformer networks", CVIU 2021; continual-skeletons ``models/s_tr``): spatial
  self-attention per frame, 8 heads, d_k = C_out/4, d_v = C_out, an input BatchNorm over (C·V), a skip where
  C_in == C_out, then BN and ReLU. Its ``A`` is a trainable parameter that the forward never reads (it is part
  of the original's parameter count and state dict).

Key names are those of the original code (``graph_attn``, ``A``, ``g_conv.i``, ``a_conv.i``, ``b_conv.i``,
``gcn_residual.{0,1}``, ``bn``, ``data_bn``, ``attention_conv.{qkv_conv,attn_out}``). Every unit is local in time
except ``AdaptiveGraphConvolution`` with ``per_frame=False``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdaptiveGraphConvolution",
    "FrameAdaptiveGraphConvolution",
    "GcnUnitAttention",
    "GraphConvolution",
    "SpatialAttention",
    "init_weights",
]

NUM_SUBSETS = 3  # spatial-configuration partitions


def init_weights(module: nn.Module, bs: float = 1.0) -> None:
    """continual-skeletons ``models/utils.py``: convs get zero bias and kaiming-normal (fan_out) weights when
    ``bs == 1``, else N(0, 2/(numel·bs)); BatchNorm γ = ``bs``, β = 0; Linear N(0, 2/bs)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        nn.init.zeros_(module.bias)
        if bs == 1:
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        else:
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (module.weight.numel() * bs)))
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.constant_(module.weight, bs)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / bs))


def _gcn_residual(in_channels: int, out_channels: int, bn_momentum: float) -> nn.Module | None:
    if in_channels == out_channels:
        return None  # the identity (the original's ``lambda x: x``, which has no keys)
    residual = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels, momentum=bn_momentum)
    )
    init_weights(residual[0])
    init_weights(residual[1])
    return residual


class GraphConvolution(nn.Module):
    """ST-GCN's spatial graph convolution (module docstring). ``A``: ``(3, V, V)`` partitions (``graphs``)."""

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.graph_attn = nn.Parameter(torch.ones_like(A))  # learnable edge importance, initialised to 1
        self.register_buffer("A", A.clone())  # fixed partitions; a buffer, so no optimiser touches it
        self.g_conv = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(NUM_SUBSETS))
        for conv in self.g_conv:
            init_weights(conv, bs=NUM_SUBSETS)
        self.gcn_residual = _gcn_residual(in_channels, out_channels, bn_momentum)
        self.bn = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        init_weights(self.bn, bs=1e-6)  # the unit starts close to its residual
        self.relu = nn.ReLU()

    def _graph(self) -> Tensor:
        return self.A * self.graph_attn

    def _aggregate(self, x: Tensor) -> Tensor:
        n, c, t, v = x.shape
        a = self._graph()
        out = None
        for i, conv in enumerate(self.g_conv):
            z = conv(torch.matmul(x.reshape(n, c * t, v), a[i]).view(n, c, t, v))
            out = z if out is None else out + z
        return out

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self._aggregate(x))
        y = y + (x if self.gcn_residual is None else self.gcn_residual(x))
        return self.relu(y)


class _AdaptiveBase(GraphConvolution):
    """Adds θ (``a_conv``) and φ (``b_conv``), 1×1 convs to ``c_inter = C_out / 4`` channels per partition."""

    def __init__(
        self, in_channels: int, out_channels: int, A: Tensor, bn_momentum: float = 0.1, coff_embedding: int = 4
    ) -> None:
        super().__init__(in_channels, out_channels, A, bn_momentum)
        self.inter_c = out_channels // coff_embedding
        self.a_conv = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(NUM_SUBSETS))
        self.b_conv = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(NUM_SUBSETS))
        for conv in (*self.a_conv, *self.b_conv):
            init_weights(conv)
        self.soft = nn.Softmax(-2)

    def _graph(self) -> Tensor:
        return self.A + self.graph_attn  # additive B_k (AGCN), initialised to 1 as in the original


class AdaptiveGraphConvolution(_AdaptiveBase):
    """2s-AGCN's unit as in continual-skeletons ``models/a_gcn``: ``C_k`` from all ``T`` frames of the call
    (``softmax`` over the first joint axis, scaled by ``1/(c_inter·T)``).

    ``per_frame=True`` computes ``C_k`` of each frame from that frame alone (``T = 1``): what a continual step
    computes (CoAGCN), here for a whole clip, so that stepping can be checked exactly against a clip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        A: Tensor,
        bn_momentum: float = 0.1,
        coff_embedding: int = 4,
        per_frame: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, A, bn_momentum, coff_embedding)
        self.per_frame = per_frame

    def _aggregate(self, x: Tensor) -> Tensor:
        if not self.per_frame or x.shape[2] == 1:
            return self._aggregate_clip(x)
        n, c, t, v = x.shape
        frames = x.permute(0, 2, 1, 3).reshape(n * t, c, 1, v)  # each frame its own call
        out = self._aggregate_clip(frames)
        return out.view(n, t, -1, v).permute(0, 2, 1, 3)

    def _aggregate_clip(self, x: Tensor) -> Tensor:
        n, c, t, v = x.shape
        a = self._graph()
        out = None
        for i in range(NUM_SUBSETS):
            theta = self.a_conv[i](x).permute(0, 3, 1, 2).reshape(n, v, self.inter_c * t)
            phi = self.b_conv[i](x).view(n, self.inter_c * t, v)
            attention = self.soft(torch.matmul(theta, phi) / theta.shape[-1])  # (N, V, V), sums to 1 over dim 1
            z = self.g_conv[i](torch.matmul(x.reshape(n, c * t, v), attention + a[i]).view(n, c, t, v))
            out = z if out is None else out + z
        return out

    def extra_repr(self) -> str:
        return f"per_frame={self.per_frame}"


class FrameAdaptiveGraphConvolution(_AdaptiveBase):
    """AGCN*'s unit (continual-skeletons ``models/a_gcn_mod``): ``C_k`` per frame, softmax over the second joint
    axis, scaled by ``1/c_inter``. The vertex contraction is ``Σ_v x_v (A_k + B_k + C_k)[v, w]`` unless
    ``defective_contraction=True``: then, as the original's ``einsum("nctv,nvwt->nctv")``, the output at joint
    ``v`` is ``x_v · Σ_w (A_k + B_k + C_k)[v, w]`` (no spatial aggregation; θ and φ have no effect). The published
    AGCN* / CoAGCN* weights were trained with the defect."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        A: Tensor,
        bn_momentum: float = 0.1,
        coff_embedding: int = 4,
        defective_contraction: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, A, bn_momentum, coff_embedding)
        self.defective_contraction = defective_contraction

    def _aggregate(self, x: Tensor) -> Tensor:
        a = self._graph()
        contraction = "nctv,nvwt->nctv" if self.defective_contraction else "nctv,nvwt->nctw"
        out = None
        for i in range(NUM_SUBSETS):
            theta = self.a_conv[i](x).permute(0, 3, 1, 2)  # (N, V, c, T)
            phi = self.b_conv[i](x)  # (N, c, T, W)
            attention = self.soft(torch.einsum("nvct,nctw->nvwt", theta, phi) / self.inter_c)  # over w
            z = self.g_conv[i](torch.einsum(contraction, x, attention + a[i][None, :, :, None]))
            out = z if out is None else out + z
        return out

    def extra_repr(self) -> str:
        return f"defective_contraction={self.defective_contraction}"


class SpatialAttention(nn.Module):
    """Multi-head self-attention among the joints of each frame (S-TR's ``SpatialAttention`` with
    ``only_attention``, no relative encoding, no adjacency): one 1×1 conv gives q, k, v; ``attn_out`` mixes the
    heads. Drop-connect (p = 0.5 on the attention weights of each key joint, renormalised) in training only."""

    def __init__(self, in_channels: int, dk: int, dv: int, num_heads: int = 8, drop_connect: bool = True) -> None:
        super().__init__()
        if dk % num_heads or dv % num_heads:
            raise ValueError(f"dk={dk} and dv={dv} must be multiples of num_heads={num_heads}")
        self.dk, self.dv, self.num_heads, self.drop_connect = dk, dv, num_heads, drop_connect
        self.qkv_conv = nn.Conv2d(in_channels, 2 * dk + dv, 1)
        self.attn_out = nn.Conv2d(dv, dv, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, t, v = x.shape
        h = self.num_heads
        q, k, val = torch.split(self.qkv_conv(x), [self.dk, self.dk, self.dv], dim=1)
        q = q.reshape(n, h, self.dk // h, t, v) * (self.dk // h) ** -0.5
        k = k.reshape(n, h, self.dk // h, t, v)
        val = val.reshape(n, h, self.dv // h, t, v)
        weights = F.softmax(torch.einsum("nhdtv,nhdtw->nhtvw", q, k), dim=-1)
        if self.drop_connect and self.training:
            mask = torch.bernoulli(torch.full((n, h, t, 1, v), 0.5, device=x.device, dtype=x.dtype))
            weights = weights * mask
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-8)
        out = torch.einsum("nhtvw,nhdtw->nhdtv", weights, val).reshape(n, self.dv, t, v)
        return self.attn_out(out)


class GcnUnitAttention(nn.Module):
    """S-TR's spatial unit (module docstring); ``num_point`` = V. Its ``A`` is trainable and unused."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        A: Tensor,
        num_heads: int = 8,
        dk_factor: float = 0.25,
        drop_connect: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        num_point = A.shape[-1]
        self.data_bn = nn.BatchNorm1d(in_channels * num_point)
        self.bn = nn.BatchNorm2d(out_channels)
        self.A = nn.Parameter(A.clone())
        self.attention_conv = SpatialAttention(
            in_channels, int(out_channels * dk_factor), out_channels, num_heads, drop_connect
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        n, c, t, v = x.shape
        normed = self.data_bn(x.permute(0, 1, 3, 2).reshape(n, c * v, t)).view(n, c, v, t).permute(0, 1, 3, 2)
        y = self.attention_conv(normed)
        if self.in_channels == self.out_channels:
            y = y + x  # the skip takes the input before data_bn, as the original
        return self.relu(self.bn(y))
