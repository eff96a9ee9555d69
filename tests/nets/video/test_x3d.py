"""X3D and CoX3D: sizes, parameter counts, receptive fields, CoX3D step == its own clip output, checkpoint formats
(SlowFast and pytorchvideo, written here in their official key naming) and multiply-accumulates vs the papers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from modules import nets
from modules.nets import load_pretrained
from modules.nets.video.x3d import X3D, X3D_SIZES, CoX3D
from modules.profiling import FlopCounter, count_params
from tests.continual.helpers import assert_steps_match
from tests.nets.helpers import randomize

SIZES = ["xs", "s", "m", "l"]
SMALL_CROP = 64  # 2×2 positions before the head pool: cheap, and the spatial pool still pools


# tiny tensors: one intra-op thread (tests/conftest.py) avoids OpenMP contention on 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


# --- architecture -----------------------------------------------------------------------------------------------
def test_sizes_give_the_published_inputs_depths_and_widths():
    inputs = {n: (s.frames, s.crop, s.sampling_stride) for n, s in X3D_SIZES.items() if n != "tiny"}
    assert inputs == {"xs": (4, 160, 12), "s": (13, 160, 6), "m": (16, 224, 5), "l": (16, 312, 5)}
    assert X3D_SIZES["s"].input_shape == (3, 13, 160, 160)
    assert [X3D_SIZES[n].depths for n in SIZES] == [(3, 5, 11, 7)] * 3 + [(5, 10, 25, 15)]
    size = X3D_SIZES["s"]
    assert (size.stem_out, size.stage_widths, size.inner_widths) == (24, (24, 48, 96, 192), (54, 108, 216, 432))
    net = nets.build("x3d_s")
    se_widths = [getattr(net, f"s{i}").pathway0_res0.branch2.se.fc1.out_channels for i in range(2, 6)]
    assert se_widths == [8, 8, 16, 32]
    # SE on even block indices only
    assert [hasattr(net.s4[i].branch2, "se") for i in range(4)] == [True, False, True, False]


@pytest.mark.parametrize(("name", "published"), [("xs", 3.79), ("s", 3.79), ("m", 3.79), ("l", 6.15)])
def test_parameter_counts_match_the_papers(name: str, published: float):
    for builder in (f"x3d_{name}", f"cox3d_{name}"):
        assert round(count_params(nets.build(builder, num_classes=400)) / 1e6, 2) == published


def test_x3d_and_cox3d_have_identical_slowfast_keys():
    offline, co = nets.build("x3d_s"), nets.build("cox3d_s")
    a, b = offline.state_dict(), co.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    for key in [
        "s1.pathway0_stem.conv_xy.weight", "s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.running_var",
        "s2.pathway0_res0.branch1.weight", "s2.pathway0_res0.branch1_bn.weight", "s2.pathway0_res0.branch2.a.weight",
        "s2.pathway0_res0.branch2.b_bn.bias", "s2.pathway0_res0.branch2.se.fc1.bias",
        "s2.pathway0_res0.branch2.se.fc2.weight", "s5.pathway0_res6.branch2.c_bn.weight", "head.conv_5.weight",
        "head.conv_5_bn.running_mean", "head.lin_5.weight", "head.projection.weight", "head.projection.bias",
    ]:  # fmt: skip
        assert key in a, key
    assert "head.lin_5.bias" not in a and "s2.pathway0_res1.branch1.weight" not in a
    assert a["s1.pathway0_stem.conv_xy.weight"].shape == (24, 3, 1, 3, 3)
    assert a["s1.pathway0_stem.conv.weight"].shape == (24, 1, 5, 1, 1)
    assert a["s3.pathway0_res0.branch2.b.weight"].shape == (108, 1, 3, 3, 3)


@pytest.mark.parametrize(
    ("name", "window", "rf", "padding", "delay"),
    [
        ("xs", None, 60, 28, 31), ("s", None, 69, 28, 40), ("m", None, 72, 28, 43), ("l", None, 130, 57, 72),
        ("xs", 64, 120, 28, 91), ("s", 64, 120, 28, 91), ("m", 64, 120, 28, 91), ("l", 64, 178, 57, 120),
    ],
)  # fmt: skip
def test_cox3d_receptive_field_padding_and_delay_match_the_paper(name, window, rf, padding, delay):
    net = nets.build(f"cox3d_{name}", temporal_window=window)
    assert (net.receptive_field, net.padding, net.delay, net.stride) == (rf, (padding,), delay, (1,))


def test_the_pool_window_can_be_extended_after_construction():
    net = randomize(nets.build("cox3d_xs", num_classes=5, crop=SMALL_CROP)).eval()
    net.head.avg_pool.temporal_window = 6  # e.g. co.set_temporal_window(net, 6)
    assert (net.receptive_field, net.delay) == (62, 33)
    clip = torch.randn(1, 3, net.delay + 2, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        net.clean_state()
        torch.testing.assert_close(net.forward_steps(clip), net(clip)[:, :, :2], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="positive"):
        net.head.avg_pool.temporal_window = 0


# --- outputs ----------------------------------------------------------------------------------------------------
def test_x3d_returns_logits_and_softmax_only_in_eval():
    net = randomize(nets.build("x3d_xs", num_classes=7, crop=SMALL_CROP, softmax=True)).eval()
    clip = torch.randn(2, 3, 4, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        probs = net(clip)
        assert probs.shape == (2, 7)
        torch.testing.assert_close(probs.sum(1), torch.ones(2))
        net.head.output.softmax = False
        logits = net(clip)
        torch.testing.assert_close(logits.softmax(1), probs)
        net.train()
        net.head.output.softmax = True
        assert net(clip).shape == (2, 7)  # training: logits, softmax skipped
    assert not nets.build("x3d_s").head.output.softmax  # default: logits; the system applies softmax/sigmoid


def test_x3d_averages_the_pooled_positions_of_a_longer_clip_as_slowfast():
    net = randomize(nets.build("x3d_xs", num_classes=5, crop=SMALL_CROP)).eval()
    seen = []
    net.head.output.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        out = net(torch.randn(1, 3, 6, SMALL_CROP, SMALL_CROP))  # the 4-frame pool fits 3 times
    assert seen[0].shape == (1, 5, 3, 1, 1)
    torch.testing.assert_close(out, seen[0].mean(dim=(2, 3, 4)))
    with pytest.raises(ValueError, match="at least 32"):
        nets.build("x3d_xs", crop=16)
    with pytest.raises(ValueError, match=r"pools 4 frames.*frames=<T>"):
        net(torch.randn(1, 3, 3, SMALL_CROP, SMALL_CROP))
    with pytest.raises(ValueError, match=r"pools 4 frames.*temporal_window=<T>"):
        nets.build("cox3d_xs", crop=SMALL_CROP)(torch.randn(1, 3, 4, 32, 32))


def _saturate_se(net: nn.Module) -> None:
    """Make every SE multiply by sigmoid(30) == 1.0 in float32, so that its pooling scope cannot matter."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if name.endswith(".se"):
                m.fc2.weight.zero_()
                m.fc2.bias.fill_(30.0)


def test_cox3d_equals_x3d_but_for_the_frame_scoped_se():
    """CoX3D's SE pools each frame, X3D's the clip. With the SE made the identity the two nets
    are the same function; with it active they differ."""
    offline = randomize(nets.build("x3d_xs", num_classes=6, crop=SMALL_CROP)).eval()
    with torch.no_grad():  # sharper SE gates than the init's, so that their input shows in the output
        for name, m in offline.named_modules():
            if name.endswith(".se"):
                m.fc1.weight.mul_(5.0)
                m.fc2.weight.mul_(5.0)
    co = nets.build("cox3d_xs", num_classes=6, crop=SMALL_CROP).eval()
    co.load_state_dict(offline.state_dict())
    # Frames of different brightness, so that a frame's spatial mean is far from the clip's.
    clip = torch.randn(2, 3, 4, SMALL_CROP, SMALL_CROP) * torch.tensor([0.2, 1.0, 3.0, 0.5]).view(1, 1, 4, 1, 1)
    with torch.no_grad():
        assert co(clip).shape == (2, 6, 1)
        assert (co(clip)[:, :, 0] - offline(clip)).abs().max() > 5e-3
        _saturate_se(offline)
        _saturate_se(co)
        torch.testing.assert_close(co(clip)[:, :, 0], offline(clip), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temporal_fill", ["zeros", "replicate"])
@pytest.mark.parametrize("name", ["xs", "s"])
def test_cox3d_steps_equal_its_own_clip_output(name: str, temporal_fill: str):
    """Stepping emits nothing for ``delay`` steps, then exactly the prefix of ``forward``; with ``pad_end`` it
    emits all of it (compared with CoX3D's own clip output: its SE is not X3D's)."""
    torch.manual_seed(0)
    net = randomize(nets.build(f"cox3d_{name}", num_classes=10, crop=SMALL_CROP, temporal_fill=temporal_fill))
    net.eval()
    clip = torch.randn(2, 3, net.delay + 3, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        reference = net(clip)
    assert reference.shape == (2, 10, clip.shape[2] - net.head.avg_pool.temporal_window + 1)
    assert_steps_match(net, clip, reference, atol=1e-4)
    net.clean_state()
    net.warm_up((2, 3, SMALL_CROP, SMALL_CROP))
    with torch.no_grad():
        assert net.forward_step(clip[:, :, 0]).shape == (2, 10)  # one prediction per frame after warm-up


@pytest.mark.slow
@pytest.mark.parametrize("name", ["m", "l"])
def test_cox3d_m_and_l_steps_equal_their_own_clip_output(name: str):
    net = randomize(nets.build(f"cox3d_{name}", num_classes=10, crop=SMALL_CROP, temporal_fill="replicate")).eval()
    clip = torch.randn(1, 3, net.delay + 2, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        reference = net(clip)
    assert_steps_match(net, clip, reference, atol=1e-4)


def test_cox3d_state_snapshots_restore_the_stream():
    net = randomize(nets.build("cox3d_xs", num_classes=4, crop=SMALL_CROP)).eval()
    clip = torch.randn(1, 3, net.delay + 4, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        net.clean_state()
        net.forward_steps(clip[:, :, : net.delay + 1])
        saved = net.get_state()
        first = net.forward_steps(clip[:, :, net.delay + 1 :])
        net.set_state(saved)
        torch.testing.assert_close(net.forward_steps(clip[:, :, net.delay + 1 :]), first, atol=0, rtol=0)
        peek = net.forward_step(clip[:, :, 0], update_state=False)
        torch.testing.assert_close(net.forward_step(clip[:, :, 0]), peek, atol=0, rtol=0)


def test_builders_take_keyword_overrides_and_name_wrong_ones():
    net = nets.build("cox3d_s", num_classes=3, dropout=0.0, temporal_window=20, temporal_fill="replicate")
    assert isinstance(net, CoX3D) and net.head.projection.out_features == 3 and net.receptive_field == 76
    assert isinstance(nets.build("x3d_l", num_classes=3, dropout=0.2), X3D)
    with pytest.raises(TypeError, match="temporal_window"):
        nets.build("x3d_s", temporal_window=13)  # only the continual twin has a pool window
    with pytest.raises(ValueError, match="temporal_fill"):
        nets.build("cox3d_s", temporal_fill="reflect")


# --- checkpoint formats -----------------------------------------------------------------------------------------
def _bn_keys(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes = {"weight": (channels,), "bias": (channels,), "running_mean": (channels,), "running_var": (channels,)}
    return {f"{prefix}.{k}": s for k, s in {**shapes, "num_batches_tracked": ()}.items()}


def _pytorchvideo_x3d_keys(name: str, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of pytorchvideo's ``create_x3d`` (``pytorchvideo/models/x3d.py``), from its rules:
    ``Net(blocks=[stem, 4 × ResStage(res_blocks=[ResBlock(branch1_conv, branch1_norm, branch2=BottleneckBlock(conv_a,
    norm_a, conv_b, norm_b=Sequential(BN, SqueezeExcitation(block=[conv, ReLU, conv, Sigmoid]) | Identity), conv_c,
    norm_c))]), ResNetBasicHead(pool=ProjectedPool(pre_conv, pre_norm, post_conv), proj)])``; the stem is
    ``ResNetBasicStem(conv=Conv2plus1d(conv_t=<1×3×3 conv>, conv_xy=<5×1×1 depthwise conv>), norm)``; a shortcut gets
    ``branch1_conv`` when the width or resolution changes but ``branch1_norm`` only when the width changes."""
    keys: dict[str, tuple[int, ...]] = {
        "blocks.0.conv.conv_t.weight": (24, 3, 1, 3, 3),
        "blocks.0.conv.conv_xy.weight": (24, 1, 5, 1, 1),
        **_bn_keys("blocks.0.norm", 24),
    }
    depths = {"l": (5, 10, 25, 15)}.get(name, (3, 5, 11, 7))
    dim_in = 24
    widths = zip(depths, (24, 48, 96, 192), (54, 108, 216, 432), (8, 8, 16, 32))  # out, inner (2.25 ×), SE fc
    for stage, (depth, dim_out, inner, se) in enumerate(widths):
        for i in range(depth):
            p = f"blocks.{stage + 1}.res_blocks.{i}"
            c_in = dim_in if i == 0 else dim_out
            if i == 0:  # stride 2
                keys[f"{p}.branch1_conv.weight"] = (dim_out, c_in, 1, 1, 1)
                if c_in != dim_out:
                    keys |= _bn_keys(f"{p}.branch1_norm", dim_out)
            keys[f"{p}.branch2.conv_a.weight"] = (inner, c_in, 1, 1, 1)
            keys |= _bn_keys(f"{p}.branch2.norm_a", inner)
            keys[f"{p}.branch2.conv_b.weight"] = (inner, 1, 3, 3, 3)
            keys |= _bn_keys(f"{p}.branch2.norm_b.0", inner)
            if i % 2 == 0:
                keys |= {
                    f"{p}.branch2.norm_b.1.block.0.weight": (se, inner, 1, 1, 1),
                    f"{p}.branch2.norm_b.1.block.0.bias": (se,),
                    f"{p}.branch2.norm_b.1.block.2.weight": (inner, se, 1, 1, 1),
                    f"{p}.branch2.norm_b.1.block.2.bias": (inner,),
                }
            keys[f"{p}.branch2.conv_c.weight"] = (dim_out, inner, 1, 1, 1)
            keys |= _bn_keys(f"{p}.branch2.norm_c", dim_out)
        dim_in = dim_out
    keys["blocks.5.pool.pre_conv.weight"] = (432, 192, 1, 1, 1)
    keys |= _bn_keys("blocks.5.pool.pre_norm", 432)
    keys["blocks.5.pool.post_conv.weight"] = (2048, 432, 1, 1, 1)
    keys |= {"blocks.5.proj.weight": (num_classes, 2048), "blocks.5.proj.bias": (num_classes,)}
    return keys


def _slowfast_name(ptv_key: str) -> str:
    """The SlowFast name of a pytorchvideo X3D key, written out per layer (independently of the converter)."""
    parts = ptv_key.split(".")
    stage = int(parts[1])
    if stage == 0:
        layer = {"conv.conv_t": "conv_xy", "conv.conv_xy": "conv", "norm": "bn"}[".".join(parts[2:-1])]
        return f"s1.pathway0_stem.{layer}.{parts[-1]}"
    if stage == 5:
        head = {
            "pool.pre_conv": "conv_5",
            "pool.pre_norm": "conv_5_bn",
            "pool.post_conv": "lin_5",
            "proj": "projection",
        }
        return f"head.{head['.'.join(parts[2:-1])]}.{parts[-1]}"
    inner = ".".join(parts[4:-1])
    layer = {
        "branch1_conv": "branch1", "branch1_norm": "branch1_bn", "branch2.conv_a": "branch2.a",
        "branch2.norm_a": "branch2.a_bn", "branch2.conv_b": "branch2.b", "branch2.norm_b.0": "branch2.b_bn",
        "branch2.norm_b.1.block.0": "branch2.se.fc1", "branch2.norm_b.1.block.2": "branch2.se.fc2",
        "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn",
    }[inner]  # fmt: skip
    return f"s{stage + 1}.pathway0_res{parts[3]}.{layer}.{parts[-1]}"


def _set_identity_bn(bn: nn.BatchNorm3d) -> None:
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


def _outputs(net: nn.Module, clip: Tensor) -> Tensor:
    with torch.no_grad():
        net.eval()
        if isinstance(net, CoX3D):
            net.clean_state()
        return net(clip)


def _clip() -> Tensor:
    return torch.randn(1, 3, 4, SMALL_CROP, SMALL_CROP, generator=torch.Generator().manual_seed(3))


def test_slowfast_checkpoint_loads_1_to_1_into_x3d_and_cox3d(tmp_path: Path):
    reference = randomize(nets.build("x3d_xs", crop=SMALL_CROP)).eval()
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    # The official file: model_state in SlowFast's names, plus training bookkeeping that is not loaded.
    assert set(_slowfast_name(k) for k in _pytorchvideo_x3d_keys("xs")) < set(state)
    path = tmp_path / "x3d_xs.pyth"
    torch.save({"epoch": 300, "model_state": state, "optimizer_state": {}, "cfg": "X3D_XS.yaml"}, path)
    for builder in ("x3d_xs", "cox3d_xs"):
        net = nets.build(builder, crop=SMALL_CROP)
        report = load_pretrained(net, path)
        assert (report.converter, report.missing, report.unexpected) == ("slowfast-x3d", [], [])
        assert len(report.loaded) == len(state)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, state[k], atol=0, rtol=0)
    offline = nets.build("x3d_xs", crop=SMALL_CROP)
    load_pretrained(offline, path)
    torch.testing.assert_close(_outputs(offline, _clip()), _outputs(reference, _clip()), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["xs", "l"])
def test_pytorchvideo_checkpoint_loads_into_x3d_and_cox3d(tmp_path: Path, name: str):
    crop, frames = SMALL_CROP, 4  # a 4-frame head pool, so that a 4-frame clip gives an output for every size
    reference = randomize(nets.build(f"x3d_{name}", crop=crop, frames=frames)).eval()
    _set_identity_bn(reference.s2.pathway0_res0.branch1_bn)  # pytorchvideo has no BN there (24 → 24 channels)
    ours = reference.state_dict()
    official = _pytorchvideo_x3d_keys(name)
    ptv_state = {k: ours[_slowfast_name(k)].clone() for k in official}
    assert {k: tuple(v.shape) for k, v in ptv_state.items()} == official
    path = tmp_path / f"X3D_{name.upper()}.pyth"
    torch.save({"model_state": ptv_state}, path)

    for builder in (f"x3d_{name}", f"cox3d_{name}"):
        net = nets.build(builder, crop=crop)
        report = load_pretrained(net, path)
        # Every tensor of ours is loaded: the missing shortcut BN comes in as the identity.
        assert (report.converter, report.missing, report.unexpected) == ("pytorchvideo-x3d", [], [])
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, ours[k], atol=0, rtol=0, msg=k)
    offline = nets.build(f"x3d_{name}", crop=crop, frames=frames)
    load_pretrained(offline, path)
    torch.testing.assert_close(_outputs(offline, _clip()), _outputs(reference, _clip()), atol=1e-5, rtol=1e-5)


def test_checkpoints_without_bn_counters_load_with_only_those_missing(tmp_path: Path):
    reference = nets.build("x3d_xs", crop=SMALL_CROP)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pyth"
    torch.save({"model_state": state}, path)
    with pytest.warns(UserWarning, match="missing"):
        report = load_pretrained(nets.build("cox3d_xs", crop=SMALL_CROP), path)
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)


def test_a_wrong_shape_and_an_unknown_format_raise(tmp_path: Path):
    state = nets.build("x3d_xs", crop=SMALL_CROP).state_dict()
    state["head.projection.weight"] = torch.zeros(10, 2048)
    torch.save({"model_state": state}, tmp_path / "bad.pyth")
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*head\.projection\.weight: checkpoint \(10, 2048\)"):
        load_pretrained(nets.build("x3d_xs", crop=SMALL_CROP), tmp_path / "bad.pyth")
    torch.save({"model_state": {"features.0.weight": torch.zeros(3)}}, tmp_path / "other.pyth")
    with pytest.raises(ValueError, match="no converter recognises"):
        load_pretrained(nets.build("cox3d_xs", crop=SMALL_CROP), tmp_path / "other.pyth")


# --- FLOPs -----------------------------------------------------------------------------------------------------
#: X3D paper (Feichtenhofer, CVPR 2020, Table 3): GFLOPs = GMACs of conv/matmul ops (fvcore), one clip.
X3D_PAPER_GMACS = {"xs": 0.60, "s": 1.96, "m": 4.73, "l": 18.37}
#: Co3D paper (Hedegaard & Iosifidis, arXiv 2106.00050) table, counted with ptflops: per clip (X3D) and per frame.
CO3D_PAPER_CLIP = {"xs": 0.64, "s": 2.06, "m": 4.97, "l": 19.17}
CO3D_PAPER_FRAME = {"s": 0.17, "m": 0.33, "l": 1.25}


def _count_clip(net: nn.Module, clip: Tensor) -> FlopCounter:
    with torch.no_grad(), FlopCounter(net.eval()) as counter:
        net(clip)
    return counter


def _count_step(net: CoX3D, frame: Tensor) -> FlopCounter:
    """One warmed-up step, counted."""
    with torch.no_grad():
        net.eval().clean_state()
        net.warm_up(tuple(frame.shape))
        with FlopCounter(net, stepping=True) as counter:
            assert net.forward_step(frame) is not None
    return counter


def test_tiny_x3d_and_cox3d_ptflops_terms_by_hand():
    """x3d_tiny on 32² (stem 16², s2 8², s3 4², s4 2², s5 1²; widths 12/12/24/48/96, inner 27/54/108/216, blocks
    1/1/3/2, SE widths 8/8/8/8/16 on blocks 0 and 2, head 216 → 256 → 10 classes), per frame:"""
    # (channels, side) of every BatchNorm input; the first stage block of each stage also has a branch1_bn
    norms = [(12, 16)]  # stem
    norms += [(27, 16), (27, 8), (12, 8), (12, 8)]  # s2 block 0: a, b (stride 2), c, branch1
    norms += [(54, 8), (54, 4), (24, 4), (24, 4)]  # s3 block 0
    norms += [(108, 4), (108, 2), (48, 2), (48, 2)] + [(108, 2), (108, 2), (48, 2)] * 2  # s4 blocks 0, 1, 2
    norms += [(216, 2), (216, 1), (96, 1), (96, 1), (216, 1), (216, 1), (96, 1)]  # s5 blocks 0, 1
    norms += [(216, 1)]  # head conv_5_bn
    norm = 2 * sum(c * s * s for c, s in norms)  # scale and shift
    a_relus = [(27, 16), (54, 8), (108, 4), (108, 2), (108, 2), (216, 2), (216, 1)]
    block_relus = [(12, 8), (24, 4), (48, 2), (48, 2), (48, 2), (96, 1), (96, 1)]
    stem_relu, se_relus, conv_5_relu, lin_5_relu = 12 * 16 * 16, 8 + 8 + 8 + 8 + 16, 216, 256
    relu = stem_relu + sum(c * s * s for c, s in a_relus + block_relus) + se_relus + conv_5_relu + lin_5_relu
    se_pools, head_pool = 27 * 8 * 8 + 54 * 4 * 4 + 108 * 2 * 2 + 108 * 2 * 2 + 216, 216  # what each pool reads
    se_bias, projection_bias = (8 + 27) + (8 + 54) + (8 + 108) + (8 + 108) + (16 + 216), 10
    step = _count_step(nets.build("cox3d_tiny"), torch.randn(1, 3, 32, 32))
    assert dict(step.terms) == {"norm": norm, "activation": relu, "pool": se_pools + head_pool,
                                "bias": se_bias + projection_bias}  # fmt: skip
    extras = norm + relu + se_pools + head_pool + se_bias + projection_bias
    assert step.total("ptflops") == step.total("macs") + extras
    assert step.total("co3d_published") == step.total("ptflops") + norm + relu  # BN and ReLU twice per step

    # X3D on an 8-frame clip: all of it per frame, but for what runs once per clip: the SE excitations (on the
    # clip-pooled vector) and the head after the global pool
    clip = _count_clip(nets.build("x3d_tiny"), torch.randn(1, 3, 8, 32, 32))
    once = se_relus + lin_5_relu
    assert dict(clip.terms) == {"norm": 8 * norm, "activation": 8 * (relu - once) + once,
                                "pool": 8 * (se_pools + head_pool), "bias": se_bias + projection_bias}  # fmt: skip
    assert clip.total("co3d_published") == clip.total("ptflops")  # clips ran in forward mode: counted once


def _check_clip(name: str) -> None:
    clip = _count_clip(nets.build(f"x3d_{name}"), torch.randn(1, *X3D_SIZES[name].input_shape))
    macs, ptflops = clip.total("macs") / 1e9, clip.total("ptflops") / 1e9
    print(f"X3D-{name.upper()}: {macs:.4f} GMACs (X3D paper {X3D_PAPER_GMACS[name]}); ptflops {ptflops:.4f} "
          f"(Co3D table {CO3D_PAPER_CLIP[name]})")  # fmt: skip
    assert macs == pytest.approx(X3D_PAPER_GMACS[name], rel=0.03)
    # The Co3D table's ~5% more is ptflops counting BN, ReLU and pooling too.
    assert ptflops == pytest.approx(CO3D_PAPER_CLIP[name], rel=0.03)
    assert clip.total("co3d_published") == clip.total("ptflops")


def _check_frame(name: str) -> None:
    size = X3D_SIZES[name]
    step = _count_step(nets.build(f"cox3d_{name}"), torch.randn(1, 3, size.crop, size.crop))
    macs, ptflops, published = (step.total(c) / 1e9 for c in ("macs", "ptflops", "co3d_published"))
    table = CO3D_PAPER_FRAME[name]
    print(f"CoX3D-{name.upper()}: {macs:.4f} GMACs per frame, ptflops {ptflops:.4f}, as published {published:.4f} "
          f"(Co3D table {table})")  # fmt: skip
    # A continual step costs one output frame of every conv: the clip's MACs over T, plus the head's lin_5 and
    # projection, which the clip net runs once and the stream once per frame.
    assert macs * size.frames == pytest.approx(X3D_PAPER_GMACS[name], rel=0.03)
    # What a step executes, even with ptflops' BN/ReLU/pool terms, is 4-6% below the table: its per-frame numbers
    # count BN and ReLU twice (continual-inference's forward_stepping fires ptflops' hook twice per step).
    assert ptflops < 0.97 * table
    assert published == pytest.approx(table, rel=0.03)


def test_x3d_s_clip_flops_match_the_papers():
    _check_clip("s")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xs", "m", "l"])
def test_x3d_clip_flops_match_the_papers(name: str):
    _check_clip(name)


def test_cox3d_s_frame_flops_match_the_paper():
    _check_frame("s")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["m", "l"])
def test_cox3d_frame_flops_match_the_paper(name: str):
    _check_frame(name)
