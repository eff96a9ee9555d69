import itertools

import pytest
import torch
from torch import nn

from modules import continual as co

from .helpers import assert_steps_match, step_through

GRID = [
    (k, s, p, d) for k, s, p, d in itertools.product([1, 2, 3, 5], [1, 2, 3], [0, 1, 2, 4], [1, 2]) if p <= d * (k - 1)
]


@pytest.mark.parametrize(("k", "s", "p", "d"), GRID)
@pytest.mark.parametrize("fill", ["zeros", "replicate"])
def test_conv2d_grid_equals_torch(k: int, s: int, p: int, d: int, fill: str) -> None:
    torch.manual_seed(k * 100 + s * 10 + p + d)
    mode = "zeros" if fill == "zeros" else "replicate"
    conv = co.Conv2d(3, 4, (k, 3), stride=(s, 1), padding=(p, 1), dilation=(d, 1), padding_mode=mode).double()
    reference = nn.Conv2d(3, 4, (k, 3), stride=(s, 1), padding=(p, 1), dilation=(d, 1), padding_mode=mode).double()
    reference.load_state_dict(conv.state_dict())
    for batch, t in ((1, 11), (3, d * (k - 1) + 1)):
        clip = torch.randn(batch, 3, t, 5, dtype=torch.float64)
        expected = reference(clip)
        torch.testing.assert_close(conv(clip), expected, atol=0, rtol=0)
        assert_steps_match(conv, clip, expected, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_conv3d_matmul_path_equals_torch(k: int, channels_last: bool) -> None:
    """Spatially 1x1 convs step as one matrix product, for contiguous and channels-last frames alike."""
    torch.manual_seed(k)
    conv = co.Conv3d(5, 7, (k, 1, 1), padding=(k - 1, 0, 0)).double()
    assert conv._pointwise
    reference = nn.Conv3d(5, 7, (k, 1, 1), padding=(k - 1, 0, 0)).double()
    reference.load_state_dict(conv.state_dict())
    if channels_last:  # time outermost, channels innermost: every frame is a channels-last (B, C, H, W)
        clip = torch.randn(6, 2, 4, 3, 5, dtype=torch.float64).permute(1, 4, 0, 2, 3)
        assert clip[:, :, 0].is_contiguous(memory_format=torch.channels_last) and not clip[:, :, 0].is_contiguous()
    else:
        clip = torch.randn(2, 5, 6, 4, 3, dtype=torch.float64)
    assert_steps_match(conv, clip, reference(clip), atol=1e-10)


DEPTHWISE_GRID = [(k, s, p, d) for k, s, p, d in GRID if k > 1 and s < 3 and d * (k - 1) >= p]


@pytest.mark.parametrize(("k", "s", "p", "d"), DEPTHWISE_GRID)
@pytest.mark.parametrize("fill", ["zeros", "replicate"])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv3d_window_path_equals_torch(k: int, s: int, p: int, d: int, fill: str, multiplier: int) -> None:
    """Depthwise convs step through a window of input frames (channels-last); same results as torch."""
    torch.manual_seed(k * 100 + s * 10 + p + d)
    mode = "zeros" if fill == "zeros" else "replicate"
    kwargs = dict(kernel_size=(k, 3, 3), stride=(s, 2, 1), padding=(p, 1, 1), dilation=(d, 1, 1), groups=4)
    conv = co.Conv3d(4, 4 * multiplier, padding_mode=mode, **kwargs).double()
    assert conv._buffered
    reference = nn.Conv3d(4, 4 * multiplier, padding_mode=mode, **kwargs).double()
    reference.load_state_dict(conv.state_dict())
    clip = torch.randn(2, 4, 9, 5, 6, dtype=torch.float64)
    expected = reference(clip)
    assert_steps_match(conv, clip, expected, atol=1e-10)
    conv.clean_state()
    with torch.enable_grad():  # the out-of-place path autograd needs
        conv.requires_grad_(True)
        assert_steps_match(conv, clip, expected, atol=1e-10)


@pytest.mark.parametrize(("k", "s", "p", "d"), DEPTHWISE_GRID[::3])
@pytest.mark.parametrize("fill", ["zeros", "replicate"])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv3d_unrolled_step_equals_torch(
    k: int, s: int, p: int, d: int, fill: str, multiplier: int
) -> None:
    """``set_depthwise_step(net, "unrolled")``: partial sums of shifted multiply-adds, spatial stride, dilation and
    padding included (replicate padding too); same results as torch."""
    torch.manual_seed(k * 100 + s * 10 + p + d)
    mode = "zeros" if fill == "zeros" else "replicate"
    kwargs = dict(kernel_size=(k, 3, 3), stride=(s, 2, 1), padding=(p, 1, 2), dilation=(d, 1, 2), groups=4)
    conv = co.Conv3d(4, 4 * multiplier, padding_mode=mode, **kwargs).double()
    assert co.set_depthwise_step(conv, "unrolled") == 1 and not conv._buffered
    reference = nn.Conv3d(4, 4 * multiplier, padding_mode=mode, **kwargs).double()
    reference.load_state_dict(conv.state_dict())
    clip = torch.randn(2, 4, 9, 5, 7, dtype=torch.float64)
    expected = reference(clip)
    assert_steps_match(conv, clip, expected, atol=1e-10)
    assert conv._step_kind() == "taps" and conv._buf is None  # partial sums, no window of input frames


def test_unrolled_depthwise_steps_of_a_one_tap_conv_and_a_conv2d_equal_torch() -> None:
    torch.manual_seed(0)
    net = co.Sequential(co.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1), groups=4), co.Conv3d(4, 6, 1)).double()
    flat = co.Conv2d(3, 3, (2, 5), padding=(1, 2), groups=3).double()
    assert co.set_depthwise_step(net, "unrolled") == 1 and co.set_depthwise_step(flat, "unrolled") == 1
    clip = torch.randn(1, 4, 5, 6, 6, dtype=torch.float64)
    assert_steps_match(net, clip, net(clip), atol=1e-10)
    signal = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    assert_steps_match(flat, signal, flat(signal), atol=1e-10)
    with pytest.raises(ValueError, match=r"unknown depthwise step 'fused': choose one of \('conv', 'unrolled'\)"):
        co.set_depthwise_step(net, "fused")


def test_set_depthwise_step_restarts_the_streams_it_changes() -> None:
    torch.manual_seed(0)
    conv = co.Conv3d(2, 2, 3, padding=1, groups=2).double()
    clip = torch.randn(1, 2, 6, 4, 4, dtype=torch.float64)
    conv.forward_steps(clip[:, :, :3])
    assert conv._buf is not None  # a window, on CPU
    co.set_depthwise_step(conv, "unrolled")
    assert conv._buf is None and conv._acc is None  # a fresh stream in the new form
    assert_steps_match(conv, clip, conv(clip), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv3d_groups_spatial_stride_dilation(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    kwargs = dict(kernel_size=(3, 3, 3), stride=(1, 2, 2), padding=(1, 2, 1), dilation=(1, 2, 1), groups=2)
    conv = co.Conv3d(4, 6, **kwargs).to(dtype)
    reference = nn.Conv3d(4, 6, **kwargs).to(dtype)
    reference.load_state_dict(conv.state_dict())
    clip = torch.randn(2, 4, 7, 9, 8, dtype=dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_steps_match(conv, clip, reference(clip), atol=atol)


@pytest.mark.parametrize("groups", [1, 3])
def test_conv1d_step_is_one_vector(groups: int) -> None:
    torch.manual_seed(1)
    conv = co.Conv1d(6, 9, 4, padding=2, groups=groups)
    clip = torch.randn(3, 6, 10)
    assert_steps_match(conv, clip, nn.functional.conv1d(clip, conv.weight, conv.bias, padding=2, groups=groups))


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_spatial_padding_modes(mode: str) -> None:
    torch.manual_seed(2)
    conv = co.Conv3d(2, 3, (3, 3, 3), padding=(0, 1, 1), padding_mode=mode, temporal_fill="zeros")
    reference = nn.Conv3d(2, 3, (3, 3, 3), padding=(0, 1, 1), padding_mode=mode)
    reference.load_state_dict(conv.state_dict())
    clip = torch.randn(2, 2, 6, 5, 5)
    assert_steps_match(conv, clip, reference(clip))


def test_temporal_fill_is_independent_of_spatial_mode() -> None:
    """Zero spatial padding with a replicated past: forward pads time with copies of the edge frames."""
    torch.manual_seed(3)
    conv = co.Conv2d(2, 2, (3, 3), padding=(2, 1), temporal_fill="replicate")
    clip = torch.randn(1, 2, 5, 4)
    padded = torch.cat([clip[:, :, :1]] * 2 + [clip] + [clip[:, :, -1:]] * 2, dim=2)
    expected = nn.functional.conv2d(padded, conv.weight, conv.bias, padding=(0, 1))
    torch.testing.assert_close(conv(clip), expected)
    assert_steps_match(conv, clip, expected)


def test_continuation_across_calls_and_first_output() -> None:
    torch.manual_seed(4)
    conv = co.Conv1d(2, 3, 5, padding=1)
    clip = torch.randn(1, 2, 12)
    expected = conv(clip)
    with torch.no_grad():
        conv.clean_state()
        first = conv.forward_steps(clip[:, :, :7])
        second = conv.forward_steps(clip[:, :, 7:], pad_end=True)
    torch.testing.assert_close(torch.cat([first, second], dim=2), expected)
    assert conv.delay == 3
    assert conv.receptive_field == 5


def test_training_mode_steps_backpropagate() -> None:
    """With autograd on, the state is rebuilt functionally, so gradients flow through stepped outputs."""
    torch.manual_seed(5)
    conv = co.Conv1d(2, 2, 3, padding=1).train()
    clip = torch.randn(1, 2, 6, requires_grad=True)
    outs = [y for y in step_through(conv, clip) if y is not None]
    torch.stack(outs, 2).sum().backward()
    reference_grad = torch.autograd.grad(conv(clip)[:, :, : len(outs)].sum(), clip)[0]
    torch.testing.assert_close(clip.grad, reference_grad)


def test_weight_update_invalidates_cached_step_weight() -> None:
    conv = co.Conv1d(1, 1, 2, bias=False)
    clip = torch.ones(1, 1, 3)
    with torch.no_grad():
        assert conv.forward_steps(clip) is not None
        conv.weight.fill_(1.0)
        conv.clean_state()
        torch.testing.assert_close(conv.forward_steps(clip), torch.full((1, 1, 2), 2.0))


def test_string_and_excess_padding_are_rejected() -> None:
    with pytest.raises(ValueError, match="padding='same'"):
        co.Conv1d(1, 1, 3, padding="same")
    with pytest.raises(ValueError, match="exceeds the receptive field"):
        co.Conv1d(1, 1, 3, padding=3)
    with pytest.raises(ValueError, match="temporal_fill"):
        co.Conv1d(1, 1, 3, temporal_fill="reflect")
