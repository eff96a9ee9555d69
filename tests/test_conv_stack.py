"""The model registry and the reference conv stack: its continual twin loads offline weights and steps exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules import nets
from modules.nets.registry import register_model


def test_registry_lists_builds_and_names_what_is_wrong():
    assert {"conv_stack", "co_conv_stack"} <= set(nets.list_models())
    assert isinstance(nets.build("conv_stack", num_classes=3), nn.Module)
    with pytest.raises(KeyError, match=r"co_conv_stack.*conv_stack"):
        nets.build("no_such_net")
    with pytest.raises(TypeError, match="clip_length"):
        nets.build("conv_stack", clip_length=8)  # only the continual twin has a pool window
    with pytest.raises(TypeError, match="keyword-only"):
        register_model("positional")(lambda depth: nn.Identity())


@pytest.mark.parametrize("temporal_fill", ["zeros", "replicate"])
def test_continual_twin_matches_offline_net(temporal_fill):
    torch.manual_seed(0)
    kw = {"in_channels": 3, "num_classes": 5, "channels": (4, 6)}
    offline = nets.build("conv_stack", **kw).eval()
    for m in offline.modules():  # non-trivial BN statistics, so that a mis-loaded buffer shows
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    twin = nets.build("co_conv_stack", clip_length=8, temporal_fill=temporal_fill, **kw).eval()
    assert list(twin.state_dict()) == list(offline.state_dict())
    twin.load_state_dict(offline.state_dict())

    clip = torch.randn(2, 3, 8, 10, 10)
    with torch.no_grad():
        expected = offline(clip)
        assert expected.shape == (2, 5, 1, 1, 1)
        if temporal_fill == "zeros":  # the offline net pads time with zeros
            torch.testing.assert_close(twin(clip), expected)
        # Stepping with end padding flushes the same window; the first output needs delay + 1 steps.
        twin.clean_state()
        torch.testing.assert_close(twin.forward_steps(clip, pad_end=True), twin(clip))
        twin.clean_state()
        stream = torch.randn(2, 3, twin.delay + 3, 10, 10)
        outputs = twin.forward_steps(stream)
        assert outputs.shape[2] == 3  # one prediction per step after warm-up
        # ... and they are the offline sliding-window outputs whose windows end inside the stream
        torch.testing.assert_close(outputs, twin(stream)[:, :, :3])
