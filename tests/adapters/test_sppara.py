"""SPPaRA conv layers mirroring the library's tests (sp_adapters v0.7.1 ``tests/test_sppara.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.adapters import SPPaRAConv1d, SPPaRAConv2d, SPPaRAConv3d, trainable_parameter_count

pytestmark = pytest.mark.usefixtures("one_thread")

IN_MASK = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)  # 4 of 9 kept
OUT_MASK = torch.tensor([1, 0, 1, 0], dtype=torch.bool)  # 2 of 4 kept
CONVS = {1: (nn.Conv1d, SPPaRAConv1d), 2: (nn.Conv2d, SPPaRAConv2d), 3: (nn.Conv3d, SPPaRAConv3d)}


def adam_step(module: nn.Module, out: torch.Tensor) -> None:
    """One Adam step on an MSE loss against a random target."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad])
    opt.zero_grad()
    F.mse_loss(out, torch.randn_like(out)).backward()
    opt.step()


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_copies_trains_adapter_only_and_counts(nd: int) -> None:
    torch.manual_seed(0)
    conv_cls, sp_cls = CONVS[nd]
    bias = nd == 2
    conv = conv_cls(9, 4, kernel_size=3, bias=bias)
    sp = sp_cls.from_module(conv)
    assert isinstance(sp, conv_cls) and sp.adapter.weight.shape == (4, 9) and sp.rank is None
    assert list(sp.state_dict()) == ["weight", *(["bias"] if bias else []), "adapter.weight"]
    assert torch.equal(sp.weight, conv.weight) and not sp.weight.requires_grad
    if bias:
        assert torch.equal(sp.bias, conv.bias) and sp.bias.requires_grad
    p0 = sp.adapter.weight.clone()
    assert p0.abs().max() <= 1e-4  # U(±init_range)
    x = torch.randn(2, 9, *(7,) * nd)

    sp.weight.requires_grad_(True)
    with pytest.warns(UserWarning, match="frozen base weight"):
        out = sp(x)
    assert not sp.weight.requires_grad
    torch.testing.assert_close(out, conv(x), atol=1e-3, rtol=0)
    adapted = sp.adapted_weight()
    assert (adapted - conv.weight).abs().max() <= 1e-4 and not torch.equal(adapted, conv.weight)

    adam_step(sp, out)
    assert torch.equal(sp.weight, conv.weight)
    if bias:
        assert not torch.equal(sp.bias, conv.bias)
    assert not torch.equal(sp.adapter.weight, p0)

    # the library's test: n_in·n_out (+ n_out) = 4·2 (+2)
    assert sp.learned_parameter_count(IN_MASK, OUT_MASK) == 4 * 2 + (2 if bias else 0)
    assert sp.learned_parameter_count() == trainable_parameter_count(sp)

    fused = sp.to_module()
    assert type(fused) is conv_cls and torch.equal(fused.weight, sp.adapted_weight())
    if bias:
        assert torch.equal(fused.bias, sp.bias)
    torch.testing.assert_close(fused(x), sp(x), atol=1e-6, rtol=0)


def test_grouped_conv_count_and_centre_tap() -> None:
    torch.manual_seed(0)
    sp = SPPaRAConv2d.from_module(nn.Conv2d(10, 4, 3, groups=2), init_range=0.1)
    assert sp.adapter.weight.shape == (4, 5)
    in_mask = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    assert sp.learned_parameter_count(in_mask, OUT_MASK) == 3 * 2 + 2  # the library's test
    delta = sp.delta_weight()
    assert torch.equal(delta[:, :, 1, 1], sp.adapter.weight)
    delta[:, :, 1, 1] = 0
    assert not delta.any()


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_equals_parallel_pointwise_conv(nd: int) -> None:
    torch.manual_seed(0)
    sp = CONVS[nd][1](4, 6, 5, stride=2, padding=4, dilation=2, groups=2, init_range=0.1)
    x = torch.randn(2, 4, *(9,) * nd)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    base = sp._conv_forward(x, sp.weight, sp.bias)
    pointwise = conv(x, sp.adapter.weight.reshape(6, 2, *(1,) * nd), stride=2, groups=2)
    torch.testing.assert_close(sp(x), base + pointwise, atol=1e-5, rtol=1e-5)


def test_falsy_init_range_uses_kaiming_and_repr() -> None:
    torch.manual_seed(0)
    sp = SPPaRAConv2d(8, 30, 3, init_range=None)
    assert sp.adapter.weight.abs().max() <= 1 / math.sqrt(8) and sp.adapter.weight.abs().max() > 0.1
    assert "init_range=None" in repr(sp) and "ParallelMatrix(in_features=8, out_features=30)" in repr(sp)


def test_even_kernel_raises() -> None:
    with pytest.raises(ValueError, match=r"kernel_size \(2, 2\)"):
        SPPaRAConv2d.from_module(nn.Conv2d(3, 4, 2))


def test_float64() -> None:
    sp = SPPaRAConv1d(3, 4, 3, padding=1).to(torch.float64)
    assert sp.adapter.weight.dtype == torch.float64 and not sp.weight.requires_grad
    assert sp(torch.randn(1, 3, 5, dtype=torch.float64)).dtype == torch.float64
