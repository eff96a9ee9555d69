"""Slow / I3D ResNet-50s, their continual twins CoSlow / CoI3D, R(2+1)D-18, and the checkpoint converters.

Numbers asserted here are the Co3D paper's (Hedegaard & Iosifidis, arXiv 2106.00050,
results table; receptive fields as in ``paper/continual-3d-cnns.md``):
parameters, receptive fields / delays, and GFLOPs (multiply-accumulates / 1e9).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from modules import continual as co
from modules import nets
from modules.nets import InputSpec, input_spec
from modules.nets.video.resnet3d import CoResNet3D, ResNet3D
from modules.nets.weights import load_pretrained
from modules.profiling import count_macs, count_params
from tests.continual.helpers import assert_peek_does_not_advance, assert_steps_match

check = torch.testing.assert_close
NAMES = ["slow_8x8_r50", "coslow_8x8_r50", "i3d_8x8_r50", "coi3d_8x8_r50", "r2plus1d_18"]
PAIRS = {"slow": ("slow_8x8_r50", "coslow_8x8_r50"), "i3d": ("i3d_8x8_r50", "coi3d_8x8_r50")}
DEPTHS = (3, 4, 6, 3)


def randomize_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine parameters and statistics (SlowFast zero-initialises each block's last γ, which
    would hide the residual branch), so that a mis-wired or mis-loaded layer shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    return net


def twin_pair(arch: str, width: int = 8, num_classes: int = 10, **co_kw) -> tuple[ResNet3D, CoResNet3D]:
    """A narrow offline net (``width_per_group``; the same architecture and keys, far fewer MACs) and its
    continual twin with the offline weights."""
    torch.manual_seed(0)
    offline = randomize_bn(ResNet3D(arch=arch, num_classes=num_classes, width_per_group=width)).eval()
    twin = CoResNet3D(arch=arch, num_classes=num_classes, width_per_group=width, **co_kw).eval()
    twin.load_state_dict(offline.state_dict())
    return offline, twin


# --- registry, specs, structure ------------------------------------------------------------------------------
def test_registry_input_specs_and_overrides():
    assert set(NAMES) <= set(nets.list_models())
    slow = InputSpec(clip_length=8, sampling_stride=8, crop_size=256, normalisation="feichtenhofer")
    i3d = InputSpec(clip_length=8, sampling_stride=8, crop_size=224, normalisation="feichtenhofer")
    assert input_spec("slow_8x8_r50") == input_spec("coslow_8x8_r50") == slow
    assert input_spec("i3d_8x8_r50") == input_spec("coi3d_8x8_r50") == i3d
    assert (input_spec("r2plus1d_18").clip_length, input_spec("r2plus1d_18").crop_size) == (16, 112)
    net = nets.build("coi3d_8x8_r50", num_classes=7, dropout=0.0, temporal_window=32, temporal_fill="replicate")
    assert net.input_spec == i3d
    assert ResNet3D(arch="slow", width_per_group=4).input_spec == slow
    assert nets.build("r2plus1d_18").input_spec == input_spec("r2plus1d_18")
    assert net.head.projection.out_features == 7 and "dropout" not in net.head._modules
    assert net.temporal_window == 32
    assert {m.temporal_fill for m in net.modules() if hasattr(m, "temporal_fill") and m is not net} == {"replicate"}
    with pytest.raises(TypeError, match="temporal_window"):
        nets.build("slow_8x8_r50", temporal_window=8)  # only continual nets slide a pool window
    with pytest.raises(ValueError, match="arch"):
        ResNet3D(arch="x3d")
    with pytest.raises(ValueError, match="temporal_fill"):
        CoResNet3D(arch="slow", temporal_fill="reflect", width_per_group=4)


@pytest.mark.parametrize(
    ("name", "millions"),
    [("slow_8x8_r50", 32.45), ("coslow_8x8_r50", 32.45), ("i3d_8x8_r50", 28.04), ("coi3d_8x8_r50", 28.04),
     ("r2plus1d_18", 31.51)],
)  # fmt: skip
def test_parameter_counts_match_the_paper(name, millions):
    assert round(count_params(nets.build(name)) / 1e6, 2) == millions


@pytest.mark.parametrize("arch", ["slow", "i3d"])
def test_twins_share_slowfast_keys_and_kernels(arch):
    offline, twin = (nets.build(n) for n in PAIRS[arch])
    assert list(twin.state_dict()) == list(offline.state_dict())
    keys = set(offline.state_dict())
    assert {
        "s1.pathway0_stem.conv.weight",
        "s1.pathway0_stem.bn.running_var",
        "s2.pathway0_res0.branch1.weight",
        "s2.pathway0_res0.branch1_bn.weight",
        "s4.pathway0_res5.branch2.c_bn.running_mean",
        "s5.pathway0_res0.branch2.a.weight",
        "head.projection.weight",
        "head.projection.bias",
    } <= keys
    assert not any("pathway0_res1.branch1" in k for k in keys)  # identity shortcuts after each stage's first block
    # SlowFast's _TEMPORAL_KERNEL_BASIS: conv1 and the `a` convs of res2..res5
    conv1, stages = {"slow": (1, [[1] * 3, [1] * 4, [3] * 6, [3] * 3]),
                     "i3d": (5, [[3] * 3, [3, 1] * 2, [3, 1] * 3, [1, 3, 1]])}[arch]  # fmt: skip
    for net in (offline, twin):
        assert net.s1.pathway0_stem.conv.weight.shape == (64, 3, conv1, 7, 7)
        for i, kernels in enumerate(stages):
            stage = getattr(net, f"s{i + 2}")
            assert [getattr(stage, f"pathway0_res{j}").branch2.a.kernel_size[0] for j in range(DEPTHS[i])] == kernels
            # spatial stride on the 3×3 conv (STRIDE_1X1 False) and on the projection
            spatial = (1, 2, 2) if i else (1, 1, 1)
            assert stage.pathway0_res0.branch2.b.stride == stage.pathway0_res0.branch1.stride == spatial
        assert ("pathway0_pool" in net._modules) == (arch == "i3d")
    assert net.s5.pathway0_res2.branch2.c.weight.shape == (2048, 512, 1, 1, 1)
    assert net.head.projection.in_features == 2048


@pytest.mark.parametrize(
    ("name", "window", "rf", "padding", "delay", "stride"),
    [
        ("coslow_8x8_r50", 8, 26, 9, 16, 1),  # CoSlow, window 8 (``paper/continual-3d-cnns.md``)
        ("coslow_8x8_r50", 64, 82, 9, 72, 1),  # CoSlow₆₄
        ("coi3d_8x8_r50", 4, 42, 17, 24, 2),  # CoI3D: the 8-frame clip is 4 frames after the temporal pool
        ("coi3d_8x8_r50", 32, 98, 17, 80, 2),  # CoI3D₆₄
    ],
)
def test_continual_temporal_properties_match_the_paper(name, window, rf, padding, delay, stride):
    net = nets.build(name, temporal_window=window)
    assert (net.receptive_field, net.padding, net.delay, net.stride) == (rf, (padding,), delay, (stride,))
    net.temporal_window = 8 if window != 8 else 64  # write-through to the head pool
    assert net.head.pathway0_avgpool.temporal_window == net.temporal_window


# --- step == clip ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["slow", "i3d"])
def test_continual_twin_equals_offline_net_on_a_clip(arch):
    """Full-width registered nets, 32×32: the twin's clip output and its stepped output (end padding flushed)
    equal the offline net's logits."""
    offline_name, twin_name = PAIRS[arch]
    torch.manual_seed(0)
    offline = randomize_bn(nets.build(offline_name, num_classes=10)).eval()
    twin = nets.build(twin_name, num_classes=10).eval()
    twin.load_state_dict(offline.state_dict())
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected = offline(clip)
        assert expected.shape == (2, 10)
        out = twin(clip)
        assert out.shape == (2, 10, 1)
        torch.testing.assert_close(out[:, :, 0], expected, atol=1e-4, rtol=0)
        twin.clean_state()
        stepped = twin.forward_steps(clip, pad_end=True)
        torch.testing.assert_close(stepped, out, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("temporal_fill", ["zeros", "replicate"])
@pytest.mark.parametrize("arch", ["slow", "i3d"])
def test_full_width_twin_steps_a_stream_at_64px(arch, temporal_fill):
    """The registered full-width twins on 64×64 frames: a stream longer than the receptive field steps exactly
    like the clip computation (15-40 s each on 2 shared cores)."""
    offline_name, twin_name = PAIRS[arch]
    torch.manual_seed(0)
    weights = randomize_bn(nets.build(offline_name, num_classes=10)).state_dict()
    twin = nets.build(twin_name, num_classes=10, temporal_fill=temporal_fill).eval()
    twin.load_state_dict(weights)
    stream = torch.randn(2, 3, twin.receptive_field + 2 * twin.stride[0], 64, 64)
    with torch.no_grad():
        assert_steps_match(twin, stream, twin(stream), atol=1e-4)


@pytest.mark.parametrize("arch", ["slow", "i3d"])
def test_stepping_a_stream_gives_the_sliding_window_outputs(arch):
    """Outputs appear exactly at steps delay + i·stride and equal the clip outputs whose windows end in the
    stream; pad_end flushes the rest (narrow nets: same timing, a fraction of the MACs)."""
    _, twin = twin_pair(arch)
    stream = torch.randn(2, 3, twin.delay + 2 * twin.stride[0] + 1, 32, 32)
    with torch.no_grad():
        assert_steps_match(twin, stream, twin(stream), atol=1e-4)


@pytest.mark.parametrize("arch", ["slow", "i3d"])
def test_replicate_fill_steps_like_its_clip(arch):
    offline, twin = twin_pair(arch, temporal_fill="replicate")
    clip = torch.randn(2, 3, 8, 16, 16)
    with torch.no_grad():
        out = twin(clip)
        twin.clean_state()
        torch.testing.assert_close(twin.forward_steps(clip, pad_end=True), out, atol=1e-4, rtol=0)
        assert not torch.allclose(out[:, :, 0], offline(clip), atol=1e-3)  # replicated, not zero, padding


def test_set_temporal_fill_after_construction_equals_building_with_it():
    _, converted = twin_pair("i3d", width=4)
    co.set_temporal_fill(converted, "replicate")
    _, built = twin_pair("i3d", width=4, temporal_fill="replicate")
    clip = torch.randn(1, 3, built.delay + 3, 16, 16)
    with torch.no_grad():
        check(converted(clip), built(clip), atol=0, rtol=0)
        converted.clean_state()
        check(converted.forward_steps(clip, pad_end=True), built(clip), atol=1e-5, rtol=0)


def test_peeking_and_snapshots_leave_the_stream_alone():
    _, twin = twin_pair("i3d", width=4)
    assert_peek_does_not_advance(twin, torch.randn(1, 3, twin.delay + 3, 16, 16))


# --- R(2+1)D-18 -----------------------------------------------------------------------------------------------
def test_r2plus1d_18_is_torchvisions_with_optional_dropout():
    plain = nets.build("r2plus1d_18", num_classes=5)
    dropped = nets.build("r2plus1d_18", num_classes=5, dropout=0.5)
    assert list(plain.state_dict()) == list(dropped.state_dict())  # torchvision checkpoints still load
    dropped.load_state_dict(plain.state_dict())
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(clip), plain.eval()(clip))
    assert plain(clip).shape == (2, 5)


# --- MACs -----------------------------------------------------------------------------------------------------
def _meta_net(name: str) -> nn.Module:
    # Counting MACs needs shapes only: on the meta device nothing is computed.
    return nets.build(name).eval().to("meta")


@pytest.mark.parametrize(("name", "crop", "paper"), [("slow_8x8_r50", 256, 54.87), ("i3d_8x8_r50", 224, 28.61)])
def test_clip_gflops_match_the_paper(name, crop, paper):
    """Conv/matmul MACs per 8-frame clip. The paper's ptflops also counts BN (2/element), ReLU and pooling
    (1/element): that is the whole ~0.7 % gap (54.52 vs 54.87, 28.41 vs 28.61)."""
    net = _meta_net(name)
    with torch.no_grad():
        gflops = count_macs(net, torch.empty(1, 3, 8, crop, crop, device="meta")) / 1e9
    assert gflops == pytest.approx(paper, rel=0.03)
    assert gflops < paper  # we count fewer op kinds, never more


def _step_gflops(net: nn.Module, crop: int) -> tuple[float, float]:
    """(MACs of the step that emits, MACs of one prediction = stride steps) after warm-up, in GFLOPs."""
    step = torch.empty(1, 3, crop, crop, device="meta")
    with torch.no_grad():
        net.clean_state()
        for _ in range(net.delay - net.stride[0] + 1):
            assert net.forward_step(step) is None
        skipped = sum(count_macs(net.forward_step, step) for _ in range(net.stride[0] - 1))
        outputs = []
        emitting = count_macs(lambda: outputs.append(net.forward_step(step)))
    assert outputs[0] is not None
    return emitting / 1e9, (skipped + emitting) / 1e9


def test_coslow_gflops_per_frame_match_the_paper():
    emitting, per_prediction = _step_gflops(_meta_net("coslow_8x8_r50"), 256)
    assert emitting == per_prediction  # stride 1: every frame predicts
    assert per_prediction == pytest.approx(6.90, rel=0.03)
    # one frame of every layer: the clip's conv MACs / 8, plus one head projection per frame instead of per clip
    with torch.no_grad():
        clip = count_macs(_meta_net("slow_8x8_r50"), torch.empty(1, 3, 8, 256, 256, device="meta")) / 1e9
    assert per_prediction == pytest.approx(clip / 8, abs=1e-3)


def test_coi3d_gflops_per_prediction_and_per_emitting_step():
    """CoI3D predicts every 2 frames: a prediction costs 2 frames of stem + res2 and 1 pooled frame of
    res3..res5 + head = the clip's MACs / 4 (7.10 GFLOPs). The paper's 5.68 is ptflops on a 1-frame input,
    i.e. the emitting step alone (1 frame of stem + res2, 1 of the rest): we measure 5.61 for that."""
    emitting, per_prediction = _step_gflops(_meta_net("coi3d_8x8_r50"), 224)
    assert emitting == pytest.approx(5.68, rel=0.03)
    with torch.no_grad():
        clip = count_macs(_meta_net("i3d_8x8_r50"), torch.empty(1, 3, 8, 224, 224, device="meta")) / 1e9
    assert per_prediction == pytest.approx(clip / 4, abs=1e-3)
    assert per_prediction == pytest.approx(7.10, abs=0.01)


# --- checkpoints ----------------------------------------------------------------------------------------------
def _rand(shape: tuple[int, ...], g: torch.Generator, kind: str = "weight") -> Tensor:
    """Random checkpoint values of a plausible scale (unit-variance conv weights would overflow 50 layers)."""
    u = torch.rand(shape, generator=g)
    if kind == "weight":  # He-like: std 1/sqrt(fan-in)
        return torch.randn(shape, generator=g) / float(np.prod(shape[1:])) ** 0.5
    return {"scale": u * 0.5 + 0.75, "shift": u * 0.4 - 0.2, "var": u * 1.5 + 0.5}[kind]


def _blocks(net: nn.Module) -> Iterator[tuple[int, int, nn.Module]]:
    """(stage 0..3, block index, block) in order; used for shapes only."""
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):
            yield i, j, getattr(getattr(net, f"s{i + 2}"), f"pathway0_res{j}")


def _assert_every_tensor_landed(net: nn.Module, source: list[Tensor]) -> None:
    """Each weight and statistic of ``net`` equals one checkpoint tensor (random, so unique), and there are
    exactly as many of them: nothing was dropped, duplicated or left at its initial value."""
    own = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(own) == len(source)
    by_shape: dict[tuple[int, ...], list[Tensor]] = {}
    for t in source:
        by_shape.setdefault(tuple(t.shape), []).append(t)
    unmatched = [k for k, v in own.items() if not any(torch.equal(v, t) for t in by_shape.get(tuple(v.shape), []))]
    assert not unmatched, f"not loaded from the checkpoint: {unmatched[:5]}"


def _load_quietly(net: nn.Module, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without missing/unexpected keys
        return load_pretrained(net, path)


def _assert_twins_agree(offline: nn.Module, twin: nn.Module) -> None:
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(clip)[:, :, 0], offline.eval()(clip), atol=1e-4, rtol=0)


def test_slowfast_pyth_loads_identically(tmp_path):
    source, _ = twin_pair("slow")
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"epoch": 196, "model_state": source.state_dict(), "optimizer_state": {}, "cfg": "..."}, path)
    offline, twin = twin_pair("slow")
    for net in (offline, twin):
        for m in net.modules():  # forget the shared initial values
            if isinstance(m, nn.Conv3d):
                nn.init.zeros_(m.weight)
        report = _load_quietly(net, path)
        assert report.converter == "resnet3d-slowfast" and not report.missing and not report.unexpected
        for k, v in source.state_dict().items():
            torch.testing.assert_close(net.state_dict()[k], v, atol=0, rtol=0)
    _assert_twins_agree(offline, twin)


def pytorchvideo_state(net: nn.Module, stage1_pool: bool, seed: int = 1) -> dict[str, Tensor]:
    """A checkpoint with pytorchvideo ``create_resnet`` names (``blocks.0`` stem ``conv``/``norm``; stages with
    ``res_blocks.j.branch1_conv``/``branch1_norm``/``branch2.conv_x``/``branch2.norm_x``; an optional
    ``stage1_pool`` block after the first stage; ``proj`` in the last block), random values, our shapes."""
    g = torch.Generator().manual_seed(seed)

    def bn(prefix: str, c: int) -> dict[str, Tensor]:
        return {
            f"{prefix}.weight": _rand((c,), g, "scale"),
            f"{prefix}.bias": _rand((c,), g, "shift"),
            f"{prefix}.running_mean": _rand((c,), g, "shift"),
            f"{prefix}.running_var": _rand((c,), g, "var"),
            f"{prefix}.num_batches_tracked": torch.tensor(12345),
        }

    stem = net.s1.pathway0_stem.conv.weight.shape
    state = {"blocks.0.conv.weight": _rand(stem, g), **bn("blocks.0.norm", stem[0])}
    stage_blocks = [1, 3, 4, 5] if stage1_pool else [1, 2, 3, 4]
    for i, j, block in _blocks(net):
        prefix = f"blocks.{stage_blocks[i]}.res_blocks.{j}"
        if j == 0:
            shape = block.branch1.weight.shape
            state |= {f"{prefix}.branch1_conv.weight": _rand(shape, g), **bn(f"{prefix}.branch1_norm", shape[0])}
        for x in "abc":
            shape = getattr(block.branch2, x).weight.shape
            state[f"{prefix}.branch2.conv_{x}.weight"] = _rand(shape, g)
            state |= bn(f"{prefix}.branch2.norm_{x}", shape[0])
    head = 6 if stage1_pool else 5
    proj = net.head.projection.weight.shape
    state |= {f"blocks.{head}.proj.weight": _rand(proj, g), f"blocks.{head}.proj.bias": _rand(proj[:1], g, "shift")}
    return state


@pytest.mark.parametrize(
    ("arch", "wrap"),
    [("slow", "model_state"), ("slow", "plain"), ("slow", "lightning"), ("i3d", "model_state")],
)
def test_pytorchvideo_checkpoint_loads(tmp_path, arch, wrap):
    offline, twin = twin_pair(arch)
    state = pytorchvideo_state(offline, stage1_pool=arch == "i3d")  # pytorchvideo's I3D pools after stage 1
    raw = {
        "model_state": {"model_state": state},
        "plain": state,
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
    }[wrap]
    path = tmp_path / f"{arch.upper()}_8x8_R50.pyth"
    torch.save(raw, path)
    for net in (offline, twin):
        report = _load_quietly(net, path)
        assert report.converter == "resnet3d-pytorchvideo"
        _assert_every_tensor_landed(net, [v for k, v in state.items() if not k.endswith("num_batches_tracked")])
        check(net.s1.pathway0_stem.bn.running_var, state["blocks.0.norm.running_var"])
        b = 3 if arch == "i3d" else 2  # res3 is blocks.3 when the stage-1 pool takes blocks.2
        check(net.s3.pathway0_res0.branch1_bn.bias, state[f"blocks.{b}.res_blocks.0.branch1_norm.bias"])
        check(net.s3.pathway0_res3.branch2.b.weight, state[f"blocks.{b}.res_blocks.3.branch2.conv_b.weight"])
        check(net.head.projection.weight, state[f"blocks.{b + 3}.proj.weight"])
    _assert_twins_agree(offline, twin)


def caffe2_blobs(net: nn.Module, pred_layout: str = "out_in", seed: int = 2) -> dict[str, np.ndarray]:
    """Blobs named as in SlowFast's Caffe2 I3D pickle (``conv1_w``, ``res_conv1_bn_{s,b,rm,riv}``,
    ``res{2..5}_{j}_branch2{a,b,c}_w`` + ``_bn_*``, ``res{s}_0_branch1_w`` + ``_bn_*``, ``pred_w``, ``pred_b``)
    plus solver blobs, as float32 numpy arrays. ``res3_0_branch1_w`` is stored 2-D, as a linear layer's blob."""
    g = torch.Generator().manual_seed(seed)

    def arr(shape: tuple[int, ...], kind: str = "weight") -> np.ndarray:
        return _rand(tuple(shape), g, kind).numpy()

    def bn(prefix: str, c: int) -> dict[str, np.ndarray]:
        return {f"{prefix}_s": arr((c,), "scale"), f"{prefix}_b": arr((c,), "shift"),
                f"{prefix}_rm": arr((c,), "shift"), f"{prefix}_riv": arr((c,), "var")}  # fmt: skip

    stem = tuple(net.s1.pathway0_stem.conv.weight.shape)
    blobs = {"conv1_w": arr(stem), **bn("res_conv1_bn", stem[0])}
    for i, j, block in _blocks(net):
        name = f"res{i + 2}_{j}"
        if j == 0:
            shape = tuple(block.branch1.weight.shape)
            blobs |= {f"{name}_branch1_w": arr(shape), **bn(f"{name}_branch1_bn", shape[0])}
        for x in "abc":
            shape = tuple(getattr(block.branch2, x).weight.shape)
            blobs |= {f"{name}_branch2{x}_w": arr(shape), **bn(f"{name}_branch2{x}_bn", shape[0])}
    blobs["res3_0_branch1_w"] = blobs["res3_0_branch1_w"].reshape(blobs["res3_0_branch1_w"].shape[:2])
    out_features, in_features = net.head.projection.weight.shape
    blobs["pred_w"] = arr((out_features, in_features) if pred_layout == "out_in" else (in_features, out_features))
    blobs["pred_b"] = arr((out_features,), "shift")
    # solver state that SlowFast skips
    blobs |= {"conv1_w_momentum": arr(stem), "pred_b_momentum": arr((out_features,), "shift"), "lr": np.array([0.1]),
              "model_iter": np.array([300000])}  # fmt: skip
    return blobs


@pytest.mark.parametrize("pred_layout", ["out_in", "in_out"])
def test_caffe2_pkl_loads_with_slowfast_names(tmp_path, pred_layout):
    offline, twin = twin_pair("i3d")
    blobs = caffe2_blobs(offline, pred_layout)
    path = tmp_path / "I3D_8x8_R50.pkl"
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)  # read back with latin1, as Python-2 Caffe2 pickles
    model_blobs = {k: v for k, v in blobs.items() if not any(s in k for s in ("momentum", "lr", "model_iter"))}

    def blob(name: str) -> Tensor:
        return torch.from_numpy(blobs[name])

    pred_w = blob("pred_w")
    for net in (offline, twin):
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.num_batches_tracked.fill_(7)
        report = _load_quietly(net, path)
        assert report.converter == "resnet3d-caffe2" and not report.missing and not report.unexpected
        expected = [blob(k) for k in model_blobs if k not in ("pred_w", "res3_0_branch1_w")]
        expected += [pred_w if pred_layout == "out_in" else pred_w.t(), blob("res3_0_branch1_w")[..., None, None, None]]
        _assert_every_tensor_landed(net, expected)
        check(net.s1.pathway0_stem.bn.running_var, blob("res_conv1_bn_riv"))
        check(net.s5.pathway0_res1.branch2.a.weight, blob("res5_1_branch2a_w"))
        check(net.s4.pathway0_res0.branch1_bn.weight, blob("res4_0_branch1_bn_s"))
        check(net.s3.pathway0_res0.branch1.weight[:, :, 0, 0, 0], blob("res3_0_branch1_w"))
        assert int(net.s2.pathway0_res0.branch2.a_bn.num_batches_tracked) == 0  # Caffe2 has no counter
    _assert_twins_agree(offline, twin)


def test_wrong_shapes_and_unknown_formats_raise(tmp_path):
    slow, _ = twin_pair("slow")
    i3d, _ = twin_pair("i3d")
    path = tmp_path / "slow.pyth"
    torch.save({"model_state": slow.state_dict()}, path)
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*s1\.pathway0_stem\.conv\.weight"):
        load_pretrained(i3d, path)  # Slow's 1×7×7 stem is not I3D's 5×7×7
    unknown = tmp_path / "unknown.pth"
    torch.save({"model_state": {"features.0.weight": torch.zeros(3)}}, unknown)
    with pytest.raises(ValueError, match="no converter recognises"):
        load_pretrained(slow, unknown)
    with pytest.raises(ValueError, match="no converter recognises"):  # our converters serve our nets only
        load_pretrained(nets.build("conv_stack"), path)
    bad = tmp_path / "bad.pyth"
    torch.save({k: v for k, v in pytorchvideo_state(slow, False).items() if "blocks.4." not in k}, bad)
    with pytest.raises(ValueError, match="4 residual stages"):
        load_pretrained(slow, bad)
