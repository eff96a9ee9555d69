"""Public names mean one thing: the renamed functions keep a deprecated alias for one release that warns and
gives the same result as the new name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules import adapters, pruning
from modules.profiling import count_params
from modules.pruning import counting


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_masked_flops_alias_warns_and_agrees() -> None:
    net = _net()
    net(torch.zeros(1, 3, 8, 8))
    with pytest.warns(DeprecationWarning, match="renamed masked_flops"):
        old = counting.count_flops(net, input_size=(1, 3, 8, 8), convention="legacy")
    assert old == counting.masked_flops(net, input_size=(1, 3, 8, 8), convention="legacy") > 0


def test_count_parameters_alias_warns_and_agrees() -> None:
    net = _net()
    net(torch.zeros(1, 3, 8, 8))
    with pytest.warns(DeprecationWarning, match="modules.profiling.count_params"):
        assert pruning.count_parameters(net) == count_params(net) == 3 * 4 * 9 + 4 + 8 + 4 * 36 * 2 + 2


def test_adapter_fuse_alias_warns_and_agrees() -> None:
    torch.manual_seed(0)
    net = adapters.splora(nn.Sequential(nn.Conv2d(3, 4, 3)), rank=2).eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(DeprecationWarning, match="renamed merge_adapters"):
        old = adapters.fuse(net)
    assert not adapters.adapter_layers(old)
    torch.testing.assert_close(old(x), adapters.merge_adapters(net)(x))
