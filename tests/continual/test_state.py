"""State: snapshots, restores, independent streams in a batch, very long streams."""

import torch
from torch import nn

from modules import continual as co


def _net() -> nn.Module:
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv1d(3, 8, 3, padding=1),
        nn.ReLU(),
        co.Residual(co.Sequential(co.Conv1d(8, 8, 3, padding=1, temporal_fill="replicate"), nn.Tanh())),
        co.MaxPool1d(2, stride=1),
        co.BroadcastReduce(co.Conv1d(8, 4, 5, padding=2), co.Conv1d(8, 4, 1), reduce="concat"),
        co.AvgPool1d(3, stride=2, padding=1),
        co.Linear(8, 5),
    ).eval()


def _steps(net: nn.Module, clip: torch.Tensor) -> list[torch.Tensor | None]:
    return [net.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


@torch.no_grad()
def test_snapshot_is_not_mutated_and_restores_exactly() -> None:
    net = _net()
    clip = torch.randn(2, 3, 30)
    net.clean_state()
    _steps(net, clip[:, :, :12])
    snapshot = net.get_state()
    frozen = co.base.clone_state(snapshot)
    first = _steps(net, clip[:, :, 12:])
    # Later steps wrote the live state in place; the snapshot must be unchanged.
    torch.testing.assert_close(snapshot, frozen, atol=0, rtol=0)
    for _ in range(2):  # a snapshot can be restored any number of times
        net.set_state(snapshot)
        again = _steps(net, clip[:, :, 12:])
        assert [y is None for y in again] == [y is None for y in first]
        for a, b in zip(again, first):
            if a is not None:
                torch.testing.assert_close(a, b, atol=0, rtol=0)


@torch.no_grad()
def test_update_state_false_peeks_without_advancing() -> None:
    net = _net()
    clip = torch.randn(1, 3, 16)
    net.clean_state()
    _steps(net, clip[:, :, :9])
    peek = net.forward_steps(clip[:, :, 9:], update_state=False)
    real = net.forward_steps(clip[:, :, 9:])
    torch.testing.assert_close(peek, real, atol=0, rtol=0)


@torch.no_grad()
def test_streams_in_a_batch_do_not_interact() -> None:
    net = _net()
    clip = torch.randn(3, 3, 20)
    other = clip.clone()
    other[1] = torch.randn(3, 20) * 10
    net.clean_state()
    a = net.forward_steps(clip)
    net.clean_state()
    b = net.forward_steps(other)
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]], atol=0, rtol=0)
    assert not torch.allclose(a[1], b[1])


@torch.no_grad()
def test_20000_step_stream_equals_offline_final_window() -> None:
    torch.manual_seed(1)
    net = co.Sequential(
        co.Conv1d(2, 4, 3),
        nn.ReLU(),
        co.Residual(co.Conv1d(4, 4, 3, padding=1)),
        co.Conv1d(4, 4, 5, dilation=2),
        co.AvgPool1d(2, stride=1),
    ).eval()
    steps = 20_000
    stream = torch.randn(1, 2, steps)
    net.clean_state()
    last = None
    for t in range(steps):
        y = net.forward_step(stream[:, :, t])
        last = y if y is not None else last
    # The final step's output is the offline output frame whose window ends at the last input.
    expected = net(stream)[:, :, steps - 1 - net.delay]
    torch.testing.assert_close(last, expected, atol=1e-5, rtol=0)
    # ... and it depends on the final receptive field only.
    torch.testing.assert_close(net(stream[:, :, -64:])[:, :, 63 - net.delay], expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_move_to_another_dtype_starts_a_fresh_stream() -> None:
    net = _net()
    clip = torch.randn(1, 3, 12)
    net.forward_steps(clip)
    net.double()
    out = net.forward_steps(clip.double(), pad_end=True)
    torch.testing.assert_close(out, net(clip.double()))
