"""Criteria against hand/numpy computations, the per-layer normalisation, the global selection."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from modules.adapters import splora
from modules.pruning import (
    EXTREMELY_HIGH_VALUE,
    ChannelGraph,
    ChannelMasks,
    ChannelScorer,
    PruneSchedule,
    apply_masks,
    conv_relevance,
    normalise,
    select,
)
from tests.pruning.helpers import ResidualNet, randomise

pytestmark = pytest.mark.usefixtures("one_thread")

EHV = EXTREMELY_HIGH_VALUE


class _Tiny(nn.Module):
    """One 1×1 conv (2 → 2, no bias), global average pool, Linear (2 → 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.0, 0.1]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def _by_hand(net: _Tiny, x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """grad and taylor scores of the conv from the chain rule in numpy."""
    w = net.conv.weight.detach().numpy()[:, :, 0, 0]
    v, b = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    xn = x.numpy()
    n, _, h, wd = xn.shape
    a = np.einsum("oi,nihw->nohw", w, xn)  # conv output
    logits = a.mean((2, 3)) @ v.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(2)[y.numpy()]) / n  # mean cross-entropy
    g = np.broadcast_to((dlogits @ v)[:, :, None, None] / (h * wd), a.shape)  # ∂L/∂a
    return g.sum((0, 2, 3)) / (n * h * wd), (a * g).sum((0, 2, 3)) / (n * h * wd)


@pytest.mark.parametrize("criterion", ["grad", "taylor"])
def test_grad_and_taylor_by_hand(criterion: str) -> None:
    torch.manual_seed(0)
    net = _Tiny()
    batches = [(torch.randn(3, 2, 2, 3), torch.tensor([0, 1, 1])), (torch.randn(2, 2, 2, 3), torch.tensor([1, 0]))]
    g = ChannelGraph(net, batches[0][0][:1])
    masks = ChannelMasks.from_graph(g)
    scorer = ChannelScorer(net, g, masks, criterion)
    expected = np.zeros(2)
    for x, y in batches:
        scorer.update(x, y)
        expected += _by_hand(net, x, y)[0 if criterion == "grad" else 1]
    assert scorer.scores["conv"].numpy() == pytest.approx(expected, rel=1e-5)  # signed sums
    assert scorer.num_batches == 2
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients, no optimiser step
    v = np.abs(expected)
    assert scorer.normalised()["conv"].numpy() == pytest.approx(v / np.sqrt((v**2).sum()), rel=1e-5)
    assert scorer.normalised(norm=False)["conv"].numpy() == pytest.approx(v, rel=1e-5)


def test_weight_is_bn_folded_l1_added_every_batch_and_pruned_get_ehv() -> None:
    net = nn.Sequential(nn.Conv2d(1, 3, (1, 2), bias=False), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3, 2))
    x = torch.randn(2, 1, 1, 2)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-3.0, 1.0]]).view(3, 1, 1, 2))
        net[1].weight.copy_(torch.tensor([2.0, -1.0, 1.0]))
        net[1].running_var.copy_(torch.tensor([3.0, 0.0, 1.0]))
    net[1].eps = 1.0
    g = ChannelGraph(net, x)
    masks = ChannelMasks.from_graph(g)
    masks.prune("0", [2])
    scorer = ChannelScorer(net, g, masks, "weight")
    for _ in range(3):
        scorer.update(x, torch.tensor([0, 1]))
    # |W_c|₁ · |γ_c| / √(σ²_c + ε): 3·2/2 = 3, 1·1/1 = 1; channel 2 is pruned
    assert scorer.scores["0"].tolist() == pytest.approx([3 * 3.0, 3 * 1.0, 3 * EHV])
    assert scorer.normalised()["0"].tolist() == pytest.approx([0.75, 0.25, 3 * EHV / 12])


def test_weight_ignores_adapters() -> None:
    torch.manual_seed(0)
    plain = randomise(ResidualNet()).eval()
    adapted = splora(plain, rank=2, init_range=0.5, types=(nn.Conv2d,))
    x = torch.randn(2, 3, 8, 8)
    scores = {}
    for key, net in (("plain", plain), ("adapted", adapted)):
        g = ChannelGraph(net, x[:1])
        scorer = ChannelScorer(net, g, ChannelMasks.from_graph(g), "weight")
        scorer.update(x, torch.tensor([0, 1]))
        scores[key] = scorer.scores
    assert not torch.equal(adapted.conv1.adapted_weight(), adapted.conv1.weight)
    assert all(torch.allclose(scores["plain"][n], scores["adapted"][n]) for n in scores["plain"])


def test_lrp_scorer_sums_abs_relevance_and_pruned_get_ehv() -> None:
    torch.manual_seed(0)
    net = randomise(ResidualNet()).eval()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 3])
    g = ChannelGraph(net, x[:1])
    masks = ChannelMasks.from_graph(g)
    masks.prune("layer1.conv1", [0])
    apply_masks(net, g, masks)
    scorer = ChannelScorer(net, g, masks, "lrp")
    scorer.update(x, y)
    r = conv_relevance(g, x, y).convs["layer2.conv1"]
    assert torch.allclose(scorer.scores["layer2.conv1"], r.abs().sum((0, 2, 3)).double())
    assert scorer.scores["layer1.conv1"][0] == EHV and (scorer.scores["layer1.conv1"][1:] < EHV).all()
    w = scorer.normalised()["layer2.conv1"]
    assert w.sum().item() == pytest.approx(1.0)  # L1 over the unpruned channels


def test_normalise_excludes_pruned_channels() -> None:
    masks = {"a": torch.tensor([True, True, False])}
    assert normalise({"a": torch.tensor([3.0, -4.0, EHV])}, masks, "taylor")["a"].tolist() == pytest.approx(
        [0.6, 0.8, EHV / 5]
    )
    assert normalise({"a": torch.tensor([1.0, 3.0, EHV])}, masks, "lrp")["a"].tolist() == pytest.approx(
        [0.25, 0.75, EHV / 4]
    )
    assert normalise({"a": torch.tensor([-1.0, 3.0, 5.0])}, masks, "weight", norm=False)["a"].tolist() == [-1, 3, 5]


def _masks(**sizes: int) -> dict[str, Tensor]:
    return {name: torch.ones(c, dtype=torch.bool) for name, c in sizes.items()}


def test_select_global_lowest_with_ties_by_name_then_index() -> None:
    scores = {"b": torch.tensor([0.1, 0.5]), "a": torch.tensor([0.5, 0.1, 0.1])}
    masks = _masks(a=3, b=2)
    assert {k: v.tolist() for k, v in select(scores, masks, 2).items()} == {"a": [1, 2]}
    assert {k: v.tolist() for k, v in select(scores, masks, 3).items()} == {"a": [1, 2], "b": [0]}


def test_select_skips_pruned_and_last_filters() -> None:
    scores = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([-1.0, 2.0, 3.0])}
    masks = _masks(a=2, b=3)
    masks["b"][0] = False  # pruned: never again, whatever its score
    assert {k: v.tolist() for k, v in select(scores, masks, 2).items()} == {"a": [0], "b": [1]}


def test_select_group_coupling() -> None:
    scores = {
        "x": torch.tensor([0.1, 0.9, 0.5]),
        "y": torch.tensor([0.1, 0.05, 0.6]),
        "z": torch.tensor([0.3, 0.35, 0.9]),
    }
    masks = _masks(x=3, y=3, z=3)
    graph = SimpleNamespace(groups=[["x", "y"]])
    # group channels score 0.2, 0.95, 1.1 and cost 2 filters each
    as_lists = lambda sel: {k: v.tolist() for k, v in sel.items()}  # noqa: E731
    assert as_lists(select(scores, masks, 2, "group", graph=graph)) == {"x": [0], "y": [0]}
    assert as_lists(select(scores, masks, 3, "group", graph=graph)) == {"x": [0], "y": [0], "z": [0]}
    assert as_lists(select(scores, masks, 1, "group", graph=graph)) == {"z": [0]}  # a pair would overshoot
    assert as_lists(select(scores, masks, 2, "none")) == {"x": [0], "y": [1]}  # 0.05, then the 0.1 tie to x
    with pytest.raises(ValueError, match="needs the ChannelGraph"):
        select(scores, masks, 2, "group")


@pytest.mark.parametrize("criterion", ["weight", "grad", "taylor", "lrp"])
@pytest.mark.parametrize("coupling", ["none", "group"])
def test_prune_loop_follows_the_schedule(criterion: str, coupling: str) -> None:
    torch.manual_seed(0)
    net = randomise(ResidualNet())
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    g = ChannelGraph(net, x[:1])
    masks = ChannelMasks.from_graph(g)
    apply_masks(net, g, masks)
    schedule = PruneSchedule.from_masks(masks, step_frac=0.1)
    for k in range(1, 4):
        scorer = ChannelScorer(net.train(), g, masks, criterion)
        scorer.update(x, y)
        masks.prune_many(select(scorer.normalised(), masks, schedule.per_step, coupling, graph=g))
        assert masks.num_kept == schedule.remaining(k)
    if coupling == "group":
        for group in g.groups:
            assert all(torch.equal(masks[group[0]], masks[name]) for name in group)


def test_unknown_criterion_raises() -> None:
    net = ResidualNet()
    g = ChannelGraph(net, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown criterion 'l2'"):
        ChannelScorer(net, g, ChannelMasks.from_graph(g), "l2")
