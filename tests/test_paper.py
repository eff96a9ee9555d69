"""The paper scripts read CSVs and draw figures."""

import importlib.util
from pathlib import Path

import pandas as pd

PAPER = Path(__file__).resolve().parents[1] / "paper"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PAPER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kinetics_table_merges_measured_flops_and_draws(tmp_path: Path) -> None:
    kinetics = _load("kinetics400")
    profile = tmp_path / "profile.csv"
    pd.DataFrame({"model": ["X3D-S", "CoX3D-S_13"], "gflops": [2.0, 0.16], "params_m": [3.79, 3.79]}).to_csv(
        profile, index=False
    )
    table = kinetics.merge(kinetics.PUBLISHED, profile)
    row = table.set_index("model").loc["CoX3D-S_13"]
    assert row["gflops_measured"] == 0.16 and row["gflops_plotted"] == 0.16 and row["top1"] == 60.18
    assert table.set_index("model").loc["X3D-M", "gflops_plotted"] == 4.97  # published value where unmeasured
    out = kinetics.draw(table, tmp_path / "fig.png")
    assert out.stat().st_size > 10_000
