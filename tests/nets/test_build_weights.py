"""``build(name, weights=...)`` loads an official checkpoint into the net it builds."""

import torch

from modules.nets import build


def test_build_loads_official_weights_into_the_continual_twin(tmp_path) -> None:
    torch.manual_seed(0)
    source = build("x3d_tiny")
    path = tmp_path / "x3d_tiny.pyth"
    torch.save({"model_state": source.state_dict()}, path)  # the SlowFast checkpoint layout
    twin = build("cox3d_tiny", weights=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value)
