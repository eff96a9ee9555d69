"""Skeleton graphs and their spatial-configuration adjacency (Yan, Xiong & Lin, "Spatial Temporal Graph
Convolutional Networks for Skeleton-Based Action Recognition", AAAI 2018, Sec. 3.4).

* ``ntu``: the 25 Kinect v2 joints of NTU RGB+D 60/120 with the 24 inward (towards the spine centre) edges of
  continual-skeletons ``datasets/ntu_rgbd.py`` (1-based pairs there, 0-based here).
* ``kinetics``: the 18 OpenPose joints of Kinetics-Skeleton with the 17 edges of ``datasets/kinetics.py``.

``adjacency`` stacks the K = 3 partitions (identity, inward, outward), each column-normalised (``A·D⁻¹`` with
``D`` the in-degree of each column, as ``normalize_digraph`` in ``datasets/graph.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GRAPHS", "KINETICS_INWARD", "NTU_INWARD", "Graph", "adjacency", "get_graph"]

#: NTU RGB+D: (child, parent) pairs towards joint 21 (spine shoulder), 1-based as in the dataset's documentation.
_NTU_INWARD_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (23, 8), (24, 25),
    (25, 12),
)  # fmt: skip
NTU_INWARD: tuple[tuple[int, int], ...] = tuple((i - 1, j - 1) for i, j in _NTU_INWARD_1BASED)

#: Kinetics-Skeleton (OpenPose 18 joints: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8-10 right leg,
#: 11-13 left leg, 14-17 eyes and ears), 0-based (origin, neighbour) pairs towards the neck.
KINETICS_INWARD: tuple[tuple[int, int], ...] = (
    (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2), (5, 1), (2, 1), (0, 1),
    (15, 0), (14, 0), (17, 15), (16, 14),
)  # fmt: skip


@dataclass(frozen=True)
class Graph:
    """A skeleton: ``num_nodes`` joints and the inward edges ``(i, j)`` (joint ``i`` towards ``j``)."""

    name: str
    num_nodes: int
    inward: tuple[tuple[int, int], ...]

    @property
    def outward(self) -> tuple[tuple[int, int], ...]:
        return tuple((j, i) for i, j in self.inward)

    def adjacency(self) -> Tensor:
        """``(3, V, V)`` float32: identity, normalised inward, normalised outward partitions."""
        return adjacency(self.num_nodes, self.inward)


GRAPHS: dict[str, Graph] = {
    "ntu": Graph("ntu", 25, NTU_INWARD),
    "kinetics": Graph("kinetics", 18, KINETICS_INWARD),
}


def get_graph(name: str) -> Graph:
    """The graph called ``name`` (``ntu`` or ``kinetics``); an unknown name lists the known ones."""
    if name not in GRAPHS:
        raise ValueError(
            f"unknown skeleton graph {name!r}; use graph='ntu' (NTU RGB+D 60/120, 25 joints) or "
            f"graph='kinetics' (Kinetics-Skeleton, 18 OpenPose joints); known: {sorted(GRAPHS)}"
        )
    return GRAPHS[name]


def _edge_matrix(edges: Sequence[tuple[int, int]], num_nodes: int) -> Tensor:
    """``A[j, i] = 1`` for each edge ``(i, j)``: column ``i`` holds where joint ``i`` sends its features."""
    a = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    for i, j in edges:
        a[j, i] = 1.0
    return a


def _normalise_columns(a: Tensor) -> Tensor:
    """``A·D⁻¹`` with ``D`` the column sums; empty columns stay zero."""
    degree = a.sum(0)
    inverse = torch.where(degree > 0, 1.0 / degree.clamp(min=1e-12), torch.zeros_like(degree))
    return a * inverse.unsqueeze(0)


def adjacency(num_nodes: int, inward: Sequence[tuple[int, int]]) -> Tensor:
    """Spatial-configuration partitioning (K = 3): ``stack(I, norm(inward), norm(outward))`` as float32."""
    for i, j in inward:
        if not (0 <= i < num_nodes and 0 <= j < num_nodes):
            raise ValueError(f"edge ({i}, {j}) names a joint outside 0..{num_nodes - 1}")
    outward = [(j, i) for i, j in inward]
    identity = torch.eye(num_nodes, dtype=torch.float64)
    parts = (
        identity,
        _normalise_columns(_edge_matrix(inward, num_nodes)),
        _normalise_columns(_edge_matrix(outward, num_nodes)),
    )
    return torch.stack(parts).float()
