"""ChannelMasks and apply_masks: enforced hooks (exact zeros that survive training) and the legacy zero-once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.adapters import splora
from modules.pruning import ChannelGraph, ChannelMasks, apply_masks
from tests.pruning.helpers import ResidualNet, randomise

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(4, 3, 8, 8)


def _setup(net: nn.Module | None = None) -> tuple[nn.Module, ChannelGraph, ChannelMasks]:
    torch.manual_seed(0)
    net = randomise(net or ResidualNet())
    g = ChannelGraph(net, X[:1])
    return net, g, ChannelMasks.from_graph(g)


def _outputs(net: nn.Module, names: list[str], x: Tensor = X) -> dict[str, Tensor]:
    """Each named module's output as the next module sees it (captured after any mask hook)."""
    seen: dict[str, Tensor] = {}
    modules = dict(net.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o.detach())) for n in names]
    net(x)
    for h in handles:
        h.remove()
    return seen


def _hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_channel_masks_basics_and_errors() -> None:
    _, _, masks = _setup()
    assert masks.total == 8 + 8 + 8 + 12 + 12 + 12 and masks.density == 1.0
    assert masks.prune("layer2.conv1", [3, 0]) == 2
    assert masks.num_kept == masks.total - 2 and masks["layer2.conv1"][[0, 3]].tolist() == [False, False]
    with pytest.raises(ValueError, match="already pruned"):
        masks.prune("layer2.conv1", [0])
    with pytest.raises(ValueError, match="all its filters"):
        masks.prune("conv1", list(range(8)))
    with pytest.raises(ValueError, match="in \\[0, 8\\)"):
        masks.prune("conv1", [8])
    with pytest.raises(KeyError, match="no conv 'fc'"):
        masks.prune("fc", [0])


def test_state_dict_round_trip() -> None:
    _, g, masks = _setup()
    masks.prune_many({"conv1": [1], "layer2.downsample.0": [0, 5]})
    fresh = ChannelMasks.from_graph(g)
    fresh.load_state_dict(masks.state_dict())
    assert all(torch.equal(fresh[n], masks[n]) for n in masks) and fresh.num_pruned == 3
    with pytest.raises(KeyError, match="missing"):
        fresh.load_state_dict({"conv1": masks["conv1"]})
    loaded = torch.load(_save(masks.state_dict()), weights_only=True)
    assert torch.equal(loaded["conv1"], masks["conv1"])


def _save(state: dict[str, Tensor]) -> str:
    torch.save(state, "masks.pt")  # tests run in a temp dir
    return "masks.pt"


def test_enforced_zeros_conv_and_bn_outputs() -> None:
    net, g, masks = _setup()
    net.eval()
    masks.prune("layer1.conv1", [2, 5])
    masks.prune("layer2.downsample.0", [0])
    apply_masks(net, g, masks)
    out = _outputs(net, ["layer1.conv1", "layer1.bn1", "layer2.downsample.0", "layer2.downsample.1", "layer2.bn2"])
    assert (out["layer1.conv1"][:, [2, 5]] == 0).all() and (out["layer1.bn1"][:, [2, 5]] == 0).all()
    assert (out["layer2.downsample.0"][:, 0] == 0).all() and (out["layer2.downsample.1"][:, 0] == 0).all()
    assert (out["layer1.bn1"][:, [0, 1, 3]] != 0).any()  # only the pruned channels
    assert (out["layer2.bn2"][:, 0] != 0).any()  # the other member of the sum still carries channel 0


def test_without_mask_bn_consumer_inputs_are_masked() -> None:
    net, g, masks = _setup()
    net.eval()
    masks.prune("layer1.conv1", [2])
    apply_masks(net, g, masks, mask_bn=False)
    seen: dict[str, Tensor] = {}
    net.layer1.conv2.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0].detach()))
    out = _outputs(net, ["layer1.bn1"])
    assert (out["layer1.bn1"][:, 2] != 0).any()  # BN's β - γμ/σ comes through
    assert (seen["in"][:, 2] == 0).all()  # ... but the consumer's column is masked


def test_reapplying_replaces_hooks_and_masks_are_live() -> None:
    net, g, masks = _setup()
    net.eval()
    apply_masks(net, g, masks)
    count = _hook_count(net)
    assert count > 0
    masks.prune("conv1", [1])
    apply_masks(net, g, masks)
    assert _hook_count(net) == count  # replaced, not stacked
    masks.prune("conv1", [4])  # no re-apply: hooks read the masks live
    assert (_outputs(net, ["bn1"])["bn1"][:, [1, 4]] == 0).all()
    handle = apply_masks(net, g, masks)
    handle.remove()
    assert _hook_count(net) == 0
    assert (_outputs(net, ["bn1"])["bn1"][:, [1, 4]] != 0).any()


def test_enforced_zeros_survive_sgd_with_momentum_and_weight_decay() -> None:
    net, g, masks = _setup()
    masks.prune_many({"conv1": [0, 3], "layer1.conv2": [3], "layer2.conv1": [1, 2], "layer2.conv2": [7]})
    apply_masks(net, g, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    net.train()
    for step in range(4):
        opt.zero_grad()
        F.cross_entropy(net(X + step), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    names = ["conv1", "bn1", "layer1.conv2", "layer1.bn2", "layer2.conv1", "layer2.bn1", "layer2.conv2", "layer2.bn2"]
    for mode in (net.train, net.eval):
        mode()
        out = _outputs(net, names, torch.randn(4, 3, 8, 8))
        for conv, bn in zip(names[::2], names[1::2]):
            pruned = ~masks[conv]
            assert (out[conv][:, pruned] == 0).all() and (out[bn][:, pruned] == 0).all(), conv


def test_legacy_zeroes_rows_once_and_filters_regrow() -> None:
    net, g, masks = _setup()
    masks.prune("layer2.conv1", [1, 2])
    handle = apply_masks(net, g, masks, mode="legacy")
    assert handle.mode == "legacy" and _hook_count(net) == 0
    assert (net.layer2.conv1.weight[[1, 2]] == 0).all() and (net.layer2.conv1.weight[0] != 0).any()
    net.eval()
    out = _outputs(net, ["layer2.conv1", "layer2.bn1"])
    assert (out["layer2.conv1"][:, [1, 2]] == 0).all()
    assert (out["layer2.bn1"][:, [1, 2]] != 0).any()  # BN untouched
    with torch.no_grad():
        net.layer2.conv1.weight[1] = 1.0  # as if regrown: re-applying without a new prune of this layer...
    apply_masks(net, g, masks, mode="legacy")
    assert (net.layer2.conv1.weight[1] == 1.0).all()  # ...does not zero it again (zeroed once, at prune time)
    with torch.no_grad():
        net.layer2.conv1.weight[1] = 0.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(X), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    assert (net.layer2.conv1.weight[[1, 2]] != 0).any()  # fine-pruned filters regrow, as in the published runs


def test_legacy_leaves_adapters_contributing() -> None:
    torch.manual_seed(0)
    net = splora(ResidualNet(), rank=2, init_range=0.1, types=(nn.Conv2d,))
    net, g, masks = _setup(net)
    cols = net.layer1.conv1.adapter.cols.detach().clone()
    masks.prune("layer1.conv1", [0, 4])
    apply_masks(net, g, masks, mode="legacy")
    conv = net.layer1.conv1
    assert (conv.weight[[0, 4]] == 0).all() and torch.equal(conv.adapter.cols, cols)
    out = _outputs(net.eval(), ["layer1.conv1"])
    assert (out["layer1.conv1"][:, [0, 4]] != 0).any()  # B_c·A still adds to the "pruned" channel
    apply_masks(net, g, masks, mode="enforced")
    assert (_outputs(net, ["layer1.conv1"])["layer1.conv1"][:, [0, 4]] == 0).all()


def test_unknown_mode_raises() -> None:
    net, g, masks = _setup()
    with pytest.raises(ValueError, match="unknown mask mode"):
        apply_masks(net, g, masks, mode="soft")
