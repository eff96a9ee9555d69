"""Conversion of torch.nn modules, temporally local modules, and clear errors for the rest."""

import pytest
import torch
from torch import nn

from modules import continual as co

from .helpers import assert_steps_match


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv1d(2, 3, 3, padding=1),
        nn.Conv2d(2, 3, (3, 1), stride=(2, 1), dilation=(2, 1)),
        nn.Conv3d(2, 3, (2, 3, 3), padding=(1, 1, 1), padding_mode="replicate"),
        nn.AvgPool2d((3, 2), stride=1, padding=(1, 0), count_include_pad=False),
        nn.MaxPool3d((3, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0)),
        nn.MaxPool1d(3, stride=1, padding=1, dilation=2),
    ],
    ids=lambda m: type(m).__name__,
)
def test_layers_convert_with_identical_outputs(module: nn.Module) -> None:
    torch.manual_seed(0)
    converted = co.continual(module)
    assert isinstance(converted, co.CoModule)
    assert list(converted.state_dict()) == list(module.state_dict())
    spatial = {nn.Conv1d: (), nn.Conv2d: (4,), nn.Conv3d: (4, 4), nn.AvgPool2d: (4,), nn.MaxPool3d: (4, 4)}
    clip = torch.randn(2, 2, 9, *spatial.get(type(module), ())) - 1.0
    assert_steps_match(converted, clip, module(clip))


@pytest.mark.parametrize(
    "module",
    [
        nn.ReLU(),
        nn.Hardswish(),
        nn.Dropout(0.3).eval(),
        nn.BatchNorm2d(2).eval(),
        nn.LayerNorm([4]),
        nn.InstanceNorm2d(2, affine=True, track_running_stats=True).eval(),
        nn.Softmax(dim=1),
    ],
    ids=lambda m: type(m).__name__,
)
def test_local_modules_step_like_clips(module: nn.Module) -> None:
    torch.manual_seed(1)
    for buffer in module.buffers():
        if buffer.is_floating_point():
            buffer.uniform_(0.5, 1.5)
    converted = co.continual(module)
    assert type(converted).__name__ == type(module).__name__
    assert converted is not module  # the original tree is left untouched
    clip = torch.randn(2, 2, 5, 4)
    assert_steps_match(converted, clip, module(clip))


def test_group_norm_is_rejected_with_the_reason() -> None:
    with pytest.raises(co.UnsupportedModuleError, match=r"GroupNorm.*span time"):
        co.continual(nn.Sequential(nn.Conv1d(2, 2, 1), nn.GroupNorm(1, 2)))


def test_training_batch_norm_cannot_step() -> None:
    bn = co.continual(nn.BatchNorm1d(2)).train()
    clip = torch.randn(2, 2, 5)
    bn(clip)  # clip mode trains as usual
    with pytest.raises(co.UnsupportedModuleError, match=r"training mode.*\.eval\(\)"):
        bn.forward_step(clip[:, :, 0])


def test_layer_norm_over_time_is_rejected_when_stepping() -> None:
    norm = co.continual(nn.LayerNorm([5, 4]))
    with pytest.raises(co.UnsupportedModuleError, match="includes time"):
        norm.forward_step(torch.randn(2, 3, 4))


def test_unknown_module_names_itself_and_the_fix() -> None:
    class Mystery(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(co.UnsupportedModuleError, match=r"Mystery.*modules\.continual\.register"):
        co.continual(Mystery())


def test_registering_a_local_module() -> None:
    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    co.register(Square, co.local)
    net = co.continual(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), Square()))
    clip = torch.randn(1, 1, 6)
    assert_steps_match(net, clip, net(clip))


def test_continual_modules_pass_through_unchanged() -> None:
    conv = co.Conv1d(1, 1, 3)
    assert co.continual(conv) is conv


def test_reflect_temporal_padding_cannot_convert() -> None:
    with pytest.raises(co.UnsupportedModuleError, match="future frames"):
        co.continual(nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect"))


def test_call_mode_dispatch_and_nesting() -> None:
    conv = co.Conv1d(1, 1, 3)
    clip = torch.randn(1, 1, 5)
    conv.clean_state()
    with co.call_mode("forward_steps"):
        with co.call_mode(2):
            assert conv(clip[:, :, 0]) is None  # forward_step: still warming up
        # leaving the inner context restores the outer one
        assert conv(clip[:, :, 1:]).shape == (1, 1, 3)
    assert conv(clip).shape == (1, 1, 3)
    net = co.Sequential(co.Conv1d(1, 1, 1))
    net.call_mode = 1
    assert net[0].call_mode == "forward_steps"
    with pytest.raises(ValueError, match="call_mode"):
        net.call_mode = 7
