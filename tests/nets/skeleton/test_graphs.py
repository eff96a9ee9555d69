"""The skeleton graphs: the datasets' edges and the spatial-configuration partitions (ST-GCN, AAAI 2018)."""

from __future__ import annotations

import pytest
import torch

from modules.nets.skeleton.graphs import GRAPHS, KINETICS_INWARD, NTU_INWARD, adjacency, get_graph


def test_the_datasets_edges() -> None:
    assert len(NTU_INWARD) == 24 and GRAPHS["ntu"].num_nodes == 25
    assert len(KINETICS_INWARD) == 17 and GRAPHS["kinetics"].num_nodes == 18
    assert NTU_INWARD[:2] == ((0, 1), (1, 20))  # (1, 2), (2, 21) in the dataset's 1-based numbering
    for graph in GRAPHS.values():  # a tree: every joint but the root has one parent
        children = [i for i, _ in graph.inward]
        assert len(set(children)) == len(children) == graph.num_nodes - 1


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_partitions_are_identity_and_column_normalised_inward_and_outward(name: str) -> None:
    graph = get_graph(name)
    a = graph.adjacency()
    v = graph.num_nodes
    assert a.shape == (3, v, v) and a.dtype == torch.float32
    torch.testing.assert_close(a[0], torch.eye(v))
    for k, edges in ((1, graph.inward), (2, graph.outward)):
        sums = a[k].sum(0)
        has_edges = {i for i, _ in edges}
        for col in range(v):  # A·D⁻¹: every column with an edge sums to 1
            assert sums[col].item() == pytest.approx(1.0 if col in has_edges else 0.0)
        for i, j in edges:
            assert a[k, j, i] > 0


def test_column_degree_normalisation_divides_by_the_column_count() -> None:
    a = adjacency(3, [(0, 2), (1, 2)])  # joints 0 and 1 point to 2: outward, joint 2 has two edges
    torch.testing.assert_close(a[1], torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 1, 0]]))
    torch.testing.assert_close(a[2], torch.tensor([[0.0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]))


def test_unknown_graph_and_bad_edges_are_named() -> None:
    with pytest.raises(ValueError, match=r"graph='ntu'.*graph='kinetics'"):
        get_graph("coco")
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        adjacency(3, [(0, 3)])
