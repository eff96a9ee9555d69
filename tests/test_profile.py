"""MAC counting on hand-computable ops, the profile's fields, and frame-vs-clip cost of the continual twin."""

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
from modules.profiling import count_macs, count_params, peak_live_bytes, profile_model
from tests.conftest import run_module

FIELDS = {
    "model", "mode", "device", "batch_size", "input_shape", "steps_per_prediction", "params", "trainable_params",
    "macs_per_prediction", "gflops_per_prediction", "peak_memory_bytes", "throughput_mean", "throughput_std",
    "throughput_unit",
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
