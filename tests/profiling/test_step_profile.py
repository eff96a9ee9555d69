"""``step_profile``: a step's or a clip's op time filed by module category and kind, with the MACs of each row."""

import pytest
import torch
from torch import nn

from modules import continual as co
from modules.profiling import count_macs
from modules.profiling.step_profile import event_macs, format_rows, profile_clip, profile_step


class Gate(nn.Module):
    """A stand-in for a block that a caller labels as a whole (e.g. squeeze-excitation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # steps (B, C, H, W) and clips (B, C, T, H, W)
        scale = self.fc(x.mean(dim=(-2, -1)).movedim(1, -1)).movedim(-1, 1).sigmoid()
        return x * scale[..., None, None]


class CoGate(co.CoModule, Gate):
    def forward_step(self, step: torch.Tensor, update_state: bool = True) -> torch.Tensor:
        return Gate.forward(self, step)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1)),
        co.Conv3d(8, 8, (3, 3, 3), padding=(1, 1, 1), groups=8),  # depthwise: a window of input frames
        nn.ReLU(),
        CoGate(8),
        co.Conv3d(8, 4, 1),
    ).eval()


def test_event_macs_of_matrix_products_and_convolutions() -> None:
    assert event_macs("aten::mm", [[4, 5], [5, 6]], []) == 4 * 5 * 6
    assert event_macs("aten::addmm", [[6], [4, 5], [5, 6]], []) == 4 * 5 * 6
    # mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups): 8 outputs of 5x5 per frame, 9 taps
    shapes = [[1, 8, 1, 10, 10], [8, 1, 1, 3, 3], [8]]
    assert event_macs("aten::mkldnn_convolution", shapes, [None, None, None, [0, 1, 1], [1, 2, 2], [1, 1, 1], 8]) == (
        8 * 5 * 5 * 9
    )
    assert event_macs("aten::relu", [[1, 8]], []) is None


def test_step_rows_cover_the_step_and_its_macs() -> None:
    net, step = _net(), torch.randn(1, 3, 12, 12)
    rows = profile_step(net, step, calls=3, warmup=1, labels={CoGate: "gate"})
    by_key = {(r.category, r.kind): r for r in rows}
    assert {("conv pointwise", "macs"), ("conv depthwise", "macs"), ("conv other", "macs")} <= set(by_key)
    assert ("activation", "other") in by_key
    # the gate's conv is filed under the gate's explicit label, not as a pointwise conv of its own
    assert ("gate", "macs") in by_key
    total = rows[-2]
    assert [(r.category, r.kind) for r in rows[-3:]] == [
        ("overhead", "python/dispatch"),
        ("total", "wall"),
        ("total", "wall unprofiled"),
    ]
    net.clean_state()
    co.replay.warm_until_output(net, step)
    assert total.macs == count_macs(net.forward_step, step)
    assert by_key[("gate", "macs")].macs == 8 * 8  # one 8 x 8 linear on the pooled (1, 8)
    assert sum(r.ms for r in rows[:-2]) == pytest.approx(total.ms, rel=1e-6)  # ops and overhead make the wall time
    assert "conv depthwise" in format_rows(rows, "step")


def test_a_callable_is_filed_by_kind_and_a_clip_model_by_module() -> None:
    net = _net()
    step = torch.randn(1, 3, 12, 12)
    net.clean_state()
    with torch.no_grad():
        co.replay.warm_until_output(net, step)
    rows = profile_step(lambda x: net.forward_step(x), step, calls=2, warmup=1)
    # no module scopes: MAC ops by op (the depthwise conv by its weight's one input channel per group), the rest by kind
    mac_rows = {r.category for r in rows[:-3] if r.kind == "macs"}
    assert {"op conv depthwise", "op conv"} <= mac_rows <= {"op conv depthwise", "op conv", "op matmul"}
    assert {r.category for r in rows[:-3] if r.kind != "macs"} == {"unscoped"}
    clip_rows = profile_clip(net, torch.randn(1, 3, 4, 12, 12), calls=2, warmup=1)
    assert ("conv depthwise", "macs") in {(r.category, r.kind) for r in clip_rows}
    with pytest.raises(ValueError, match="calls >= 1"):
        profile_clip(net, torch.randn(1, 3, 4, 12, 12), calls=0)
