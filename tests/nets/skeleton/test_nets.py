"""The skeleton nets against the facts of spec B1/B7: parameter and state-dict counts, key names, receptive fields
and delays, the continual twins against their offline nets (steps == clip), CoAGCN's per-frame graph and the
AGCN* contraction defect, and the errors that name their fix. Full-size nets are counted on the meta device;
forward passes use short clips and small pools."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.nets import build
from modules.nets.skeleton import CoSkeletonNet, SkeletonNet
from modules.nets.skeleton.gcn import FrameAdaptiveGraphConvolution
from modules.nets.skeleton.graphs import get_graph
from modules.nets.skeleton.nets import default_pool
from tests.continual.helpers import assert_steps_match
from tests.nets.helpers import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {"st_gcn": "cost_gcn", "agcn": "coagcn", "s_tr": "cos_tr"}
#: spec B7, NTU-60: trainable parameters and state-dict entries (incl. num_batches_tracked) of each family
COUNTS = {"st_gcn": (3_141_478, 242), "agcn": (3_469_510, 362), "s_tr": (3_086_470, 242)}
TWINS = {**FAMILIES, **{f"{k}_mod": f"{v}_mod" for k, v in FAMILIES.items()}}
FAMILY_OF = {name: f for f, co in FAMILIES.items() for name in (f, f"{f}_mod", co, f"{co}_mod")}


def _meta(name: str, **kw: object) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kw)


def _trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(FAMILY_OF))
def test_parameter_and_state_dict_counts(name: str) -> None:
    params, entries = COUNTS[FAMILY_OF[name]]
    net = _meta(name)
    assert _trainable(net) == params
    assert len(net.state_dict()) == entries


def test_key_names_are_the_originals() -> None:
    st = _meta("st_gcn").state_dict()
    for key in ("data_bn.running_var", "layers.layer1.gcn.graph_attn", "layers.layer1.gcn.A",
                "layers.layer1.gcn.g_conv.2.weight", "layers.layer1.gcn.gcn_residual.1.running_mean",
                "layers.layer1.gcn.bn.weight", "layers.layer3.tcn.t_conv.weight", "layers.layer3.tcn.bn.bias",
                "layers.layer5.residual.t_conv.weight", "layers.layer8.residual.bn.num_batches_tracked",
                "fc.weight", "fc.bias"):  # fmt: skip
        assert key in st, key
    assert not any(k.startswith(("layers.layer1.residual", "layers.layer2.residual")) for k in st)
    assert st["layers.layer1.gcn.A"].shape == (3, 25, 25) and st["layers.layer5.tcn.t_conv.weight"].shape[2:] == (9, 1)
    agcn = _meta("agcn").state_dict()
    assert {"layers.layer10.gcn.a_conv.2.weight", "layers.layer10.gcn.b_conv.0.bias"} <= set(agcn)
    assert agcn["layers.layer10.gcn.a_conv.0.weight"].shape == (64, 256, 1, 1)  # inter_c = 256 / 4
    s_tr = _meta("s_tr").state_dict()
    for k in range(4, 11):
        gcn = {key.removeprefix(f"layers.layer{k}.gcn.") for key in s_tr if key.startswith(f"layers.layer{k}.gcn.")}
        bn = {f"{m}.{p}" for m in ("data_bn", "bn") for p in ("weight", "bias", "running_mean", "running_var",
                                                                "num_batches_tracked")}  # fmt: skip
        qkv = {f"attention_conv.{m}.{p}" for m in ("qkv_conv", "attn_out") for p in ("weight", "bias")}
        assert gcn == {"A"} | bn | qkv, k
    assert s_tr["layers.layer4.gcn.attention_conv.qkv_conv.weight"].shape[0] == 2 * 16 + 64  # 2·0.25·C_out + C_out
    assert "layers.layer3.gcn.graph_attn" in s_tr  # layers 1-3 are ST-GCN units


def test_s_tr_counts_its_unused_trainable_adjacency() -> None:
    net = _meta("s_tr")
    unused = sum(net.layers.get_submodule(f"layer{k}").gcn.A.numel() for k in range(4, 11))
    assert unused == 13_125 and all(net.layers.get_submodule(f"layer{k}").gcn.A.requires_grad for k in range(4, 11))
    fixed = _meta("st_gcn").layers.layer1.gcn.A
    assert not fixed.requires_grad and not isinstance(fixed, nn.Parameter)  # ST-GCN's A is a fixed buffer


@pytest.mark.parametrize(("offline", "twin"), sorted(TWINS.items()))
def test_twins_have_their_offline_nets_keys_and_shapes(offline: str, twin: str) -> None:
    a, b = _meta(offline).state_dict(), _meta(twin).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_offline_weights_load_strictly_into_the_twin() -> None:
    torch.manual_seed(0)
    offline = randomize(build("st_gcn"))
    twin = build("cost_gcn")
    twin.load_state_dict(offline.state_dict(), strict=True)
    torch.testing.assert_close(twin.layers.layer5.residual.t_conv.weight, offline.layers.layer5.residual.t_conv.weight)


@pytest.mark.parametrize("name", sorted(TWINS.values()))
def test_receptive_field_padding_stride_and_delay(name: str) -> None:
    net = _meta(name)
    mod = name.endswith("_mod")
    backbone = (81, 0, 1, 80) if mod else (153, 76, 4, 76)
    layers = net.layers
    assert (layers.receptive_field, layers.padding[0], layers.stride[0], layers.delay) == backbone
    whole = (300, 0, 1, 299) if mod else (449, 152, 4, 296)  # with the default pool of a 300-frame clip
    assert (net.receptive_field, net.padding[0], net.stride[0], net.delay) == whole
    assert (net.pool_size, net.pool_padding, net.offline_index) == ((220, 0, 0) if mod else (75, 19, 19))


def test_default_pool_follows_the_original_formula() -> None:
    assert default_pool(300, mod=False) == (75, 19) and default_pool(300, mod=True) == (220, 0)
    assert default_pool(152, mod=False) == (38, 19) and default_pool(90, mod=True) == (10, 0)
    assert build("cost_gcn", pool_size=56, sequence_len=300).pool_padding == 0  # the fine-tuning setting


def _features(offline: SkeletonNet, x: torch.Tensor) -> torch.Tensor:
    """Backbone features ``(N, 256, T')`` averaged over joints and persons: the offline net up to its pool."""
    return nn.Sequential(*list(offline)[:5])(x)  # to_features, data_bn, to_skeletons, layers, spatial_pool


def test_original_twin_output_19_is_the_offline_net_and_output_0_averages_pads() -> None:
    torch.manual_seed(0)
    offline = randomize(build("st_gcn")).eval()
    twin = build("cost_gcn", sequence_len=152).eval()  # default pool 38, padding 19: 39 outputs
    twin.load_state_dict(offline.state_dict())
    x = torch.randn(1, 3, 152, 25, 2)
    with torch.no_grad():
        out = twin(x)
        expected = offline(x)
        features = _features(offline, x)
    assert out.shape == (1, 60, 39) and features.shape[2] == 38
    torch.testing.assert_close(out[:, :, twin.offline_index], expected, atol=1e-4, rtol=1e-4)
    # index 0: 19 zero pads and the first 19 backbone outputs, divided by 38 (AvgPool counts the pads)
    torch.testing.assert_close(out[:, :, 0], offline.fc(features[:, :, :19].sum(2) / 38), atol=1e-4, rtol=1e-4)
    assert (out[:, :, 0] - expected).norm() > 0.05 * expected.norm()


@pytest.mark.parametrize(("offline_name", "twin_name"), [("st_gcn_mod", "cost_gcn_mod"), ("s_tr_mod", "cos_tr_mod")])
def test_star_twins_step_to_their_offline_net(offline_name: str, twin_name: str) -> None:
    """A clean stream of ``sequence_len`` frames: the single output, at the last step, is the offline net's."""
    torch.manual_seed(0)
    offline = randomize(build(offline_name)).eval()
    twin = build(twin_name, sequence_len=84).eval()  # pool 4, no padding: one output at step 83
    twin.load_state_dict(offline.state_dict())
    x = torch.randn(1, 3, 84, 25, 2)
    with torch.no_grad():
        expected = offline(x)
        twin.clean_state()
        outs = [twin.forward_step(x[:, :, t]) for t in range(84)]
    assert [t for t, y in enumerate(outs) if y is not None] == [83] == [twin.delay]
    torch.testing.assert_close(outs[-1], expected, atol=1e-4, rtol=1e-4)


def test_coagcn_steps_differ_from_its_clip_by_the_per_frame_graph() -> None:
    """CoAGCN's clip computes C_k over all frames, its steps from one frame (spec B7): measured here (randomised
    BNs) at 3-5e-4 of the logits' norm; stepping equals the clip computed per frame."""
    torch.manual_seed(0)
    net = randomize(build("coagcn", pool_size=2, pool_padding=0)).eval()
    x = torch.randn(1, 3, net.delay + 8, 25, 2)
    with torch.no_grad():
        clip = net(x)
        with net.per_frame_attention():
            per_frame = net(x)
        net.clean_state()
        steps = torch.stack([y for t in range(x.shape[2]) if (y := net.forward_step(x[:, :, t])) is not None], 2)
    assert steps.shape == (1, 60, 2)  # the windows that end inside the stream: steps 80 and 84
    clip, per_frame = clip[:, :, :2], per_frame[:, :, :2]
    relative = float((steps - clip).norm() / clip.norm())
    assert 1e-5 < relative < 1e-2, relative
    assert float((steps - per_frame).norm() / per_frame.norm()) < 1e-5
    assert all(not m.per_frame for m in net.modules() if hasattr(m, "per_frame"))  # the context restored them


def test_agcn_star_defect_sums_the_graph_over_w() -> None:
    """``einsum("nctv,nvwt->nctv")``: output at joint v is ``x_v·Σ_w(A_k + B_k + C_k)[v, w]`` with Σ_w C_k = 1
    (softmax over w), so θ and φ have no effect; the correct contraction aggregates the joints."""
    torch.manual_seed(0)
    a = get_graph("ntu").adjacency()
    unit = FrameAdaptiveGraphConvolution(8, 16, a, defective_contraction=True).eval()
    x = torch.randn(2, 8, 5, 25)
    with torch.no_grad():
        y = unit._aggregate(x)
        rowsum = (unit.A + unit.graph_attn).sum(-1) + 1.0  # (K, V)
        expected = sum(unit.g_conv[k](x * rowsum[k]) for k in range(3))
        torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)
        for conv in unit.a_conv:
            conv.weight.normal_()
        torch.testing.assert_close(unit._aggregate(x), y)
        unit.defective_contraction = False
        correct = unit._aggregate(x)
    assert (correct - y).abs().max() > 1.0
    assert "defective_contraction" in build("agcn_mod", defective_contraction=True).layers.layer3.gcn.extra_repr()


def test_replicate_fill_steps_like_its_clip() -> None:
    torch.manual_seed(0)
    net = randomize(build("cost_gcn", pool_size=2, pool_padding=0, temporal_fill="replicate")).eval()
    stream = torch.randn(1, 3, net.delay + 4, 25, 2)
    with torch.no_grad():
        reference = net(stream)
    assert_steps_match(net, stream, reference, atol=1e-4)


def test_kinetics_graph_and_merged_streams() -> None:
    torch.manual_seed(0)
    net = build("st_gcn", graph="kinetics", in_channels=6, num_classes=400).eval()
    assert net.data_bn.num_features == 2 * 18 * 6
    with torch.no_grad():
        assert net(torch.randn(2, 6, 12, 18, 2)).shape == (2, 400)


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="graph='ntu'"):
        build("st_gcn", graph="ntu120")
    net = build("st_gcn")
    with pytest.raises(ValueError, match=r"C=3, T, V=25, M=2.*in_channels, graph and num_persons"):
        net(torch.randn(1, 6, 8, 25, 2))
    with pytest.raises(ValueError, match=r"sequence_len=100 is too short.*pool_size and pool_padding"):
        build("cost_gcn", sequence_len=100)
    with pytest.raises(ValueError, match="sequence_len=50 is too short"):
        build("cost_gcn_mod", sequence_len=50)
    with pytest.raises(ValueError, match=r"shorter than the receptive field of st_gcn_mod.*81"):
        build("st_gcn_mod")(torch.randn(1, 3, 80, 25, 2))
    twin = build("cost_gcn_mod", pool_size=2)
    with pytest.raises(ValueError, match=r"shorter than the receptive field.*at least 82"):
        twin(torch.randn(1, 3, 81, 25, 2))
    with pytest.raises(ValueError, match=r"pool_padding must be in 0\.\.pool_size // 2 = 1"):
        build("cost_gcn", pool_size=2, pool_padding=3)
    with pytest.raises(ValueError, match="agcn_mod / coagcn_mod only"):
        SkeletonNet(arch="agcn", defective_contraction=True)
    with pytest.raises(TypeError, match="no argument"):
        build("st_gcn_mod", defective_contraction=True)
    assert isinstance(build("coagcn_mod", defective_contraction=True, pool_size=2), CoSkeletonNet)
