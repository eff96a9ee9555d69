"""What every Structured Pruning Adapter layer shares (Hedegaard et al., arXiv 2211.10155;
sp_adapters v0.7.1).

An adapter layer subclasses the torch layer it adapts, so ``isinstance(m, nn.Conv2d)`` still holds for pruning,
FLOP counting and shape logic. ``weight`` is the frozen base weight W; ``bias`` is trained directly (library
v0.6+); the learned ``adapter`` submodule gives a (Co, Ci/G) matrix ΔM. A Linear uses ΔW = ΔM; a conv puts ΔM on
its kernel's centre tap, i.e. a pointwise projection fused into the k×k kernel.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_INIT_RANGE",
    "DEFAULT_RANK",
    "Adapter",
    "AdapterLayer",
    "ConvAdapter",
    "LinearAdapter",
    "centre_tap",
    "init_adapter_",
    "kept",
    "resolve_rank",
]

#: Library defaults (sp_adapters v0.7.1). The SPA runs used init_range 1e-4 with ranks 8 and 32.
DEFAULT_RANK = 16
DEFAULT_INIT_RANGE = 1e-4


def resolve_rank(rank: float, out_features: int) -> int:
    """Rank of the low-rank adapter: an int r gives round(r); a float r < 1 is a fraction of the
    output size, round(Co·r), at least 1 (the library could round to 0, which leaves nothing to train)."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Real) or not rank > 0:
        raise ValueError(f"rank must be a positive int or a fraction in (0, 1) of the output size, got {rank!r}")
    if rank < 1:
        return max(1, round(out_features * float(rank)))
    return round(rank)


def init_adapter_(tensor: Tensor, init_range: float | None) -> None:
    """U(±init_range), or, for a falsy init_range, kaiming_uniform_(a=√5) as torch's Linear."""
    with torch.no_grad():
        if init_range:
            nn.init.uniform_(tensor, -init_range, init_range)
        else:
            nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


def centre_tap(matrix: Tensor, kernel_size: tuple[int, ...]) -> Tensor:
    """(Co, Ci/G) → (Co, Ci/G, *kernel_size), zero except the centre tap. Zero-padding keeps autograd
    simple, never writes into a leaf, and uses no tensor shapes, so torch.fx can trace through an adapter."""
    pad: list[int] = []
    for k in reversed(kernel_size):  # F.pad lists the last dim first
        pad += [k // 2, k // 2]
    return F.pad(matrix[(..., *(None,) * len(kernel_size))], pad)


def kept(mask: Tensor | None, size: int, what: str, groups: int = 1) -> int:
    """Number of kept channels of a mask over ``size`` channels (None keeps all).

    With ``groups`` > 1 a mask may also cover all ``size·groups`` input channels of a grouped conv: column j of
    the (Co, Ci/G) adapter matrix is learned while channel j of any group is kept.
    """
    if mask is None:
        return size
    flat = torch.as_tensor(mask).detach().flatten() != 0
    if flat.numel() == size:
        return int(flat.sum())
    if groups > 1 and flat.numel() == size * groups:
        return int(flat.reshape(groups, size).any(0).sum())
    sizes = f"{size}" if groups == 1 else f"{size} (Ci/G) or {size * groups} (Ci)"
    raise ValueError(f"{what} has {flat.numel()} entries; expected {sizes}")


class Adapter(nn.Module):
    """Marker base of every adapter module, layers and multi-head attention alike (see ``is_adapter``)."""

    rank: int | None
    init_range: float | None

    def to_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def learned_parameter_count(self, in_mask: Tensor | None = None, out_mask: Tensor | None = None) -> int:
        raise NotImplementedError  # pragma: no cover - abstract


class AdapterLayer(Adapter):
    """A Linear/ConvNd with frozen W, trainable b and an ``adapter`` giving ΔM (Co, Ci/G)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    adapter: nn.Module
    _plain: type[nn.Module]  # the torch layer this class adapts

    # The adapter kinds (SPLoRA, SPPaRA) define these three.
    def _attach_adapter(self, init_range: float | None, **kwargs: object) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def delta_matrix(self) -> Tensor:
        """ΔM = BA (SPLoRA) or P (SPPaRA), shape (Co, Ci/G)."""
        return self.adapter()

    def _adapter_count(self, n_in: int, n_out: int) -> int:
        raise NotImplementedError  # pragma: no cover - abstract

    # The layer families (Linear, ConvNd) define these.
    @property
    def _in_size(self) -> int:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def _out_size(self) -> int:
        raise NotImplementedError  # pragma: no cover - abstract

    _groups = 1

    def delta_weight(self) -> Tensor:
        """ΔW, the shape of ``weight``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _plain_layer(self) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - abstract

    # Shared behaviour.
    def _freeze_base(self) -> None:
        self.weight.requires_grad_(False)

    def _ensure_frozen(self) -> None:
        """W must stay frozen; undo a stray ``requires_grad_(True)`` loudly, as the library does."""
        # not self.weight: torch.fx would hand back a Proxy. torch.nn.utils.prune keeps W as weight_orig meanwhile.
        weight = self._parameters.get("weight", self._parameters.get("weight_orig"))
        if weight is not None and weight.requires_grad:
            warnings.warn(
                f"{type(self).__name__}.weight is the frozen base weight; setting requires_grad=False again "
                "(train the adapter and bias instead)",
                stacklevel=3,
            )
            weight.requires_grad_(False)

    def reset_parameters(self) -> None:
        super().reset_parameters()  # type: ignore[misc]
        # torch's __init__ calls this before the adapter exists
        adapter = self._modules.get("adapter")
        if adapter is not None:
            adapter.reset_parameters()

    def adapted_weight(self) -> Tensor:
        """W' = W + ΔW."""
        return self.weight + self.delta_weight()

    def learned_parameter_count(self, in_mask: Tensor | None = None, out_mask: Tensor | None = None) -> int:
        """ΔParams of this layer under channel masks: a pruned output channel removes its row of
        ΔM and its bias entry, a pruned input channel its column of ΔM. W is frozen and never counted.

        Masks are bool or 0/1 tensors over Ci/G (or Ci) and Co; None keeps every channel.
        """
        n_in = kept(in_mask, self._in_size, f"in_mask of {type(self).__name__}", self._groups)
        n_out = kept(out_mask, self._out_size, f"out_mask of {type(self).__name__}")
        bias = n_out if self.bias is not None and self.bias.requires_grad else 0
        return self._adapter_count(n_in, n_out) + bias

    def to_module(self) -> nn.Module:
        """The plain torch layer with weight = ``adapted_weight()`` exactly and the current bias."""
        plain = self._plain_layer()
        with torch.no_grad():
            plain.weight = nn.Parameter(self.adapted_weight().detach().clone())
            if self.bias is not None:
                plain.bias = nn.Parameter(self.bias.detach().clone())
        return plain.train(self.training)

    def _copy_base(self, layer: nn.Module) -> None:
        """Clone W (stays frozen) and b (a new trainable Parameter) from ``layer``."""
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if self.bias is not None:
                self.bias.copy_(layer.bias)
        self.train(layer.training)

    @classmethod
    def _check_source(cls, layer: nn.Module) -> None:
        if isinstance(layer, Adapter):
            raise TypeError(f"{type(layer).__name__} is already an adapter; fuse it (to_module()) before re-adapting")
        if not isinstance(layer, cls._plain):
            raise TypeError(f"{cls.__name__}.from_module needs an nn.{cls._plain.__name__}, got {layer!r:.200}")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._adapter_repr()}"

    def _adapter_repr(self) -> str:
        return f"init_range={self.init_range}"


class LinearAdapter(AdapterLayer):
    """Family methods for adapters of nn.Linear: ΔW = ΔM."""

    in_features: int
    out_features: int

    @property
    def _in_size(self) -> int:
        return self.in_features

    @property
    def _out_size(self) -> int:
        return self.out_features

    def delta_weight(self) -> Tensor:
        return self.delta_matrix()

    def forward(self, input: Tensor) -> Tensor:
        self._ensure_frozen()
        return F.linear(input, self.adapted_weight(), self.bias)

    def _plain_layer(self) -> nn.Module:
        return nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )

    @classmethod
    def _build_from(cls, layer: nn.Linear, **kwargs: object) -> LinearAdapter:
        cls._check_source(layer)
        new = cls(
            layer.in_features,
            layer.out_features,
            layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
            **kwargs,
        )
        new._copy_base(layer)
        return new


def _check_kernel(kernel_size: tuple[int, ...], what: str) -> None:
    if len(set(kernel_size)) != 1 or kernel_size[0] % 2 == 0:
        raise ValueError(
            f"{what}: kernel_size {tuple(kernel_size)} must have equal, odd sides for the adapter to sit on the "
            "kernel's centre tap"
        )


class ConvAdapter(AdapterLayer):
    """Family methods for adapters of nn.Conv1d/2d/3d: ΔW is ΔM on the centre tap.

    The output equals that of the base conv plus a parallel 1×1 conv with ΔM and the same stride and groups when
    padding = dilation·(k−1)/2 (every ResNet, VGG and EfficientNet conv).
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int

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
        init_range: float | None = DEFAULT_INIT_RANGE,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **adapter_kwargs: object,
    ) -> None:
        super().__init__(  # the torch conv, next in the MRO
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        _check_kernel(self.kernel_size, f"{type(self).__name__}({in_channels}, {out_channels})")
        self._freeze_base()
        self._attach_adapter(init_range, **adapter_kwargs)

    @property
    def _in_size(self) -> int:
        return self.in_channels // self.groups

    @property
    def _out_size(self) -> int:
        return self.out_channels

    @property
    def _groups(self) -> int:  # type: ignore[override]
        return self.groups

    def delta_weight(self) -> Tensor:
        return centre_tap(self.delta_matrix(), self.kernel_size)

    def forward(self, input: Tensor) -> Tensor:
        # one conv with W + ΔW: the library has no separate low-memory path for convs
        self._ensure_frozen()
        return self._conv_forward(input, self.adapted_weight(), self.bias)

    def _plain_layer(self) -> nn.Module:
        return self._plain(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
            self.padding_mode,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )

    @classmethod
    def _build_from(cls, layer: nn.Module, **kwargs: object) -> ConvAdapter:
        cls._check_source(layer)
        _check_kernel(layer.kernel_size, f"cannot adapt {layer!r}")
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
            **kwargs,
        )
        new._copy_base(layer)
        return new
