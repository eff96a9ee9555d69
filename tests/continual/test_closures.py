"""Closures (Add, Multiply, Identity, Constant, Zero, One), Reshape, ParallelDispatch and Lambda's per-mode
functions: every call mode equals the offline function, alone and inside containers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import modules.continual as co
from tests.continual.helpers import assert_steps_match


def _all_modes(module: nn.Module, clip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    steps = torch.stack([module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])], dim=2)
    return module(clip), module.forward_steps(clip), steps


CLOSURES = [
    (lambda: co.Add(5), lambda x: x + 5),
    (lambda: co.Add(torch.tensor([1.0, -2.0]).view(1, 2, 1)), lambda x: x + torch.tensor([1.0, -2.0]).view(1, 2, 1)),
    (lambda: co.Multiply(3.5), lambda x: x * 3.5),
    (lambda: co.Multiply(torch.tensor([2.0, 0.5]).view(1, 2, 1)), lambda x: x * torch.tensor([2.0, 0.5]).view(1, 2, 1)),
    (lambda: co.Identity(54, unused=True), lambda x: x),
    (lambda: co.Constant(42), lambda x: 42 * torch.ones_like(x)),
    (lambda: co.Zero(), torch.zeros_like),
    (lambda: co.One(), torch.ones_like),
]


@pytest.mark.parametrize(("build", "offline"), CLOSURES)
def test_each_closure_equals_its_function_in_every_mode(build, offline) -> None:
    torch.manual_seed(0)
    module = build()
    assert isinstance(module, co.Lambda) and module.takes_time  # as the library builds them
    assert (module.delay, module.receptive_field, module.stride) == (0, 1, (1,))
    clip = torch.randn(2, 2, 5)
    want = offline(clip)
    for got in _all_modes(module, clip):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_tensor_constant_moves_with_the_module_and_is_not_saved() -> None:
    add = co.Add(torch.ones(1, 2, 1))
    assert add.state_dict() == {}
    half = add.to(torch.float64)
    assert half.value.dtype == torch.float64
    assert repr(co.Multiply(2)) == "Multiply(2)" and repr(add) == "Add((1, 2, 1) tensor)"
    with pytest.raises(TypeError, match=r"Add takes a number or a tensor, got str"):
        co.Add("1")


def test_closures_inside_broadcast_parallel_and_dispatch() -> None:
    # The library's examples: copy a stream (max = 3), then copy and group one (max = 4).
    copy = co.Sequential(
        co.Broadcast(2),
        co.Parallel(co.Add(1), co.Identity()),
        co.ParallelDispatch([0, 0, 1]),
        co.Parallel(co.Identity(), co.Add(2), co.Identity()),
        co.Reduce("max"),
    )
    group = co.Sequential(
        co.Broadcast(2),
        co.Parallel(co.Add(2), co.Identity()),
        co.ParallelDispatch([[0, 0], 1]),
        co.Parallel(co.Reduce("sum"), co.Identity()),
        co.Reduce("max"),
    )
    clip = torch.zeros(1, 1, 3)
    for net, value in ((copy, 3.0), (group, 4.0)):
        for got in _all_modes(net, clip):
            torch.testing.assert_close(got, torch.full_like(clip, value), atol=0, rtol=0)


def test_dispatch_behind_stateful_branches_steps_like_the_clip() -> None:
    torch.manual_seed(1)
    net = co.Sequential(
        co.Broadcast(2),
        co.Parallel(co.Conv1d(2, 2, 3, padding=1), co.Multiply(0.5)),  # the Multiply branch is delayed to align
        co.ParallelDispatch([1, [0, 1]]),
        co.Parallel(co.Constant(1.0), co.Reduce("sum")),
        co.Reduce("mul"),
    )
    clip = torch.randn(2, 2, 6)
    with torch.no_grad():
        conv = getattr(net[1], "0")(clip)
    assert_steps_match(net, clip, conv + 0.5 * clip)


def test_parallel_dispatch_refusals() -> None:
    with pytest.raises(ValueError, match=r"ParallelDispatch: 1.0 in \[1.0, 'nah'\] is not a stream index"):
        co.ParallelDispatch([1.0, "nah"])
    with pytest.raises(IndexError, match=r"stream 2 does not exist among 2 input streams"):
        co.ParallelDispatch([2, 0]).forward_step([torch.zeros(1), torch.ones(1)])
    assert co.ParallelDispatch([1, 0]).forward_step(None) is None  # a warming-up stream passes through


def test_reshape_keeps_time_on_dim_2() -> None:
    torch.manual_seed(2)
    clip = torch.randn(2, 3, 5, 4, 2)
    for reshape in (co.Reshape(-1, 24), co.Reshape((2, 3, 8), contiguous=True)):
        out, steps, stepped = _all_modes(reshape, clip)
        want = torch.stack([clip[:, :, t].reshape(reshape.shape) for t in range(5)], dim=2)
        for got in (out, steps, stepped):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert co.Reshape(-1, 24)(clip).shape == (2, 24, 5)
    assert repr(co.Reshape((2, 20), contiguous=True)) == "Reshape((2, 20), contiguous=True)"
    with pytest.raises(ValueError, match=r"turns the batch of 2 streams of step \(2, 3, 4, 2\) into 1"):
        co.Reshape(1, -1).forward_step(clip[:, :, 0])
    with pytest.raises(ValueError, match=r"at least batch and channels"):
        co.Reshape(-1)


def test_lambda_per_mode_functions() -> None:
    x = torch.ones(1, 1, 2, 2)
    mod = co.Lambda(
        fn=lambda x: x + 1,
        forward_only_fn=lambda x: x + 2,
        forward_step_only_fn=lambda x: x + 3,
        forward_steps_only_fn=lambda x: x + 4,
    )
    torch.testing.assert_close(mod(x), x + 2)
    torch.testing.assert_close(mod.forward_step(x[:, :, 0]), x[:, :, 0] + 3)
    torch.testing.assert_close(mod.forward_steps(x), x + 4)
    only_step = co.Lambda(lambda x: x * 2, forward_step_only_fn=lambda x: x * 3)
    torch.testing.assert_close(only_step(x), x * 2)  # fn serves the modes without their own function
    torch.testing.assert_close(only_step.forward_step(x[:, :, 0]), x[:, :, 0] * 3)
    with pytest.raises(ValueError, match=r"Lambda needs fn, or a function for every call mode: forward_steps_only_fn"):
        co.Lambda(forward_only_fn=torch.relu, forward_step_only_fn=torch.relu)
    with pytest.raises(TypeError, match=r"Lambda: fn must be callable"):
        co.Lambda(3)


def test_lambda_takes_time_and_plain_functions_convert() -> None:
    torch.manual_seed(3)
    clip = torch.randn(2, 3, 4)
    per_frame = co.Lambda(lambda step: step.softmax(dim=1))  # takes_time=False: fn sees (B, C)
    whole = co.Lambda(lambda clip: clip - clip.mean(dim=1, keepdim=True), takes_time=True)
    for module, want in ((per_frame, clip.softmax(dim=1)), (whole, clip - clip.mean(dim=1, keepdim=True))):
        for got in _all_modes(module, clip):
            torch.testing.assert_close(got, want)
    net = co.Sequential(co.Conv1d(3, 3, 1), torch.tanh, lambda x: x * 2)
    assert [type(m).__name__ for m in net] == ["Conv1d", "Lambda", "Lambda"]
    assert_steps_match(net, clip, net(clip))
    assert isinstance(co.continual(torch.relu, temporal_fill="zeros"), co.Lambda)
