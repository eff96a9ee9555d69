"""2-D ResNets of the SPA study (Hedegaard et al., arXiv 2211.10155), as the published code built them.

ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) in the kuangliu/pytorch-cifar style
that ``channel-spa-experiments`` used, with torchvision's ``state_dict`` key names (``conv1``, ``bn1``,
``layerX.Y.convZ``/``bnZ``, ``layerX.Y.downsample.0``/``.1``, ``fc``) so torchvision ImageNet weights load 1:1:

* ReLU is applied functionally (``F.relu``). The published FLOP counter counts ``nn.ReLU`` modules only, so
  this is what makes it give the published 1,304.7M for ResNet-50 on CIFAR.
* **No maxpool**, with either stem. Stem ``cifar``: 3×3 stride 1 padding 1 (32×32 inputs); ``imagenet``: 7×7
  stride 2 padding 3 (224×224 inputs).
* Bottleneck strides sit on the 3×3 ``conv2`` (torchvision's v1.5); a block gets a ``downsample`` (1×1 conv + BN)
  when its stride or width changes. Adaptive average pool, then ``fc``.

``pretrained=True`` loads torchvision's IMAGENET1K_V1 weights without ``fc``; the ``cifar`` stem gets
``avg_pool2d(W_7x7, 2)`` (7×7 → 3×3), as the published code did. The same conversion is registered as the
``torchvision-resnet`` checkpoint format, so ``build("resnet50_cifar", weights="resnet50-0676ba61.pth")`` works.

ResNet-50 with the CIFAR stem: 53 convs, T = 26,560 filters, 23,520,842 parameters with 10 classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import InputSpec, register_model
from ..weights import register_converter, unwrap_state_dict
from .torchvision_nets import torchvision_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "convert_torchvision_resnet",
    "resnet18",
    "resnet18_cifar",
    "resnet50",
    "resnet50_cifar",
    "resnet_tiny",
]


# Image models: no time axis (clip_length None). The digits default normalises with each task's own statistics.
_IMAGENET_INPUT = InputSpec(crop_size=224, clip_length=None, normalisation="imagenet")
_CIFAR_INPUT = InputSpec(crop_size=32, clip_length=None, normalisation="cifar")
_DIGITS_INPUT = InputSpec(crop_size=8, clip_length=None, normalisation=None)

log = logging.getLogger(__name__)

Stem = Literal["cifar", "imagenet"]


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (1×1 conv + BN) where the identity does not fit, else ``None``."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 convs (stride on the first) and a shortcut; ``expansion`` = 1."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(c_in, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, torchvision v1.5) → 1×1 expand to ``4·planes``, and a shortcut."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = _downsample(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """Stem (``conv1``, ``bn1``, ReLU; no maxpool) → ``layer1..4`` (strides 1, 2, 2, 2) → avg pool → ``fc``.

    ``widths`` are the per-stage ``planes`` (64, 128, 256, 512 for the standard nets); the stem has ``widths[0]``
    channels; a stage's output has ``planes · block.expansion``.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks: Sequence[int],
        *,
        num_classes: int = 10,
        stem: Stem = "cifar",
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet has 4 stages: got blocks={tuple(blocks)}, widths={tuple(widths)}")
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"unknown ResNet stem {stem!r}; use 'cifar' (3×3 stride 1) or 'imagenet' (7×7 stride 2)")
        self.stem = stem
        self.bn1 = nn.BatchNorm2d(widths[0])
        c_in = widths[0]
        for index, (depth, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if index == 0 else 2
            layer = []
            for i in range(depth):
                layer.append(block(c_in, planes, stride if i == 0 else 1))
                c_in = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Torchvision's initialisation: He (fan-out) for convs, BN γ = 1, β = 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images → ``(B, num_classes)`` logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


# --- torchvision weights ----------------------------------------------------------------------------------------
def _accepts_torchvision(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    if not isinstance(net, ResNet):
        return False
    state = unwrap_state_dict(raw)
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def convert_torchvision_resnet(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """A torchvision ResNet state dict in ``net``'s shapes: a 7×7 stem becomes ``avg_pool2d(W, 2)`` (3×3) for the
    CIFAR stem, and ``fc`` is dropped when its class count differs from ``net``'s (logged)."""
    state = {k: torch.as_tensor(v) for k, v in unwrap_state_dict(raw).items()}
    stem = state["conv1.weight"]
    if isinstance(net, ResNet) and net.conv1.kernel_size == (3, 3) and stem.shape[-2:] == (7, 7):
        state["conv1.weight"] = F.avg_pool2d(stem, 2)  # kernel 2, stride 2: 7×7 → 3×3, as the published code
    fc = state.get("fc.weight")
    if fc is not None and isinstance(net, ResNet) and fc.shape != net.fc.weight.shape:
        log.warning(
            "dropping the checkpoint's fc (%d classes) for a new fc with %d classes",
            fc.shape[0],
            net.fc.out_features,
        )
        state.pop("fc.weight")
        state.pop("fc.bias", None)
    return state


register_converter("torchvision-resnet", _accepts_torchvision, convert_torchvision_resnet)


def _load_imagenet(net: ResNet, arch: str) -> None:
    """Torchvision IMAGENET1K_V1 weights of ``arch`` into ``net``, without ``fc``."""
    state = torchvision_model(arch, pretrained=True).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state = convert_torchvision_resnet(net, state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise RuntimeError(f"torchvision {arch} weights do not fit: missing {missing}, unexpected {unexpected}")


def _resnet(
    arch: str,
    block: type[BasicBlock | Bottleneck],
    blocks: Sequence[int],
    *,
    stem: Stem,
    num_classes: int,
    pretrained: bool,
) -> ResNet:
    net = ResNet(block, blocks, num_classes=num_classes, stem=stem)
    if pretrained:
        _load_imagenet(net, arch)
    return net


@register_model("resnet18", input_spec=_IMAGENET_INPUT)
def resnet18(*, num_classes: int = 10, pretrained: bool = False) -> ResNet:
    """ResNet-18 with the ImageNet 7×7 stride-2 stem (no maxpool), for 224×224 inputs."""
    return _resnet(
        "resnet18", BasicBlock, (2, 2, 2, 2), stem="imagenet", num_classes=num_classes, pretrained=pretrained
    )


@register_model("resnet50", input_spec=_IMAGENET_INPUT)
def resnet50(*, num_classes: int = 10, pretrained: bool = False) -> ResNet:
    """ResNet-50 with the ImageNet 7×7 stride-2 stem (no maxpool), for 224×224 inputs (Flowers, Cats & Dogs)."""
    return _resnet(
        "resnet50", Bottleneck, (3, 4, 6, 3), stem="imagenet", num_classes=num_classes, pretrained=pretrained
    )


@register_model("resnet18_cifar", input_spec=_CIFAR_INPUT)
def resnet18_cifar(*, num_classes: int = 10, pretrained: bool = False) -> ResNet:
    """ResNet-18 with the CIFAR 3×3 stride-1 stem, for 32×32 inputs (the SPLoRA rank/init ablation)."""
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), stem="cifar", num_classes=num_classes, pretrained=pretrained)


@register_model("resnet50_cifar", input_spec=_CIFAR_INPUT)
def resnet50_cifar(*, num_classes: int = 10, pretrained: bool = False) -> ResNet:
    """ResNet-50 with the CIFAR 3×3 stride-1 stem, for 32×32 inputs (Table 1's CIFAR-10 column)."""
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), stem="cifar", num_classes=num_classes, pretrained=pretrained)


@register_model("resnet_tiny", input_spec=_DIGITS_INPUT)
def resnet_tiny(
    *,
    num_classes: int = 10,
    pretrained: bool = False,
    widths: Sequence[int] = (16, 32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1, 1),
) -> ResNet:
    """A CPU-sized ResNet (CIFAR stem, BasicBlock, one block per stage, widths 16/32/64/128) for the digits
    default. There are no pretrained weights for it."""
    if pretrained:
        raise ValueError("resnet_tiny has no pretrained weights; use pretrained=False (or resnet18_cifar)")
    return ResNet(BasicBlock, tuple(blocks), num_classes=num_classes, stem="cifar", widths=tuple(widths))
