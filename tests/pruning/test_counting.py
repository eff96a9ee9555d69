"""ΔParams and FLOPs under channel masks (``paper/structured-pruning-adapters.md``): the published numbers and hand
counts."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.adapters import splora, sppara
from modules.nets import build
from modules.pruning.counting import delta_params, infer_method, masked_flops
from modules.pruning.graph import ChannelGraph

pytestmark = pytest.mark.usefixtures("one_thread")

T, F_ = True, False


class Tiny(nn.Module):
    """conv1 → bn1 → ReLU module → conv2 → bn2, plus a 1×1 ``down`` conv on the input, summed, pooled, fc.

    In module order ``down`` follows ``conv2``, so the legacy counter takes its inputs from conv2's mask (it reads
    the net input); the fc reads the residual sum conv2 + down.
    """

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()  # counted by the legacy FLOP counter; the F.relu below is not
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 4, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(F.relu(y + self.down(x))), 1))


TINY_INPUT = (1, 4, 8, 8)  # 64 positions at every layer
MASKS = {
    "conv1": torch.tensor([T, T, F_, F_]),  # 2 kept
    "conv2": torch.tensor([T, F_, T, F_]),  # 2 kept
    "down": torch.tensor([F_, F_, T, F_]),  # 1 kept; OR with conv2 = [T, F, T, F]: the fc keeps 2 inputs
}
#: the graph ``ChannelGraph(Tiny(), ...)`` gives, written out (exact counts must not depend on the tracer)
TINY_GRAPH = SimpleNamespace(
    producers={"conv1": [], "conv2": ["conv1"], "down": [], "fc": ["conv2", "down"]},
    norm_after={"conv1": "bn1", "conv2": "bn2", "down": None},
)


@pytest.fixture(scope="module")
def resnet50_cifar() -> nn.Module:
    torch.manual_seed(0)
    return build("resnet50_cifar", num_classes=10)


# --- the published numbers (arXiv 2211.10155, Table 1) --------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "rank", "expected"),
    [("finetune", None, 23_520_842), ("splora", 32, 1_644_522), ("splora", 8, 466_338), ("sppara", None, 13_459_530)],
)
def test_table1_delta_params(resnet50_cifar: nn.Module, method: str, rank: int | None, expected: int) -> None:
    assert delta_params(resnet50_cifar, method=method, rank=rank, convention="legacy") == expected


def test_table1_flops(resnet50_cifar: nn.Module) -> None:
    # 1,297,809,408 conv + 6,864,896 BN + 20,480 FC; the exact count has no BN term
    assert masked_flops(resnet50_cifar, input_size=(1, 3, 32, 32), convention="legacy") == 1_304_694_784
    assert masked_flops(resnet50_cifar, convention="exact") == 1_297_809_408 + 20_480


def test_adapted_resnet50_reads_method_and_rank_from_its_layers(resnet50_cifar: nn.Module) -> None:
    adapted = splora(resnet50_cifar, 32, types=(nn.Conv2d,))  # the CNN runs adapt convs only
    assert infer_method(adapted) == "splora"
    assert delta_params(adapted, convention="legacy") == 1_644_522
    assert delta_params(adapted, convention="exact") == 1_644_522  # unpruned: the conventions agree
    # the original quirk: a conv that has lost no filter counts all its parameters, frozen W included
    everything = sum(p.numel() for p in adapted.parameters())
    assert delta_params(adapted, convention="legacy", legacy_unmasked_full=True) == everything
    assert masked_flops(adapted, convention="legacy") == 1_304_694_784
    with pytest.raises(ValueError, match="adapter layers are"):
        delta_params(adapted, method="finetune", convention="legacy")


# --- hand counts on a tiny net --------------------------------------------------------------------------------
# legacy: conv n_out·n_in·9 with n_in from the previous conv's mask; every BN (16) and the fc (10) in full
LEGACY = {
    "finetune": 2 * 4 * 9 + 2 * 2 * 9 + 1 * 2 * 1 + 16 + 10,  # down: n_in = |conv2 mask| = 2 (really 4)
    "splora": 2 * (2 + 4) + 2 * (2 + 2) + 2 * (1 + 2) + 16 + 10,  # rank 2
    "sppara": 2 * 4 + 2 * 2 + 1 * 2 + 16 + 10,
}
# exact: down reads the 4 input channels; BNs count kept channels (2 + 2, ×2); fc 2 kept inputs · 2 + 2 bias
EXACT = {
    "finetune": 2 * 4 * 9 + 2 * 2 * 9 + 1 * 4 * 1 + 8 + 6,
    "splora": 2 * (4 + 2) + 2 * (2 + 2) + 2 * (4 + 1) + 8 + 6,
    "sppara": 2 * 4 + 2 * 2 + 1 * 4 + 8 + 6,
}


@pytest.mark.parametrize("method", ["finetune", "splora", "sppara"])
def test_tiny_delta_params_by_hand(method: str) -> None:
    net = Tiny()
    rank = 2 if method == "splora" else None
    assert delta_params(net, MASKS, method=method, rank=rank, convention="legacy") == LEGACY[method]
    assert delta_params(net, MASKS, method=method, rank=rank, convention="exact", graph=TINY_GRAPH) == EXACT[method]
    # the real tracer gives the same graph
    traced = delta_params(net, MASKS, method=method, rank=rank, convention="exact", input_size=TINY_INPUT)
    assert traced == EXACT[method]


@pytest.mark.parametrize("method", ["splora", "sppara"])
def test_tiny_adapter_layers_count_as_the_analytic_formula(method: str) -> None:
    """A net with real adapter layers counts what the unconverted net counts with ``method`` (and ``rank``)."""
    net = Tiny()
    adapted = splora(net, 2, types=(nn.Conv2d,)) if method == "splora" else sppara(net, types=(nn.Conv2d,))
    assert infer_method(adapted) == method
    assert delta_params(adapted, MASKS, convention="legacy") == LEGACY[method]
    assert delta_params(adapted, MASKS, convention="exact", graph=TINY_GRAPH) == EXACT[method]


def test_tiny_legacy_unmasked_full() -> None:
    """conv1 has lost no filter: under the quirk it counts W (144) and its adapter A, B (2·4 + 4·2)."""
    adapted = splora(Tiny(), 2, types=(nn.Conv2d,))
    masks = {k: v for k, v in MASKS.items() if k != "conv1"}
    formula = delta_params(adapted, masks, convention="legacy")
    assert formula == 2 * (4 + 4) + 2 * (2 + 4) + 2 * (1 + 2) + 16 + 10
    quirk = delta_params(adapted, masks, convention="legacy", legacy_unmasked_full=True)
    assert quirk == formula - 2 * (4 + 4) + (144 + 16)


def test_exact_counts_only_what_trains() -> None:
    net = Tiny(bias=True)
    net.conv2.weight.requires_grad_(False)
    net.bn1.requires_grad_(False)
    net.fc.bias.requires_grad_(False)
    # conv1 72 + bias 2 (kept); conv2 frozen; down 4; bn1 frozen; bn2 2·2; fc 2·2
    assert delta_params(net, MASKS, method="finetune", convention="exact", graph=TINY_GRAPH) == 72 + 2 + 4 + 4 + 4
    # legacy ignores requires_grad and conv bias
    assert delta_params(net, MASKS, method="finetune", convention="legacy") == LEGACY["finetune"]


def test_exact_grouped_conv_counts_live_pairs_per_group() -> None:
    net = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 3, groups=2, bias=False))
    masks = {"0": torch.tensor([T, F_, T, T]), "1": torch.tensor([T, T, F_, T])}
    graph = SimpleNamespace(producers={"0": [], "1": ["0"]}, norm_after={})
    # conv 0: 3 out · 2 in + 3 bias; conv 1: group 0 keeps 2 out · 1 in, group 1 keeps 1 out · 2 in, ×9
    assert delta_params(net, masks, method="finetune", convention="exact", graph=graph) == 6 + 3 + (2 + 2) * 9
    # legacy: groups ignored, n_in = |mask of conv 0| = 3, no bias
    assert delta_params(net, masks, method="finetune", convention="legacy") == 3 * 2 + 3 * 3 * 9


def test_tiny_flops_by_hand() -> None:
    net = Tiny()
    # legacy: conv1 9·4·2·64, bn1 2·256, relu1 256, conv2 9·4·2·64 (Ci not reduced), bn2 512, down 1·4·1·64, fc 4·2
    legacy = 4608 + 512 + 256 + 4608 + 512 + 256 + 8
    assert masked_flops(net, MASKS, input_size=TINY_INPUT, convention="legacy") == legacy
    # exact: conv1 2·4·9·64, conv2 2·2·9·64, down 1·4·64, fc 2 inputs · 2
    exact = 4608 + 2304 + 256 + 4
    assert masked_flops(net, MASKS, input_size=TINY_INPUT, convention="exact", graph=TINY_GRAPH) == exact
    assert masked_flops(net, MASKS, input_size=TINY_INPUT, convention="exact") == exact  # traced graph
    with_bias = Tiny(bias=True)  # legacy adds out·H·W for a conv bias
    assert masked_flops(with_bias, MASKS, input_size=TINY_INPUT, convention="legacy") == legacy + 2 * 64


def test_no_masks_equals_all_true_masks() -> None:
    net = Tiny()
    full = {name: torch.ones(4, dtype=torch.bool) for name in MASKS}
    for convention in ("legacy", "exact"):
        for method, rank in (("finetune", None), ("splora", 4), ("sppara", None)):
            kw = {"method": method, "rank": rank, "convention": convention, "input_size": TINY_INPUT}
            assert delta_params(net, **kw) == delta_params(net, full, **kw)
        kw = {"convention": convention, "input_size": TINY_INPUT}
        assert masked_flops(net, **kw) == masked_flops(net, full, **kw)
    assert delta_params(net, method="finetune", convention="exact", input_size=TINY_INPUT) == sum(
        p.numel() for p in net.parameters()
    )


def test_flops_and_params_decrease_with_pruning() -> None:
    torch.manual_seed(0)
    net = build("resnet_tiny")
    convs = {name: m.out_channels for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    scores = {name: torch.rand(c) for name, c in convs.items()}
    graph = ChannelGraph(net, torch.zeros(1, 3, 32, 32))
    counts = []
    for density in (1.0, 0.75, 0.5, 0.25):
        masks = {name: s >= torch.quantile(s, 1 - density) for name, s in scores.items()}  # nested as density falls
        counts.append(
            [
                masked_flops(net, masks, convention="legacy"),
                masked_flops(net, masks, convention="exact", graph=graph),
                delta_params(net, masks, method="finetune", convention="legacy"),
                delta_params(net, masks, method="splora", rank=4, convention="exact", graph=graph),
            ]
        )
    for before, after in itertools.pairwise(counts):
        assert all(a < b for a, b in zip(after, before)), (before, after)
    assert counts[-1][1] < counts[-1][0]  # exact also reduces input channels


def test_counting_leaves_the_net_as_it_was() -> None:
    net = Tiny().train()
    stats = net.bn1.running_mean.clone()
    masked_flops(net, MASKS, input_size=TINY_INPUT, convention="legacy")
    delta_params(net, MASKS, method="finetune", convention="exact", input_size=TINY_INPUT)
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(net.bn1.running_mean, stats) and not net.bn1.num_batches_tracked


def test_frozen_vgg_features_count_nothing_under_fine_pruning() -> None:
    """The published VGG runs froze ``features``: fine-pruning trains the classifier only. Its first
    Linear reads the flattened 512×7×7 map, so a pruned last conv removes 49 inputs per channel."""
    with torch.device("meta"):  # counting needs shapes only
        vgg = build("vgg16", num_classes=10, freeze_features=True)
    masks = {"features.28": torch.arange(512) < 256}
    classifier = 256 * 49 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    assert delta_params(vgg, masks, method="finetune", convention="exact") == classifier
    # legacy: every conv n_out·n_in·9 (frozen or not; features.28 lost 256 filters), every Linear in full
    convs = sum(m.weight.numel() for m in vgg.features.modules() if isinstance(m, nn.Conv2d)) - 256 * 512 * 9
    linears = sum(p.numel() for p in vgg.classifier.parameters())
    assert delta_params(vgg, masks, method="finetune", convention="legacy") == convs + linears


def test_wrong_inputs_are_named() -> None:
    net = Tiny()
    with pytest.raises(KeyError, match="not a conv"):
        delta_params(net, {"conv9": torch.ones(4, dtype=torch.bool)}, convention="legacy")
    with pytest.raises(ValueError, match="has 3 entries"):
        masked_flops(net, {"conv1": torch.ones(3, dtype=torch.bool)}, convention="legacy", input_size=TINY_INPUT)
    with pytest.raises(ValueError, match="needs rank="):
        delta_params(net, method="splora", convention="legacy")
    with pytest.raises(ValueError, match="unknown method"):
        delta_params(net, method="lora", convention="legacy")
    with pytest.raises(ValueError, match="unknown convention"):
        masked_flops(net, convention="fvcore", input_size=TINY_INPUT)
