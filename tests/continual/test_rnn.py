"""Continual RNN, GRU and LSTM: steps equal torch's layers, state snapshots, conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modules.continual as co
from tests.continual.helpers import assert_peek_does_not_advance, assert_steps_match

CASES = [
    (nn.RNN, co.RNN, {"nonlinearity": "relu"}),
    (nn.GRU, co.GRU, {}),
    (nn.LSTM, co.LSTM, {"proj_size": 2}),
]


def _reference(torch_cls: type[nn.Module], num_layers: int = 2, **kwargs: object) -> nn.Module:
    return torch_cls(3, 4, num_layers=num_layers, **kwargs).eval()


def _torch_output(reference: nn.Module, clip: torch.Tensor, hx: object = None) -> torch.Tensor:
    """torch's layer on a channels-first clip (B, C, T), in its default (T, B, C) layout, back to (B, H, T)."""
    out, _ = reference(clip.permute(2, 0, 1), hx)
    return out.permute(1, 2, 0)


@pytest.mark.parametrize(("torch_cls", "co_cls", "kwargs"), CASES)
def test_steps_and_forward_equal_the_torch_layer(torch_cls, co_cls, kwargs) -> None:
    torch.manual_seed(0)
    reference = _reference(torch_cls, **kwargs)
    layer = co.continual(reference)
    assert type(layer) is co_cls
    assert list(layer.state_dict()) == list(reference.state_dict())
    assert (layer.delay, layer.receptive_field, layer.stride, layer.padding) == (0, 1, (1,), (0,))
    clip = torch.randn(2, 3, 9)
    with torch.no_grad():
        want = _torch_output(reference, clip)
        torch.testing.assert_close(layer(clip), want, atol=0, rtol=0)
    assert_steps_match(layer, clip, want, atol=1e-6)  # every step, then forward_steps(pad_end=True)
    assert_peek_does_not_advance(layer, clip)


@pytest.mark.parametrize(("torch_cls", "co_cls", "kwargs"), CASES)
def test_forward_steps_continues_a_stream_and_equals_single_steps(torch_cls, co_cls, kwargs) -> None:
    torch.manual_seed(1)
    layer = co_cls(3, 4, num_layers=3, **kwargs).eval()
    clip = torch.randn(2, 3, 8)
    with torch.no_grad():
        first, rest = layer.forward_steps(clip[:, :, :5]), layer.forward_steps(clip[:, :, 5:])
        layer.clean_state()
        single = torch.stack([layer.forward_step(clip[:, :, t]) for t in range(8)], dim=2)
    torch.testing.assert_close(torch.cat([first, rest], dim=2), single, atol=1e-6, rtol=0)
    torch.testing.assert_close(single, layer(clip), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("torch_cls", "co_cls", "kwargs"), CASES)
def test_state_snapshot_restores_and_clean_state_restarts(torch_cls, co_cls, kwargs) -> None:
    torch.manual_seed(2)
    layer = co_cls(3, 4, num_layers=2, **kwargs).eval()
    clip = torch.randn(1, 3, 6)
    with torch.no_grad():
        layer.forward_steps(clip[:, :, :3])
        snapshot = layer.get_state()
        assert len(snapshot) == len(co_cls._state_names) + 1  # h (and c), step count
        assert snapshot[0].shape == (2, 1, 2 if torch_cls is nn.LSTM else 4)  # torch's (num_layers, B, H)
        after = layer.forward_steps(clip[:, :, 3:])
        layer.forward_steps(torch.randn(1, 3, 4))  # the snapshot is a copy: later steps leave it as it was
        layer.set_state(snapshot)
        torch.testing.assert_close(layer.forward_steps(clip[:, :, 3:]), after, atol=0, rtol=0)
        layer.clean_state()
        assert layer.h is None
        torch.testing.assert_close(layer.forward_steps(clip), layer(clip), atol=1e-6, rtol=0)


def test_an_initial_hidden_state_as_in_torch() -> None:
    torch.manual_seed(3)
    reference = _reference(nn.LSTM)
    layer = co.LSTM.build_from(reference)
    clip = torch.randn(2, 3, 5)
    h0, c0 = torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    with torch.no_grad():
        want = _torch_output(reference, clip, (h0, c0))
        out, (_, c_n) = layer(clip, (h0, c0), return_hidden=True)
        torch.testing.assert_close(out, want, atol=0, rtol=0)
        layer.set_state((h0, c0))  # continual-inference's set_state(h0) form
        torch.testing.assert_close(layer.forward_steps(clip), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(layer.get_state()[1], c_n, atol=1e-6, rtol=0)
    gru = co.GRU(3, 4)
    gru.set_state(torch.zeros(1, 2, 4))  # a bare tensor h_0
    assert gru.get_state()[0].shape == (1, 2, 4)
    with pytest.raises(ValueError, match=r"GRU.set_state: h has shape \(1, 2, 5\)"):
        gru.set_state(torch.zeros(1, 2, 5))


def test_dropout_is_off_in_eval_and_batch_first_changes_nothing() -> None:
    torch.manual_seed(4)
    reference = nn.GRU(3, 4, num_layers=3, dropout=0.5, batch_first=True).eval()
    layer = co.continual(reference)
    assert layer.batch_first
    clip = torch.randn(2, 3, 7)
    with torch.no_grad():
        out, _ = reference(clip.transpose(1, 2))
        want = out.transpose(1, 2)
    assert_steps_match(layer, clip, want, atol=1e-6)
    plain = co.GRU(3, 4, num_layers=3, dropout=0.5).eval()
    plain.load_state_dict(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(clip), want, atol=0, rtol=0)


def test_refusals_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"bidirectional recurrent layer.*use bidirectional=False"):
        co.RNN(3, 4, bidirectional=True)
    with pytest.raises(TypeError, match=r"GRU.build_from got hidden_size=8"):
        co.GRU.build_from(nn.GRU(3, 4), hidden_size=8)
    layer = co.RNN(3, 4)
    with pytest.raises(ValueError, match=r"RNN.forward expects a clip \(B, C=3, T\), got \(2, 3\)"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"RNN.forward_step expects a step \(B, C=3\), got \(2, 5\)"):
        layer.forward_step(torch.randn(2, 5))
    layer.forward_step(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"batch size 3 vs 2"):
        layer.forward_steps(torch.randn(3, 3, 4))


def test_recurrent_layers_inside_a_sequential() -> None:
    torch.manual_seed(5)
    net = co.Sequential(co.RNN(2, 3, num_layers=2), co.Conv1d(3, 2, 3), co.LSTM(2, 1, num_layers=2)).eval()
    assert net.delay == 2
    clip = torch.randn(1, 2, 10)
    with torch.no_grad():
        want = net(clip)
    assert want.shape == (1, 1, 8)
    assert_steps_match(net, clip, want, atol=1e-6)
