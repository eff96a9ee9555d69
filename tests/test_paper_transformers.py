"""Continual Transformers, paper side: ``paper/results/oadtr_published.csv`` holds the study's published numbers
(arXiv 2201.06268 Tables 6 and 7, the CoOadTR run logs, the README ablation), ``paper/transformers.py`` builds Tables
6/7 and the mAP-vs-FLOPs figure into a results set with the user's runs beside them, and the profile table and bench
pairs name the study's nets."""

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
PUBLISHED = pd.read_csv(PAPER / "results" / "oadtr_published.csv").fillna({"profile_row": "", "settings": ""})
WIDTHS = {"anet": 3072, "kin": 4096, "anet_audio": 7168, "kin_audio": 8192}


def _load():
    spec = importlib.util.spec_from_file_location("paper_transformers", PAPER / "transformers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(*folders: Path) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for d in folders for f in sorted(d.rglob("*")) if f.is_file()}


def _published(table: str, model: str, feature: str, metric: str, dataset: str = "thumos14", **where) -> pd.Series:
    rows = PUBLISHED[(PUBLISHED["source_table"] == table) & (PUBLISHED["model"] == model)
                     & (PUBLISHED["feature"] == feature) & (PUBLISHED["metric"] == metric)
                     & (PUBLISHED["dataset"] == dataset)]  # fmt: skip
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, (table, model, feature, metric, dataset, where)
    return rows.iloc[0]


def test_tables_6_and_7_hold_the_published_numbers_with_their_source() -> None:
    t6 = {("anet", "CoOadTR-b1"): (56.2, 87.2, 9.6), ("anet", "OadTR†"): (57.8, 88.5, 2445.6),
          ("anet", "OadTR (paper)"): (58.3, 85.4, 2445.6), ("kin", "OadTR-b1†"): (64.4, 89.1, 673.0),
          ("kin", "CoOadTR-b2"): (64.4, 88.2, 411.9), ("anet", "OadTR-b2†"): (55.9, 88.6, 1008.1)}  # fmt: skip
    for (feature, model), (m_ap, mc_ap, flops) in t6.items():
        assert _published("Table 6", model, feature, "mAP")["value"] == m_ap
        assert _published("Table 6", model, feature, "mcAP", "tvseries")["value"] == mc_ap
        assert _published("Table 6", model, feature, "flops_m")["value"] == flops
    assert _published("Table 6", "LSTR", "kin", "mAP")["value"] == 69.5
    assert _published("Table 7", "CoOadTR-b1", "kin_audio", "flops_m")["value"] == 14.8
    assert _published("Table 7", "OadTR-b2", "anet_audio", "mAP")["value"] == 57.5
    for table in ("Table 6", "Table 7"):
        assert PUBLISHED[PUBLISHED["source_table"] == table]["source"].str.contains("arXiv 2201.06268").all()
    # each Table 6/7 net's FLOPs row names the profile-table row it is compared with
    flops = PUBLISHED[PUBLISHED["source_table"].isin(["Table 6", "Table 7"]) & (PUBLISHED["metric"] == "flops_m")]
    named = flops[flops["profile_row"] != ""]
    assert len(named) == 20 and named["profile_row"].is_unique


def test_run_logs_are_the_five_seed_means_of_the_paper_configuration() -> None:
    logs = {("thumos14", "anet", "CoOadTR-b1", "mAP"): (56.59, 0.47), ("thumos14", "kin", "CoOadTR-b2", "mAP"):
            (64.94, 0.21), ("tvseries", "kin", "CoOadTR-b1", "mcAP"): (87.96, 0.22),
            ("thumos14", "kin_audio", "CoOadTR-b2", "mAP"): (65.29, 0.42)}  # fmt: skip
    for (dataset, feature, model, metric), (mean, std) in logs.items():
        row = _published("run logs", model, feature, metric, dataset, settings="recycling_fixed 127")
        assert (row["value"], row["std"], row["seeds"]) == (mean, std, 5)
        assert "CoOadTR" in row["source"] and "run logs" in row["source"]
    b2 = _published("run logs", "CoOadTR-b2", "anet", "params", settings="recycling_fixed 127")
    assert b2["value"] == 15766550
    mem = _published("run logs", "CoOadTR-b1", "anet", "max_memory_mb", settings="recycling_fixed 127")
    assert mem["value"] == pytest.approx(39.49, abs=0.01)
    assert _published("README ablation", "2 encoder layers, no decoder, no cls token", "anet", "mAP")["value"] == 55.5


def test_profile_table_rows_are_the_published_flops_rows() -> None:
    table = OmegaConf.load(ROOT / "configs" / "profile_table" / "thumos14.yaml")
    assert table.published == "paper/results/oadtr_published.csv" and table.output_name == "oadtr_profile.csv"
    named = PUBLISHED[(PUBLISHED["metric"] == "flops_m") & (PUBLISHED["profile_row"] != "")]
    assert set(table.rows) == set(named["profile_row"])
    for name, spec in table.rows.items():
        model, feature = name.rsplit(" ", 1)
        assert spec.overrides.dim_feature == WIDTHS[feature]
        assert spec.mode == ("frame" if model.startswith("Co") else "clip")
        assert spec.net == named[named["profile_row"] == name]["registry_name"].iloc[0]


def test_profile_table_reads_the_papers_flops_from_the_long_csv() -> None:
    from experiments import profile_table

    published = profile_table._published_gflops(ROOT / "paper" / "results" / "oadtr_published.csv")
    assert published["CoOadTR-b1 anet"] == 0.0096 and published["OadTR-b2 kin"] == 1.0757
    assert profile_table._published_gflops(ROOT / "paper" / "results" / "ntu60_published.csv")["ST-GCN"] == 16.73


def _write_set(folder: Path) -> None:
    profile = {"model": ["CoOadTR-b1 anet", "OadTR-b1 anet"], "params_m": [9.469, 9.56],
               "gflops": [0.00962, 0.612], "gflops_ptflops": [0.00960, 0.6055]}  # fmt: skip
    pd.DataFrame(profile).to_csv(folder / "oadtr_profile.csv", index=False)
    runs = {"model": ["cooadtr_b1"] * 4, "dataset": ["thumos14", "thumos14", "thumos14", "tvseries"],
            "feature": ["anet"] * 4, "seed": [1, 2, 1, 1], "eval_mode": ["window", "window", "stream", "window"],
            "mAP": [55.0, 57.0, 54.0, 12.0], "mcAP": [97.0, 97.2, 97.1, 86.5], "run_dir": list("abcd")}  # fmt: skip
    pd.DataFrame(runs).to_csv(folder / "oadtr_runs.csv", index=False)


def test_tables_and_figure_go_to_the_user_set_with_ours_beside_the_published(tmp_path: Path, monkeypatch) -> None:
    transformers = _load()
    common = sys.modules["common"]
    monkeypatch.setattr(common, "USER_SETS", tmp_path / "sets")
    mine = tmp_path / "sets" / "mine"
    mine.mkdir(parents=True)
    _write_set(mine)
    before = _digests(PAPER / "results", PAPER / "figures")

    paths = transformers.build("mine")
    assert [p.name for p in paths] == ["oadtr_table6.csv", "oadtr_table6.md", "oadtr_table7.csv", "oadtr_table7.md",
                                       "oadtr_map_vs_flops.png"]  # fmt: skip
    assert all(p.parent == mine for p in paths) and paths[-1].stat().st_size > 30_000
    t6 = pd.read_csv(mine / "oadtr_table6.csv").set_index(["feature", "model"])
    co = t6.loc[("anet", "CoOadTR-b1")]
    assert co["thumos14_mAP"] == 56.2 and co["thumos14_mAP_logs"] == 56.59 and co["flops_m"] == 9.6
    assert co["thumos14_mAP_window_ours"] == 56.0 and co["thumos14_mAP_window_ours_runs"] == 2
    assert co["thumos14_mAP_window_ours_std"] == pytest.approx(2**0.5)  # n - 1, as the logs' std
    assert co["thumos14_mAP_stream_ours_runs"] == 1 and co["tvseries_mcAP_window_ours"] == 86.5
    assert co["flops_m_macs_ours"] == pytest.approx(9.62) and co["flops_m_ptflops_ours"] == pytest.approx(9.6)
    assert pd.isna(t6.loc[("kin", "CoOadTR-b1"), "thumos14_mAP_window_ours"])
    md6 = (mine / "oadtr_table6.md").read_text()
    assert ("| A.Net | CoOadTR-b1 | 56.2 | 56.59 ± 0.47 | 56.00 ± 1.41 (2 window); 54.00 (1 stream) | 87.2 | "
            "87.96 ± 0.30 | 86.50 (1 window) | 9.6 | 9.60 | 9.62 |") in md6  # fmt: skip
    assert "| Kinetics | LSTR | 69.5 |" in md6 and "| A.Net | OadTR-b1† | 55.5 |  |  | 88.1 |" in md6
    md7 = (mine / "oadtr_table7.md").read_text()
    assert "| Kinetics + AudioSet | CoOadTR-b1 | 64.3 | 65.24 ± 0.22 |  | 14.8 |" in md7
    assert "No runs of this framework" in md7  # none of the runs used audio features
    with pytest.raises(common.ReferenceSetError, match="RESULTS=reference"):
        transformers.build("mine", results_dir=PAPER / "results")
    assert _digests(PAPER / "results", PAPER / "figures") == before


def test_published_numbers_alone_without_profile_or_runs(tmp_path: Path) -> None:
    transformers = _load()
    table6, table7 = transformers.tables(profile=tmp_path / "none.csv", runs=tmp_path / "none.csv")
    assert len(table6) == 14 and len(table7) == 10
    assert table6["flops_m_macs_ours"].isna().all() and table6["thumos14_mAP_window_ours_runs"].fillna(0).eq(0).all()
    out = transformers.draw(table6, transformers.read_published(), tmp_path / "fig.png")
    assert out.stat().st_size > 30_000


def test_runs_with_an_unknown_dataset_or_protocol_are_refused(tmp_path: Path) -> None:
    transformers = _load()
    path = tmp_path / "runs.csv"
    row = {"model": "cooadtr_b1", "dataset": "thumos", "feature": "anet", "seed": 1, "eval_mode": "window", "mAP": 50}
    pd.DataFrame([row]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"unknown dataset \['thumos'\]"):
        transformers.read_runs(path)
    pd.DataFrame([{**row, "dataset": "thumos14", "eval_mode": "clip"}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"unknown eval_mode \['clip'\]"):
        transformers.read_runs(path)


def test_collect_reads_test_runs_and_says_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    transformers = _load()

    def run(name: str, variant: str, dataset: str = "thumos14", protocol: str = "window", seed: int = 1) -> None:
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        config = {"seed": seed, "model": {"variant": variant}, "eval": {"protocol": protocol},
                  "data": {"dataset": dataset, "feature": "kin", "eval_mode": protocol}}  # fmt: skip
        (folder / "config.yaml").write_text(json.dumps(config))
        (folder / "metrics.json").write_text(json.dumps({"test/mAP": 0.6449, "test/mcAP": 0.88}))

    run("a", "cooadtr_b1", seed=1)
    run("b", "cooadtr_b1", seed=2, protocol="stream")
    run("c", "cox3d_s")
    run("d", "cooadtr_b2", dataset="synthetic_thumos")
    out = tmp_path / "set" / "oadtr_runs.csv"
    transformers.main(["collect", str(tmp_path / "runs"), "--out", str(out)])
    runs = pd.read_csv(out)
    assert list(runs.columns) == transformers.RUN_COLUMNS
    assert list(zip(runs["model"], runs["seed"], runs["eval_mode"])) == [("cooadtr_b1", 1, "window"),
                                                                         ("cooadtr_b1", 2, "stream")]  # fmt: skip
    assert runs["mAP"].tolist() == pytest.approx([64.49, 64.49]) and runs["mcAP"].tolist() == pytest.approx([88, 88])
    printed = capsys.readouterr().out
    assert f"left out {tmp_path / 'runs' / 'c' / 'metrics.json'}: model 'cox3d_s' is not a net" in printed
    assert "dataset 'synthetic_thumos' is not one of" in printed
    before = out.read_text()
    with pytest.raises(SystemExit):  # an existing file is not replaced without --replace
        transformers.main(["collect", str(tmp_path / "runs"), "--out", str(out)])
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    transformers.main(["collect", str(tmp_path / "runs"), "--out", str(out), "--replace"])


def test_bench_pairs_are_the_b1_and_b2_twins_at_batch_1(compose_cfg) -> None:
    cfg = compose_cfg("bench_transformers.yaml")
    assert [(p.clip, p.continual) for p in cfg.pairs] == [("oadtr_b1", "cooadtr_b1"), ("oadtr_b2", "cooadtr_b2")]
    assert list(cfg.batch_sizes) == [1] and cfg.compile and list(cfg.devices) == ["cpu", "cuda"] and not cfg.fold_bn
