"""``co.export``: a warmed-up continual step exported as a pure function (torch.export, ONNX) steps a stream exactly
as eager ``forward_step`` does, in PyTorch and in onnxruntime."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modules import continual as co
from modules.continual.export import ExportError, TorchExportRunner
from modules.nets import build

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _strided_net(temporal_stride: int = 2) -> nn.Module:
    """Conv, BatchNorm, a residual, parallel branches (an aligning delay outside the module tree), a strided conv,
    max and adaptive pools: every kind of state, and ``temporal_stride`` phases."""
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv3d(3, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        co.Residual(co.Conv3d(4, 4, 3, padding=1, groups=4)),
        co.BroadcastReduce(co.Conv3d(4, 4, 3, padding=(0, 1, 1)), co.Conv3d(4, 4, 1)),  # the 1x1 branch: aligned
        co.Conv3d(4, 4, (2, 1, 1), stride=(temporal_stride, 1, 1)),
        co.MaxPool3d((2, 2, 2), stride=(1, 2, 2)),
        co.AdaptiveAvgPool3d((1, 1, 1), temporal_window=3),
        co.Linear(4, 5),
    ).eval()


def _transformer() -> nn.Module:
    torch.manual_seed(0)
    layer = co.TransformerEncoderLayer(16, 2, 32, dropout=0.0, sequence_len=6)
    return co.TransformerEncoder(layer, 2).eval()


def _compare(net: nn.Module, runner, shape: tuple[int, ...], steps: int = 10, rtol: float = 1e-5) -> int:
    """Step a random stream through ``net`` (eagerly) and ``runner`` side by side; both start from the exported
    warmed-up state. Returns the number of outputs compared."""
    torch.manual_seed(1)
    compared = 0
    with torch.no_grad():
        for t in range(steps):
            x = torch.randn(shape)
            want, got = net.forward_step(x), runner(x)
            assert (want is None) == (got is None), f"step {t}: eager {'emits' if want is not None else 'skips'}"
            if want is not None:
                torch.testing.assert_close(got, want, atol=rtol * float(want.abs().max()) + 1e-7, rtol=0)
                compared += 1
    return compared


@pytest.fixture(scope="module")
def conv_stack() -> tuple[nn.Module, co.ExportedStep]:
    net = build("co_conv_stack", inference=True)
    return net, co.export(net, torch.randn(1, 3, 16, 16), "onnx")


@pytest.fixture(scope="module")
def strided() -> tuple[nn.Module, co.ExportedStep]:
    net = _strided_net()
    return net, co.export(net, torch.randn(2, 3, 8, 8), "onnx", onnx_options={"optimize": False})


# --- onnxruntime equals eager ------------------------------------------------------------------------------------
def test_conv_stack_onnxruntime_equals_eager(conv_stack) -> None:
    net, exported = conv_stack
    assert exported.format == "onnx" and exported.phases == 1 and exported.emits == (True,)
    assert exported.metadata == {"net": "Sequential", "step_shape": [1, 3, 16, 16], "dtype": "torch.float32"}
    assert exported.input_names == ("step", *(f"state_{j}" for j in range(len(exported.initial_state))))
    assert exported.output_names[0][0] == "output"
    runner = co.OnnxStepRunner(exported)
    runner.warm_up(net, torch.zeros(1, 3, exported.warmup_length, 16, 16))
    assert _compare(net, runner, (1, 3, 16, 16)) == 10


def test_strided_net_phases_onnxruntime_equals_eager(strided) -> None:
    net, exported = strided
    assert exported.stride == 2 and exported.phases == 2 and sorted(exported.emits) == [False, True]
    assert any(".~" in name for name in exported.state_names), "the residual's aligning delay is state"
    skipping = exported.output_names[exported.emits.index(False)]
    assert "output" not in skipping and len(skipping) < len(exported.initial_state)  # the layers after it wait
    runner = co.OnnxStepRunner(exported)
    runner.warm_up(net, torch.randn(2, 3, exported.warmup_length + 1, 8, 8))  # the other phase first
    assert runner.phase == 1
    assert _compare(net, runner, (2, 3, 8, 8), steps=9) in (4, 5)


def test_warm_up_starts_a_new_stream(strided) -> None:
    """A new stream's first steps run eagerly, then the runner goes on: the same as eager stepping all along."""
    net, exported = strided
    runner = co.OnnxStepRunner(exported)
    clip = torch.randn(2, 3, exported.warmup_length + 3, 8, 8)
    eager = copy.deepcopy(net)
    eager.clean_state()
    warm = runner.warm_up(net, clip)
    with torch.no_grad():
        torch.testing.assert_close(warm, eager.forward_steps(clip), atol=0, rtol=0)
    assert runner.phase == 3 % exported.phases
    _compare(eager, runner, (2, 3, 8, 8), steps=6)
    with pytest.raises(ValueError, match=f"at least warmup_length={exported.warmup_length} steps"):
        runner.warm_up(net, clip[:, :, :2])


def test_state_round_trip_and_clean_state(conv_stack) -> None:
    _, exported = conv_stack
    runner = co.OnnxStepRunner(exported)
    step = torch.randn(1, 3, 16, 16)
    saved = runner.get_state()
    first = runner(step)
    runner(torch.randn(1, 3, 16, 16))
    runner.set_state(saved)
    torch.testing.assert_close(runner(step), first, atol=0, rtol=0)
    runner.clean_state()  # back to the exported warmed-up state, not to an empty window
    for have, want in zip(runner.get_state(), exported.initial_state):
        torch.testing.assert_close(have, want, atol=0, rtol=0)
    torch.testing.assert_close(runner(step.numpy()), first, atol=0, rtol=0)  # numpy steps too


def test_saved_files_load_into_both_runners(strided, tmp_path: Path) -> None:
    _, exported = strided
    paths = exported.save(tmp_path / "step.onnx")
    assert [Path(p).name for p in paths] == ["step.onnx", "step.phase1.onnx", "step.state.npz"]
    loaded = co.ExportedStep.load(tmp_path / "step.onnx")
    assert loaded.facts() == exported.facts()
    from_file, in_memory = co.OnnxStepRunner(tmp_path / "step.onnx"), co.OnnxStepRunner(exported)
    torch.manual_seed(2)
    for _ in range(4):
        x = torch.randn(2, 3, 8, 8)
        a, b = from_file(x), in_memory(x)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=0, rtol=0)


# --- torch.export ------------------------------------------------------------------------------------------------
def test_torch_export_round_trip_equals_eager(tmp_path: Path) -> None:
    net = _strided_net()
    exported = co.export(net, torch.randn(2, 3, 8, 8), "torch_export", path=tmp_path / "step.pt2")
    assert all(isinstance(p, torch.export.ExportedProgram) for p in exported.programs)
    assert [Path(p).name for p in exported.paths] == ["step.pt2", "step.phase1.pt2", "step.state.npz"]
    twin = copy.deepcopy(net)
    assert _compare(net, TorchExportRunner(exported), (2, 3, 8, 8), rtol=1e-6) >= 4
    assert _compare(twin, TorchExportRunner(tmp_path / "step.pt2"), (2, 3, 8, 8), rtol=1e-6) >= 4


def test_transformer_torch_export_equals_eager() -> None:
    """A retroactive first layer keeps its window of inputs outside any StatefulModule: still exported as state."""
    net = _transformer()
    exported = co.export(net, torch.randn(2, 16), "torch_export")
    assert "layers.0._inputs" in exported.state_names
    assert _compare(net, TorchExportRunner(exported), (2, 16), rtol=1e-6) == 10


# --- errors ------------------------------------------------------------------------------------------------------
def test_runner_refuses_a_step_of_another_shape(conv_stack) -> None:
    _, exported = conv_stack
    runner = co.OnnxStepRunner(exported)
    with pytest.raises(
        ValueError, match=r"Sequential expects steps \(1, 3, 16, 16\) torch.float32, got \(2, 3, 16, 16\)"
    ):
        runner(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"got \(1, 3, 16, 16\) torch.float64"):
        runner(torch.randn(1, 3, 16, 16, dtype=torch.float64))


def test_runner_refuses_the_state_of_another_net(conv_stack, strided) -> None:
    _, exported = conv_stack
    _, other = strided
    runner = co.OnnxStepRunner(exported)
    with pytest.raises(ValueError, match=f"keeps {len(exported.initial_state)} state tensors, got"):
        runner.set_state(other.initial_state)
    wrong = list(exported.initial_state)
    wrong[0] = torch.zeros(*wrong[0].shape[:-1], 7)
    with pytest.raises(ValueError, match=rf"state {exported.state_names[0]} is \(.*, 7\) float32, but .* from another"):
        runner.set_state(wrong)
    with pytest.raises(ValueError, match="does not fit the step exported from a Sequential"):
        exported.state_from(_transformer())
    with pytest.raises(ValueError, match=r"runs torch\.export programs, this step was exported as 'onnx'"):
        TorchExportRunner(exported)


def test_export_error_names_the_net_and_the_op() -> None:
    net = co.Sequential(co.Conv1d(2, 2, 2), co.Lambda(lambda x: x * float(x.sum()))).eval()
    message = r"torch.export failed on Sequential's step \(phase 0\) at a tensor value read on the host .* \(<lambda>\)"
    with pytest.raises(ExportError, match=message):
        co.export(net, torch.randn(1, 2), "torch_export")


def test_export_refuses_bad_arguments() -> None:
    net = _strided_net()
    with pytest.raises(ValueError, match="format must be one of"):
        co.export(net, torch.randn(2, 3, 8, 8), "tflite")
    with pytest.raises(ValueError, match=r"needs Sequential.eval\(\)"):
        co.export(net.train(), torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="needs a continual net"):
        co.export(nn.Linear(2, 2), torch.randn(1, 2))


# --- out_of_place ------------------------------------------------------------------------------------------------
def test_out_of_place_step_keeps_the_old_state_and_output() -> None:
    net = _strided_net(temporal_stride=1)
    first, step = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(net.delay + 2):
            net.forward_step(first)
        slots = [(m, n) for m, n in co.state_slots(net) if getattr(m, n) is not None]
        before = [getattr(m, n) for m, n in slots]
        values = [t.clone() for t in before]
        saved = net.get_state()
        in_place = net.forward_step(step)
        assert any(getattr(m, n) is t for (m, n), t in zip(slots, before)), "eager steps write in place"
        net.set_state(saved)
        before = [getattr(m, n) for m, n in slots]
        with co.out_of_place():
            pure = net.forward_step(step)
        after = [getattr(m, n) for m, n in slots]
    torch.testing.assert_close(pure, in_place, atol=0, rtol=0)
    for old, new, value in zip(before, after, values):
        assert new is not old
        torch.testing.assert_close(old, value, atol=0, rtol=0)  # the previous state tensors are unchanged


# --- the zoo (slow: each ONNX conversion takes 5-30 s on 2 CPU cores) ---------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("cox3d_tiny", {}, (1, 3, 32, 32)),
        (
            "cost_gcn",
            {"width": 0.25, "num_classes": 5, "sequence_len": 160, "pool_size": 8, "pool_padding": 0},
            (1, 3, 25, 2),
        ),
    ],
)
def test_zoo_onnxruntime_equals_eager(name: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    net = build(name, inference=True, **kwargs)
    exported = co.export(net, torch.randn(shape), "onnx", onnx_options={"optimize": False})  # a third faster
    assert exported.phases == net.stride[0]
    assert _compare(net, co.OnnxStepRunner(exported), shape, steps=8) == 8 // net.stride[0]


@pytest.mark.slow
def test_transformer_onnxruntime_equals_eager() -> None:
    net = _transformer()
    assert _compare(net, co.OnnxStepRunner.from_net(net, torch.randn(2, 16)), (2, 16)) == 10


@pytest.mark.slow
def test_cox3d_s_onnxruntime_equals_eager() -> None:
    net = build("cox3d_s", inference=True)
    runner = co.OnnxStepRunner.from_net(net, torch.randn(1, 3, 160, 160))
    assert isinstance(runner(np.zeros((1, 3, 160, 160), np.float32)), torch.Tensor)
    net.forward_step(torch.zeros(1, 3, 160, 160))
    assert _compare(net, runner, (1, 3, 160, 160), steps=3) == 3
