"""MAC counting on hand-computable ops, ptflops' element-wise terms and the FLOP conventions on hand-computable
modules, the profile's fields, and frame-vs-clip cost of the continual twin."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from experiments.profile import profile
from modules import continual as co
from modules import nets
from modules.profiling import (
    CONVENTIONS,
    FlopCounter,
    count_flops,
    count_macs,
    count_params,
    peak_live_bytes,
    profile_model,
    ptflops_term,
)
from tests.conftest import run_module

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = {
    "model", "mode", "device", "batch_size", "input_shape", "steps_per_prediction", "params", "trainable_params",
    "macs_per_prediction", "gflops_per_prediction", "peak_memory_bytes", "throughput_mean", "throughput_std",
    "throughput_unit", "convention", "gflops_by_convention",
}  # fmt: skip


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (F.linear, (torch.randn(2, 4), torch.randn(5, 4), torch.randn(5)), 2 * 4 * 5),
        (F.linear, (torch.randn(2, 3, 4), torch.randn(5, 4)), 2 * 3 * 4 * 5),
        (torch.bmm, (torch.randn(2, 3, 4), torch.randn(2, 4, 5)), 2 * 3 * 4 * 5),
        (torch.baddbmm, (torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5)), 2 * 3 * 4 * 5),
        (torch.mv, (torch.randn(3, 4), torch.randn(4)), 12),
        # each of the 6·8·8 outputs takes 3 input channels · 3·3 taps
        (lambda x, w: F.conv2d(x, w, padding=1), (torch.randn(1, 3, 8, 8), torch.randn(6, 3, 3, 3)), 6 * 64 * 27),
        # groups=2: each output sees 2 of the 4 input channels
        (
            lambda x, w: F.conv2d(x, w, groups=2),
            (torch.randn(2, 4, 5, 5), torch.randn(6, 2, 3, 3)),
            2 * 6 * 3 * 3 * (2 * 9),
        ),
        (
            lambda x, w: F.conv3d(x, w, stride=(1, 2, 2)),
            (torch.randn(1, 2, 4, 6, 6), torch.randn(3, 2, 3, 2, 2)),
            3 * 2 * 3 * 3 * (2 * 12),
        ),
        # transposed: every input element is spread over C_out/groups · kernel outputs
        (
            lambda x, w: F.conv_transpose2d(x, w),
            (torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3)),
            2 * 16 * 3 * 9,
        ),
        # attention: Q·Kᵀ (L·S·E) and A·V (L·S·Ev) per batch and head
        (
            F.scaled_dot_product_attention,
            (torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)),
            2 * 3 * 5 * 7 * (8 + 4),
        ),
        (torch.relu, (torch.randn(10),), 0),  # element-wise ops are not counted
    ],
)
def test_count_macs_by_hand(fn, args, expected):
    assert count_macs(fn, *args) == expected
    with torch.inference_mode():  # composite ops must still be decomposed and counted
        assert count_macs(fn, *args) == expected


def test_count_macs_agrees_with_torch_flop_counter_on_a_net():
    net = nets.build("conv_stack", num_classes=5, channels=(4, 6))
    x = torch.randn(2, 3, 6, 10, 10)
    with FlopCounterMode(display=False) as flops:
        net(x)
    assert count_macs(net, x) == flops.get_total_flops() // 2 > 0


def test_count_params_and_peak_memory():
    lin = nn.Linear(100, 50)
    lin.bias.requires_grad_(False)
    assert count_params(lin) == 5050 and count_params(lin, trainable_only=True) == 5000
    x = torch.randn(64, 100)
    live = [*lin.parameters(), x]
    peak = peak_live_bytes(lambda: lin(x), live)
    # weights + input are there before; the (64, 50) output is allocated on top
    assert peak >= sum(t.numel() * 4 for t in live) + 64 * 50 * 4


# --- ptflops' element-wise terms and the conventions -------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "shape", "expected"),
    [
        (nn.BatchNorm3d(4), (2, 4, 3, 5, 5), ("norm", 2 * (2 * 4 * 3 * 25))),  # affine: scale and shift
        (nn.BatchNorm3d(4, affine=False), (2, 4, 3, 5, 5), ("norm", 2 * 4 * 3 * 25)),
        (nn.ReLU(), (2, 7), ("activation", 14)),
        (nn.AvgPool3d((3, 5, 5)), (1, 4, 3, 5, 5), ("pool", 4 * 3 * 25)),  # the elements it reads
        (co.AvgPool3d((3, 5, 5)), (1, 4, 3, 5, 5), ("pool", 4 * 3 * 25)),
        (nn.AdaptiveMaxPool2d(1), (1, 4, 5, 5), ("pool", 4 * 25)),
        (nn.Upsample(scale_factor=2), (1, 2, 3, 3), ("upsample", 2 * 36)),
        (nn.Conv3d(2, 3, 1), (1, 2, 4, 5, 5), ("bias", 3 * 4 * 25)),  # its MACs are the dispatch counter's
        (nn.Conv3d(2, 3, 1, bias=False), (1, 2, 4, 5, 5), ("", 0)),
        (nn.SiLU(), (2, 7), ("", 0)),  # ptflops counts neither Swish nor sigmoid
        (nn.Sigmoid(), (2, 7), ("", 0)),
    ],
)
def test_ptflops_term_by_hand(module: nn.Module, shape: tuple[int, ...], expected: tuple[str, int]):
    x = torch.randn(shape)
    with torch.no_grad():
        assert ptflops_term(module.eval(), (x,), module(x)) == expected


def _co_stack() -> co.Sequential:
    """conv 3→4 (3×3×3, spatial padding 1) → BN → ReLU → 2×2 spatial average pool, on 6×6 frames."""
    layers = [co.Conv3d(3, 4, 3, padding=(0, 1, 1), bias=False), nn.BatchNorm3d(4), nn.ReLU(), co.AvgPool3d((1, 2, 2))]
    return co.Sequential(*layers).eval()


# Per output frame of _co_stack: 4 channels · 6² positions · (3 inputs · 27 taps) MACs, BN scale and shift on the
# 4·6² conv outputs, ReLU on them, the pool reading them.
CONV, NORM, RELU, POOL = 4 * 36 * 3 * 27, 2 * 4 * 36, 4 * 36, 4 * 36


def test_conventions_by_hand_on_a_clip_and_a_step():
    net = _co_stack()
    clip = torch.randn(1, 3, 5, 6, 6)  # 3 output frames: no temporal padding
    with torch.no_grad():
        counts = {c: count_flops(net, net, clip, convention=c) for c in CONVENTIONS}
        # forward mode: every module call counted once, in both ptflops conventions
        assert counts == {"macs": 3 * CONV, "ptflops": 3 * (CONV + NORM + RELU + POOL),
                          "co3d_published": 3 * (CONV + NORM + RELU + POOL)}  # fmt: skip
        net.forward_steps(clip)  # warm: the next step emits
        step = clip[:, :, 0]
        counts = {c: count_flops(net, net.forward_step, step, convention=c, stepping=True) for c in CONVENTIONS}
        # continual-inference's forward_stepping made ptflops' hook fire twice per step on BN and ReLU
        assert counts == {"macs": CONV, "ptflops": CONV + NORM + RELU + POOL,
                          "co3d_published": CONV + 2 * (NORM + RELU) + POOL}  # fmt: skip
        # module(x) under a call mode reaches the same forward_step calls
        with co.call_mode("forward_step"):
            assert count_flops(net, net, step, convention="ptflops") == counts["ptflops"]
    with pytest.raises(ValueError, match="convention must be one of"):
        FlopCounter(net).total("fvcore")


def test_each_module_is_charged_once_per_call_even_when_its_step_calls_its_forward():
    relu = co.continual(nn.ReLU())
    net = co.Sequential(co.Conv3d(3, 4, (1, 1, 1), bias=False), relu).eval()
    step = torch.randn(1, 3, 6, 6)
    # forward_steps of a clip runs forward_step per frame inside: one call, charged for the clip it read
    with torch.no_grad(), FlopCounter(net) as counter:
        net.forward_steps(torch.randn(1, 3, 5, 6, 6))
        net.forward_step(step)
    assert counter.calls[relu] == 2 and counter.terms["activation"] == 4 * 36 * 5 + 4 * 36


class _FoldedStep(co.Sequential):
    """A step path that folds the BatchNorm into the conv before it, so that the norm's step never runs (the
    output is wrong: only the calls matter here)."""

    def forward_step(self, step: torch.Tensor, update_state: bool = True) -> torch.Tensor | None:
        conv, _norm, *rest = self
        x = conv.forward_step(step)
        for m in rest:
            x = None if x is None else m.forward_step(x)
        return x


def test_a_norm_that_the_step_path_skips_is_charged_from_the_module_before_it():
    net = _FoldedStep(*_co_stack())
    clip = torch.randn(1, 3, 3, 6, 6)
    with torch.no_grad():
        net.forward_steps(clip[:, :, :2])  # warm-up: the conv returns None, so nothing is charged for the norm
        with FlopCounter(net, stepping=True) as warm:
            net.clean_state()
            net.forward_step(clip[:, :, 0])
        assert warm.terms["norm"] == 0 and warm.charged_from_structure == []
        net.forward_steps(clip[:, :, :2])
        with FlopCounter(net, stepping=True) as counter:
            net.forward_step(clip[:, :, 2])
    assert counter.charged_from_structure == ["1"]
    assert counter.total("ptflops") == CONV + NORM + RELU + POOL
    assert counter.total("co3d_published") == CONV + 2 * (NORM + RELU) + POOL


@pytest.fixture
def co_conv_stack() -> nn.Module:
    return nets.build("co_conv_stack", num_classes=4, channels=(4, 8), clip_length=8)


def test_profile_fields_and_frame_times_T_equals_clip(co_conv_stack):
    shape = (3, 8, 12, 12)
    clip = profile_model(co_conv_stack, "clip", shape, batch_size=2, warmup=1, repeats=3)
    frame = profile_model(co_conv_stack, "frame", shape, batch_size=2, warmup=1, repeats=3)
    for result in (clip, frame):
        assert result.keys() >= FIELDS
        assert result["params"] == sum(p.numel() for p in co_conv_stack.parameters())
        assert result["gflops_per_prediction"] == pytest.approx(result["macs_per_prediction"] / 1e9)
        assert result["peak_memory_bytes"] > 4 * result["params"]
        assert result["throughput_mean"] > 0 and result["throughput_std"] >= 0
    assert frame["steps_per_prediction"] == 1 and frame["mode"] == "frame"
    assert clip["convention"] == "macs" and clip["gflops_by_convention"]["macs"] == clip["gflops_per_prediction"]
    assert set(frame["gflops_by_convention"]) == set(CONVENTIONS)
    # A continual step costs one output frame of each conv: T steps cost one clip (up to the per-step head).
    assert frame["gflops_per_prediction"] * shape[1] == pytest.approx(clip["gflops_per_prediction"], rel=0.01)
    assert frame["gflops_per_prediction"] < clip["gflops_per_prediction"] / 4


def test_frame_mode_with_temporal_stride_counts_stride_steps_per_prediction():
    conv = co.Conv3d(3, 4, (3, 3, 3), stride=(2, 1, 1))
    result = profile_model(conv, "frame", (3, 8, 6, 6), warmup=1, repeats=2)
    assert result["steps_per_prediction"] == 2
    # a step applies all 3 temporal taps to one frame: (4 channels · 3 taps) · 4·4 positions · 3 in · 3·3 spatial
    per_step = (4 * 3) * (4 * 4) * (3 * 9)
    assert result["macs_per_prediction"] == 2 * per_step
    # the bias is added on the emitting step only; Co3D's counting saw that step alone
    flops = {c: round(g * 1e9) for c, g in result["gflops_by_convention"].items()}
    assert flops == {"macs": 2 * per_step, "ptflops": 2 * per_step + 4 * 16, "co3d_published": per_step + 4 * 16}


def test_profile_reports_the_chosen_convention():
    net = _co_stack()
    result = profile_model(net, "frame", (3, 4, 6, 6), warmup=0, repeats=1, convention="co3d_published")
    assert result["convention"] == "co3d_published"
    assert result["gflops_per_prediction"] * 1e9 == pytest.approx(CONV + 2 * (NORM + RELU) + POOL)
    assert result["macs_per_prediction"] == CONV
    with pytest.raises(ValueError, match="convention must be one of"):
        profile_model(net, "frame", (3, 4, 6, 6), warmup=0, repeats=1, convention="flops")


def test_frame_mode_needs_a_continual_net():
    with pytest.raises(TypeError, match="continual"):
        profile_model(nets.build("conv_stack"), "frame", (3, 4, 8, 8), warmup=0, repeats=1)


def test_profile_entry_point_writes_json(compose_cfg, tmp_path):
    out = tmp_path / "clip.json"
    cfg = compose_cfg(
        "profile.yaml", ["model=co_conv_stack", "mode=clip", "warmup=1", "repeats=2", f"output_file={out}"]
    )
    result = profile(cfg)
    assert json.loads(out.read_text()) == result
    assert result["model"] == "co_conv_stack" and result.keys() >= FIELDS


def test_profile_cli_both_modes(tmp_path):
    """The done-when check through the real command: frame GFLOPs * T == clip GFLOPs within 1%."""
    run_module(
        "experiments.profile",
        "-m",
        "model=co_conv_stack",
        "mode=clip,frame",
        "batch_size=2",
        "device=cpu",
        "warmup=2",
        "repeats=5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "output_file=${paths.output_dir}/${mode}.json",
        cwd=tmp_path,
    )
    clip = json.loads((tmp_path / "sweep" / "0" / "clip.json").read_text())
    frame = json.loads((tmp_path / "sweep" / "1" / "frame.json").read_text())
    assert clip.keys() >= FIELDS and frame.keys() >= FIELDS
    t = clip["input_shape"][1]
    assert frame["gflops_per_prediction"] * t == pytest.approx(clip["gflops_per_prediction"], rel=0.01)
