"""Torchvision image classifiers of the SPA study (Hedegaard et al., arXiv 2211.10155), with their heads resized.

* **VGG-16** (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR
  2015): torchvision's ``vgg16``; the last classifier layer is replaced by a ``Linear(4096, num_classes)``.
  ``freeze_features=True`` freezes every ``features`` parameter, as the published VGG runs did (fine-pruning then
  trains the classifier only; SPLoRA adapters on the frozen convs still train). 13 convs, 4,224 filters.
* **ViT-B/16** (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021): torchvision's ``vit_b_16``; the
  head ``heads.head`` is replaced by a ``Linear(768, num_classes)``. ``image_size`` other than 224 with
  ``pretrained=True`` interpolates the position embedding (torchvision's ``interpolate_embeddings``).

``pretrained=True`` loads torchvision's ``IMAGENET1K_V1`` weights through its weights API; offline, without the file
in the torch hub cache, it raises a ``RuntimeError`` that names the file and where to put it
(``torchvision_model``, shared with ``resnet2d``).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import get_model_weights

from ..registry import InputSpec, register_model

__all__ = ["torchvision_model", "vgg16", "vit_b16"]


# ImageNet classifiers (the study fed them 224 x 224 images); image models have no time axis.
_IMAGENET_INPUT = InputSpec(crop_size=224, clip_length=None, normalisation="imagenet")


def _offline_error(arch: str, weights: Any, error: Exception) -> RuntimeError:
    """The error for weights that could not be fetched: which file, and where to put it by hand."""
    url: str = weights.url
    target = f"{torch.hub.get_dir()}/checkpoints/{url.rsplit('/', 1)[-1]}"
    return RuntimeError(
        f"could not load torchvision {arch} weights {weights} ({type(error).__name__}: {error}). Without network "
        f"access, download {url} on a machine that has it and copy the file to {target} (the torch hub cache, "
        "torch.hub.get_dir(); set TORCH_HOME to move it), then build again."
    )


def torchvision_model(arch: str, *, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``torchvision.models.<arch>(weights=IMAGENET1K_V1 if pretrained else None, **kwargs)``.

    Raises ``RuntimeError`` naming the weights file and the torch hub cache directory when the weights cannot be
    downloaded (offline) and are not cached.
    """
    builder = getattr(torchvision.models, arch)
    if not pretrained:
        return builder(weights=None, **kwargs)
    weights = get_model_weights(arch).IMAGENET1K_V1
    try:
        return builder(weights=weights, **kwargs)
    except OSError as error:  # urllib's URLError/HTTPError and socket errors are OSErrors
        raise _offline_error(arch, weights, error) from error


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


@register_model("vgg16", input_spec=_IMAGENET_INPUT)
def vgg16(*, num_classes: int = 10, pretrained: bool = False, freeze_features: bool = False) -> nn.Module:
    """Torchvision VGG-16 (without BN) with ``classifier[6]`` replaced by ``Linear(4096, num_classes)``.

    ``freeze_features`` sets ``requires_grad=False`` on all ``features`` parameters (as the published runs did).
    Its ``AdaptiveAvgPool2d((7, 7))`` lets it run on inputs from 32×32 up (the study used 224×224).
    """
    net = torchvision_model("vgg16", pretrained=pretrained)
    last = net.classifier[-1]
    net.classifier[-1] = nn.Linear(last.in_features, num_classes)
    if freeze_features:
        _freeze(net.features)
    return net


@register_model("vit_b16", input_spec=_IMAGENET_INPUT)
def vit_b16(*, num_classes: int = 10, pretrained: bool = False, image_size: int = 224) -> nn.Module:
    """Torchvision ViT-B/16 with ``heads.head`` replaced by ``Linear(768, num_classes)``.

    ``image_size`` must be a multiple of 16. With ``pretrained=True`` and ``image_size != 224`` the ImageNet
    weights (trained at 224) are loaded with the position embedding interpolated to the new patch grid.
    """
    if image_size % 16:
        raise ValueError(f"vit_b16 needs image_size divisible by the patch size 16, got {image_size}")
    if pretrained and image_size != 224:
        from torchvision.models.vision_transformer import interpolate_embeddings

        state = torchvision_model("vit_b_16", pretrained=True).state_dict()
        net = torchvision_model("vit_b_16", pretrained=False, image_size=image_size)
        net.load_state_dict(interpolate_embeddings(image_size, 16, state))
    else:
        net = torchvision_model("vit_b_16", pretrained=pretrained, image_size=image_size)
    net.heads.head = nn.Linear(net.heads.head.in_features, num_classes)
    return net
