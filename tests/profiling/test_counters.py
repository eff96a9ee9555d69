"""ptflops and fvcore on continual nets (``modules.profiling.counters``): with the hooks and handles they give the
project's counts (``count_macs``, ``FlopCounter``) in clip and step mode; without them they do not (the defects)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import modules.continual as co
from modules.nets import build
from modules.nets.video.x3d import CoSqueezeExcitation
from modules.profiling import FlopCounter, count_macs
from modules.profiling.counters import (
    FvcoreStep,
    fvcore_handles,
    fvcore_step_analysis,
    ptflops_custom_hooks,
    visible_steps,
)
from modules.profiling.macs import countable

ptflops = pytest.importorskip("ptflops")
fvcore_nn = pytest.importorskip("fvcore.nn")

STACK_CLIP = (3, 8, 16, 16)  # conv_stack's input facts (modules.nets.input_spec)
STACK_STEP = (3, 16, 16)
HEAD = 16 * 10 + 10  # the linear head's MACs and bias adds (16 -> 10 classes)


def _ptflops(net: nn.Module, res: tuple[int, ...], hooks: bool = True, count_functional: bool = False) -> int | None:
    macs, _ = ptflops.get_model_complexity_info(
        net,
        res,
        as_strings=False,
        print_per_layer_stat=False,
        custom_modules_hooks=ptflops_custom_hooks(net) if hooks else {},
        backend_specific_config={"count_functional": count_functional},
    )
    return macs


def _counter(net: nn.Module, fn: Callable[[], object], stepping: bool = False) -> FlopCounter:
    with torch.no_grad(), countable(), FlopCounter(net, stepping=stepping) as counter:
        fn()
    return counter


def _warm(net: nn.Module, frame: Tensor) -> None:
    """Fill the stream so that the next step emits and every layer runs."""
    with torch.no_grad():
        net.clean_state()
        for _ in range(net.delay):
            assert net.forward_step(frame) is None
        assert net.forward_step(frame, update_state=False) is not None


def _fvcore(model: nn.Module, inputs: tuple, handles: dict | None = None) -> int:
    analysis = fvcore_nn.FlopCountAnalysis(model, inputs)
    if handles is not None:
        analysis.set_op_handle(**handles)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total()


@pytest.fixture(scope="module")
def stacks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    offline = build("conv_stack").eval()
    net = build("co_conv_stack").eval()
    net.load_state_dict(offline.state_dict())
    return offline, net


# --- ptflops: conv stack -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("count_functional", [False, True])
def test_ptflops_clip_of_continual_stack_equals_offline(stacks: tuple, count_functional: bool) -> None:
    offline, net = stacks
    expected = _ptflops(offline, STACK_CLIP, count_functional=count_functional)
    assert _ptflops(net, STACK_CLIP, count_functional=count_functional) == expected
    # without the hooks the offline net misses its channels-first linear head (an nn.Linear subclass) ...
    assert _ptflops(offline, STACK_CLIP, hooks=False, count_functional=count_functional) == expected - HEAD
    # ... and the continual one every layer (BatchNorm and ReLU are step-capable subclasses too)
    if not count_functional:
        assert _ptflops(net, STACK_CLIP, hooks=False) == 0


def test_ptflops_clip_is_our_macs_plus_ptflops_terms(stacks: tuple) -> None:
    _, net = stacks
    clip = torch.randn(1, *STACK_CLIP)
    counter = _counter(net, lambda: net(clip))
    terms = counter.terms
    assert counter.macs.total == 8_405_152  # 2 convs (8,404,992) + head (160)
    assert dict(terms) == {"norm": 98_304, "activation": 49_152, "pool": 32_768, "bias": 10}
    assert _ptflops(net, STACK_CLIP) == counter.macs.total + sum(terms.values()) == counter.total("ptflops")


def test_ptflops_step_is_executed_macs_plus_ptflops_terms(stacks: tuple) -> None:
    _, net = stacks
    frame = torch.randn(1, *STACK_STEP)
    _warm(net, frame)
    counter = _counter(net, lambda: net.forward_step(frame, update_state=False), stepping=True)
    assert counter.macs.total == count_macs(net.forward_step, frame, update_state=False) == 1_050_784
    assert dict(counter.terms) == {"norm": 12_288, "activation": 6_144, "pool": 4_096, "bias": 10}
    before = net.get_state()
    with visible_steps(net):
        assert _ptflops(net, STACK_STEP) == counter.macs.total + sum(counter.terms.values())
        assert _ptflops(net, STACK_STEP, hooks=False) == 0  # visible, but no continual type is mapped
    torch.testing.assert_close(net.get_state(), before, atol=0, rtol=0)  # counting left the stream as it was


def test_ptflops_step_without_visible_steps_fails(stacks: tuple, capsys: pytest.CaptureFixture) -> None:
    _, net = stacks
    _warm(net, torch.randn(1, *STACK_STEP))
    with co.call_mode("forward_step"):
        assert _ptflops(net, STACK_STEP) is None  # no hook fired: ptflops divides by a batch count of 0
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_ptflops_count_functional_counts_activations_and_pools_twice(stacks: tuple) -> None:
    """ptflops 0.7 also counts F.relu and F.*pool*, which nn.ReLU and the torch pools call inside their hooked
    forward: offline and continual, clip and step alike."""
    offline, net = stacks
    clip, frame = torch.randn(1, *STACK_CLIP), torch.randn(1, *STACK_STEP)
    terms = _counter(net, lambda: net(clip)).terms
    for model in (offline, net):
        extra = _ptflops(model, STACK_CLIP, count_functional=True) - _ptflops(model, STACK_CLIP)
        assert extra == terms["activation"] + terms["pool"]
    _warm(net, frame)
    terms = _counter(net, lambda: net.forward_step(frame, update_state=False), stepping=True).terms
    with visible_steps(net):
        extra = _ptflops(net, STACK_STEP, count_functional=True) - _ptflops(net, STACK_STEP)
    assert extra == terms["activation"] + terms["pool"]


def test_ptflops_aten_backend_counts_executed_ops_without_hooks(stacks: tuple) -> None:
    """ptflops' aten backend counts the aten ops a call dispatches, as ``count_macs`` does, plus the bias of each
    addmm (the head); under ``co.call_mode("forward_step")`` that is a step, with no hooks needed."""
    _, net = stacks
    clip, frame = torch.randn(1, *STACK_CLIP), torch.randn(1, *STACK_STEP)

    def aten(res: tuple[int, ...]) -> int:
        return ptflops.get_model_complexity_info(
            net, res, as_strings=False, print_per_layer_stat=False, backend="aten"
        )[0]

    assert aten(STACK_CLIP) == count_macs(net, clip) + 10
    _warm(net, frame)
    state = net.get_state()
    with co.call_mode("forward_step"):
        assert aten(STACK_STEP) == count_macs(net.forward_step, frame, update_state=False) + 10
    net.set_state(state)  # that count ran a real step


def test_ptflops_custom_hooks_cover_the_types_ptflops_misses(stacks: tuple) -> None:
    offline, net = stacks
    hooks = ptflops_custom_hooks(net)
    assert {type(m) for m in net.modules() if not isinstance(m, co.Sequential)} == set(hooks)
    assert set(ptflops_custom_hooks(offline)) == {type(offline[7])}  # ChannelLinear; the nn layers are mapped
    assert nn.Conv3d not in hooks and nn.BatchNorm3d not in hooks


def test_visible_steps_runs_hooks_once_per_step_and_restores_the_stream() -> None:
    conv = co.Conv3d(2, 3, (3, 1, 1), bias=False).eval()
    seen: list[object] = []
    conv.register_forward_hook(lambda m, inputs, out: seen.append(out if out is None else tuple(out.shape)))
    steps = torch.randn(3, 1, 2, 4, 4)
    with torch.no_grad():
        conv.forward_step(steps[0])
        before = conv.get_state()
        with visible_steps(conv), visible_steps(conv):  # nested: still one hook call per step
            conv(steps[1])  # net(step) is a step here
            conv.forward_step(steps[2])
        assert seen == [None, (1, 3, 4, 4)]  # the first of them emits nothing (delay 2)
        torch.testing.assert_close(conv.get_state(), before, atol=0, rtol=0)
        conv.forward_step(steps[1])
        assert seen == [None, (1, 3, 4, 4)]  # hooks no longer see steps
    with pytest.raises(TypeError, match="visible_steps needs a continual net"), visible_steps(nn.Conv3d(2, 3, 1)):
        pass


# --- ptflops and fvcore: strided steps, pointwise steps ----------------------------------------------------------
def _step_counts(conv: nn.Module, steps: list[Tensor], count: Callable[[nn.Module, Tensor], int]) -> list[int]:
    conv.clean_state()
    out = []
    for step in steps:
        out.append(count(conv, step))
        with torch.no_grad():
            conv.forward_step(step)
    return out


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "depthwise"])
def test_strided_conv_steps_charge_what_they_execute(groups: int) -> None:
    """A strided continual conv convolves every step with all taps; a CPU depthwise one convolves its window only
    on the steps that emit. Both counters charge exactly what ``count_macs`` sees executed, step by step."""
    torch.manual_seed(0)
    conv = co.Conv3d(4, 4, (3, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1), groups=groups, bias=False).eval()
    steps = [torch.randn(1, 4, 5, 5) for _ in range(5)]  # batch 1: ptflops reports MACs per sample
    frame = 4 * 25 * (4 // groups) * 27  # one output frame: C_out * H * W * C_in / g * k

    def ptflops_step(m: nn.Module, step: Tensor) -> int:
        with visible_steps(m):
            return _ptflops(m, tuple(step.shape[1:]))

    executed = _step_counts(conv, steps, lambda m, s: count_macs(m.forward_step, s, update_state=False))
    emits = [False, False, True, False, True]  # delay 2, then every second step
    assert executed == [frame if (groups == 1 or e) else 0 for e in emits]
    assert _step_counts(conv, steps, ptflops_step) == executed
    assert _step_counts(conv, steps, lambda m, s: fvcore_step_analysis(m, s).total()) == executed


def test_fvcore_matmul_handle_keeps_the_batch_of_a_pointwise_step() -> None:
    """A 1x1 continual conv steps as ``W @ x``; fvcore's own matmul rule drops the batch of ``x``."""
    conv = co.Conv3d(8, 16, (3, 1, 1), bias=False).eval()
    step = torch.randn(3, 8, 4, 4)
    _warm(conv, step)
    executed = count_macs(conv.forward_step, step, update_state=False)
    assert executed == 3 * 16 * 3 * 8 * 16  # B * (C_out * k) * C_in * H * W
    assert fvcore_step_analysis(conv, step).total() == executed
    assert _fvcore(FvcoreStep(conv), (step,)) == executed // 3


def test_fvcore_handles_count_attention_products() -> None:
    class Attend(nn.Module):
        def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    assert count_macs(Attend(), q, k, v) == 2 * 4 * 5 * 7 * (8 + 6)
    assert _fvcore(Attend(), (q, k, v), fvcore_handles()) == count_macs(Attend(), q, k, v)
    assert _fvcore(Attend(), (q, k, v)) == 0  # fvcore has no rule for it


def test_fvcore_handles_reject_an_unknown_convention() -> None:
    with pytest.raises(ValueError, match="convention must be 'macs' or 'fvcore', got 'flops'"):
        fvcore_handles("flops")


# --- fvcore: conv stack ------------------------------------------------------------------------------------------
def test_fvcore_clip_and_step_of_stack(stacks: tuple) -> None:
    offline, net = stacks
    clip, frame = torch.randn(1, *STACK_CLIP), torch.randn(1, *STACK_STEP)
    macs = count_macs(net, clip)
    # a clip traces fine: the same count as the offline net; fvcore adds 2 * numel per affine BatchNorm
    assert _fvcore(net, (clip,)) == _fvcore(offline, (clip,)) == macs + 98_304
    assert _fvcore(net, (clip,), fvcore_handles()) == macs
    _warm(net, frame)
    step_macs = count_macs(net.forward_step, frame, update_state=False)
    analysis = fvcore_step_analysis(net, frame)
    analysis.uncalled_modules_warnings(False)
    assert analysis.total() == step_macs
    assert analysis.by_module()["net.3"] == 8 * 16 * 27 * 16 * 16  # the second conv's frame, per module
    assert fvcore_step_analysis(net, frame, "fvcore").total() == step_macs + 12_288 + 4_096  # BatchNorms, pool


# --- CoX3D-S ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cox3d() -> Iterator[tuple[nn.Module, Tensor, Tensor]]:
    torch.manual_seed(0)
    net = build("cox3d_s").eval()  # 160 x 160, 13 frames (its input facts)
    clip, frame = torch.randn(1, 3, 13, 160, 160), torch.randn(1, 3, 160, 160)
    _warm(net, frame)
    yield net, clip, frame


def _se_means(net: nn.Module, run: Callable[[], object]) -> int:
    """``numel`` of the inputs of CoX3D's squeeze-excitations, whose per-frame mean the ``"ptflops"`` convention
    charges as a pool (``register_pool_like``) and ptflops does not see (a tensor op)."""
    total = 0

    def add(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        total += inputs[0].numel()

    handles = [m.register_forward_hook(add) for m in net.modules() if isinstance(m, CoSqueezeExcitation)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def test_small_cox3d_ptflops_clip_and_step() -> None:
    """CoX3D-S at its smallest crop (32: one position per side after five stride-2 stages), in the fast suite;
    the tests below take its 160 x 160 input and add fvcore."""
    torch.manual_seed(0)
    net = build("cox3d_s", crop=32).eval()
    clip, frame = torch.randn(1, 3, 13, 32, 32), torch.randn(1, 3, 32, 32)
    counter = _counter(net, lambda: net(clip))
    assert _ptflops(net, tuple(clip.shape[1:])) == counter.total("ptflops") - _se_means(net, lambda: net(clip))
    _warm(net, frame)
    step = lambda: net.forward_step(frame, update_state=False)  # noqa: E731
    counter = _counter(net, step, stepping=True)
    with visible_steps(net, restore_state=False):
        se = _se_means(net, step)
    with visible_steps(net):
        macs = _ptflops(net, tuple(frame.shape[1:]))
    assert macs == counter.total("ptflops") - se == counter.macs.total + sum(counter.terms.values()) - se


@pytest.mark.slow
def test_cox3d_ptflops_and_fvcore_clip(cox3d: tuple) -> None:
    net, clip, _ = cox3d
    state = net.get_state()
    counter = _counter(net, lambda: net(clip))
    se = _se_means(net, lambda: net(clip))
    # per frame, the SE blocks of s2..s5 (2, 3, 6, 4 of them) see 54 x 40², 108 x 20², 216 x 10², 432 x 5²
    assert se == 13 * (2 * 54 * 40**2 + 3 * 108 * 20**2 + 6 * 216 * 10**2 + 4 * 432 * 5**2)
    assert _ptflops(net, tuple(clip.shape[1:])) == counter.total("ptflops") - se
    assert _ptflops(net, tuple(clip.shape[1:])) == counter.macs.total + sum(counter.terms.values()) - se
    assert _fvcore(net, (clip,), fvcore_handles()) == counter.macs.total
    torch.testing.assert_close(net.get_state(), state, atol=0, rtol=0)


@pytest.mark.slow
def test_cox3d_ptflops_and_fvcore_step(cox3d: tuple) -> None:
    net, _, frame = cox3d
    step = lambda: net.forward_step(frame, update_state=False)  # noqa: E731
    counter = _counter(net, step, stepping=True)
    assert counter.macs.total == count_macs(net.forward_step, frame, update_state=False)
    with visible_steps(net, restore_state=False):
        se = _se_means(net, step)
    with visible_steps(net):
        assert _ptflops(net, tuple(frame.shape[1:])) == counter.total("ptflops") - se
    analysis = fvcore_step_analysis(net, frame)
    analysis.uncalled_modules_warnings(False)
    assert analysis.total() == counter.macs.total
    # A plain trace of the step drops what only enters the state: the shortcut projections (delayed by a step)
    shortcuts = sum(v for k, v in analysis.by_module().items() if k.endswith(".branch1"))
    assert shortcuts > 0
    state = net.get_state()
    with co.call_mode("forward_step"):
        assert _fvcore(net, (frame,), fvcore_handles()) == counter.macs.total - shortcuts
    net.set_state(state)  # that trace ran a real step
