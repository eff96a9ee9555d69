"""The blocks X3D and the 3D ResNets share: one residual block and twin, one stage builder, one initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules import nets
from modules.nets.video.blocks import CoLayers, CoResBlock, Layers, ResBlock, bn3d, init_weights, res_stage
from tests.continual.helpers import assert_peek_does_not_advance, assert_steps_match

pytestmark = pytest.mark.usefixtures("one_thread")


def _branch2(layers: Layers, kernel_t: int = 3):
    def branch2(index: int, c_in: int, stride: int) -> dict[str, nn.Module]:
        return {
            "a": layers.conv(c_in, 4, (kernel_t, 1, 1)),
            "a_bn": bn3d(4),
            "a_relu": nn.ReLU(),
            "b": layers.conv(4, 4, (1, 3, 3), (1, stride, stride)),
            "b_bn": bn3d(4),
            "b_relu": nn.ReLU(),
            "c": layers.conv(4, 6, (1, 1, 1)),
            "c_bn": bn3d(6),
        }

    return branch2


def _stages(fill: str = "zeros") -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    offline = res_stage(Layers(), depth=2, dim_in=3, dim_out=6, spatial_stride=2, branch2=_branch2(Layers()))
    layers = CoLayers(fill)
    twin = res_stage(layers, depth=2, dim_in=3, dim_out=6, spatial_stride=2, branch2=_branch2(layers))
    init_weights(offline, zero_init_final_bn=False)  # live residual branches, so that a mis-wired one shows
    twin.load_state_dict(offline.state_dict())
    return offline.eval(), twin.eval()


def test_x3d_and_the_3d_resnets_share_the_block_classes() -> None:
    for offline, twin in (("x3d_tiny", "cox3d_tiny"), ("slow_8x8_r50", "coslow_8x8_r50")):
        assert type(nets.build(offline).s2.pathway0_res0) is ResBlock
        assert type(nets.build(twin).s2.pathway0_res0) is CoResBlock


def test_a_stage_projects_only_its_first_block_and_the_twin_has_its_keys() -> None:
    offline, twin = _stages()
    assert list(offline.state_dict()) == list(twin.state_dict())
    assert offline.pathway0_res0.has_projection and not offline.pathway0_res1.has_projection
    assert offline.pathway0_res0.branch1.stride == offline.pathway0_res0.branch2.b.stride == (1, 2, 2)
    assert [n for n, _ in twin.pathway0_res0.named_children()] == ["branch1", "branch1_bn", "branch2", "relu"]


@pytest.mark.parametrize("fill", ["zeros", "replicate"])
def test_the_continual_block_steps_like_its_clip_and_equals_the_offline_block(fill: str) -> None:
    offline, twin = _stages(fill)
    assert (twin.delay, twin.receptive_field, twin.padding, twin.stride) == (2, 5, (2,), (1,))
    clip = torch.randn(2, 3, 7, 8, 8)
    with torch.no_grad():
        if fill == "zeros":  # the offline convs pad time with zeros
            torch.testing.assert_close(twin(clip), offline(clip), atol=1e-5, rtol=0)
        assert_steps_match(twin, clip, twin(clip))
    assert_peek_does_not_advance(twin, clip)


def test_blocks_reject_what_they_cannot_compute() -> None:
    with pytest.raises(ValueError, match="both branch1 and branch1_bn"):
        ResBlock(nn.Identity(), branch1=nn.Conv3d(2, 2, 1))
    layers = CoLayers()
    with pytest.raises(ValueError, match="pointwise in time"):
        CoResBlock(layers.seq(**_branch2(layers)(0, 3, 1)), layers.conv(3, 6, (3, 1, 1)), bn3d(6))
    shrinking = layers.seq(a=nn.Conv3d(3, 6, (3, 1, 1)))  # no temporal padding: the clip gets shorter
    with pytest.raises(ValueError, match="'same' padding"):
        CoResBlock(shrinking)


def test_init_zeroes_each_blocks_last_bn_only() -> None:
    offline, _ = _stages()
    init_weights(offline)
    gammas = {n: set(m.weight.tolist()) for n, m in offline.named_modules() if isinstance(m, nn.BatchNorm3d)}
    assert {n for n, g in gammas.items() if g == {0.0}} == {"pathway0_res0.branch2.c_bn", "pathway0_res1.branch2.c_bn"}
    assert all(g == {1.0} for n, g in gammas.items() if not n.endswith("branch2.c_bn"))
