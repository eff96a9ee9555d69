"""MAC counting on hand-computable ops, ptflops' element-wise terms and the FLOP conventions on hand-computable
modules, the profile's fields, and frame-vs-clip cost of the continual twin."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from experiments.profile import main as profile_main
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
    throughput_stats,
    timing,
)
from tests.conftest import run_module

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = {
    "model", "mode", "device", "batch_size", "input_shape", "steps_per_prediction", "params", "trainable_params",
    "macs_per_prediction", "gflops_per_prediction", "peak_memory_bytes", "throughput_median", "throughput_q1",
    "throughput_q3", "throughput_iqr", "throughput_busy", "timed_calls", "throughput_unit", "convention",
    "gflops_by_convention",
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
    clip = profile_model(co_conv_stack, "clip", shape, batch_size=2, warmup=1, repeats=3, min_time_s=0)
    frame = profile_model(co_conv_stack, "frame", shape, batch_size=2, warmup=1, repeats=3, min_time_s=0)
    for result in (clip, frame):
        assert result.keys() >= FIELDS
        assert result["params"] == sum(p.numel() for p in co_conv_stack.parameters())
        assert result["gflops_per_prediction"] == pytest.approx(result["macs_per_prediction"] / 1e9)
        assert result["peak_memory_bytes"] > 4 * result["params"]
        assert 0 < result["throughput_q1"] <= result["throughput_median"] <= result["throughput_q3"]
        assert result["timed_calls"] >= 3
    assert frame["steps_per_prediction"] == 1 and frame["mode"] == "frame"
    assert clip["convention"] == "macs" and clip["gflops_by_convention"]["macs"] == clip["gflops_per_prediction"]
    assert set(frame["gflops_by_convention"]) == set(CONVENTIONS)
    # A continual step costs one output frame of each conv: T steps cost one clip (up to the per-step head).
    assert frame["gflops_per_prediction"] * shape[1] == pytest.approx(clip["gflops_per_prediction"], rel=0.01)
    assert frame["gflops_per_prediction"] < clip["gflops_per_prediction"] / 4


def test_frame_mode_with_temporal_stride_counts_stride_steps_per_prediction():
    conv = co.Conv3d(3, 4, (3, 3, 3), stride=(2, 1, 1))
    result = profile_model(conv, "frame", (3, 8, 6, 6), warmup=1, repeats=2, min_time_s=0)
    assert result["steps_per_prediction"] == 2
    # a step applies all 3 temporal taps to one frame: (4 channels · 3 taps) · 4·4 positions · 3 in · 3·3 spatial
    per_step = (4 * 3) * (4 * 4) * (3 * 9)
    assert result["macs_per_prediction"] == 2 * per_step
    # ptflops charges a conv by what it returns: the emitting step's one output frame (its 3 taps) and its bias;
    # the other step returns nothing. Co3D's counting saw the emitting step alone: the same here
    flops = {c: round(g * 1e9) for c, g in result["gflops_by_convention"].items()}
    assert flops == {"macs": 2 * per_step, "ptflops": per_step + 4 * 16, "co3d_published": per_step + 4 * 16}


def test_profile_reports_the_chosen_convention():
    net = _co_stack()
    result = profile_model(net, "frame", (3, 4, 6, 6), warmup=0, repeats=1, convention="co3d_published", min_time_s=0)
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
        "profile.yaml",
        ["model=co_conv_stack", "mode=clip", "warmup=1", "repeats=2", "min_time_s=0", f"output_file={out}"],
    )
    result = profile(cfg)
    assert json.loads(out.read_text()) == result
    assert result["model"] == "co_conv_stack" and result.keys() >= FIELDS


def test_profile_run_ends_with_where_it_wrote_and_the_median_throughput(compose_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(timing, "time_calls", lambda *args: [0.002, 0.004, 0.005, 0.008, 0.010])
    monkeypatch.setattr(timing, "competing_cores", lambda fn: (fn(), 0.0))
    overrides = ["model=co_conv_stack", "mode=clip", "logger=csv", "warmup=0", "repeats=1"]
    profile_main(compose_cfg("profile.yaml", overrides))
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "profile.json").read_text())
    # rates 100, 125, 200, 250, 500: median 200, quartiles 125 and 250
    assert (result["throughput_q1"], result["throughput_median"], result["throughput_q3"]) == (125, 200, 250)
    expected = {
        "profile": "run/profile.json",
        "config": "run/config.yaml",
        "CSV log": "run/csv/metrics.csv",
        "GFLOPs per prediction": f"{result['gflops_per_prediction']:.4g}",
        "throughput": "200 predictions/s median, IQR 125-250 over 5 calls; busy machine: the per-call rates spread "
        "over an IQR of 62% of their median (> 30%)",
    }
    assert "profile finished; run directory: run\n" in printed
    for label, value in expected.items():
        assert re.search(rf"^  {re.escape(label)}\s+{re.escape(value)}$", printed, re.MULTILINE), label


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
        "min_time_s=0",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "output_file=${paths.output_dir}/${mode}.json",
        cwd=tmp_path,
    )
    clip = json.loads((tmp_path / "sweep" / "0" / "clip.json").read_text())
    frame = json.loads((tmp_path / "sweep" / "1" / "frame.json").read_text())
    assert clip.keys() >= FIELDS and frame.keys() >= FIELDS
    t = clip["input_shape"][1]
    assert frame["gflops_per_prediction"] * t == pytest.approx(clip["gflops_per_prediction"], rel=0.01)


# --- throughput statistics --------------------------------------------------------------------------------------
def test_throughput_stats_by_hand():
    # batch 2 over these call times: rates 200, 100, 50, 40, 20 predictions/s
    stats = throughput_stats([0.01, 0.02, 0.04, 0.05, 0.1], batch_size=2)
    # inclusive quartiles of the sorted rates 20, 40, 50, 100, 200: positions 1, 2 and 3 of 0..4
    assert (stats["throughput_q1"], stats["throughput_median"], stats["throughput_q3"]) == pytest.approx((40, 50, 100))
    assert stats["throughput_iqr"] == pytest.approx(60)
    assert stats["timed_calls"] == 5 and stats["timed_seconds"] == pytest.approx(0.22)
    assert stats["throughput_busy"]  # the middle half spans 60 predictions/s around a median of 50
    # an even count interpolates: rates 1, 2, 3, 4 -> positions 0.75, 1.5, 2.25
    even = throughput_stats([1, 1 / 2, 1 / 3, 1 / 4], batch_size=1)
    assert (even["throughput_q1"], even["throughput_median"], even["throughput_q3"]) == pytest.approx((1.75, 2.5, 3.25))


def test_throughput_stats_ignore_outliers_and_flag_only_a_wide_spread():
    # one call in ten slowed 100x by another process moves the median by nothing (the mean of rates would by 10%)
    steady = [0.010] * 9 + [1.0]
    stats = throughput_stats(steady, batch_size=1)
    assert stats["throughput_median"] == pytest.approx(100) and stats["throughput_iqr"] == pytest.approx(0)
    assert not stats["throughput_busy"]
    # a middle half just inside / just outside BUSY_SPREAD of the median
    inside = throughput_stats([1 / r for r in (80, 86, 100, 114, 120)], batch_size=1)
    outside = throughput_stats([1 / r for r in (80, 84, 100, 116, 120)], batch_size=1)
    assert inside["throughput_iqr"] == pytest.approx(28) and not inside["throughput_busy"]
    assert outside["throughput_iqr"] == pytest.approx(32) and outside["throughput_busy"]
    single = throughput_stats([0.5], batch_size=4)
    assert single["throughput_median"] == single["throughput_q1"] == single["throughput_q3"] == 8.0
    assert single["timed_calls"] == 1 and not single["throughput_busy"]
    with pytest.raises(ValueError, match="no timed calls"):
        throughput_stats([], batch_size=1)


class _FakeClock:
    """A clock that each call of ``work`` advances by ``step`` seconds: the timing loop sees exact call times."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += self.step


@pytest.mark.parametrize(
    ("repeats", "min_time_s", "max_calls", "timed"),
    [
        (3, 1.0, 1000, 8),  # the minimum time wins: 8 calls of 0.125 s
        (20, 1.0, 1000, 20),  # the minimum count wins
        (3, 100.0, 12, 12),  # the cap ends it
        (1, 0.0, 1000, 1),
    ],
)
def test_time_calls_times_until_count_and_time_are_both_reached(repeats, min_time_s, max_calls, timed):
    clock = _FakeClock(step=0.125)
    cpu = torch.device("cpu")
    seconds = timing.time_calls(clock.work, cpu, 2, repeats, min_time_s, max_calls, clock=clock)
    assert seconds == [0.125] * timed
    assert clock.calls == 2 + timed  # the warm-up calls are not timed


def test_time_calls_rejects_a_cap_below_the_count():
    with pytest.raises(ValueError, match="repeats <= max_calls"):
        timing.time_calls(lambda: None, torch.device("cpu"), 0, repeats=5, max_calls=4)


def test_competing_cores_are_the_machines_cpu_time_less_this_process():
    machine, own, clock = iter([100.0, 103.5]), iter([7.0, 9.0]), iter([50.0, 51.0])
    out, competing = timing.competing_cores(
        lambda: "ran", lambda: next(machine), lambda: next(own), lambda: next(clock)
    )
    # 3.5 CPU seconds in one second of wall time, 2 of them this process's threads: others kept 1.5 cores busy
    assert out == "ran" and competing == pytest.approx(1.5)
    assert timing.competing_cores(lambda: None, lambda: None)[1] is None  # an OS without /proc/stat: unknown
    before = timing.machine_cpu_seconds()
    assert before is None or timing.machine_cpu_seconds() >= before > 0


def test_profile_reports_its_timed_calls_and_warns_when_busy(monkeypatch, caplog):
    timed: dict = {}

    def fake_time_calls(fn, device, warmup, repeats, min_time_s):
        timed.update(warmup=warmup, repeats=repeats, min_time_s=min_time_s)
        return [0.01, 0.02, 0.04, 0.05, 0.1]

    def run(competing: float | None, **kwargs) -> dict:
        monkeypatch.setattr(timing, "competing_cores", lambda fn: (fn(), competing))
        caplog.clear()
        with caplog.at_level("WARNING", logger="modules.profiling"):
            return profile_model(_co_stack(), "frame", (3, 4, 6, 6), batch_size=2, **kwargs)

    monkeypatch.setattr(timing, "time_calls", fake_time_calls)
    result = run(0.1, warmup=3, repeats=4, min_time_s=0.5)
    assert timed == {"warmup": 3, "repeats": 4, "min_time_s": 0.5}
    assert result.items() >= throughput_stats([0.01, 0.02, 0.04, 0.05, 0.1], 2).items()
    assert result["throughput_busy"] and result["min_time_s"] == 0.5 and result["competing_cores"] == 0.1
    (reason,) = result["busy_reasons"]
    assert "IQR of 120% of their median" in reason and "machine was probably busy" in caplog.text

    monkeypatch.setattr(timing, "time_calls", lambda *args: [0.01] * 5)
    quiet = run(0.1, warmup=0, repeats=1)
    assert quiet["throughput_median"] == pytest.approx(200) and not quiet["throughput_busy"]
    assert quiet["busy_reasons"] == [] and "busy" not in caplog.text
    # a steady but contended CPU: every call slowed alike, which only the other processes' CPU time shows
    monkeypatch.setattr(torch, "get_num_threads", lambda: os.cpu_count())  # torch's threads want every core
    contended = run(1.0, warmup=0, repeats=1)
    assert contended["throughput_busy"] and "other processes kept 1.00 cores busy" in contended["busy_reasons"][0]
    assert "other processes kept 1.00 cores busy" in caplog.text
    assert not run(timing.BUSY_SLACK_CORES, warmup=0, repeats=1)["throughput_busy"]  # background daemons
    assert not run(None, warmup=0, repeats=1)["throughput_busy"]  # unknown: the spread decides


def test_frame_mode_times_the_fast_path_and_says_what_ran() -> None:
    from modules import nets

    net = nets.build("co_conv_stack").eval()
    kwargs = {"warmup": 1, "repeats": 2, "min_time_s": 0}
    plain = profile_model(net, "frame", (3, 8, 8, 8), **kwargs)
    fast = profile_model(net, "frame", (3, 8, 8, 8), fast_path=True, **kwargs)
    assert plain["fast_path"] == {"fold_bn": False, "compiled": False, "reason": "fast_path=false"}
    assert fast["fast_path"] == {"fold_bn": True, "compiled": False, "reason": "compile=False"}
    assert fast["macs_per_prediction"] == plain["macs_per_prediction"]  # counted on the net as built
    assert fast["gflops_by_convention"] == plain["gflops_by_convention"]
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())  # not folded in place


@pytest.mark.slow  # inductor compiles the step and the clip model (~30 s on 2 cores)
@pytest.mark.parametrize("mode", ["frame", "clip"])
def test_the_compiled_fast_path_profiles(mode: str) -> None:
    from modules import nets

    net = nets.build("co_conv_stack").eval()
    result = profile_model(net, mode, (3, 8, 8, 8), warmup=1, repeats=2, min_time_s=0, fast_path=True, compile=True)
    assert result["fast_path"]["compiled"] and result["peak_memory_bytes"] > 0 and result["throughput_median"] > 0
