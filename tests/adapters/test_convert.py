"""Conversion of networks to SPLoRA/SPPaRA and fusion back to plain layers (sp_adapters v0.7.1 and its tests)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from modules.adapters import (
    DEFAULT_INIT_RANGE,
    SPLoRAConv1d,
    SPLoRAConv2d,
    SPLoRALinear,
    SPLoRAMultiheadAttention,
    SPPaRAConv1d,
    SPPaRAConv2d,
    adapter_layers,
    is_adapter,
    merge_adapters,
    splora,
    sppara,
    trainable_parameter_count,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class MLP(nn.Module):
    """The library's conversion test net: 784 → 512 → 10."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(28 * 28, 512), nn.ReLU())
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.seq(x.flatten(1)))


def small_cnn() -> nn.Sequential:
    """Conv-BN-ReLU ×2 + Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_fractional_rank_on_mlp() -> None:
    torch.manual_seed(0)
    net = MLP()
    anet = splora(net, rank=1 / 8)
    assert anet.seq[0].rank == round(512 / 8) == 64 and anet.fc2.rank == round(10 / 8) == 1
    assert type(net.seq[0]) is nn.Linear and type(net.fc2) is nn.Linear  # the original is untouched
    assert isinstance(anet.seq[0], SPLoRALinear) and isinstance(anet.fc2, SPLoRALinear)
    assert torch.equal(net.seq[0].weight, anet.seq[0].weight)
    adapted = anet.seq[0].adapted_weight()
    torch.testing.assert_close(adapted, net.seq[0].weight, atol=DEFAULT_INIT_RANGE + 1e-9, rtol=0)
    assert not torch.equal(adapted, net.seq[0].weight)


def test_sppara_touches_convs_only() -> None:
    net = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(8, 2))
    anet = sppara(net)
    assert isinstance(anet[0], SPPaRAConv1d) and type(anet[2]) is nn.Linear
    assert torch.equal(anet[2].weight, net[2].weight) and anet[2].weight.requires_grad
    assert list(adapter_layers(anet)) == ["0"]


def test_unconvertible_layers_stay_with_one_warning() -> None:
    net = nn.Sequential()
    net.add_module("patch", nn.Conv2d(3, 8, 16, stride=16))  # ViT's patch embedding
    net.add_module("odd", nn.Conv2d(8, 8, 3, padding=1))
    net.add_module("wide", nn.Conv2d(8, 8, (1, 3), padding=(0, 1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anet = splora(net, 2, types=(nn.Conv2d,))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "splora: left 2 layer(s)" in message and "patch" in message and "(16, 16)" in message and "wide" in message
    assert type(anet.patch) is nn.Conv2d and type(anet.wide) is nn.Conv2d and isinstance(anet.odd, SPLoRAConv2d)
    x = torch.randn(1, 3, 32, 32)
    assert anet(x).shape == net(x).shape


def test_types_are_exact_and_adapters_never_rewrapped() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2), nn.MultiheadAttention(8, 2))
    convs_only = splora(net, 2, types=(nn.Conv2d,))
    assert isinstance(convs_only[0], SPLoRAConv2d) and type(convs_only[2]) is nn.Linear
    # MultiheadAttention's out_proj is a Linear subclass: types=(nn.Linear,) must not reach into it
    linear_only = splora(net, 2, types=(nn.Linear,))
    assert type(linear_only[3]) is nn.MultiheadAttention and not is_adapter(linear_only[3].out_proj)
    twice = splora(splora(net, 2), 4)
    assert twice[0].rank == 2 and type(twice[0].adapter).__name__ == "LowRankMatrix"
    assert isinstance(twice[3], SPLoRAMultiheadAttention) and twice[3].q_proj.rank == 2
    assert list(adapter_layers(twice)) == ["0", "2", "3"]  # MHA's inner projections are not listed again
    with pytest.raises(ValueError, match="cannot adapt BatchNorm2d"):
        splora(net, 2, types=(nn.BatchNorm2d,))
    with pytest.raises(ValueError, match="cannot adapt Linear"):
        sppara(net, types=(nn.Linear,))


def test_deep_copy_inplace_root_and_sharing() -> None:
    net = small_cnn()
    copied = splora(net, 2)
    assert copied is not net and type(net[0]) is nn.Conv2d and copied[1] is not net[1]
    same = splora(net, 2, inplace=True)
    assert same is net and isinstance(net[0], SPLoRAConv2d) and isinstance(net[8], SPLoRALinear)
    root = splora(nn.Conv1d(2, 3, 3), 1)
    assert isinstance(root, SPLoRAConv1d)
    shared = nn.Linear(4, 4)
    tied = splora(nn.Sequential(shared, nn.ReLU(), shared), 2)
    assert tied[0] is tied[2] and isinstance(tied[0], SPLoRALinear)


@pytest.mark.parametrize("method", ["splora", "sppara"])
def test_fuse_small_cnn_gives_equal_outputs(method: str) -> None:
    base = small_cnn().eval()
    anet = splora(base, 2, init_range=0.05) if method == "splora" else sppara(base, init_range=0.05)
    anet.eval()
    n_adapters = len(adapter_layers(anet))
    assert n_adapters == (3 if method == "splora" else 2)  # sppara leaves the Linear
    x = torch.randn(4, 3, 8, 8)
    fused = merge_adapters(anet)
    assert not adapter_layers(fused) and not any(is_adapter(m) for m in fused.modules())
    assert [type(m) for m in fused] == [type(m) for m in base]
    assert len(adapter_layers(anet)) == n_adapters  # fuse copies unless inplace
    with torch.no_grad():
        out = anet(x)
        torch.testing.assert_close(fused(x), out, atol=1e-6, rtol=0)
        assert not torch.allclose(out, base(x), atol=1e-3)  # the adapters changed the function
    in_place = merge_adapters(anet, inplace=True)
    assert in_place is anet and not adapter_layers(anet)


def test_counts_and_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    anet = splora(small_cnn(), 2, types=(nn.Conv2d,))
    learned = sum(m.learned_parameter_count() for m in adapter_layers(anet).values())
    assert learned == 2 * (3 + 8) + 2 * (8 + 16)
    bn_and_head = 2 * 8 + 2 * 16 + 16 * 10 + 10  # BN γ,β and the head train in full, as in the CNN runs
    assert trainable_parameter_count(anet) == learned + bn_and_head
    keys = list(anet.state_dict())
    assert keys[:3] == ["0.weight", "0.adapter.rows", "0.adapter.cols"] and "8.weight" in keys
    twin = splora(small_cnn(), 2, types=(nn.Conv2d,))
    torch.manual_seed(1)
    for p in anet.parameters():
        with torch.no_grad():
            p.add_(0.01 * torch.randn_like(p))
    twin.load_state_dict(anet.state_dict())
    x = torch.randn(2, 3, 8, 8)
    anet.eval(), twin.eval()
    assert torch.equal(twin(x), anet(x))


def test_converted_net_moves_to_float64() -> None:
    base = small_cnn().eval()
    anet = sppara(splora(base, 2, types=(nn.Linear,)), init_range=1e-4).to(torch.float64).eval()
    assert all(p.dtype == torch.float64 for p in anet.parameters())
    assert all(not m.weight.requires_grad for m in adapter_layers(anet).values())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out = anet(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, base.to(torch.float64)(x), atol=1e-3, rtol=0)
    assert isinstance(anet[0], SPPaRAConv2d) and isinstance(anet[8], SPLoRALinear)


def test_resnet50_cifar_counts_match_table_1() -> None:
    # Table 1 of arXiv 2211.10155: ResNet-50 with the CIFAR 3×3 stem and 10 classes; BN and head train in full.
    # Built on the meta device: the counts need shapes only.
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.resnet50(num_classes=10)
        net.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    assert trainable_parameter_count(net) == 23_520_842  # fine-tuning
    bn_and_head = 53_120 + 20_490
    for rank, conv_sum, total in [(32, 1_570_912, 1_644_522), (8, 392_728, 466_338)]:
        anet = splora(net, rank, types=(nn.Conv2d,))
        assert sum(m.learned_parameter_count() for m in adapter_layers(anet).values()) == conv_sum
        assert trainable_parameter_count(anet) == conv_sum + bn_and_head == total
    assert trainable_parameter_count(sppara(net)) == 13_385_920 + bn_and_head == 13_459_530


def test_adapted_net_traces_with_torch_fx() -> None:
    # the pruning graph traces networks with torch.fx; an adapter conv must not break a plain trace
    anet = splora(small_cnn(), 2, init_range=0.05).eval()
    traced = torch.fx.symbolic_trace(anet)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(traced(x), anet(x), atol=1e-6, rtol=0)
