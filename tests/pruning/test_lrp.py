"""LRP rules on hand-computed cases, conservation through a residual block, unsupported nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.pruning import ChannelGraph, LRPError, conv_relevance
from modules.pruning.lrp import conv_zbeta, conv_zplus, eps_rule, folded_weight, sum_eps
from tests.pruning.helpers import Block, randomise

pytestmark = pytest.mark.usefixtures("one_thread")


def _conv1x1(x: Tensor, w: Tensor) -> Tensor:
    return F.conv2d(x, w)


def _pixel(*values: float) -> Tensor:
    """(1, C, 1, 1) from C channel values."""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)


def test_zplus_on_two_channels() -> None:
    w = torch.tensor([[1.0, -2.0], [3.0, 1.0]], dtype=torch.float64).view(2, 2, 1, 1)
    r_out = _pixel(0.6, 0.4)
    # x ≥ 0: z0 = 1·1 = 1 (−2·2 is negative), z1 = 3·1 + 1·2 = 5
    # R0 = 1·(1·0.6/1 + 3·0.4/5) = 0.84, R1 = 2·(1·0.4/5) = 0.16
    r_in = conv_zplus(_pixel(1.0, 2.0), w, _conv1x1, r_out)
    assert r_in.flatten().tolist() == pytest.approx([0.84, 0.16])
    # x1 < 0 pairs with W⁻: z0 = 1·1 + (−2)(−2) = 5, z1 = 3·1 = 3; R0 = 0.6/5 + 3·0.4/3 = 0.52, R1 = −2·(−2)·0.6/5
    r_in = conv_zplus(_pixel(1.0, -2.0), w, _conv1x1, r_out)
    assert r_in.flatten().tolist() == pytest.approx([0.52, 0.48])


def test_zbeta_with_bounds() -> None:
    w = torch.tensor([[1.0, -1.0]], dtype=torch.float64).view(1, 2, 1, 1)
    # z = (0.5 − 1) − (l·1) − (h·(−1)) = −0.5 + 1 + 2 = 2.5 for l = −1, h = 2; s = 1/2.5 = 0.4
    # R = x·Ws − l·W⁺s − h·W⁻s = [0.2 + 0.4, −0.4 + 0.8]
    r_in = conv_zbeta(_pixel(0.5, 1.0), w, _conv1x1, _pixel(1.0), low=-1.0, high=2.0)
    assert r_in.flatten().tolist() == pytest.approx([0.6, 0.4], abs=1e-6)


def test_eps_rule_on_linear() -> None:
    lin = nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        lin.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # z = [3.5, −0.5]; R_out = [1, 0]: R_in = x ⊙ Wᵀ(R/z) = [1/3.5, 2/3.5] (the bias keeps 0.5/3.5)
    r_in = eps_rule(x, lin, torch.tensor([[1.0, 0.0]], dtype=torch.float64), eps=1e-6)
    assert r_in.flatten().tolist() == pytest.approx([1 / 3.5, 2 / 3.5], rel=1e-5)


def test_sum_eps() -> None:
    a, b = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 3.0])
    ra, rb = sum_eps([a, b], torch.tensor([0.3, 0.6]))
    assert ra.tolist() == pytest.approx([0.2, -0.3], abs=1e-6) and rb.tolist() == pytest.approx([0.1, 0.9], abs=1e-6)


def test_folded_weight() -> None:
    conv, bn = nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -3.0]).view(2, 1, 1, 1))
        bn.weight.copy_(torch.tensor([1.5, -0.5]))
        bn.running_var.copy_(torch.tensor([3.0, 0.0]))
    bn.eps = 1.0
    assert folded_weight(conv, bn).flatten().tolist() == pytest.approx([2 * 1.5 / 2, -3 * -0.5 / 1])


class _ResNetLike(nn.Module):
    """Stem (zβ) → a BasicBlock with downsample → pool → Linear without bias, for conservation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.block = Block(4, 6, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def test_relevance_is_conserved_through_a_residual_block() -> None:
    """Exact conservation needs every relevant z⁺ to be z itself: non-negative conv weights and bias-free BNs
    (with biases, z⁺ ignores them and the relevance that BN β gave a position is dropped, as in the original)."""
    torch.manual_seed(0)
    net = randomise(_ResNetLike()).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
            elif isinstance(m, nn.BatchNorm2d):
                m.bias.zero_()
                m.running_mean.zero_()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64).clamp(-2.1, 2.6)
    g = ChannelGraph(net, x[:1])
    target = torch.tensor([0, 1, 2])
    res = conv_relevance(g, x, target)
    assert set(res.convs) == set(g.layers)
    # z⁺ and zβ ignore biases and the ε-rules (sum, pool, bias-free linear) conserve: Σ R stays 1 per sample
    total = {name: r.sum((1, 2, 3)) for name, r in res.convs.items()}
    branches = total["block.conv2"] + total["block.downsample.0"]
    assert branches.tolist() == pytest.approx([1.0] * 3, abs=1e-4)  # the residual sum splits R, loses none
    assert total["block.conv1"].tolist() == pytest.approx(total["block.conv2"].tolist(), abs=1e-4)
    assert total["conv1"].tolist() == pytest.approx([1.0] * 3, abs=1e-4)  # both branches meet again
    assert res.input.sum((1, 2, 3)).tolist() == pytest.approx([1.0] * 3, abs=1e-4)
    assert (total["block.downsample.0"].abs() > 1e-3).all()  # a real split, not all down one branch


def test_lrp_score_on_tiny_net_by_hand() -> None:
    """conv_a (first, zβ) → ReLU → conv_b (z⁺) → ReLU → flatten → Linear (ε), all 1×1 on one pixel."""
    net = nn.Sequential(
        nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Flatten()
    )
    net.append(nn.Linear(2, 2)).double()
    wa = torch.tensor([[1.0, 0.5], [-1.0, 2.0]], dtype=torch.float64)
    wb = torch.tensor([[2.0, -1.0], [0.5, 1.0]], dtype=torch.float64)
    v, bias = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64), torch.tensor([0.1, -0.2])
    with torch.no_grad():
        net[0].weight.copy_(wa.view(2, 2, 1, 1))
        net[2].weight.copy_(wb.view(2, 2, 1, 1))
        net[5].weight.copy_(v)
        net[5].bias.copy_(bias)
    x = torch.tensor([[1.0, 0.4]], dtype=torch.float64)
    h1 = (x @ wa.T).clamp(min=0)  # [1.2, -0.2 → 0]
    h2 = (h1 @ wb.T).clamp(min=0)  # [2.4, 0.6]
    z = h2 @ v.T + bias  # target 1: z1 = 0.5·2.4 + 2·0.6 − 0.2 = 2.2
    r_b = h2 * v[1] / z[0, 1]  # ε-rule from one-hot(1): [1.2/2.2, 1.2/2.2]
    zp = h1 @ wb.clamp(min=0).T  # z⁺ at conv_b: [2.4, 0.6]
    r_a = h1 * ((r_b / zp) @ wb.clamp(min=0))
    g = ChannelGraph(net, x.view(1, 2, 1, 1))
    res = conv_relevance(g, x.view(1, 2, 1, 1), torch.tensor([1]))
    assert res.convs["2"].flatten().tolist() == pytest.approx(r_b.flatten().tolist(), rel=1e-5)
    assert res.convs["0"].flatten().tolist() == pytest.approx(r_a.flatten().tolist(), rel=1e-5)


def test_unsupported_ops_raise() -> None:
    class Concat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))

    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(LRPError, match="'cat'"):
        conv_relevance(ChannelGraph(Concat(), x[:1]), x, torch.tensor([0, 1]))
