"""Blocks that X3D and the 3D ResNets share, offline and continual, with facebookresearch/SlowFast's module names.

* ``ResBlock`` / ``CoResBlock``: SlowFast's ``ResBlock``, ``relu(shortcut(x) + branch2(x))``, and its continual twin
  (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks", arXiv 2106.00050), which delays the
  shortcut to meet ``branch2``'s output of the same frame. Same modules, same ``state_dict`` keys.
* ``Layers`` / ``CoLayers``: the layer constructors of an offline net and of its continual twin, so that one
  builder serves both and their structure and key names cannot drift apart.
* ``res_stage``: a stage of residual blocks ``pathway0_res{j}``, the first one strided and projected.
* ``bn3d``, ``init_weights``: SlowFast's BatchNorm settings and weight initialisation.
* ``ChannelLinear``: ``nn.Linear`` over the channels of a channels-first tensor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from modules import continual as co

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "ChannelLinear",
    "CoLayers",
    "CoResBlock",
    "Layers",
    "ResBlock",
    "bn3d",
    "init_weights",
    "res_stage",
]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def bn3d(channels: int) -> nn.BatchNorm3d:
    """SlowFast's ``BatchNorm3d`` (eps 1e-5, momentum 0.1)."""
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ChannelLinear(nn.Linear):
    """``nn.Linear`` over dim 1 of a channels-first ``(B, C, *rest)`` tensor: offline ``co.Linear(channel_dim=1)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


# --- residual blocks ------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """SlowFast's ``ResBlock``: ``relu(shortcut(x) + branch2(x))``, the shortcut being ``branch1_bn(branch1(x))``
    (a 1×1×1 projection) where the width or the resolution changes, else the identity."""

    _bn_pairs = (("branch1", "branch1_bn"),)  # the shortcut applies them in turn (modules.continual.fold_batchnorm)

    def __init__(
        self, branch2: nn.Module, branch1: nn.Module | None = None, branch1_bn: nn.Module | None = None
    ) -> None:
        super().__init__()
        if (branch1 is None) != (branch1_bn is None):
            raise ValueError("ResBlock: give both branch1 and branch1_bn, or neither")
        # Registration order = state_dict order = SlowFast's (branch1, branch1_bn, branch2).
        if branch1 is not None:
            self.branch1 = branch1
            self.branch1_bn = branch1_bn
        self.branch2 = branch2
        self.relu = nn.ReLU()

    @property
    def has_projection(self) -> bool:
        return "branch1" in self._modules

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.branch1_bn(self.branch1(x)) if self.has_projection else x
        return self.relu(shortcut + self.branch2(x))


class CoResBlock(co.ContainerModule, ResBlock):
    """Continual ``ResBlock``: the same modules and keys; the shortcut is delayed by ``branch2.delay`` steps (one
    per "same"-padded temporal conv) so that both summands belong to the same frame, and clip lengths match.

    The aligning ``co.Delay`` has no weights and is kept out of the module tree, as the core containers keep their
    aligners, so the module tree and the ``state_dict`` stay those of ``ResBlock``.
    """

    def __init__(
        self,
        branch2: nn.Module,
        branch1: nn.Module | None = None,
        branch1_bn: nn.Module | None = None,
        temporal_fill: str = "zeros",
    ) -> None:
        def as_co(module: nn.Module | None) -> nn.Module | None:
            return None if module is None else co.continual(module, temporal_fill=temporal_fill)

        super().__init__(as_co(branch2), as_co(branch1), as_co(branch1_bn))
        self.relu = co.continual(self.relu)
        if self.has_projection and self.branch1.delay != 0:
            raise ValueError(f"CoResBlock: branch1 must be pointwise in time, it delays by {self.branch1.delay}")
        if self.branch2.stride[0] != 1:
            raise ValueError(f"CoResBlock needs a temporal stride of 1 in branch2, got {self.branch2.stride[0]}")
        if self.branch2.delay != self.branch2.padding[0]:
            raise ValueError(
                f"CoResBlock: branch2 shortens the clip by {self.branch2.delay - self.branch2.padding[0]} frames; "
                "give its temporal convs 'same' padding (k // 2)"
            )
        # The Delay's fill never reaches an output (it emits only steps it was given), so `co.set_temporal_fill`,
        # which walks the module tree and does not see it, changes nothing that matters by skipping it.
        self._aligner = [co.Delay(self.branch2.delay, temporal_fill)]

    # --- temporal properties ---------------------------------------------------------------------------
    @property
    def delay(self) -> int:
        return self.branch2.delay

    @property
    def receptive_field(self) -> int:
        return self.branch2.receptive_field

    @property
    def padding(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.branch2.padding[0],)

    @property
    def stride(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.branch2.stride

    # --- state ---------------------------------------------------------------------------------------------
    def _stateful(self) -> list[nn.Module]:
        shortcut = [self.branch1] if self.has_projection else []
        return [*shortcut, self.branch2, self._aligner[0]]

    # --- stepping --------------------------------------------------------------------------------------
    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            shortcut = self.branch1_bn.forward_step(self.branch1.forward_step(step)) if self.has_projection else step
            residual = self._aligner[0].forward_step(shortcut)
            out = self.branch2.forward_step(step)
            # Both emit from step `delay` on (the Delay holds exactly branch2.delay steps).
            if out is None or residual is None:
                return None
            return self.relu.forward_step(out + residual)

        return self._snapshot_call(run, update_state)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            if self.has_projection:
                shortcut = self.branch1_bn.forward_steps(self.branch1.forward_steps(clip, pad_end=pad_end))
            else:
                shortcut = clip
            residual = self._aligner[0].forward_steps(shortcut, pad_end=pad_end)
            out = self.branch2.forward_steps(clip, pad_end=pad_end)
            if out is None or residual is None:
                return None
            return self.relu.forward_steps(out + residual)

        return self._snapshot_call(run, update_state)


# --- the two layer sets ------------------------------------------------------------------------------------
class Layers:
    """Constructors of the offline net; ``CoLayers`` swaps in the continual ones. A builder written against these
    serves a net and its continual twin, so the two cannot drift apart in structure or key names."""

    continual = False

    def __init__(self, temporal_fill: str = "zeros") -> None:
        self.temporal_fill = temporal_fill

    def conv(
        self,
        c_in: int,
        c_out: int,
        kernel: Sequence[int],
        stride: Sequence[int] = (1, 1, 1),
        *,
        groups: int = 1,
        bias: bool = False,
    ) -> nn.Module:
        """A ``Conv3d`` with "same" padding, in time too (it becomes delay when streaming); no bias by default, as
        a BatchNorm with its own shift follows every conv of these nets."""
        padding = tuple(k // 2 for k in kernel)
        return nn.Conv3d(c_in, c_out, tuple(kernel), stride=tuple(stride), padding=padding, groups=groups, bias=bias)

    def max_pool(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> nn.Module:
        return nn.MaxPool3d(kernel, stride, padding)

    def seq(self, **named: nn.Module) -> nn.Module:
        return nn.Sequential(OrderedDict(named))

    def block(self, branch2: nn.Module, branch1: nn.Module | None, branch1_bn: nn.Module | None) -> nn.Module:
        return ResBlock(branch2, branch1, branch1_bn)


class CoLayers(Layers):
    continual = True

    def conv(
        self,
        c_in: int,
        c_out: int,
        kernel: Sequence[int],
        stride: Sequence[int] = (1, 1, 1),
        *,
        groups: int = 1,
        bias: bool = False,
    ) -> nn.Module:
        padding = tuple(k // 2 for k in kernel)
        return co.Conv3d(
            c_in,
            c_out,
            tuple(kernel),
            stride=tuple(stride),
            padding=padding,
            groups=groups,
            bias=bias,
            temporal_fill=self.temporal_fill,
        )

    def max_pool(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> nn.Module:
        return co.MaxPool3d(kernel, stride, padding, temporal_fill=self.temporal_fill)

    def seq(self, **named: nn.Module) -> nn.Module:
        return co.Sequential(OrderedDict(named))  # converts BN, ReLU, SiLU, Dropout to per-frame modules

    def block(self, branch2: nn.Module, branch1: nn.Module | None, branch1_bn: nn.Module | None) -> nn.Module:
        return CoResBlock(branch2, branch1, branch1_bn, temporal_fill=self.temporal_fill)


#: branch2(block index, input channels, spatial stride) -> the named layers of a block's residual branch
Branch2 = Callable[[int, int, int], Mapping[str, nn.Module]]


def res_stage(
    layers: Layers, *, depth: int, dim_in: int, dim_out: int, spatial_stride: int, branch2: Branch2
) -> nn.Module:
    """``pathway0_res0`` .. ``pathway0_res{depth - 1}``: the first block takes ``dim_in`` channels and the stage's
    ``spatial_stride`` (SlowFast puts it in ``branch2``), the others ``dim_out`` and stride 1; a block gets the
    projection shortcut ``branch1`` (1×1×1, stride (1, s, s)) + ``branch1_bn`` where the width or resolution
    changes."""
    blocks: dict[str, nn.Module] = {}
    for j in range(depth):
        stride = spatial_stride if j == 0 else 1
        c_in = dim_in if j == 0 else dim_out
        residual = layers.seq(**branch2(j, c_in, stride))  # built first: the module order of SlowFast's builder
        project = c_in != dim_out or stride != 1
        branch1 = layers.conv(c_in, dim_out, (1, 1, 1), (1, stride, stride)) if project else None
        blocks[f"pathway0_res{j}"] = layers.block(residual, branch1, bn3d(dim_out) if project else None)
    return layers.seq(**blocks)


def init_weights(net: nn.Module, fc_std: float = 0.01, zero_init_final_bn: bool = True) -> None:
    """SlowFast's ``init_weights``: MSRA fill (kaiming normal, fan_out) for convs, N(0, fc_std) for the classifier,
    BN γ = 1, β = 0, and γ = 0 on each block's last BN (``branch2.c_bn``) so that every block starts as its
    shortcut."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            final = zero_init_final_bn and name.endswith("branch2.c_bn")
            nn.init.constant_(m.weight, 0.0 if final else 1.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=fc_std)
            nn.init.zeros_(m.bias)
