"""The paper scripts read CSVs and draw figures into a results set; the committed reference set is written only when
named (``RESULTS=reference``)."""

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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


def _digests(*folders: Path) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for d in folders for f in sorted(d.rglob("*")) if f.is_file()}


def test_kinetics_figure_goes_to_the_user_set_from_the_committed_csvs(tmp_path: Path, monkeypatch, capsys) -> None:
    """`make figures`: the committed profile read, the merged CSV and PNG written into the user's set only."""
    kinetics = _load("kinetics400")
    common = sys.modules["common"]
    monkeypatch.setattr(common, "USER_SETS", tmp_path / "sets")
    before = _digests(PAPER / "results", PAPER / "figures")
    merged, figure = kinetics.build("mine")
    mine = tmp_path / "sets" / "mine"
    assert (merged, figure) == (mine / "kinetics400.csv", mine / "kinetics400_acc_vs_flops.png")
    out = capsys.readouterr().out
    assert f"{PAPER / 'results' / 'kinetics400_profile.csv'}" in out and f"wrote {merged}" in out and str(figure) in out
    assert merged.read_text() == (PAPER / "results" / "kinetics400.csv").read_text()  # the committed merge
    assert figure.stat().st_size > 50_000
    # the set's own profile wins over the reference's once it has one
    pd.DataFrame({"model": ["X3D-S"], "gflops": [9.0], "params_m": [3.79]}).to_csv(mine / "kinetics400_profile.csv")
    kinetics.build("mine")
    assert pd.read_csv(merged).set_index("model").loc["X3D-S", "gflops_measured"] == 9.0
    with pytest.raises(common.ReferenceSetError, match="RESULTS=reference"):
        kinetics.build("mine", results_dir=PAPER / "results")
    assert _digests(PAPER / "results", PAPER / "figures") == before


def test_demo_figure_draws(tmp_path: Path) -> None:
    from experiments.plots import accuracy_vs_macs

    table = pd.DataFrame({"model": ["X3D-tiny", "CoX3D-tiny"], "protocol": ["clip", "frame"], "top1": [0.543, 0.35],
                          "gflops": [0.00546, 0.00074], "params": [2.3e5, 2.3e5]})  # fmt: skip
    accuracy_vs_macs(table, tmp_path / "acc_vs_flops.png", num_classes=10, dataset="Moving Digits")
    assert (tmp_path / "acc_vs_flops.png").stat().st_size > 30_000


def _dry_run(*args: str) -> str:
    done = subprocess.run(["make", "-n", *args], cwd=PAPER.parent, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_recipes_write_the_user_set_unless_reference_is_named() -> None:
    figures = _dry_run("figures")
    assert "paper/kinetics400.py --set mine" in figures and "paper/spa.py --set mine" in figures
    reference = _dry_run("figures", "RESULTS=reference")
    assert "paper/kinetics400.py --set reference" in reference and "paper/spa.py --set reference" in reference
    sweep = _dry_run("sweep-spa")
    assert "collect" in sweep and "--out outputs/results/mine/spa_runs_digits.csv" in sweep and "--replace" not in sweep
    assert "--out paper/results/spa_runs_digits.csv --replace" in _dry_run("sweep-spa", "RESULTS=reference")
    assert "--output outputs/results/mine/kinetics400_profile.csv" in _dry_run("profile-cox3d")
    assert "--output paper/results/kinetics400_profile.csv" in _dry_run("profile-cox3d", "RESULTS=reference")


def test_sweep_refuses_a_set_that_holds_runs(tmp_path: Path) -> None:
    """The recipe's first line, run as make prints it: an existing runs CSV stops the sweep before it starts."""
    name = f"test_{tmp_path.name}"
    folder = PAPER.parent / "outputs" / "results" / name
    printed = _dry_run("sweep-spa", f"RESULTS={name}")
    guard = printed[printed.index("if [") : printed.index("mkdir -p")]  # before the sweep's first line
    assert "exit 1" in guard
    try:
        folder.mkdir(parents=True)
        assert subprocess.run(["bash", "-c", guard], cwd=PAPER.parent).returncode == 0  # an empty set: go on
        (folder / "spa_runs_digits.csv").write_text("arch\n")
        done = subprocess.run(["bash", "-c", guard], cwd=PAPER.parent, capture_output=True, text=True)
        assert done.returncode == 1 and "RESULTS=<name>" in done.stderr and "already holds" in done.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
