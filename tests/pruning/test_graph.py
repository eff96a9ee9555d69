"""ChannelGraph: producers, BN after each conv, residual groups, pinned convs, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.adapters import SPLoRAConv2d, splora
from modules.nets import build
from modules.pruning import ChannelGraph, ChannelMasks, GraphError, PruneSchedule, apply_masks, input_mask
from tests.pruning.helpers import Block, ConvStack, ResidualNet

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 8, 8)


def test_chain_producers_norms_and_shapes() -> None:
    g = ChannelGraph(ConvStack(), X)
    assert list(g.layers) == ["conv1", "conv2", "conv3"]
    assert g.producers == {"conv1": [], "conv2": ["conv1"], "conv3": ["conv2"], "fc": ["conv3"]}
    assert g.norm_after == {"conv1": "bn1", "conv2": "bn2", "conv3": None}
    assert g.norms == {"bn1": ["conv1"], "bn2": ["conv2"]}
    assert g.groups == [] and g.pinned == set()
    assert g.in_shapes["conv2"] == (1, 8, 8, 8) and g.out_shapes["conv3"] == (1, 4, 8, 8)
    assert g.in_shapes["fc"] == (1, 4)


def test_residual_groups_and_summed_producers() -> None:
    g = ChannelGraph(ResidualNet(), X)
    assert list(g.layers) == [
        "conv1",
        "layer1.conv1",
        "layer1.conv2",
        "layer2.conv1",
        "layer2.conv2",
        "layer2.downsample.0",
    ]
    # `out += x` (iadd) couples the stem with layer1.conv2; the downsample sum couples layer2's pair
    assert g.groups == [["conv1", "layer1.conv2"], ["layer2.conv2", "layer2.downsample.0"]]
    assert g.producers["layer1.conv1"] == ["conv1"]
    assert g.producers["layer2.conv1"] == ["conv1", "layer1.conv2"]
    assert g.producers["layer2.downsample.0"] == ["conv1", "layer1.conv2"]
    assert g.producers["fc"] == ["layer2.conv2", "layer2.downsample.0"]
    assert g.norm_after["layer2.downsample.0"] == "layer2.downsample.1"
    assert g.group_of("layer2.conv2") == ["layer2.conv2", "layer2.downsample.0"]
    assert g.group_of("layer2.conv1") == ["layer2.conv1"]


def test_input_mask_is_or_of_producers() -> None:
    g = ChannelGraph(ResidualNet(), X)
    masks = ChannelMasks.from_graph(g)
    masks.prune("conv1", [0, 1])
    masks.prune("layer1.conv2", [1, 2])
    assert input_mask(g, masks, "conv1") is None
    assert input_mask(g, masks, "layer1.conv1").tolist() == [False, False] + [True] * 6
    assert input_mask(g, masks, "layer2.conv1").tolist() == [True, False] + [True] * 6  # only 1 is gone from both


class _Head(nn.Module):
    """Ends in a Linear over pooled channels, so only the op under test can pin."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def head(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))


class _Cat(_Head):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.c(torch.cat([self.a(x), self.b(x)], 1)))


class _AddConstant(_Head):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.b(self.a(x) + 1.0))


class _Grouped(_Head):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.dw, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.b(F.relu(self.dw(self.a(x)))))


class _ConvOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(F.relu(self.a(x)))


@pytest.mark.parametrize(
    ("net", "pinned", "producers"),
    [
        (_Cat(), {"a", "b"}, {"c": [], "fc": ["c"]}),
        (_AddConstant(), {"a"}, {"b": [], "fc": ["b"]}),
        (_Grouped(), {"a", "dw"}, {"dw": ["a"], "b": ["dw"], "fc": ["b"]}),
        (_ConvOut(), {"b"}, {"b": ["a"]}),
    ],
)
def test_untracked_ops_pin_their_convs(net: nn.Module, pinned: set[str], producers: dict[str, list[str]]) -> None:
    g = ChannelGraph(net, X)
    assert g.pinned == pinned
    for name, expected in producers.items():
        assert g.producers[name] == expected


def test_flatten_of_spatial_feeds_linear() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(16, 3))
    g = ChannelGraph(net, X)
    assert g.producers["4"] == ["0"] and g.in_shapes["4"] == (1, 16) and g.pinned == set()


def test_untraceable_net_raises() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(GraphError, match="cannot trace Branchy"):
        ChannelGraph(Branchy(), X)


def test_conv_called_twice_raises() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(self.conv(x))

    with pytest.raises(GraphError, match="called more than once"):
        ChannelGraph(Twice(), X)


def test_adapters_are_leaves_and_stale_graph_raises() -> None:
    net = ResidualNet()
    plain = ChannelGraph(net, X)
    adapted = splora(net, rank=2, types=(nn.Conv2d,))
    g = ChannelGraph(adapted, X)
    assert all(isinstance(m, SPLoRAConv2d) for m in g.layers.values())
    assert g.producers == plain.producers and g.groups == plain.groups
    splora(net, rank=2, types=(nn.Conv2d,), inplace=True)  # the traced layers are replaced
    with pytest.raises(GraphError, match="stale"):
        apply_masks(net, plain, ChannelMasks.from_graph(plain))


def test_tracing_leaves_bn_statistics_alone() -> None:
    net = Block(3, 4, stride=2).train()
    before = net.bn1.running_mean.clone()
    ChannelGraph(net, torch.randn(2, 3, 8, 8) + 3)
    assert torch.equal(net.bn1.running_mean, before) and net.training


def test_resnet50_filter_count_and_schedule() -> None:
    g = ChannelGraph(build("resnet50_cifar", num_classes=10), X)
    masks = ChannelMasks.from_graph(g)
    assert len(g.layers) == 53 and masks.total == 26_560  # as published
    # each stage's downsample and every block's conv3 are summed into one residual stream
    assert [len(group) for group in g.groups] == [1 + 3, 1 + 4, 1 + 6, 1 + 3]
    schedule = PruneSchedule.from_masks(masks)
    assert (schedule.per_step, schedule.num_steps) == (1328, 19)


def test_resnet_tiny_graph() -> None:
    g = ChannelGraph(build("resnet_tiny", num_classes=10), X)
    assert sum(m.out_channels for m in g.layers.values()) == 16 + 2 * 16 + 3 * 32 + 3 * 64 + 3 * 128
    assert g.producers["fc"] == ["layer4.0.conv2", "layer4.0.downsample.0"]
    assert g.pinned == set()
