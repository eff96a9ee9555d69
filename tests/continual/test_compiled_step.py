"""``CompiledStep``: a warmed-up step traced once (per stride phase) and replayed or compiled equals eager stepping."""

import copy

import pytest
import torch
from torch import nn

from modules import continual as co


def _net(temporal_stride: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv3d(3, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        co.Residual(co.Conv3d(8, 8, (3, 3, 3), padding=(1, 1, 1), groups=8)),  # depthwise: an input window
        co.Conv3d(8, 8, (2, 1, 1), stride=(temporal_stride, 1, 1)),
        co.MaxPool3d((2, 2, 2), stride=(1, 2, 2)),
        co.AdaptiveAvgPool3d((1, 1, 1), temporal_window=4),
        co.Linear(8, 5),
    ).eval()


def _expected(net: nn.Module, first: torch.Tensor, clip: torch.Tensor, fed: int) -> list[torch.Tensor | None]:
    """Eager outputs of a copy of ``net`` for ``fed`` copies of ``first`` (the warm-up), then ``clip``'s frames."""
    twin = copy.deepcopy(net)
    twin.clean_state()
    for _ in range(fed):
        twin.forward_step(first)
    return [twin.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


def _check(
    net: nn.Module, backend: str, steps: int = 12, device: str = "cpu", cuda_graph: bool = False
) -> list[torch.Tensor | None]:
    net = net.to(device)
    clip = torch.randn(2, 3, steps, 8, 8, device=device)
    first = torch.randn(2, 3, 8, 8, device=device)
    with torch.no_grad():
        twin = copy.deepcopy(net)
        compiled = co.CompiledStep(net, first, backend=backend, warmup_steps=2, cuda_graph=cuda_graph)
        expected = _expected(twin, first, clip, compiled.warmup_length)  # tracing does not step
        outputs = [None if (o := compiled(clip[:, :, t])) is None else o.clone() for t in range(steps)]
    for out, ref in zip(outputs, expected, strict=True):
        assert (out is None) == (ref is None)
        if ref is not None:
            tol = 1e-5 if device == "cpu" else 1e-3  # CUDA: kernels chosen differently (cuDNN, TF32, triton)
            torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    return outputs


def test_replayed_trace_equals_eager_steps() -> None:
    outputs = _check(_net(), "eager")
    assert all(o is not None for o in outputs)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_unrolled_depthwise_steps_trace_and_compile_as_the_eager_steps(backend: str) -> None:
    torch.manual_seed(1)
    reference = _net()
    net = copy.deepcopy(reference)
    assert co.set_depthwise_step(net, "unrolled") == 1
    clip = torch.randn(1, 3, 10, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_steps(clip), reference.forward_steps(clip), atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    _check(net, backend)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_unrolled_depthwise_steps_compile_on_cuda_as_a_graph() -> None:
    net = _net()
    co.set_depthwise_step(net, "unrolled")
    torch._dynamo.reset()
    _check(net, "inductor", steps=6, device="cuda", cuda_graph=True)


def test_strided_net_cycles_through_one_trace_per_phase() -> None:
    net = _net(temporal_stride=2)
    outputs = _check(net, "eager")
    assert [o is None for o in outputs].count(True) == len(outputs) // 2  # every other step emits
    assert len(co.CompiledStep(net, torch.randn(1, 3, 8, 8), backend="eager")._phases) == 2


def test_functionalised_state_updates_persist_across_calls() -> None:
    # aot_eager: dynamo + AOTAutograd functionalise the in-place state writes and must write them back
    torch._dynamo.reset()
    _check(_net(), "aot_eager", steps=8)


def test_output_is_a_fresh_tensor_not_the_state() -> None:
    net = co.Sequential(co.Delay(2)).eval()  # returns a frame of its own state
    with torch.no_grad():
        compiled = co.CompiledStep(net, torch.zeros(1, 2), backend="eager", warmup_steps=0)
        a = compiled(torch.ones(1, 2))
        compiled(torch.full((1, 2), 2.0))
        compiled(torch.full((1, 2), 3.0))
    assert torch.equal(a, torch.zeros(1, 2))  # the value emitted then, not overwritten by later steps


def test_compiled_step_in_inference_mode_and_with_grad_enabled() -> None:
    net = _net()
    with torch.inference_mode():
        compiled = co.CompiledStep(net, torch.randn(1, 3, 8, 8), backend="eager")
        assert compiled(torch.randn(1, 3, 8, 8)) is not None
    out = compiled(torch.randn(1, 3, 8, 8))
    assert out is not None and not out.requires_grad


def test_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        co.CompiledStep(_net().train(), torch.randn(1, 3, 8, 8))


@pytest.mark.slow  # inductor compiles C++ (~20-40 s on 2 cores)
def test_inductor_compiled_step_equals_eager() -> None:
    torch._dynamo.reset()
    _check(_net(temporal_stride=2), "inductor", steps=6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_inductor_compiled_step_on_cuda(cuda_graph: bool) -> None:
    torch._dynamo.reset()
    _check(_net(temporal_stride=2), "inductor", steps=6, device="cuda", cuda_graph=cuda_graph)


def test_cuda_graph_needs_a_cuda_step() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        co.CompiledStep(_net(), torch.randn(1, 3, 8, 8), backend="eager", cuda_graph=True)


def test_cox3d_tiny_traced_step_equals_eager() -> None:
    # the real block structure: squeeze-excitation over the current frame, residual delays, depthwise windows
    from modules.nets import build

    torch.manual_seed(0)
    net = build("cox3d_tiny").eval()
    steps = 6
    clip = torch.randn(1, 3, steps, 32, 32)
    first = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        twin = copy.deepcopy(net)
        compiled = co.CompiledStep(net, first, backend="eager", warmup_steps=0)
        expected = _expected(twin, first, clip, compiled.warmup_length)
        outputs = [compiled(clip[:, :, t]) for t in range(steps)]
    torch.testing.assert_close(torch.stack(outputs), torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_a_step_that_repeats_every_few_steps_gets_one_program_per_step_of_its_cycle() -> None:
    """A continual Nyström attention refreshes one landmark row every ``refresh_period`` steps: its step repeats
    only after ``num_landmarks * refresh_period`` steps, so one traced step cannot stand for all of them."""
    from modules.continual.nystrom import ContinualNystromAttention

    torch.manual_seed(0)
    net = ContinualNystromAttention(8, 2, 2, sequence_len=4).eval()  # 2 landmarks refreshed every 2 steps
    assert co.replay.steady_period(net) == 4
    first, stream = torch.randn(2, 8), torch.randn(2, 8, 14)
    with torch.no_grad():
        twin = copy.deepcopy(net)
        compiled = co.CompiledStep(net, first, backend="eager")
        assert compiled.phases == 4
        expected = _expected(twin, first, stream, compiled.warmup_length)
        outputs = [compiled(stream[:, :, t]) for t in range(stream.shape[2])]
        torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)
        # a new stream warms up eagerly and joins the programs where its counters meet the cycle's start
        compiled.clean_state()
        twin.clean_state()
        outputs = [compiled(stream[:, :, t]) for t in range(stream.shape[2])]
        expected = [twin.forward_step(stream[:, :, t]) for t in range(stream.shape[2])]
        assert outputs[:3] == [None] * 3
        torch.testing.assert_close(outputs[3:], expected[3:], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="repeats every 4: temporal stride or landmark refresh"):
            compiled.clean_state(rows=[0])
    with pytest.raises(ValueError, match=r"repeats only every 4 steps .* more than max_phases=2"):
        co.CompiledStep(copy.deepcopy(twin), first, backend="eager", max_phases=2)
