import pytest
import torch
from torch import nn

from modules import continual as co
from modules.nets import build

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_norms(net: nn.Module) -> None:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_fold_batchnorm_sequential_keeps_outputs_and_removes_norms() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False),
                        nn.BatchNorm2d(2))  # fmt: skip
    _randomise_norms(net)
    net.eval()
    x = torch.randn(2, 3, 5, 5)
    folded = co.fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # a copy by default
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_training_norms_are_left_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert isinstance(co.fold_batchnorm(net)[1], nn.BatchNorm2d)


@pytest.mark.parametrize(("clip_name", "twin_name"), [("x3d_tiny", "cox3d_tiny")])
def test_folded_x3d_and_twin_equal_unfolded(clip_name: str, twin_name: str) -> None:
    """Both residual shortcuts (declared ``_bn_pairs``) and Sequential pairs fold; the twin still steps exactly."""
    clip_net, twin = build(clip_name).eval(), build(twin_name).eval()
    _randomise_norms(clip_net)
    twin.load_state_dict(clip_net.state_dict())
    shape = (1, 3, twin.receptive_field + 2, 32, 32)
    x = torch.randn(shape)
    folded_clip, folded_twin = co.fold_batchnorm(clip_net), co.fold_batchnorm(twin)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded_twin.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded_clip(x), clip_net(x), atol=1e-4, rtol=1e-4)
        twin.clean_state()
        reference = twin.forward_steps(x)
        folded_twin.clean_state()
        outs = [folded_twin.forward_step(x[:, :, t]) for t in range(x.shape[2])]
        stepped = torch.stack([y for y in outs if y is not None], dim=2)
    assert stepped.shape == reference.shape
    torch.testing.assert_close(stepped, reference, atol=1e-4, rtol=1e-4)
