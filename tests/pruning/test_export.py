"""export_pruned: the dense smaller net computes what the enforced-masked one does."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from modules.adapters import is_adapter, splora
from modules.nets import build
from modules.profiling import count_params
from modules.pruning import (
    ChannelGraph,
    ChannelMasks,
    apply_masks,
    export_keep,
    export_pruned,
    normalise,
    select,
)
from tests.pruning.helpers import ConvStack, ResidualNet, randomise

pytestmark = pytest.mark.usefixtures("one_thread")


def _prune_randomly(g: ChannelGraph, masks: ChannelMasks, n: int, steps: int, coupling: str = "none") -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        scores = {name: torch.rand(m.numel(), generator=gen) for name, m in masks.items()}
        masks.prune_many(select(normalise(scores, masks, "weight"), masks, n, coupling, graph=g))


def _masked_and_exported(net: nn.Module, x: Tensor, n: int, coupling: str = "none") -> tuple:
    g = ChannelGraph(net, x[:1])
    masks = ChannelMasks.from_graph(g)
    _prune_randomly(g, masks, n, steps=3, coupling=coupling)
    apply_masks(net, g, masks)
    net.eval()
    exported = export_pruned(net, g, masks)
    with torch.no_grad():
        return g, masks, net(x), exported(x), exported


def test_residual_net_with_downsample() -> None:
    torch.manual_seed(0)
    net = randomise(ResidualNet())
    x = torch.randn(3, 3, 8, 8)
    g, masks, ref, out, exported = _masked_and_exported(net, x, n=6)
    assert torch.allclose(out, ref, atol=1e-5)
    keep = export_keep(g, masks)
    modules = dict(exported.named_modules())
    for name in g.layers:
        assert modules[name].out_channels == int(keep[name].sum()), name
    # a group keeps the union of its members' channels; a lone conv loses exactly its pruned ones
    union = masks["layer2.conv2"] | masks["layer2.downsample.0"]
    assert exported.layer2.conv2.out_channels == exported.layer2.downsample[0].out_channels == int(union.sum())
    assert exported.layer2.bn2.num_features == int(union.sum()) == exported.fc.in_features
    assert exported.layer2.conv1.out_channels == int(masks["layer2.conv1"].sum()) < 12
    assert exported.layer2.conv2.in_channels == exported.layer2.conv1.out_channels
    before, after = count_params(net), count_params(exported)
    assert after < before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in exported.modules())
    assert any(m._forward_hooks for m in net.modules())  # the source net keeps its masks


def test_group_coupling_removes_residual_channels() -> None:
    torch.manual_seed(0)
    net = randomise(ResidualNet())
    x = torch.randn(3, 3, 8, 8)
    _, masks, ref, out, exported = _masked_and_exported(net, x, n=6, coupling="group")
    assert torch.allclose(out, ref, atol=1e-5)
    kept = int(masks["conv1"].sum())
    assert kept < 8 and exported.conv1.out_channels == exported.layer1.conv2.out_channels == kept
    assert exported.layer1.conv1.in_channels == kept


def test_net_with_adapters() -> None:
    torch.manual_seed(0)
    net = randomise(splora(ResidualNet(), rank=2, init_range=0.1, types=(nn.Conv2d,)))
    x = torch.randn(3, 3, 8, 8)
    _, _, ref, out, exported = _masked_and_exported(net, x, n=6)
    assert torch.allclose(out, ref, atol=1e-5)
    assert not any(is_adapter(m) for m in exported.modules())
    assert count_params(exported) < count_params(net)


def test_chain_with_conv_bias_and_flattened_head() -> None:
    """A conv with bias and a Linear over a flattened C×H×W map: the head loses whole per-channel blocks."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 3),
    )
    randomise(net)
    x = torch.randn(2, 3, 8, 8)
    _, masks, ref, out, exported = _masked_and_exported(net, x, n=2)
    assert torch.allclose(out, ref, atol=1e-5)
    assert exported[7].in_features == int(masks["3"].sum()) * 16 < 80


def test_pinned_convs_stay_whole_and_exact() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
            self.c, self.fc = nn.Conv2d(8, 4, 1), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.c(torch.cat([self.a(x), self.b(x)], 1).relu()).mean((2, 3)))

    torch.manual_seed(0)
    net = Cat()
    x = torch.randn(2, 3, 6, 6)
    g, masks, ref, out, exported = _masked_and_exported(net, x, n=2)
    assert g.pinned == {"a", "b"} and masks.num_pruned == 6
    assert torch.allclose(out, ref, atol=1e-5)
    assert (exported.a.out_channels, exported.b.out_channels, exported.c.in_channels) == (4, 4, 8)
    assert exported.c.out_channels == int(masks["c"].sum())


def test_resnet_tiny_export_and_parameter_counts() -> None:
    torch.manual_seed(0)
    net = randomise(build("resnet_tiny", num_classes=10))
    x = torch.randn(2, 3, 16, 16)
    _, masks, ref, out, exported = _masked_and_exported(net, x, n=120, coupling="group")
    assert masks.num_pruned == 360 and torch.allclose(out, ref, atol=1e-5)
    before, after = count_params(net), count_params(exported)
    assert after < 0.5 * before  # half the filters gone, and with them most of the k×k weights


def test_conv_stack_train_mode_forward_still_runs() -> None:
    net = randomise(ConvStack())
    x = torch.randn(2, 3, 8, 8)
    _, _, _, _, exported = _masked_and_exported(net, x, n=3)
    exported.train()
    assert exported(x).shape == (2, 5)
