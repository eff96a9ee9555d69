"""Continual ST-GCNs, paper side: the published CSVs hold the paper's numbers (arXiv 2203.11009, Tables II-V, and
spec skeletons.md B7's GFLOPs of the original code), ``paper/skeletons.py`` builds its tables and figure into a
results set without touching the committed ones, and the profile table and bench pairs name registered nets."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments.inputs import clip_input_shape
from modules.nets import input_spec, list_models

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
TABLE2 = pd.read_csv(PAPER / "results" / "ntu60_published.csv").set_index("model")
TABLES3TO5 = pd.read_csv(PAPER / "results" / "skeletons_published.csv").set_index(["model", "streams"])


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PAPER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(*folders: Path) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for d in folders for f in sorted(d.rglob("*")) if f.is_file()}


def test_table2_holds_the_published_row_of_each_net() -> None:
    assert len(TABLE2) == 12 and TABLE2["source"].str.contains("arXiv 2203.11009").all()
    assert tuple(TABLE2.loc["ST-GCN", ["frames_per_pred", "xsub", "xview", "params_m", "mem_mb", "gflops"]]) == (
        300, 86.0, 93.4, 3.14, 45.3, 16.73)  # fmt: skip
    assert tuple(TABLE2.loc["CoST-GCN*", ["frames_per_pred", "cpu", "gpu"]]) == (1, 46.1, 4202.2)
    assert tuple(TABLE2.loc["S-TR*", ["mem_mb", "gflops", "cpu"]]) == (111.5, 35.65, 0.8)
    assert tuple(TABLE2.loc["CoAGCN", ["xsub", "xview", "gflops"]]) == (86.0, 93.9, 0.30)
    # the original code's ptflops figures beside the printed ones: Table II's 0.27 and 0.30 are not reproduced
    original = TABLE2["gflops_original_code"]
    assert tuple(original[["ST-GCN", "ST-GCN*", "AGCN", "AGCN*", "S-TR", "S-TR*"]]) == (
        16.728, 36.903, 18.685, 40.870, 16.142, 35.653)  # fmt: skip
    assert tuple(original[["CoST-GCN", "CoST-GCN*", "CoAGCN", "CoAGCN*", "CoS-TR", "CoS-TR*"]]) == (
        0.223, 0.156, 0.250, 0.172, 0.216, 0.151)  # fmt: skip
    assert set(TABLE2["registry_name"]) == {m for m in list_models() if input_spec(m).is_skeleton}
    twins = TABLE2[TABLE2["mode"] == "frame"]
    assert set(twins["twin_of"]) == set(TABLE2[TABLE2["mode"] == "clip"].index)


def test_tables3to5_hold_both_streams_and_keep_table2s_disagreements() -> None:
    assert len(TABLES3TO5) == 18
    assert tuple(TABLES3TO5.loc[("ST-GCN", 2), ["ntu60_xsub", "ntu120_xset", "kinetics_top5", "gflops_kinetics"]]) == (
        88.1, 85.1, 57.5, 24.09)  # fmt: skip
    assert tuple(TABLES3TO5.loc[("CoS-TR*", 2), ["ntu60_xview", "kinetics_top1", "gflops_ntu"]]) == (94.8, 29.9, 0.30)
    # spec B5: Table III's values, not Table II's, where the two disagree
    assert tuple(TABLES3TO5.loc[("CoST-GCN", 1), ["ntu60_xsub", "ntu60_xview", "gflops_ntu"]]) == (86.0, 93.4, 0.27)
    assert TABLES3TO5.loc[("CoAGCN*", 1), "gflops_ntu"] == 0.22 and TABLE2.loc["CoAGCN*", "gflops"] == 0.17
    assert TABLES3TO5.loc[("CoS-TR", 1), "ntu60_xview"] == 93.5 and TABLE2.loc["CoS-TR", "xview"] == 93.3


def test_profile_table_rows_are_table2s() -> None:
    table = OmegaConf.load(ROOT / "configs" / "profile_table" / "ntu60.yaml")
    assert list(table.rows) == list(TABLE2.index) and list(table.conventions) == ["ptflops"]
    for name, spec in table.rows.items():
        assert (spec.net, spec.mode) == tuple(TABLE2.loc[name, ["registry_name", "mode"]])


def test_tables_and_figure_go_to_the_user_set(tmp_path: Path, monkeypatch, capsys) -> None:
    skeletons = _load("skeletons")
    common = sys.modules["common"]
    monkeypatch.setattr(common, "USER_SETS", tmp_path / "sets")
    mine = tmp_path / "sets" / "mine"
    mine.mkdir(parents=True)
    before = _digests(PAPER / "results", PAPER / "figures")
    profile = {"model": ["ST-GCN", "CoST-GCN*"], "params_m": [3.141478] * 2, "gflops": [17.25, 0.159],
               "gflops_ptflops": [16.728, 0.156], "peak_memory_mb": [300.0, 30.0], "throughput_median": [0.5, 20.0],
               "throughput_iqr": [0.1, 2.0], "throughput_busy": [False, True], "device": ["cpu"] * 2,
               "threads": [2, 2], "torch": ["2.x"] * 2}  # fmt: skip
    pd.DataFrame(profile).to_csv(mine / "ntu60_profile.csv", index=False)
    runs = {"model": ["CoST-GCN*", "CoST-GCN*", "CoST-GCN*"], "streams": [1, 1, 1],
            "dataset": ["ntu60", "ntu60", "kinetics"], "subset": ["xsub", "xsub", ""],
            "top1": [85.0, 86.0, 30.0], "top5": [None, None, 52.0]}  # fmt: skip
    pd.DataFrame(runs).to_csv(mine / "skeletons_runs.csv", index=False)

    paths = skeletons.build("mine")
    assert [p.name for p in paths] == ["ntu60_table2.csv", "ntu60_table2.md", "skeletons_tables3to5.csv",
                                       "skeletons_tables3to5.md", "skeletons_acc_vs_flops.png"]  # fmt: skip
    assert all(p.parent == mine for p in paths) and paths[-1].stat().st_size > 30_000
    t2 = pd.read_csv(mine / "ntu60_table2.csv").set_index("model")
    assert t2.loc["CoST-GCN*", "cpu_measured"] == 20.0 and pd.isna(t2.loc["AGCN", "gflops_measured"])
    assert t2.loc["ST-GCN", "gflops_ptflops_rel_err_original_code"] == pytest.approx(0.0)
    assert t2.loc["CoST-GCN*", "gflops_rel_err_paper"] == pytest.approx(0.159 / 0.16 - 1)
    md2 = (mine / "ntu60_table2.md").read_text()
    assert "| CoST-GCN* | 1 | 86.3 | 93.8 | 3.14 / 3.141 | 36.1 / 30.0 | 0.16 | 0.156 | 0.156 | 0.159 | 46.1 |" in md2
    assert "20.00 (2) busy" in md2 and "CoAGCN* GFLOPs: 0.17 in Table II, 0.22 in Table III" in md2
    assert "CoST-GCN X-Sub: 85.3 in Table II, 86.0 in Table III" in md2
    t3 = pd.read_csv(mine / "skeletons_tables3to5.csv").set_index(["model", "streams"])
    assert t3.loc[("CoST-GCN*", 1), "ntu60_xsub_ours"] == 85.5 and t3.loc[("CoST-GCN*", 1), "runs"] == 3
    assert t3.loc[("CoST-GCN*", 1), "kinetics_top5_ours"] == 52.0 and pd.isna(t3.loc[("ST-GCN", 1), "ntu60_xsub_ours"])
    md3 = (mine / "skeletons_tables3to5.md").read_text()
    assert "| CoST-GCN* | 1 | 86.3 / 85.5 | 93.8 | 79.4 | 81.6 | 30.2 / 30.0 | 52.4 / 52.0 | 0.16 (0.11) |" in md3
    assert "| ST-GCN† | 2 |" in md3 and "mean of 3 of the user's runs" in md3
    assert f"reading {mine / 'ntu60_profile.csv'}" in capsys.readouterr().out

    # without runs or a profile of its own: the committed profile (if any), the published accuracies alone
    (mine / "skeletons_runs.csv").unlink()
    published_only = skeletons.tables3to5(runs=tmp_path / "none.csv")
    assert published_only["ntu60_xsub_ours"].isna().all()
    assert "No runs of this framework" in skeletons.tables3to5_markdown(published_only)
    with pytest.raises(common.ReferenceSetError, match="RESULTS=reference"):
        skeletons.build("mine", results_dir=PAPER / "results")
    assert _digests(PAPER / "results", PAPER / "figures") == before


def test_runs_with_an_unknown_dataset_are_refused(tmp_path: Path) -> None:
    skeletons = _load("skeletons")
    path = tmp_path / "runs.csv"
    pd.DataFrame(
        {"model": ["CoST-GCN"], "streams": [1], "dataset": ["ntu60"], "subset": ["xset"], "top1": [80.0]}
    ).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"unknown dataset/subset \['ntu60/xset'\]"):
        skeletons.read_runs(path)


def test_bench_pairs_are_registered_twins_on_one_input(compose_cfg) -> None:
    cfg = compose_cfg("bench_skeletons.yaml")
    pairs = [(p.clip, p.continual) for p in cfg.pairs]
    assert pairs == [("st_gcn", "cost_gcn_mod"), ("st_gcn_mod", "cost_gcn_mod"), ("st_gcn", "cost_gcn")]
    assert list(cfg.batch_sizes) == [1] and cfg.compile and "cpu" in cfg.devices  # the rest as bench.yaml
    for pair in cfg.pairs:
        assert {pair.clip, pair.continual} <= set(list_models())
        assert clip_input_shape(pair.clip) == clip_input_shape(pair.continual) == (3, 300, 25, 2)


def _dry_run(*args: str) -> str:
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_targets_write_the_user_set_unless_reference_is_named() -> None:
    assert "--table ntu60 --output outputs/results/mine/ntu60_profile.csv \n" in _dry_run("profile-skeletons")
    assert "--output paper/results/ntu60_profile.csv --replace" in _dry_run("profile-skeletons", "RESULTS=reference")
    bench = _dry_run("bench-skeletons")
    assert "-m experiments.bench --config-name=bench_skeletons \n" in bench and bench.count("experiments.bench") == 1
    assert "paper/skeletons.py --set mine" in _dry_run("figures")
    assert "paper/skeletons.py --set reference" in _dry_run("figures", "RESULTS=reference")


def test_collect_reads_joint_test_runs_and_says_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    skeletons = _load("skeletons")

    def run(name: str, variant: str, stream: str, dataset: str = "ntu60", subset: str = "xsub") -> None:
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        data = {"dataset": dataset, "subset": subset, "stream": stream}
        (folder / "config.yaml").write_text(json.dumps({"model": {"variant": variant}, "data": data}))
        (folder / "metrics.json").write_text(json.dumps({"test/top1": 0.855, "test/top5": 0.97}))

    run("a", "cost_gcn_mod", "joint")
    run("b", "cost_gcn_mod", "bone")
    run("c", "st_gcn", "joint", "kinetics", "xsub")
    out = tmp_path / "set" / "skeletons_runs.csv"
    skeletons.main(["collect", str(tmp_path / "runs"), "--out", str(out)])
    runs = pd.read_csv(out, dtype={"subset": str}).fillna({"subset": ""})
    assert list(zip(runs["model"], runs["dataset"], runs["subset"])) == [("CoST-GCN*", "ntu60", "xsub"),
                                                                         ("ST-GCN", "kinetics", "")]  # fmt: skip
    assert runs["top1"].tolist() == pytest.approx([85.5, 85.5]) and runs["top5"].tolist() == pytest.approx([97, 97])
    printed = capsys.readouterr().out
    assert f"left out {tmp_path / 'runs' / 'b' / 'metrics.json'}: stream 'bone', not joint" in printed
    cells = skeletons.read_runs(out).set_index(["model", "streams"])
    assert cells.loc[("ST-GCN", 1), "kinetics_top5_ours"] == pytest.approx(97.0)
    with pytest.raises(SystemExit):  # an existing file is not replaced without --replace
        skeletons.main(["collect", str(tmp_path / "runs"), "--out", str(out)])
