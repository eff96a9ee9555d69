"""Faults in continual streams get clear errors instead of wrong outputs (issue 13, defects 5, 7 and 11).

* A step whose batch size, dtype, device or shape differs from its stream's is refused by every stateful continual
  module (and so by every net built from them), naming the module, both shapes and the fix (``clean_state()``);
  ``set_state`` refuses a state from a module of another configuration.
* Modules and nets built, loaded and stepped under any mix of ``inference_mode``, ``no_grad`` and grad mode step.
* Wrong inputs that used to raise raw torch errors (a step without its batch dim, a linear over a clip's time
  dim, an adaptive pool on a too-short clip, a reduction of steps) name the module and the fix.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from modules import continual as co
from modules import nets

pytestmark = pytest.mark.usefixtures("one_thread")


# --- defect 5: a stream that changes batch size, dtype, device or shape ---
def _conv() -> nn.Module:
    return co.Conv3d(3, 4, 3, padding=1)


def _depthwise() -> nn.Module:  # on CPU: an input window instead of partial sums
    return co.Conv3d(3, 3, (3, 1, 1), padding=(1, 0, 0), groups=3)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nets.build("co_conv_stack", num_classes=5)


def _skeleton() -> nn.Module:
    torch.manual_seed(0)
    return nets.build("cost_gcn", num_classes=5, pool_size=2, pool_padding=0)


#: name -> (builder, one step of batch 1): stateful layers, a container and small continual video/skeleton nets.
STREAMS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Conv3d": (_conv, (1, 3, 8, 8)),
    "Conv3d_depthwise": (_depthwise, (1, 3, 8, 8)),
    "Conv1d": (lambda: co.Conv1d(3, 4, 3), (1, 3)),
    "AvgPool3d": (lambda: co.AvgPool3d((2, 2, 2), stride=(1, 2, 2)), (1, 3, 8, 8)),
    "MaxPool3d": (lambda: co.MaxPool3d(3, stride=1, padding=1), (1, 3, 8, 8)),
    "AdaptiveAvgPool3d": (lambda: co.AdaptiveAvgPool3d(1, temporal_window=3), (1, 3, 8, 8)),
    "Delay": (lambda: co.Delay(2), (1, 3, 8, 8)),
    "Residual": (lambda: co.Residual(co.Conv3d(3, 3, 3, padding=1)), (1, 3, 8, 8)),
    "co_conv_stack": (_net, (1, 3, 16, 16)),
    "cost_gcn": (_skeleton, (1, 3, 25, 2)),
}


def _started(name: str, batch: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """The module ``name`` in eval mode after ``receptive_field`` (at most 12: the skeleton net's is ~80) steps of
    a ``batch``-stream."""
    build, shape = STREAMS[name]
    module = build().eval()
    step = torch.randn(batch, *shape[1:])
    with torch.no_grad():
        for _ in range(min(module.receptive_field, 12)):
            module.forward_step(step)
    return module, (batch, *shape[1:])


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_step_of_another_batch_size_is_refused(name: str, before: int, after: int) -> None:
    """Before: batch 2 -> 1 returned batch-2 outputs (Conv3d, pools, co_conv_stack), 1 -> 2 a raw broadcast
    error or another batch-2 output; now both name the module, the shapes and clean_state()."""
    module, shape = _started(name, before)
    wrong = torch.randn(after, *shape[1:])
    with torch.no_grad(), pytest.raises(ValueError, match=r"clean_state\(\)") as error:
        module.forward_step(wrong)
    # Names the refusing module, the step and the stream's step shapes (a net's first stateful layer: its own).
    assert re.search(r"^\w+\.forward_step got a step \(.*\) .* in a stream of steps \(", str(error.value))
    module.clean_state()  # the fix works: a fresh stream of the new batch size steps
    with torch.no_grad():
        module.forward_step(wrong)


def test_the_error_names_the_module_and_both_shapes() -> None:
    module, _ = _started("Conv3d", 2)
    with torch.no_grad(), pytest.raises(ValueError) as error:
        module.forward_step(torch.randn(1, 3, 8, 8))
    message = str(error.value)
    assert "Conv3d" in message
    assert "(1, 3, 8, 8)" in message and "(2, 3, 8, 8)" in message
    assert "clean_state()" in message


@pytest.mark.parametrize("name", ["Conv3d", "MaxPool3d", "Delay", "co_conv_stack"])
def test_a_step_of_another_dtype_or_shape_is_refused(name: str) -> None:
    """Before: a float64 step into a float32 Delay mixed dtypes silently, a smaller frame a raw size error."""
    module, shape = _started(name, 1)
    with torch.no_grad(), pytest.raises(ValueError, match=r"torch\.float64.*clean_state\(\)"):
        module.forward_step(torch.randn(shape, dtype=torch.float64))
    smaller = (*shape[:2], *(s // 2 for s in shape[2:]))
    with torch.no_grad(), pytest.raises(ValueError, match=rf"{tuple(smaller)}.*clean_state\(\)"):
        module.forward_step(torch.randn(smaller))


@pytest.mark.parametrize("name", ["Conv3d", "AvgPool3d", "Delay"])
def test_a_step_on_another_device_is_refused(name: str) -> None:
    """The meta device stands for a GPU here: a CPU stream must not take its steps."""
    module, shape = _started(name, 1)
    with torch.no_grad(), pytest.raises(ValueError, match=r"device meta.*clean_state\(\)"):
        module.forward_step(torch.randn(shape, device="meta"))


def test_a_restored_state_fixes_the_stream_it_accepts() -> None:
    """After set_state of a batch-2 snapshot, a batch-1 step is refused (before: a batch-2 output)."""
    module, _ = _started("Conv3d", 2)
    snapshot = module.get_state()
    fresh = _conv().eval()
    fresh.load_state_dict(module.state_dict())
    fresh.set_state(snapshot)
    with torch.no_grad(), pytest.raises(ValueError, match=r"batch size 1.*2 streams.*clean_state\(\)"):
        fresh.forward_step(torch.randn(1, 3, 8, 8))
    with torch.no_grad():  # the right batch size resumes exactly
        step = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(fresh.forward_step(step), module.forward_step(step), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("make", "other", "pattern"),
    [
        # Before: a conv with a larger kernel's partial sums were taken and failed later with a raw size error.
        (
            _conv,
            lambda: co.Conv3d(3, 4, 5, padding=2),
            r"Conv3d\.set_state: _acc has shape \(4, 2, 4, 8, 8\).*keeps \(2, B, 4, \*, \*\).*another configuration",
        ),
        # Before: silently accepted; the next step broadcast 6 channels against 4.
        (_conv, lambda: co.Conv3d(3, 6, 3, padding=1), r"Conv3d\.set_state.*_acc.*configuration"),
        (lambda: co.Delay(2), lambda: co.Delay(3), r"Delay\.set_state.*_buffer.*configuration"),
        (lambda: co.AvgPool3d(2, stride=1), lambda: co.AvgPool3d(3, stride=1), r"AvgPool3d\.set_state.*_window"),
        # Before: the count mismatch was caught, but the entry types were not.
        (lambda: co.Delay(2), lambda: co.Skip(1), r"Delay\.set_state expects 2 entries"),
        (_conv, lambda: co.Delay(2), r"Conv3d\.set_state expects 3 entries"),
    ],
)
def test_set_state_refuses_a_state_of_another_configuration(
    make: Callable[[], nn.Module], other: Callable[[], nn.Module], pattern: str
) -> None:
    donor = other().eval()
    with torch.no_grad():
        for _ in range(4):
            donor.forward_step(torch.randn(2, 3, 8, 8))
    module = make().eval()
    with pytest.raises(ValueError, match=pattern):
        module.set_state(donor.get_state())


def test_set_state_refuses_malformed_entries() -> None:
    module = co.Delay(2)
    with pytest.raises(ValueError, match=r"Delay\.set_state.*_buffer.*a tensor or None.*got str"):
        module.set_state(("nonsense", 0))
    with pytest.raises(ValueError, match=r"Delay\.set_state.*step count.*non-negative int.*got -1"):
        module.set_state((None, -1))
    container = co.Sequential(co.Conv3d(3, 4, 3), co.Delay(1))
    with pytest.raises(ValueError, match=r"Sequential\.set_state expects 2 child states, got 1"):
        container.set_state([None])
    with pytest.raises(ValueError, match=r"Sequential\.set_state expects a list of 2 child states.*got Tensor"):
        container.set_state(torch.zeros(2))


def test_set_state_refuses_a_state_of_another_net() -> None:
    """A state from a net of another width: before, an IndexError or a raw error at the next step."""
    torch.manual_seed(0)
    small = nets.build("co_conv_stack", num_classes=5, channels=(4, 8)).eval()
    module, _ = _started("co_conv_stack", 1)
    with torch.no_grad():
        for _ in range(small.receptive_field):
            small.forward_step(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"set_state"):
        module.set_state(small.get_state())


# --- defect 7: inference_mode, no_grad and grad mode in any combination ---
MODES: dict[str, Callable[[], Any]] = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}

BUILDERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Conv3d": (_conv, (2, 3, 8, 8)),
    "Conv3d_depthwise": (_depthwise, (2, 3, 8, 8)),
    "MaxPool3d": STREAMS["MaxPool3d"],
    "co_conv_stack": (_net, (2, 3, 16, 16)),
}


def _reference(name: str, clip: Tensor) -> Tensor:
    build, _ = BUILDERS[name]
    torch.manual_seed(0)
    module = build().eval()
    with torch.no_grad():
        return module.forward_steps(clip, pad_end=True)


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("build_mode", list(MODES))
@pytest.mark.parametrize("step_mode", list(MODES))
def test_build_and_step_in_any_autograd_mode(name: str, build_mode: str, step_mode: str) -> None:
    """Before: a conv built under inference_mode raised 'Inference tensors do not track version counter'."""
    build, shape = BUILDERS[name]
    clip = torch.randn(shape[0], shape[1], 12, *shape[2:])
    expected = _reference(name, clip)
    with MODES[build_mode]():
        torch.manual_seed(0)
        module = build().eval()
    with MODES[step_mode]():
        steps = [module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]
        out = module.forward_steps(clip, pad_end=True)  # continues the stream: a clean stream for comparison
        module.clean_state()
        out = module.forward_steps(clip, pad_end=True)
    assert any(s is not None for s in steps)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ["Conv3d", "co_conv_stack"])
@pytest.mark.parametrize("build_mode", list(MODES))
@pytest.mark.parametrize("load_mode", list(MODES))
def test_load_in_any_mode_then_step_with_the_new_weights(name: str, build_mode: str, load_mode: str) -> None:
    """Weights loaded after a step (the cached step weight) are the ones the next stream uses, in every mode."""
    build, shape = BUILDERS[name]
    clip = torch.randn(shape[0], shape[1], 12, *shape[2:])
    expected = _reference(name, clip)
    torch.manual_seed(0)
    weights = copy.deepcopy(build().state_dict())
    with MODES[build_mode]():
        torch.manual_seed(1)  # other weights, stepped once so that the step weight is cached
        module = build().eval()
        with torch.no_grad():
            module.forward_steps(clip)
    with MODES[load_mode]():
        module.load_state_dict(weights)
    for step_mode in MODES.values():
        with step_mode():
            module.clean_state()
            torch.testing.assert_close(module.forward_steps(clip, pad_end=True), expected)


# --- defect 11: raw errors become clear ones ---
def test_a_conv_step_without_its_batch_dim_is_refused() -> None:
    """Before: RuntimeError "shape '[12, 3, 4, 8]' is invalid for input of size 768"."""
    conv = co.Conv3d(3, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"Conv3d\.forward_step expects a step \(B, C=3, H, W\).*got \(3, 8, 8\)"):
        conv.forward_step(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match=r"Conv3d\.forward_step expects a step \(B, C=3, H, W\).*got \(1, 2, 8, 8\)"):
        conv.forward_step(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"Conv3d\.forward_step.*got \(1, 3, 4, 8, 8\).*forward_steps"):
        conv.forward_step(torch.randn(1, 3, 4, 8, 8))  # a clip given as a step


def test_a_pool_step_of_the_wrong_rank_is_refused() -> None:
    pool = co.MaxPool3d(2, stride=1)
    with pytest.raises(ValueError, match=r"MaxPool3d\.forward_step expects a step \(B, C, H, W\).*got \(3, 8\)"):
        pool.forward_step(torch.randn(3, 8))


def test_linear_over_the_time_dim_is_refused_in_every_mode() -> None:
    """Before: channel_dim=-1 on a (B, C, T) clip raised in forward but stepped the channels in forward_step.
    A negative channel_dim is now refused when the layer is built (it names the time of a 3-d clip)."""
    with pytest.raises(ValueError, match=r"channel_dim=-1 counts from the end.*channel_dim=1 for channels"):
        co.Linear(3, 5, channel_dim=-1)
    # A 4-d clip's feature dim given from the front: every mode agrees.
    linear = co.Linear(3, 5, channel_dim=3)
    clip = torch.randn(2, 4, 5, 3)
    torch.testing.assert_close(linear.forward_steps(clip), linear(clip))
    torch.testing.assert_close(linear.forward_step(clip[:, :, 0]), linear(clip)[:, :, 0])


def test_linear_channel_dim_beyond_the_input_is_refused() -> None:
    linear = co.Linear(3, 5, channel_dim=4)
    with pytest.raises(ValueError, match=r"Linear: channel_dim=4 is beyond the 3-d clip"):
        linear(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"Linear: channel_dim=4 is beyond the 3-d clip"):
        linear.forward_step(torch.randn(2, 3))


def test_an_adaptive_pool_on_a_clip_shorter_than_its_window_is_refused() -> None:
    """Before: RuntimeError 'maximum size for tensor at dimension 2 is 2 but size is 4'."""
    pool = co.AdaptiveAvgPool3d(1, temporal_window=4)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool3d\(temporal_window=4\).*clip of 2 frames.*at least 4"):
        pool(torch.randn(1, 3, 2, 4, 4))


def test_reduce_forward_without_a_time_dim_is_refused() -> None:
    """Before: IndexError 'tuple index out of range' for (B, C) inputs."""
    reduce = co.Reduce("sum")
    with pytest.raises(ValueError, match=r"Reduce\.forward takes clips \(B, C, T, \.\.\.\).*\(2, 3\).*forward_step"):
        reduce([torch.randn(2, 3), torch.randn(2, 3)])
    with pytest.raises(ValueError, match=r"Reduce\.forward takes a list of clips"):
        reduce(torch.randn(2, 3, 4))
    torch.testing.assert_close(reduce.forward_step([torch.ones(2, 3), torch.ones(2, 3)]), 2 * torch.ones(2, 3))


def test_ordinary_tensors_makes_any_net_built_under_inference_mode_steppable_with_autograd() -> None:
    """Continual layers convert their own tensors; a net's other modules (CoX3D's squeeze-excitation convs) need
    ``co.ordinary_tensors(net)``, which ``nets.build`` applies: without it a grad-mode step raises 'Inference
    tensors cannot be saved'."""
    builder = nets.get_builder("cox3d_tiny")
    step = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.manual_seed(0)
        raw = builder(num_classes=5).eval()  # the builder alone, as before build() converted
        built = nets.build("cox3d_tiny", num_classes=5).eval()
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        for _ in range(raw.delay + 1):
            raw.forward_step(step)
    co.ordinary_tensors(raw)
    for net in (raw, built):
        assert not any(t.is_inference() for t in [*net.parameters(), *net.buffers()])
        net.clean_state()
        outputs = [net.forward_step(step) for _ in range(net.delay + 1)]
        assert outputs[-1] is not None and outputs[-1].requires_grad
