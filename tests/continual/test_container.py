import pytest
import torch
from torch import nn

from modules import continual as co

from .helpers import assert_steps_match


def test_sequential_arithmetic_paper_example() -> None:
    net = co.Sequential(co.Conv1d(1, 1, 3, stride=2, padding=2), co.Conv1d(1, 1, 3))
    assert (net.receptive_field, net.padding, net.delay, net.stride) == (7, (2,), 4, (2,))
    clip = torch.randn(2, 1, 15)
    assert_steps_match(net, clip, net(clip))


def test_sequential_strided_pool_then_conv() -> None:
    torch.manual_seed(0)
    net = co.Sequential(
        co.Conv1d(2, 4, 3, padding=1), nn.ReLU(), co.MaxPool1d(2), co.Conv1d(4, 4, 3, stride=2, padding=1)
    )
    assert net.stride == (4,)
    assert net.receptive_field == 8  # 3 pooled frames, 2 apart, of a k=3 conv's outputs
    clip = torch.randn(3, 2, 21)
    assert_steps_match(net, clip, net(clip))


def test_sequential_converted_from_nn_has_same_keys_and_outputs() -> None:
    torch.manual_seed(1)
    reference = nn.Sequential(
        nn.Conv3d(3, 6, 3, padding=1),
        nn.BatchNorm3d(6),
        nn.ReLU(),
        nn.AvgPool3d((1, 2, 2)),
        nn.Conv3d(6, 6, (3, 1, 1), padding=(1, 0, 0), groups=3),
        nn.BatchNorm3d(6),
        nn.Hardswish(),
    ).eval()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    net = co.continual(reference).eval()
    assert list(net.state_dict()) == list(reference.state_dict())
    clip = torch.randn(2, 3, 8, 8, 8)
    assert_steps_match(net, clip, reference(clip))


def test_broadcast_reduce_aligns_delays() -> None:
    torch.manual_seed(2)
    net = co.BroadcastReduce(co.Conv1d(2, 3, 5, padding=2), co.Conv1d(2, 3, 3, padding=1), co.Conv1d(2, 3, 1))
    assert net.delay == 2
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    clip = torch.randn(2, 2, 9)
    assert_steps_match(net, clip, net(clip))


def test_broadcast_reduce_impulse_response() -> None:
    """Known values: ones-weight convs of sizes 5, 3, 1 on 1..7 with same padding, summed."""
    convs = [co.Conv1d(1, 1, k, padding=k // 2, bias=False) for k in (5, 3, 1)]
    for c in convs:
        nn.init.ones_(c.weight)
    net = co.BroadcastReduce(*convs)
    clip = torch.arange(1.0, 8.0).view(1, 1, 7)
    expected = torch.tensor([[[10.0, 18.0, 27.0, 36.0, 45.0, 46.0, 38.0]]])
    torch.testing.assert_close(net(clip), expected)
    assert_steps_match(net, clip, expected)


@pytest.mark.parametrize("reduce", ["sum", "mul", "max", "concat"])
def test_reductions_via_broadcast_parallel_reduce(reduce: str) -> None:
    torch.manual_seed(3)
    a, b = co.Conv1d(2, 2, 3, padding=1), co.Conv1d(2, 2, 1)
    net = co.Sequential(co.Broadcast(2), co.Parallel(a, b), co.Reduce(reduce))
    clip = torch.randn(1, 2, 6)
    assert_steps_match(net, clip, net(clip))
    fused = co.BroadcastReduce(a, b, reduce=reduce)
    torch.testing.assert_close(fused(clip), net(clip))


def test_residual_same_padding() -> None:
    torch.manual_seed(4)
    conv = co.Conv1d(2, 2, 3, padding=1)
    res = co.Residual(conv)
    clip = torch.randn(2, 2, 8)
    expected = conv(clip) + clip
    torch.testing.assert_close(res(clip), expected)
    assert_steps_match(res, clip, expected)
    assert list(res.state_dict()) == ["1.weight", "1.bias"]


@pytest.mark.parametrize(("shrink", "offset"), [("lagging", 0), ("centered", 1), (True, 1), ("leading", 2)])
def test_residual_shrink_modes(shrink: str | bool, offset: int) -> None:
    """A k=5, p=1 conv shortens a clip by 2 frames; the mode picks which input frames are added."""
    torch.manual_seed(5)
    conv = co.Conv1d(2, 2, 5, padding=1)
    res = co.Residual(conv, residual_shrink=shrink)
    clip = torch.randn(1, 2, 10)
    out = conv(clip)
    expected = out + clip[:, :, offset : offset + out.shape[2]]
    torch.testing.assert_close(res(clip), expected)
    assert_steps_match(res, clip, expected)


def test_residual_without_shrink_on_shortening_module_says_how() -> None:
    with pytest.raises(ValueError, match="residual_shrink"):
        co.Residual(co.Conv1d(1, 1, 3))


def test_mismatched_branch_lengths_are_an_error() -> None:
    net = co.BroadcastReduce(co.Conv1d(1, 1, 3), co.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="different lengths"):
        net(torch.randn(1, 1, 5))


def test_lambda_and_linear_head() -> None:
    torch.manual_seed(6)
    net = co.Sequential(
        co.Conv1d(3, 4, 3, padding=1), co.Lambda(torch.tanh), co.Linear(4, 2, channel_dim=1), co.Lambda(torch.sigmoid)
    )
    clip = torch.randn(2, 3, 7)
    assert_steps_match(net, clip, net(clip))


def test_linear_channel_dims() -> None:
    torch.manual_seed(7)
    lin = co.Linear(4, 3, channel_dim=3)
    clip = torch.randn(2, 5, 6, 4)  # (B, C, T, F): features last
    torch.testing.assert_close(lin(clip), nn.functional.linear(clip, lin.weight, lin.bias))
    torch.testing.assert_close(lin.forward_step(clip[:, :, 2]), lin(clip)[:, :, 2])
    with pytest.raises(ValueError, match="time dim"):
        co.Linear(4, 3, channel_dim=2)


def test_conditional_pad_end_and_update_state() -> None:
    torch.manual_seed(8)
    net = co.Conditional(lambda m, x: True, co.Conv1d(1, 1, 3, padding=1), co.Conv1d(1, 1, 1))
    assert net.delay == 1
    clip = torch.randn(1, 1, 6)
    with torch.no_grad():
        net.clean_state()
        assert net.forward_steps(clip, pad_end=True).shape[2] == 6
        net.clean_state()
        first = net.forward_steps(clip[:, :, :3])
        peek = net.forward_step(clip[:, :, 3], update_state=False)
        again = net.forward_step(clip[:, :, 3])
    torch.testing.assert_close(peek, again)
    torch.testing.assert_close(torch.cat([first, again.unsqueeze(2)], 2), net(clip)[:, :, :3])
    false_branch = co.Conditional(lambda m, x: False, co.Conv1d(1, 1, 3, padding=1))
    assert_steps_match(false_branch, clip, clip)
