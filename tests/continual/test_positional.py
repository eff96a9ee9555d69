"""Recycling positional encoding: forward == forward_steps == stepping, recycled offsets, state."""

from __future__ import annotations

import pytest
import torch

from modules.continual.base import clone_state
from modules.continual.positional import (
    CyclicPositionalEncoding,
    RecyclingPositionalEncoding,
    cyclic_positional_encoding,
)

E, T = 6, 5
NUM = 2 * T - 1  # the papers' choice for a window of T steps


def _pair(learned: bool, **kwargs: int) -> tuple[RecyclingPositionalEncoding, RecyclingPositionalEncoding]:
    torch.manual_seed(0)
    a = RecyclingPositionalEncoding(E, NUM, learned=learned, **kwargs)
    b = RecyclingPositionalEncoding(E, NUM, learned=learned, **kwargs)
    b.load_state_dict(a.state_dict())
    return a, b


def _table(module: RecyclingPositionalEncoding) -> torch.Tensor:
    return module.pe.weight.detach()


@pytest.mark.parametrize("learned", [True, False])
def test_forward_equals_forward_steps_equals_stepping(learned: bool) -> None:
    a, b = _pair(learned)
    c, _ = _pair(learned)
    clip = torch.randn(3, E, T)
    with torch.no_grad():
        offline = a(clip)
        steps = b.forward_steps(clip)
        stepped = torch.stack([c.forward_step(clip[:, :, t]) for t in range(T)], dim=2)
    torch.testing.assert_close(offline, steps, atol=0, rtol=0)
    torch.testing.assert_close(offline, stepped, atol=0, rtol=0)
    torch.testing.assert_close(offline - clip, _table(a)[:T].T.expand(3, E, T), atol=1e-6, rtol=0)
    assert a.delay == 0 and a.receptive_field == 1
    assert b.index == c.index == T
    assert a.index == 1  # forward advances by forward_update_index_steps


@pytest.mark.parametrize("learned", [True, False])
def test_offsets_recycle_modulo_num_embeds(learned: bool) -> None:
    module, _ = _pair(learned)
    table = _table(module)
    zeros = torch.zeros(2, E)
    with torch.no_grad():
        for t in range(3 * NUM + 2):  # the offset wraps around several times
            torch.testing.assert_close(module.forward_step(zeros), table[t % NUM].expand(2, E), atol=0, rtol=0)
        assert module.index == (3 * NUM + 2) % NUM
        # forward_steps and forward continue from the same wrapped offset, device and Python counters alike.
        clip = torch.zeros(1, E, T)
        ids = [(module.index + i) % NUM for i in range(T)]
        torch.testing.assert_close(module.forward_steps(clip)[0], table[ids].T, atol=0, rtol=0)
        ids = [(module.index + i) % NUM for i in range(T)]
        torch.testing.assert_close(module(clip)[0], table[ids].T, atol=0, rtol=0)
        torch.testing.assert_close(module.forward_step(zeros)[0], table[(ids[0] + 1) % NUM], atol=0, rtol=0)


def test_forward_update_index_steps() -> None:
    module = RecyclingPositionalEncoding(E, NUM, forward_update_index_steps=3)
    clip = torch.zeros(1, E, T)
    with torch.no_grad():
        first = module(clip)
        second = module(clip)
    torch.testing.assert_close(second[:, :, :-3], first[:, :, 3:], atol=0, rtol=0)
    assert module.index == 6
    fixed = RecyclingPositionalEncoding(E, NUM, forward_update_index_steps=0)
    with torch.no_grad():
        torch.testing.assert_close(fixed(clip), fixed(clip), atol=0, rtol=0)
    assert fixed.index == 0


@pytest.mark.parametrize("learned", [True, False])
def test_state_snapshot_update_state_false_and_clean(learned: bool) -> None:
    module, _ = _pair(learned)
    clip = torch.randn(2, E, 3 * T)
    with torch.no_grad():
        module.forward_steps(clip[:, :, :4])
        snapshot = module.get_state()
        frozen = clone_state(snapshot)
        later = module.forward_steps(clip[:, :, 4:])
        torch.testing.assert_close(snapshot, frozen, atol=0, rtol=0)
        module.set_state(snapshot)
        torch.testing.assert_close(module.forward_steps(clip[:, :, 4:]), later, atol=0, rtol=0)
        module.set_state(snapshot)
        before = module.get_state()
        peek = module.forward_steps(clip[:, :, 4:], update_state=False)
        assert module.index == 4
        peek_step = module.forward_step(clip[:, :, 4], update_state=False)
        torch.testing.assert_close(module.get_state(), before, atol=0, rtol=0)
        torch.testing.assert_close(peek, later, atol=0, rtol=0)
        torch.testing.assert_close(peek_step, later[:, :, 0], atol=0, rtol=0)
        module.clean_state()
        assert module.index == 0
        assert module.forward_steps(clip[:, :, :0]) is None


def test_state_dict_keys_and_fixed_table() -> None:
    assert list(RecyclingPositionalEncoding(E, NUM).state_dict()) == ["pe.weight"]
    fixed = RecyclingPositionalEncoding(E, NUM, learned=False)
    assert list(fixed.state_dict()) == ["pe.pattern"]
    assert isinstance(fixed.pe, CyclicPositionalEncoding)
    table = cyclic_positional_encoding(31, 16)
    assert table.shape == (31, 16)
    assert torch.isfinite(table).all()
    torch.testing.assert_close(table.mean(0), torch.zeros(16), atol=1e-6, rtol=0)  # mean removed
    assert torch.cdist(table, table).add(torch.eye(31)).min() > 1e-3  # every position distinct
    # Mean pooling over +-2 cyclic neighbours: the pooled table is the average of five shifted raw tables.
    raw = cyclic_positional_encoding(31, 16, mean_pooling=False)
    pooled = torch.stack([raw.roll(s, 0) for s in range(-2, 3)]).mean(0)
    torch.testing.assert_close(table, pooled - pooled.mean(0), atol=1e-6, rtol=0)
    # Cyclic: neighbours across the wrap are as close as neighbours inside the table.
    gaps = (table - table.roll(1, 0)).norm(dim=1)
    assert gaps[0] <= 2 * gaps[1:].max()


def test_wrong_shapes_are_refused() -> None:
    module = RecyclingPositionalEncoding(E, NUM)
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        module.forward_step(torch.zeros(1, E + 1))
    with pytest.raises(ValueError, match=r"\(B, E, T\)"):
        module(torch.zeros(1, E))
    with pytest.raises(ValueError, match="num_embeds"):
        RecyclingPositionalEncoding(E, 0)
