"""Multiply-accumulates a call executes, counted from the aten ops it dispatches (``count_macs``).

Conv/matmul-type ops are counted by the rules in ``_MAC_RULES``; element-wise ops, normalisation, pooling and
softmax are free, as in fvcore and the X3D paper (Feichtenhofer, CVPR 2020, Table 3). Papers in this field call
MACs "FLOPs"; so do we: ``gflops = MACs / 1e9``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["MacCounter", "count_macs", "countable"]

aten = torch.ops.aten


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _conv_macs(args: tuple, out: Tensor) -> int:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups).
    # Each output element of a regular conv takes (C_in / groups) * prod(kernel) MACs: weight.shape[1:].
    # A transposed conv scatters each input element over (C_out / groups) * prod(kernel) outputs.
    x, w, transposed = args[0], args[1], args[6]
    per_element = _numel(w.shape[1:])
    return (x.numel() if transposed else out.numel()) * per_element


def _sdpa_macs(args: tuple, out: Any) -> int:
    # q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev): Q·Kᵀ is L·S·E and A·V is L·S·Ev per batch and head.
    # Masked (causal) entries are counted too: dense attention, as the papers' formulas.
    q, k, v = args[0], args[1], args[2]
    batch_heads = _numel(q.shape[:-2])
    return batch_heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _native_mha_macs(args: tuple, out: Any) -> int:
    # _native_multi_head_attention(query (B, L, E), key (B, S, E), value, embed_dim, num_heads, ...): the
    # fused fast path of nn.MultiheadAttention. In-projection of q (L·E²) and k, v (2·S·E²), attention
    # (2·L·S·E over all heads) and out-projection (L·E²).
    q, k = args[0], args[1]
    b, length, e = q.shape
    s = k.shape[1]
    return b * (2 * length * e * e + 2 * s * e * e + 2 * length * s * e)


#: MACs of each counted op, from its arguments and output. mm (n,k)@(k,m): n·k·m; bmm: b·n·k·m;
#: addmm/baddbmm: the product only (the bias add is element-wise); mv/addmv: n·k; dot: n.
_MAC_RULES: dict[Any, Callable[[tuple, Any], int]] = {
    aten.mm.default: lambda a, o: a[0].shape[0] * a[0].shape[1] * a[1].shape[1],
    aten.addmm.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    aten._addmm_activation.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    aten.bmm.default: lambda a, o: a[0].shape[0] * a[0].shape[1] * a[0].shape[2] * a[1].shape[2],
    aten.baddbmm.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[1].shape[2] * a[2].shape[2],
    aten.mv.default: lambda a, o: a[0].numel(),
    aten.addmv.default: lambda a, o: a[1].numel(),
    aten.dot.default: lambda a, o: a[0].numel(),
    aten.convolution.default: _conv_macs,
    aten._convolution.default: _conv_macs,
    aten._scaled_dot_product_flash_attention.default: _sdpa_macs,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa_macs,
    aten._scaled_dot_product_efficient_attention.default: _sdpa_macs,
    aten._scaled_dot_product_cudnn_attention.default: _sdpa_macs,
    aten._native_multi_head_attention.default: _native_mha_macs,
}

#: Fused ops whose MACs we cannot see; counting fails loudly rather than under-count.
_UNCOUNTABLE = {aten._transformer_encoder_layer_fwd.default}


class MacCounter(TorchDispatchMode):
    """Sums the MACs of the conv/matmul-type aten ops executed inside the context; ``by_op`` splits them."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _UNCOUNTABLE:
            raise NotImplementedError(
                f"count_macs cannot see inside the fused op {func}; disable the fast path "
                "(torch.backends.mha.set_fastpath_enabled(False)) while counting"
            )
        out = func(*args, **kwargs)
        rule = _MAC_RULES.get(func)
        if rule is not None:
            self.by_op[str(func.overloadpacket.__name__)] += int(rule(args, out))
        return out


@contextmanager
def countable() -> Any:
    # Inside inference_mode, composite ops such as aten.linear reach the dispatch mode undecomposed and their
    # parts (addmm, ...) are never seen; plain no_grad decomposes them. The MHA fast path is a fused kernel.
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(False):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """MACs executed by ``fn(*args, **kwargs)`` (conv/matmul-type aten ops; see ``_MAC_RULES``)."""
    with countable(), MacCounter() as counter:
        fn(*args, **kwargs)
    return counter.total
