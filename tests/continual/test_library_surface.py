"""The continual-inference calls a switcher brings along: forward_stepping, Linear's channel_dim, build_from
keywords, and what attention's equality with nn.MultiheadAttention covers."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import modules.continual as co
from modules.continual.convert import CONVERSION_KEYWORDS
from tests.continual.helpers import assert_steps_match


def test_forward_stepping_is_local_with_the_library_signature() -> None:
    assert co.forward_stepping is co.local
    assert list(inspect.signature(co.forward_stepping).parameters)[:2] == ["module", "dim"]
    relu = nn.ReLU()
    stepping = co.forward_stepping(relu, dim=2)
    clip = torch.randn(2, 3, 4)
    assert_steps_match(stepping, clip, torch.relu(clip))
    assert not hasattr(relu, "forward_step")  # a copy: the library patches the module in place
    with pytest.raises(ValueError, match=r"time is dim 2 of every clip .* got dim=1"):
        co.forward_stepping(nn.ReLU(), dim=1)
    norm = co.forward_stepping(nn.GroupNorm(1, 3))  # the library steps it, with statistics of one frame only
    with pytest.raises(co.UnsupportedModuleError, match=r"GroupNorm statistics span time"):
        norm.forward_step(clip[:, :, 0])


def test_linear_channel_dim_minus_one_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match=r"channel_dim=-1 counts from the end.*channel_dim=1 for channels"):
        co.Linear(3, 5, channel_dim=-1)
    torch.manual_seed(0)
    reference = nn.Linear(3, 5)
    linear = co.Linear.build_from(reference)  # the library's default would be -1; here it is 1
    assert linear.channel_dim == 1
    clip = torch.randn(2, 3, 4)
    want = reference(clip.transpose(1, 2)).transpose(1, 2)
    assert_steps_match(linear, clip, want)
    torch.testing.assert_close(linear.forward_step(clip[:, :, 0]), reference(clip[:, :, 0]))  # a (B, C) step


BUILDERS = [
    (lambda: co.Conv3d.build_from(nn.Conv3d(2, 2, 3), kernel_size=5), "Conv3d.build_from got kernel_size=5"),
    (lambda: co.AvgPool1d.build_from(nn.AvgPool1d(3), stride=1), "AvgPool1d.build_from got stride=1"),
    (  # the library's name of temporal_window
        lambda: co.AdaptiveAvgPool3d.build_from(nn.AdaptiveAvgPool3d(1), kernel_size=4),
        "AdaptiveAvgPool3d.build_from got kernel_size=4",
    ),
    (lambda: co.Linear.build_from(nn.Linear(2, 3), out_features=4), "Linear.build_from got out_features=4"),
    (lambda: co.GRU.build_from(nn.GRU(2, 3), num_layers=2), "GRU.build_from got num_layers=2"),
    (lambda: co.Sequential.build_from(nn.Sequential(), padding=1), "Sequential.build_from got padding=1"),
    (
        lambda: co.SingleOutputMultiheadAttention.build_from(nn.MultiheadAttention(4, 2), 3, num_heads=1),
        "SingleOutputMultiheadAttention.build_from got num_heads=1",
    ),
    (
        lambda: co.TransformerEncoderLayer.build_from(nn.TransformerEncoderLayer(4, 2, 8), 3, nhead=1),
        "TransformerEncoderLayer.build_from got nhead=1",
    ),
    (
        lambda: co.continual(
            nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8, batch_first=True), 1), sequence_len=3, depth=2
        ),
        r"continual\(nn.TransformerEncoder\) got depth=2",
    ),
    (lambda: co.continual(nn.MultiheadAttention(4, 2), sequence_len=3, dim=1), "MultiheadAttention.* got dim=1"),
    (lambda: co.continual(nn.ReLU(), stride=2), "local got stride=2"),
    (lambda: co.Lambda.build_from(torch.relu, kernel_size=2), "Lambda.build_from got kernel_size=2"),
]


@pytest.mark.parametrize(("build", "match"), BUILDERS)
def test_builders_refuse_keywords_they_do_not_apply(build, match) -> None:
    with pytest.raises(TypeError, match=match + ".*which it does not apply"):
        build()


def test_conversion_keywords_still_pass_through_a_tree() -> None:
    torch.manual_seed(1)
    tree = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.AvgPool1d(2, stride=1), nn.GRU(4, 4), nn.Linear(4, 2))
    net = co.continual(tree, temporal_fill="replicate", sequence_len=4, mode="retroactive", query_index=0)
    assert net[0].temporal_fill == "replicate" and net[2].temporal_fill == "replicate"
    assert isinstance(net[3], co.GRU) and net[4].channel_dim == 1
    clip = torch.randn(2, 3, 8)
    with torch.no_grad():
        net.eval()
        assert_steps_match(net, clip, net(clip), atol=1e-6)


def test_a_custom_builder_registers_its_keyword_for_every_builder() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    def build(module: nn.Module, factor: float = 2.0, **kwargs: object) -> nn.Module:
        return co.Multiply(factor)

    try:
        co.register(Scale, build, keywords=["factor"])
        net = co.continual(nn.Sequential(nn.Conv1d(1, 1, 1), Scale()), factor=3.0)  # Conv1d ignores factor
        assert net[1].value == 3.0
    finally:
        CONVERSION_KEYWORDS.discard("factor")
    with pytest.raises(TypeError, match=r"Conv1d.build_from got factor=3.0"):
        co.continual(nn.Conv1d(1, 1, 1), factor=3.0)


@pytest.mark.parametrize("cls", [co.SingleOutputMultiheadAttention, co.RetroactiveMultiheadAttention])
def test_attention_equals_nn_output_with_need_weights_false_and_returns_no_weights(cls) -> None:
    torch.manual_seed(2)
    reference = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    attention = cls.build_from(reference, sequence_len=6).eval()
    clip = torch.randn(2, 8, 6)
    tokens = clip.transpose(1, 2)
    with torch.no_grad():
        ours = attention(clip)
        without_weights, none = reference(tokens, tokens, tokens, need_weights=False)
        with_weights, weights = reference(tokens, tokens, tokens)  # nn's default: weights averaged over heads
    assert none is None and weights.shape == (2, 6, 6)
    assert isinstance(ours, torch.Tensor) and ours.shape == (2, 8, 6)  # the output only, no (output, weights)
    assert torch.equal(ours, without_weights.transpose(1, 2))
    torch.testing.assert_close(ours, with_weights.transpose(1, 2), atol=1e-6, rtol=0)  # another kernel
    with torch.no_grad():  # the weights, from the same parameters, through nn's forward
        _, again = nn.MultiheadAttention.forward(attention, tokens, tokens, tokens)
    torch.testing.assert_close(again, weights, atol=0, rtol=0)
