"""PruneSchedule: the published step arithmetic (``paper/structured-pruning-adapters.md``)."""

from __future__ import annotations

import pytest
import torch

from modules.pruning import PruneSchedule


def test_resnet50_schedule() -> None:
    s = PruneSchedule(26_560)
    assert (s.per_step, s.num_steps) == (1328, 19)
    assert s.density(0) == 1.0
    assert s.density(14) == pytest.approx(0.30)
    assert s.density(18) == pytest.approx(0.10)
    assert s.remaining(19) == 1328
    assert [round(d, 2) for d in s.densities()] == [round(1 - 0.05 * k, 2) for k in range(20)]


def test_vgg16_schedule() -> None:
    s = PruneSchedule(4224)
    assert (s.per_step, s.num_steps, s.remaining(s.num_steps)) == (211, 19, 215)
    assert s.density(19) == pytest.approx(215 / 4224)  # 5.09%


def test_from_masks_counts_every_channel() -> None:
    masks = {"a": torch.tensor([True, False] * 50), "b": torch.ones(60, dtype=torch.bool)}
    s = PruneSchedule.from_masks(masks, step_frac=0.1)
    assert (s.total_filters, s.per_step, s.num_steps) == (160, 16, 9)


def test_invalid_schedules_raise() -> None:
    with pytest.raises(ValueError, match="filter per step"):
        PruneSchedule(10)  # int(10 · 0.05) = 0
    with pytest.raises(ValueError, match="outside"):
        PruneSchedule(26_560).remaining(20)
    with pytest.raises(ValueError, match="step_frac"):
        PruneSchedule(100, step_frac=0.0)
