"""paper/spa.py: collect a sweep's per-run CSVs, Table 1 numbers by hand, Fig. 6, the published Table 1, and where
they go (a user's results set; the committed reference set only when named)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

PAPER = Path(__file__).resolve().parents[1] / "paper"
DENSITIES = (1.0, 0.7, 0.5, 0.31, 0.12)  # nearest to 30 % is 0.31, to 10 % is 0.12
BASE_ACC = {"finetune": 90.0, "splora": 88.0, "sppara": 85.0}
CRIT_ACC = {"weight": 0.0, "taylor": 1.0}
PARAMS = {"finetune": 2e6, "splora": 2e5, "sppara": 1e6}  # ΔParams at density 1 (legacy)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spa", PAPER / "spa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


spa = _load()
common = sys.modules["common"]  # paper/common.py, imported by spa.py


def _run(criterion: str, method: str, seed: int, mask_mode: str = "legacy", acc_shift: float = 0.0) -> list[dict]:
    """One synthetic prune-recover run: seed 2 is 2 points better and 1 M MACs heavier than seed 1."""
    rows = []
    for step, density in enumerate(DENSITIES):
        acc = BASE_ACC[method] + CRIT_ACC[criterion] - 10 * (1 - density) + 2 * (seed - 1) + acc_shift
        rows.append({
            "arch": "resnet50", "dataset": "cifar10", "criterion": criterion, "method": method,
            "rank": 8 if method == "splora" else 0, "init_range": 1e-3 if method != "finetune" else None,
            "seed": seed, "mask_mode": mask_mode, "coupling": "none", "step": step, "density": density,
            "acc_pre_recovery": None if step == 0 else acc - 5, "acc": acc, "loss": 0.5,
            "delta_params_legacy": PARAMS[method] * density, "delta_params_exact": 0.9 * PARAMS[method] * density,
            "flops_legacy": 1e9 * density + 1e6 * seed, "flops_exact": 0.5e9 * density,
            "fused_params": 23e6 * density, "exported_params": 23e6 * density,
        })  # fmt: skip
    return rows


def _runs() -> pd.DataFrame:
    """2 criteria x 3 methods x 2 seeds (published setting) + one seed of an 'enforced' FP and SPLoRA (weight)."""
    rows = [r for c in CRIT_ACC for m in BASE_ACC for s in (1, 2) for r in _run(c, m, s)]
    rows += _run("weight", "finetune", 1, "enforced", acc_shift=-3.0) + _run("weight", "splora", 1, "enforced", -1.0)
    return pd.DataFrame(rows)


def _finished(frame: pd.DataFrame, path: Path) -> Path:
    """Write a run's rows and the marker its run writes last (a finished run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    (path.parent / spa.COMPLETE_MARKER).write_text("{}\n")
    return path


def _sweep(root: Path) -> Path:
    """A fake sweep dir: one finished spa_results.csv per run, nested as a Hydra multirun would."""
    for i, (_, run) in enumerate(_runs().groupby(spa.RUN_KEY, dropna=False)):
        _finished(run, root / "sweep" / str(i // 5) / f"job{i}" / "spa_results.csv")
    return root / "sweep"


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PAPER / "spa.py"), *args], capture_output=True, text=True, timeout=120)


def _row(table: pd.DataFrame, criterion: str, label: str, target: float) -> pd.Series:
    hit = table[(table["criterion"] == criterion) & (table["label"] == label) & (table["target_density"] == target)]
    assert len(hit) == 1, (criterion, label, target, len(hit))
    return hit.iloc[0]


def test_collect_then_figures_cli(tmp_path: Path) -> None:
    results, figures = tmp_path / "results", tmp_path / "figures"
    done = _cli("--results-dir", str(results), "collect", str(_sweep(tmp_path)))
    assert done.returncode == 0, done.stderr
    collected = results / "spa_runs_cifar10.csv"  # dataset inferred: every row is cifar10
    assert str(collected) in done.stdout and "14 runs, 70 rows" in done.stdout
    runs = pd.read_csv(collected)
    assert list(runs.columns) == [*spa.COLUMNS, "sweep"] and len(runs) == 70
    assert set(runs["sweep"]) == {"sweep"}  # the sweep directory's name: which sweep these runs came from

    done = _cli("--results-dir", str(results), "--figures-dir", str(figures))
    assert done.returncode == 0, done.stderr
    png = figures / "spa_cifar10.png"
    assert png.stat().st_size > 30_000  # 2 x 2 panels of scatter points, not an empty canvas
    table = pd.read_csv(results / "spa_table1_cifar10.csv", keep_default_na=False, na_values=[""])
    # 100 %: 2 variants of FP and SPLoRA + SPPaRA; 30/10 %: 2 criteria x 3 methods, + 2 enforced rows for weight
    assert len(table) == 5 + 2 * (2 * 3 + 2)
    splora = _row(table, "weight", "SPLoRA r8", 0.3)
    assert splora["density"] == pytest.approx(0.31) and splora["n"] == 2
    # by hand: 88 - 10 * 0.69 for seed 1, +2 for seed 2
    assert splora["acc_mean"] == pytest.approx(88 - 6.9 + 1) and splora["acc_std"] == pytest.approx(math.sqrt(2))
    assert splora["d_acc"] == pytest.approx(88 - 90)
    assert splora["delta_params_legacy_k_mean"] == pytest.approx(200 * 0.31) and splora["params_ratio_legacy"] == 10
    assert splora["flops_legacy_m_mean"] == pytest.approx(310 + 1.5)
    assert splora["flops_legacy_m_std"] == pytest.approx(1 / math.sqrt(2))
    assert _row(table, "taylor", "SPPaRA", 0.1)["params_ratio_exact"] == pytest.approx(2.0)
    assert math.isnan(_row(table, "taylor", "Fine-pruning", 0.1)["d_acc"])  # the reference has no annotation
    # unpruned: one value per seed, the mean of its criterion runs (seed 1: 90, 91; seed 2: 92, 93), n = 2 seeds
    unpruned = _row(table, "none", "Fine-pruning", 1.0)
    assert unpruned["n"] == 2 and unpruned["seeds"] == "1 2" and unpruned["acc_mean"] == pytest.approx(91.5)
    assert unpruned["acc_std"] == pytest.approx(math.sqrt(2))
    assert "differ (unpruned: across criteria) by up to 1.00 points" in done.stdout  # the synthetic taylor +1
    enforced = _row(table, "weight", "SPLoRA r8 (enforced)", 0.1)  # against the enforced FP, not the legacy one
    assert enforced["n"] == 1 and enforced["d_acc"] == pytest.approx((88 - 1) - (90 - 3))
    assert math.isnan(enforced["acc_std"])

    markdown = (results / "spa_table1_cifar10.md").read_text()
    assert "| resnet50 | Weight | SPLoRA r8 | 31.0% | 2 | 82.10 ± 1.41 | -2.00 | 62.0 ± 0.0 | ↓10.0× |" in markdown
    assert "| resnet50 | Unpruned | SPLoRA r8 | 100.0% | 2 |" in markdown
    # one seed: its value alone, no "± nan" or "± 0.00"
    [single] = [line for line in markdown.splitlines() if "| Weight | SPLoRA r8 (enforced) | 12.0% |" in line]
    assert single.startswith("| resnet50 | Weight | SPLoRA r8 (enforced) | 12.0% | 1 | 78.20 | ") and "±" not in single
    assert (results / "spa_table1_published.md").is_file()


def test_collect_rejects_bad_input(tmp_path: Path) -> None:
    broken = _finished(_runs().drop(columns=["flops_exact"]), tmp_path / "sweep" / "a" / "spa_results.csv")
    with pytest.raises(ValueError, match="missing columns \\['flops_exact'\\]"):
        spa.collect(tmp_path / "sweep", results_dir=tmp_path)
    _runs().to_csv(broken, index=False)
    # the same runs twice would pass as extra seeds
    _finished(_runs(), tmp_path / "sweep" / "b" / "spa_results.csv")
    with pytest.raises(ValueError, match="appears in several files"):
        spa.collect(tmp_path / "sweep", results_dir=tmp_path)
    done = _cli("collect", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "no spa_results.csv under" in done.stderr


def test_collect_splits_datasets_and_out(tmp_path: Path) -> None:
    runs = _runs()
    two = pd.concat([runs, runs.assign(dataset="flowers102")])
    _finished(two, tmp_path / "sweep" / "spa_results.csv")
    paths = spa.collect(tmp_path / "sweep", results_dir=tmp_path / "results")
    assert sorted(p.name for p in paths) == ["spa_runs_cifar10.csv", "spa_runs_flowers102.csv"]
    assert len(pd.read_csv(paths[1])) == len(runs)
    [out] = spa.collect(tmp_path / "sweep", out=tmp_path / "all.csv")
    assert len(pd.read_csv(out)) == 2 * len(runs)


def test_figure_draws_published_points_for_published_datasets(tmp_path: Path) -> None:
    runs = spa.read_runs(_write(_runs().assign(dataset="catsdogs"), tmp_path / "runs.csv"))
    with_published = spa.draw_figure(runs, "catsdogs", tmp_path / "a.png", spa.read_published(), count="exact")
    without = spa.draw_figure(runs, "catsdogs", tmp_path / "b.png", None, count="exact")
    assert with_published.read_bytes() != without.read_bytes()
    cars = spa.draw_figure(runs, "cars", tmp_path / "c.png", spa.read_published(), count="exact")
    assert (
        cars.read_bytes() == spa.draw_figure(runs, "cars", tmp_path / "d.png", count="exact").read_bytes()
    )  # not in Table 1


def test_runs_that_stop_early_are_noted() -> None:
    runs = _runs()
    short = runs[~((runs["seed"] == 2) & (runs["method"] == "sppara") & (runs["density"] < 0.4))]
    picks, notes = spa.select_steps(short)
    assert notes == ["2 run(s) never reach density 30% (nearest 50%); left out of the 30% rows",
                     "2 run(s) never reach density 10% (nearest 50%); left out of the 10% rows"]  # fmt: skip
    assert len(picks) == 14 * 3 - 4


def test_missing_runs_still_draws_published_table(tmp_path: Path, capsys) -> None:
    # neither the set nor the reference (here an empty folder) has runs
    spa.figures(tmp_path, tmp_path / "figures", reference_dir=tmp_path / "no_reference")
    assert f"no spa_runs_<dataset>.csv in {tmp_path}" in capsys.readouterr().out
    markdown = (tmp_path / "spa_table1_published.md").read_text()
    assert "| Taylor | SPLoRA r32 | 10% | 292.6 (↓2.0×) | 242.0 | 93.27 (+5.20) | 91.30 (+25.63) | 97.21 (+1.91) |" in (
        markdown
    )
    assert "| Unpruned | SPLoRA r32 | 100% | 1,644.5 (↓14.3×) | – | 95.32 (-1.78) |" in markdown
    assert "| LRP | Fine-pruning | 10% | 599.0 | 302.1 | 93.39 | 87.56 | – |" in markdown
    assert not (tmp_path / "figures").exists()


def test_published_table_has_every_spec_value() -> None:
    published = spa.read_published()
    # 3 unpruned rows + 4 criteria x 3 methods x 2 densities, each for 3 datasets
    assert len(published) == (3 + 4 * 3 * 2) * 3
    assert set(published["dataset"]) == {"cifar10", "flowers102", "catsdogs"}
    assert published["source"].str.contains("arXiv 2211.10155, Table 1").all()
    key = published.set_index(["criterion", "method", "rank", "density", "dataset"]).sort_index()
    assert key.loc[("taylor", "splora", 32, 0.1, "cifar10"), "acc"] == 93.27
    assert key.loc[("none", "finetune", 0, 1.0, "flowers102"), "delta_params_k"] == 23520.8
    assert key.loc[("none", "finetune", 0, 1.0, "cifar10"), "flops_m"] == 1304.7
    assert key.loc[("weight", "finetune", 0, 0.3, "catsdogs"), "acc"] == 98.64
    assert key.loc[("grad", "splora", 8, 0.1, "flowers102"), "acc"] == 87.46
    assert key.loc[("lrp", "splora", 8, 0.3, "cifar10"), "flops_m"] == 591.1
    assert math.isnan(key.loc[("lrp", "finetune", 0, 0.1, "catsdogs"), "acc"])  # "–" in the paper
    assert published["acc"].isna().sum() == 1
    # FLOPs are published for CIFAR-10 only, and not for the unpruned LoRA rows
    assert published.loc[published["dataset"] == "cifar10", "flops_m"].notna().sum() == 25
    assert published.loc[published["dataset"] != "cifar10", "flops_m"].isna().all()
    # the paper's headline "at 70 % pruned SPLoRA (r8) loses 1.6 % accuracy on average" checks the transcription
    pruned = published[(published["criterion"] != "none") & (published["density"] == 0.3)]
    idx = ["criterion", "dataset"]
    fp = pruned[pruned["method"] == "finetune"].set_index(idx)["acc"]
    r8 = pruned[pruned["rank"] == 8].set_index(idx)["acc"]
    assert (r8 - fp).mean() == pytest.approx(-1.60, abs=0.005)


def test_seed_aggregation_one_row_per_criterion_method_density() -> None:
    """Two seeds: mean, std (ddof 1) and n = 2; one seed: its value, no std, n = 1; never one row per run."""
    two = pd.DataFrame(_run("weight", "splora", 1) + _run("weight", "splora", 2) + _run("weight", "finetune", 1))
    table, _ = spa.table1(two)
    assert not table.duplicated(["criterion", "label", "target_density"]).any()
    splora = _row(table, "weight", "SPLoRA r8", 0.1)
    assert splora["n"] == 2 and splora["seeds"] == "1 2"
    assert splora["acc_mean"] == pytest.approx(88 - 8.8 + 1) and splora["acc_std"] == pytest.approx(math.sqrt(2))
    single = _row(table, "weight", "Fine-pruning", 0.1)
    assert single["n"] == 1 and single["acc_mean"] == pytest.approx(90 - 8.8) and math.isnan(single["acc_std"])
    assert spa._pm(single["acc_mean"], single["acc_std"], 2) == "81.20"
    assert spa._pm(splora["acc_mean"], splora["acc_std"], 2) == "80.20 ± 1.41"
    # the unpruned step is shared by the criterion runs of a seed: each seed counts once
    four = pd.DataFrame([r for c in CRIT_ACC for s in (1, 2) for r in _run(c, "finetune", s)])
    unpruned = _row(spa.table1(four)[0], "none", "Fine-pruning", 1.0)
    assert unpruned["n"] == 2 and unpruned["acc_mean"] == pytest.approx(91.5)


def test_committed_table_counts_seeds() -> None:
    """The committed digits table: two seeds per row (n = 2), the unpruned rows included."""
    table = pd.read_csv(spa.RESULTS / "spa_table1_digits.csv", keep_default_na=False, na_values=[""])
    runs = spa.read_runs(spa.RESULTS / "spa_runs_digits.csv")
    assert (table["n"] == runs["seed"].nunique()).all() and set(table["seeds"]) == {"1 2"}
    assert not table.duplicated(["criterion", "label", "target_density"]).any()
    assert "| resnet_tiny | Unpruned | Fine-pruning (enforced) | 100.0% | 2 | 94.61 ± 0.26 |" in (
        (spa.RESULTS / "spa_table1_digits.md").read_text()
    )


def _digests(*folders: Path) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for d in folders for f in sorted(d.rglob("*")) if f.is_file()}


def test_user_set_reads_the_reference_and_never_writes_it(tmp_path: Path, monkeypatch, capsys) -> None:
    """`make figures` (set "mine"): the committed runs drawn into the user's folder, the reference bytes unchanged."""
    monkeypatch.setattr(common, "USER_SETS", tmp_path / "sets")
    before = _digests(spa.RESULTS, spa.FIGURES)
    written = spa.figures(set_name="mine")
    out = capsys.readouterr().out
    mine = tmp_path / "sets" / "mine"
    assert f"reading the reference runs {spa.RESULTS / 'spa_runs_digits.csv'}" in out
    assert sorted(p.name for p in written) == ["spa_digits.png", "spa_table1_digits.csv", "spa_table1_digits.md",
                                               "spa_table1_published.md"]  # fmt: skip
    assert all(p.parent == mine and f"wrote {p}" in out for p in written)
    assert (mine / "spa_digits.png").stat().st_size > 50_000
    # the same inputs give the committed table
    assert (mine / "spa_table1_digits.md").read_text() == (spa.RESULTS / "spa_table1_digits.md").read_text()
    # a sweep collected into the set: its own runs are used from then on, the reference is not read
    sweep = _sweep(tmp_path)
    [own] = spa.collect(sweep, set_name="mine")
    assert own == mine / "spa_runs_cifar10.csv"
    spa.figures(set_name="mine")
    assert "reading the reference runs" in capsys.readouterr().out  # digits still from the reference
    assert (mine / "spa_cifar10.png").is_file()
    assert _digests(spa.RESULTS, spa.FIGURES) == before


def test_reference_set_is_written_only_when_named(tmp_path: Path, monkeypatch) -> None:
    before = _digests(spa.RESULTS, spa.FIGURES)
    with pytest.raises(common.ReferenceSetError, match="--set reference"):
        spa.figures(spa.RESULTS, spa.FIGURES)  # the reference folders, but the set named is the default
    with pytest.raises(common.ReferenceSetError, match="RESULTS=reference"):
        spa.collect(_sweep(tmp_path), out=spa.RESULTS / "spa_runs_cifar10.csv")
    done = _cli("--results-dir", str(spa.RESULTS))
    assert done.returncode == 2 and "committed reference set" in done.stderr
    assert _digests(spa.RESULTS, spa.FIGURES) == before
    # naming it is the way: here the reference folders are moved to tmp_path so the committed files stay as they are
    monkeypatch.setattr(common, "REFERENCE_RESULTS", tmp_path / "ref_results")
    monkeypatch.setattr(common, "REFERENCE_FIGURES", tmp_path / "ref_figures")
    written = spa.figures(set_name="reference", reference_dir=tmp_path / "ref_results")
    assert written == [tmp_path / "ref_results" / "spa_table1_published.md"]


def test_collect_never_mixes_or_overwrites_a_sweep(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    [first] = spa.collect(sweep, results_dir=tmp_path / "set")
    old = first.read_bytes()
    with pytest.raises(ValueError, match="already holds 70 rows of sweep sweep; collect into another results set"):
        spa.collect(sweep, results_dir=tmp_path / "set")
    done = _cli("--results-dir", str(tmp_path / "set"), "collect", str(sweep))
    assert done.returncode == 2 and "--replace" in done.stderr
    assert first.read_bytes() == old
    later = tmp_path / "2030-01-01_00-00-00"
    sweep.rename(later)
    done = _cli("--results-dir", str(tmp_path / "set"), "collect", str(later), "--replace")
    assert done.returncode == 0, done.stderr
    assert set(pd.read_csv(first)["sweep"]) == {"2030-01-01_00-00-00"} and len(pd.read_csv(first)) == 70


def test_results_set_paths() -> None:
    assert common.set_dirs("reference") == (spa.RESULTS, spa.FIGURES) == (PAPER / "results", PAPER / "figures")
    assert common.set_dirs("mine") == (PAPER.parent / "outputs" / "results" / "mine",) * 2
    for bad in ("../paper", "a/b", ""):
        with pytest.raises(ValueError, match="plain folder name"):
            common.set_dirs(bad)
    common.check_writable("reference", spa.RESULTS / "x.csv")
    common.check_writable("mine", PAPER.parent / "outputs" / "results" / "mine" / "x.csv")
    with pytest.raises(common.ReferenceSetError):
        common.check_writable("mine", spa.FIGURES / "spa_digits.png")
    assert common.si(500) == "500" and common.si(1000) == "1K" and common.si(20_000) == "20K"
    assert common.si(1.5e6) == "1.5M" and common.si(2e9) == "2G"
