"""2-D ResNets of the SPA study (Hedegaard et al., arXiv 2211.10155): torchvision keys and counts, stems, torchvision
weights."""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from modules import nets
from modules.nets import build, load_pretrained
from modules.nets.image.resnet2d import ResNet, resnet18_cifar, resnet50_cifar

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["resnet18", "resnet50", "resnet18_cifar", "resnet50_cifar", "resnet_tiny"]


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_all_builders_are_registered() -> None:
    assert set(NAMES) <= set(nets.list_models())


@pytest.mark.parametrize(("ours", "theirs"), [("resnet50", "resnet50"), ("resnet18", "resnet18")])
def test_keys_shapes_and_parameter_count_equal_torchvision(ours: str, theirs: str) -> None:
    with torch.device("meta"):  # shapes and counts only: skip the random initialisation
        net = build(ours, num_classes=10)
        reference = getattr(torchvision.models, theirs)(num_classes=10)
    ours_state, their_state = net.state_dict(), reference.state_dict()
    assert list(ours_state) == list(their_state)
    assert all(ours_state[k].shape == v.shape for k, v in their_state.items())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in reference.parameters())


def test_resnet50_cifar_has_the_published_filter_count() -> None:
    with torch.device("meta"):
        net = resnet50_cifar(num_classes=10)
    convs = _convs(net)
    assert len(convs) == 53
    assert sum(c.out_channels for c in convs) == 26_560  # T, the filters of the published schedule
    assert sum(c.weight.numel() for c in convs) == 23_447_232  # the conv part of Table 1's 23,520,842
    assert sum(p.numel() for p in net.parameters()) == 23_520_842


def test_relu_is_functional_and_there_is_no_maxpool() -> None:
    """The legacy FLOP counter counts nn.ReLU and nn.MaxPool2d modules; the published net has neither."""
    for name in ("resnet50", "resnet18_cifar", "resnet_tiny"):
        with torch.device("meta"):
            kinds = {type(m) for m in build(name).modules()}
        assert nn.ReLU not in kinds and nn.MaxPool2d not in kinds, name


def _layer_sizes(net: nn.Module, side: int) -> dict[str, tuple[int, ...]]:
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(net, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape)))
        for n in ("layer1", "layer4")
    ]
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, side, side))
    for h in hooks:
        h.remove()
    sizes["out"] = tuple(out.shape)
    return sizes


def test_stems() -> None:
    cifar, imagenet = build("resnet18_cifar"), build("resnet18")
    assert (cifar.conv1.kernel_size, cifar.conv1.stride, cifar.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride, imagenet.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    # no maxpool: the CIFAR stem keeps 32×32 into layer1, the ImageNet stem halves once
    assert _layer_sizes(cifar, 32) == {"layer1": (2, 64, 32, 32), "layer4": (2, 512, 4, 4), "out": (2, 10)}
    assert _layer_sizes(imagenet, 64) == {"layer1": (2, 64, 32, 32), "layer4": (2, 512, 4, 4), "out": (2, 10)}


def test_resnet_tiny_shape_and_widths() -> None:
    net = build("resnet_tiny", num_classes=7)
    assert [c.out_channels for c in _convs(net)] == [16, 16, 16, 32, 32, 32, 64, 64, 64, 128, 128, 128]
    assert _layer_sizes(net, 32) == {"layer1": (2, 16, 32, 32), "layer4": (2, 128, 4, 4), "out": (2, 7)}
    wide = build("resnet_tiny", widths=(8, 8, 16, 16), blocks=(2, 1, 1, 1))
    assert wide.fc.in_features == 16 and len(wide.layer1) == 2
    with pytest.raises(ValueError, match="no pretrained weights"):
        build("resnet_tiny", pretrained=True)


def test_wrong_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="stem"):
        ResNet(nn.Module, (1, 1, 1, 1), stem="cifar10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no argument"):
        build("resnet50_cifar", classes=10)


@pytest.fixture(scope="module")
def torchvision_resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A randomly initialised torchvision ResNet-50 state dict saved as a plain ``.pth`` (torchvision's format)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def test_torchvision_checkpoint_converts_to_the_cifar_stem(torchvision_resnet50) -> None:
    path, state = torchvision_resnet50
    net = resnet50_cifar(num_classes=10)
    with pytest.warns(UserWarning, match="fc"):
        report = load_pretrained(net, path)
    assert report.converter == "torchvision-resnet"
    assert report.missing == ["fc.bias", "fc.weight"]  # dropped: 1000 classes vs 10
    assert report.unexpected == []
    assert len(report.loaded) == len(state) - 2
    own = net.state_dict()
    torch.testing.assert_close(own["conv1.weight"], F.avg_pool2d(state["conv1.weight"], 2), rtol=0, atol=0)
    assert own["conv1.weight"].shape == (64, 3, 3, 3)
    for key in ("layer3.2.conv2.weight", "layer4.0.downsample.0.weight", "layer2.1.bn3.running_var"):
        assert torch.equal(own[key], state[key]), key
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_build_with_weights_keeps_a_matching_fc(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build("resnet_tiny", num_classes=7).state_dict()
    torch.save(state, tmp_path / "tiny.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing or unexpected key would warn
        net = build("resnet_tiny", num_classes=7, weights=str(tmp_path / "tiny.pth"))
    for key, value in state.items():
        assert torch.equal(net.state_dict()[key], value), key


def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private, empty torch hub cache and no network: a download attempt raises URLError."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return hub


def test_pretrained_offline_names_the_file_and_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hub = _offline_hub(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError) as error:
        resnet18_cifar(pretrained=True)
    message = str(error.value)
    assert "IMAGENET1K_V1" in message and "resnet18-f37072fd.pth" in message
    assert str(hub / "checkpoints") in message and "TORCH_HOME" in message


def test_pretrained_from_the_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``pretrained=True`` goes through torchvision's weights API: a file in the hub cache is used as is."""
    hub = _offline_hub(monkeypatch, tmp_path)
    filename = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(state, hub / "checkpoints" / filename)
    torch.manual_seed(2)
    net = resnet18_cifar(num_classes=10, pretrained=True)
    own = net.state_dict()
    assert torch.equal(own["conv1.weight"], F.avg_pool2d(state["conv1.weight"], 2))
    assert torch.equal(own["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert net.fc.out_features == 10  # a fresh head
