"""The prune-recover schedule of the published runs (LukasHedegaard/channel-spa-experiments
``src/prune_resnet.py::prune``).

``n = int(T·pr_step)`` filters go per step, ``K = int(int(T/n)·total_pr)`` steps: with the defaults (5%, 0.9501)
that is 19 steps, densities 1.00, 0.95, ..., 0.05 (counted in filters, not weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

__all__ = ["PruneSchedule"]


@dataclass(frozen=True)
class PruneSchedule:
    """``total_filters`` = T, the number of conv output channels before pruning.

    >>> s = PruneSchedule(26_560)  # ResNet-50
    >>> s.per_step, s.num_steps, s.remaining(s.num_steps)
    (1328, 19, 1328)
    """

    total_filters: int
    step_frac: float = 0.05
    total_pr: float = 0.9501

    def __post_init__(self) -> None:
        if self.total_filters < 1 or not 0 < self.step_frac <= 1 or not 0 < self.total_pr <= 1:
            raise ValueError(f"PruneSchedule needs T >= 1, 0 < step_frac <= 1, 0 < total_pr <= 1; got {self}")
        if self.per_step < 1:
            raise ValueError(f"{self.total_filters} filters × step_frac {self.step_frac} < 1 filter per step")

    @classmethod
    def from_masks(
        cls, masks: Mapping[str, Tensor], step_frac: float = 0.05, total_pr: float = 0.9501
    ) -> PruneSchedule:
        """T counted from the masks (all channels, pruned or not)."""
        return cls(sum(m.numel() for m in masks.values()), step_frac, total_pr)

    @property
    def per_step(self) -> int:
        """n = int(T · step_frac) filters removed per step."""
        return int(self.total_filters * self.step_frac)

    @property
    def num_steps(self) -> int:
        """K = int(int(T / n) · total_pr)."""
        return int(int(self.total_filters / self.per_step) * self.total_pr)

    def remaining(self, k: int) -> int:
        """Filters left after step ``k`` (0 = unpruned); the published loop asserts exactly this."""
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"step {k} is outside the schedule's 0..{self.num_steps}")
        return self.total_filters - k * self.per_step

    def density(self, k: int) -> float:
        """remaining(k) / T: the "ratio" column of the published results."""
        return self.remaining(k) / self.total_filters

    def densities(self) -> list[float]:
        """Densities from step 0 (1.0) to the last step."""
        return [self.density(k) for k in range(self.num_steps + 1)]
