"""The continual-skeletons checkpoint formats, written to disk with the official key names: raw ``.pt`` state
dicts, Lightning ``.ckpt`` files and checkpoints of the original continual nets (nested keys); each loads into
the offline net and its twin, and a checkpoint that does not fit names the build arguments that do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from modules.nets import build, load_pretrained
from modules.nets.skeleton.weights import checkpoint_family, short_key
from tests.nets.helpers import randomize

pytestmark = pytest.mark.usefixtures("one_thread")


def _official(name: str, seed: int = 0, **kw: object) -> dict[str, Tensor]:
    """A state dict in the official key names (ours are the same): a randomised offline net's."""
    torch.manual_seed(seed)
    return randomize(build(name, **kw), seed).state_dict()


def _nested(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keys the original continual nets save (spec B7): a block's main branch under ``0.1`` (inside
    ``co.Residual`` / ``co.BroadcastReduce``), the strided projection under ``0.0``; layer1 has no residual."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^layers\.(layer\d+)\.(gcn|tcn|residual)\.(.*)$", key)
        if m is None or m[1] == "layer1":
            out[key] = value
        else:
            branch = "0.0.residual" if m[2] == "residual" else f"0.1.{m[2]}"
            out[f"layers.{m[1]}.{branch}.{m[3]}"] = value
    return out


def _assert_loaded(net: torch.nn.Module, state: dict[str, Tensor]) -> None:
    own = net.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(own[short_key(key)], value, msg=key)


@pytest.mark.parametrize(
    ("name", "file", "wrap"),
    [
        ("st_gcn", "stgcn_ntu60_xsub_joint.pt", None),  # raw state dict
        ("cost_gcn", "stgcn_ntu60_xsub_joint.pt", None),  # an offline checkpoint into the twin
        ("agcn", "agcn_ntu60_xview_bone.pt", None),
        ("s_tr", "str_ntu60_xsub_joint.ckpt", "state_dict"),  # Lightning
        ("cos_tr", "str_ntu60_xsub_joint.ckpt", "state_dict"),
        ("st_gcn_mod", "stgcnmod_ntu60_xsub_joint.ckpt", "state_dict"),
    ],
)
def test_official_files_load_into_offline_nets_and_twins(
    name: str, file: str, wrap: str | None, tmp_path: Path
) -> None:
    offline = name.replace("cost_gcn", "st_gcn").replace("cos_tr", "s_tr")
    state = _official(offline)
    path = tmp_path / file
    torch.save({"epoch": 3, wrap: state, "optimizer_states": []} if wrap else state, path)
    net = build(name)
    report = load_pretrained(net, path)
    assert report.converter == "continual-skeletons" and not report.missing and not report.unexpected
    _assert_loaded(net, state)


def test_a_continual_checkpoint_with_nested_keys_loads_into_both(tmp_path: Path) -> None:
    state = _official("agcn_mod", seed=1)
    nested = _nested(state)
    assert {"layers.layer4.0.1.gcn.a_conv.0.weight", "layers.layer5.0.0.residual.t_conv.weight"} <= set(nested)
    path = tmp_path / "coagcnmod_ntu60_xsub_joint.ckpt"
    torch.save({"state_dict": nested}, path)
    for name in ("coagcn_mod", "agcn_mod"):
        net = build(name, defective_contraction=True)
        report = load_pretrained(net, path)
        assert len(report.loaded) == 362 and not report.missing and not report.unexpected
        _assert_loaded(net, nested)
    net = build("cost_gcn", weights=str(_save(tmp_path / "cost.ckpt", {"state_dict": _nested(_official("st_gcn"))})))
    assert net.layers.layer8.residual.t_conv.weight.abs().sum() > 0


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def test_short_keys_and_families() -> None:
    assert short_key("layers.layer10.0.1.gcn.g_conv.0.weight") == "layers.layer10.gcn.g_conv.0.weight"
    assert short_key("layers.layer8.0.0.residual.bn.running_var") == "layers.layer8.residual.bn.running_var"
    assert short_key("layers.layer1.gcn.A") == "layers.layer1.gcn.A"
    assert checkpoint_family(_official("s_tr")) == "s_tr" and checkpoint_family(_official("agcn")) == "agcn"


def test_a_checkpoint_that_does_not_fit_names_the_fix(tmp_path: Path) -> None:
    joint_bone = _save(tmp_path / "stgcn_ntu60_xsub_jb.pt", _official("st_gcn", in_channels=6))
    with pytest.raises(ValueError, match="build with in_channels=6"):
        load_pretrained(build("st_gcn"), joint_bone)
    kinetics = _save(tmp_path / "stgcn_kinetics_joint.pt", _official("st_gcn", graph="kinetics", num_classes=400))
    with pytest.raises(ValueError, match="graph='kinetics'"):
        load_pretrained(build("st_gcn"), kinetics)
    with pytest.raises(ValueError, match="num_classes=400"):
        load_pretrained(build("st_gcn", graph="kinetics"), kinetics)
    agcn = _save(tmp_path / "agcn_ntu60_xsub_joint.pt", _official("agcn"))
    with pytest.raises(ValueError, match=r"agcn checkpoint.*build agcn / coagcn"):
        load_pretrained(build("cost_gcn"), agcn)
