"""Torchvision VGG-16 and ViT-B/16 wrappers of the SPA study (Hedegaard et al., arXiv 2211.10155).

Their random initialisation takes seconds per net on one CPU thread, so the fast tests build them on the ``meta``
device: structure, ``requires_grad`` and forward shapes are real, values are not computed.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from modules import nets
from modules.nets import build
from modules.nets.image import torchvision_nets

pytestmark = pytest.mark.usefixtures("one_thread")


META = torch.device("meta")


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    with META:
        return build("vgg16", num_classes=7, freeze_features=True)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    with META:
        return build("vit_b16", num_classes=5, image_size=32)  # 2×2 patches


def test_registered() -> None:
    assert {"vgg16", "vit_b16"} <= set(nets.list_models())


def test_vgg16_head_filters_and_frozen_features(vgg: nn.Module) -> None:
    head = vgg.classifier[-1]
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (4096, 7)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and sum(c.out_channels for c in convs) == 4_224  # as published
    assert not any(p.requires_grad for p in vgg.features.parameters())
    assert all(p.requires_grad for p in vgg.classifier.parameters())
    # everything but the head is torchvision's VGG-16
    with META:
        reference = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    assert {k: v.shape for k, v in vgg.state_dict().items() if not k.startswith("classifier.6")} == {
        k: s for k, s in reference.items() if not k.startswith("classifier.6")
    }
    with torch.no_grad():
        assert vgg.eval()(torch.empty(1, 3, 32, 32, device=META)).shape == (1, 7)  # adaptive pool: 32×32 runs


def test_vit_b16_head_and_shape(vit: nn.Module) -> None:
    assert (vit.heads.head.in_features, vit.heads.head.out_features) == (768, 5)
    assert vit.conv_proj.kernel_size == (16, 16) and len(vit.encoder.layers) == 12
    with torch.no_grad():
        assert vit.eval()(torch.empty(2, 3, 32, 32, device=META)).shape == (2, 5)


def test_vit_b16_rejects_image_sizes_off_the_patch_grid() -> None:
    with pytest.raises(ValueError, match="divisible by the patch size 16"):
        build("vit_b16", image_size=40)


def test_pretrained_offline_names_the_file_and_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError) as error, META:  # torchvision builds the net, then fetches the weights
        build("vgg16", pretrained=True)
    message = str(error.value)
    assert "vgg16" in message and "IMAGENET1K_V1" in message and "URLError" in message
    assert str(hub / "checkpoints" / "vgg16-397923af.pth") in message


@pytest.mark.slow
def test_vit_b16_pretrained_at_another_size_interpolates_the_position_embedding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 224-pixel ImageNet weights (random here, instead of a download) load into a 64-pixel ViT."""
    torch.manual_seed(0)
    source = torchvision.models.vit_b_16()
    real = torchvision_nets.torchvision_model

    def fake(arch: str, *, pretrained: bool, **kwargs: object) -> nn.Module:
        return source if pretrained else real(arch, pretrained=False, **kwargs)

    monkeypatch.setattr(torchvision_nets, "torchvision_model", fake)
    net = torchvision_nets.vit_b16(num_classes=3, pretrained=True, image_size=64)
    assert net.encoder.pos_embedding.shape == (1, 1 + 4 * 4, 768)
    assert torch.equal(net.encoder.pos_embedding[:, 0], source.encoder.pos_embedding[:, 0])  # the class token's
    assert torch.equal(net.encoder.layers[3].mlp[0].weight, source.encoder.layers[3].mlp[0].weight)
    assert net.heads.head.out_features == 3
