"""One compiled program, many streams: ``CompiledStep.clean_state`` (whole batch or rows), snapshots, and
``co.fast_step``, the default stepper (compiled when it compiles in time, else eager)."""

import copy
import logging

import pytest
import torch
from torch import nn

from modules import continual as co
from modules.nets import build


def _net() -> nn.Module:
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv3d(3, 6, 3, padding=1),
        nn.BatchNorm3d(6),
        nn.ReLU(),
        co.Residual(co.Conv3d(6, 6, 3, padding=1, groups=6)),
        co.Conv3d(6, 6, (2, 1, 1)),
        co.AdaptiveAvgPool3d((1, 1, 1), temporal_window=5),
        co.Linear(6, 4),
    ).eval()


class CountingBackend:
    """A torch.compile backend that counts its compilations and runs the graph as traced."""

    def __init__(self) -> None:
        self.compilations = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        self.compilations += 1
        return graph.forward


def _eager_stream(net: nn.Module, frames: torch.Tensor) -> list[torch.Tensor | None]:
    net = copy.deepcopy(net)
    net.clean_state()
    with torch.no_grad():
        return [net.forward_step(frames[:, :, t]) for t in range(frames.shape[2])]


def _assert_same(outputs: list, expected: list) -> None:
    assert [o is None for o in outputs] == [e is None for e in expected]
    for o, e in zip(outputs, expected):
        if e is not None:
            torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)


def test_new_streams_reuse_the_compiled_program() -> None:
    torch._dynamo.reset()
    net, backend = _net(), CountingBackend()
    stepper = co.CompiledStep(net, torch.randn(2, 3, 8, 8), backend=backend)
    stepper(torch.randn(2, 3, 8, 8))
    compiled = backend.compilations
    assert compiled == 1
    for seed in (1, 2):  # two fresh streams: warm-up eager, then the same program
        frames = torch.randn(2, 3, 14, 8, 8, generator=torch.Generator().manual_seed(seed))
        stepper.clean_state()
        outputs = [stepper(frames[:, :, t]) for t in range(frames.shape[2])]
        _assert_same(outputs, _eager_stream(_net(), frames))
        assert outputs[net.delay] is not None and outputs[net.delay - 1] is None
    assert backend.compilations == compiled


def test_restarting_one_row_leaves_the_others_and_warms_it_up_alone() -> None:
    net = _net()
    stepper = co.CompiledStep(copy.deepcopy(net), torch.randn(3, 3, 8, 8), backend="eager")
    frames = torch.randn(3, 3, 20, 8, 8)
    stepper.clean_state()
    restart = 8
    outputs = []
    for t in range(frames.shape[2]):
        if t == restart:
            stepper.clean_state(rows=[1])
        outputs.append(stepper(frames[:, :, t]))
        if t == restart:
            assert stepper.ready.tolist() == [True, False, True]
    others = _eager_stream(net, frames[[0, 2]])
    for t in range(net.delay, frames.shape[2]):
        torch.testing.assert_close(outputs[t][[0, 2]], others[t], atol=1e-5, rtol=1e-5)
    fresh = _eager_stream(net, frames[1:2, :, restart:])
    for t in range(restart, frames.shape[2]):
        row, ref = outputs[t][1], fresh[t - restart]
        if ref is None:
            assert torch.isnan(row).all()
        else:
            torch.testing.assert_close(row, ref[0], atol=1e-5, rtol=1e-5)
    assert stepper.ready.all()


def test_snapshot_and_restore_replay_the_same_outputs() -> None:
    stepper = co.CompiledStep(_net(), torch.randn(1, 3, 8, 8), backend="eager")
    frames = torch.randn(1, 3, 10, 8, 8)
    snapshot = stepper.get_state()
    kept = [b.clone() for b in snapshot["buffers"]]
    first = [stepper(frames[:, :, t]) for t in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(snapshot["buffers"], kept))  # a snapshot never changes
    stepper.set_state(snapshot)
    again = [stepper(frames[:, :, t]) for t in range(10)]
    _assert_same(again, first)
    stepper.clean_state()  # a snapshot taken during a warm-up restores the warm-up
    stepper(frames[:, :, 0])
    warming = stepper.get_state()
    a = [stepper(frames[:, :, t]) for t in range(1, 10)]
    stepper.set_state(warming)
    _assert_same([stepper(frames[:, :, t]) for t in range(1, 10)], a)


def test_wrong_steps_and_snapshots_are_refused() -> None:
    stepper = co.CompiledStep(_net(), torch.randn(2, 3, 8, 8), backend="eager")
    with pytest.raises(ValueError, match=r"compiled for steps \(2, 3, 8, 8\).*pad the batch"):
        stepper(torch.randn(1, 3, 8, 8))
    other = co.CompiledStep(_net(), torch.randn(1, 3, 8, 8), backend="eager")
    with pytest.raises(ValueError, match="another net or batch size"):
        stepper.set_state(other.get_state())
    with pytest.raises(ValueError, match="row 5 is not a row of the batch of 2"):
        stepper.clean_state(rows=[5])


def test_fast_step_falls_back_to_eager_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    net = _net()
    assert isinstance(co.fast_step(net, torch.randn(1, 3, 8, 8), compile=False), co.EagerStep)

    def failing(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no compiler here")

    with caplog.at_level(logging.WARNING):
        stepper = co.fast_step(net, torch.randn(1, 3, 8, 8), backend=failing)
    assert not stepper.compiled and "no compiler here" in stepper.reason
    assert "stepping eagerly" in caplog.text
    frames = torch.randn(1, 3, 9, 8, 8)
    _assert_same([stepper(frames[:, :, t]) for t in range(9)], _eager_stream(net, frames))


def test_fast_path_equals_the_plain_eager_step() -> None:
    # what a user gets (BatchNorm folded, steady state compiled) == build() stepped eagerly, from a clean stream
    torch.manual_seed(0)
    plain = build("cox3d_tiny").eval()
    torch.manual_seed(0)
    fast = co.fast_step(build("cox3d_tiny", inference=True), torch.randn(2, 3, 32, 32), backend=CountingBackend())
    assert fast.compiled and fast.delay == plain.delay
    frames = torch.randn(2, 3, plain.delay + 4, 32, 32)
    outputs = [fast(frames[:, :, t]) for t in range(frames.shape[2])]
    _assert_same(outputs, _eager_stream(plain, frames))


def test_a_two_layer_transformer_keeps_every_state_tensor_in_the_program() -> None:
    # the first layer of a 2-layer encoder is retroactive and keeps its window of inputs itself
    torch.manual_seed(0)
    layer = co.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, sequence_len=4)
    net = co.TransformerEncoder(layer, num_layers=2).eval()
    assert any(name == "_inputs" for _, name in co.state_slots(net))
    stepper = co.CompiledStep(copy.deepcopy(net), torch.randn(2, 8), backend="eager")
    frames = torch.randn(2, 8, 12)
    for _ in range(2):  # two fresh streams through the same program
        stepper.clean_state()
        outputs = [stepper(frames[:, :, t]) for t in range(12)]
        _assert_same(outputs, _eager_stream(net, frames))
