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
    measured = {"model": ["X3D-S", "CoX3D-S_13"], "gflops": [2.0, 0.16], "params_m": [3.79, 3.79],
                "gflops_ptflops": [2.06, 0.1615], "gflops_co3d_published": [2.06, 0.1683]}  # fmt: skip
    pd.DataFrame(measured).to_csv(profile, index=False)
    table = kinetics.merge(kinetics.PUBLISHED, profile)
    row = table.set_index("model").loc["CoX3D-S_13"]
    assert row["gflops_measured"] == 0.16 and row["gflops_plotted"] == 0.16 and row["top1"] == 60.18
    assert row["gflops_ptflops_measured"] == 0.1615 and row["gflops_co3d_published_measured"] == 0.1683
    # errors relative to the paper's 0.17
    assert round(row["gflops_ptflops_rel_err"], 3) == -0.05 and round(row["gflops_co3d_published_rel_err"], 2) == -0.01
    assert table.set_index("model").loc["X3D-M", "gflops_plotted"] == 4.97  # published value where unmeasured
    assert "CoX3D-S_13" in kinetics.report(table) and "X3D-M " not in kinetics.report(table)
    # an older profile CSV with one convention still merges, the others left empty
    pd.DataFrame({k: measured[k] for k in ("model", "gflops", "params_m")}).to_csv(profile, index=False)
    older = kinetics.merge(kinetics.PUBLISHED, profile).set_index("model")
    assert older.loc["CoX3D-S_13", "gflops_measured"] == 0.16 and pd.isna(older.loc["X3D-S", "gflops_ptflops_rel_err"])
    assert kinetics.merge(kinetics.PUBLISHED, tmp_path / "none.csv")["gflops_measured"].isna().all()
    out = kinetics.draw(table, tmp_path / "fig.png")
    assert out.stat().st_size > 10_000
