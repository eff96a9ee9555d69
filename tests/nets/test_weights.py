"""The converter registry's state-dict unwrapper: every checkpoint wrapping reaches every converter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from modules.nets import build, load_pretrained, unwrap_state_dict
from modules.nets.weights import STATE_DICT_KEYS

STATE = {"conv.weight": torch.ones(2), "bn.running_mean": torch.zeros(2)}


def _ddp(state: dict[str, Any], depth: int = 1) -> dict[str, Any]:
    return {"module." * depth + k: v for k, v in state.items()}


#: name -> how a training script saved ``state``
WRAPPINGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bare": lambda s: s,
    "model_state": lambda s: {"epoch": 3, "model_state": s, "optimizer_state": {}, "cfg": "X3D_S.yaml"},  # SlowFast
    "state_dict": lambda s: {"epoch": 3, "state_dict": s, "optimizer_states": [], "hyper_parameters": {}},  # Lightning
    "model": lambda s: {"model": s, "optimizer": {}, "args": None},  # torchvision's reference scripts
    "ddp": _ddp,
    "ddp_model_state": lambda s: {"model_state": _ddp(s)},
    "ddp_in_dataparallel": lambda s: {"state_dict": _ddp(s, depth=2)},
}


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return list(a) == list(b) and all(a[k] is b[k] for k in a)


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
def test_unwrap_finds_the_state_dict_in_every_wrapping(wrapping: str) -> None:
    assert _same(unwrap_state_dict(WRAPPINGS[wrapping](STATE)), STATE)


def test_unwrap_prefers_the_keys_in_order_and_ignores_non_dicts_under_them() -> None:
    assert STATE_DICT_KEYS == ("model_state", "state_dict", "model")
    other = {"x.weight": torch.zeros(1)}
    assert _same(unwrap_state_dict({"model": other, "state_dict": STATE}), STATE)
    assert _same(unwrap_state_dict({"state_dict": other, "model_state": STATE}), STATE)
    # a bare state dict whose entries happen to be named like a wrapper key, but hold tensors
    bare = {"model": torch.zeros(1), **STATE}
    assert _same(unwrap_state_dict(bare), bare)
    # only a leading DDP prefix goes; "module." inside a key is a module's name
    assert list(unwrap_state_dict({"block.module.weight": 1, "module.module_list.0.bias": 2})) == [
        "block.module.weight",
        "module_list.0.bias",
    ]


def _net(name: str) -> nn.Module:
    """A small net of each converter's family."""
    if name == "resnet3d":
        from modules.nets.video.resnet3d import ResNet3D

        return ResNet3D(arch="slow", num_classes=4, width_per_group=4)
    return build(name)


#: converter -> the family net it serves
CONVERTERS = {"slowfast-x3d": "x3d_tiny", "resnet3d-slowfast": "resnet3d", "torchvision-resnet": "resnet_tiny"}


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
@pytest.mark.parametrize("converter", sorted(CONVERTERS))
def test_every_converter_loads_every_wrapping(tmp_path: Path, converter: str, wrapping: str) -> None:
    torch.manual_seed(0)
    source = _net(CONVERTERS[converter])
    path = tmp_path / "checkpoint.pth"
    torch.save(WRAPPINGS[wrapping](source.state_dict()), path)
    net = _net(CONVERTERS[converter])
    report = load_pretrained(net, path)
    assert (report.converter, report.missing, report.unexpected) == (converter, [], [])
    for key, value in source.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, atol=0, rtol=0)
