"""Continual Transformers (Hedegaard, Bakhtiarnia & Iosifidis, ICLR 2023, arXiv 2201.06268): Tables 6 and 7 (CoOadTR
vs OadTR, online action detection) and THUMOS14 mAP vs FLOPs.

Reads CSVs only:

* ``results/oadtr_published.csv``: every published number of the study, one row per model x dataset x feature x
  metric (``source_table``: ``Table 6``, ``Table 7``, ``run logs`` (the CoOadTR repository's 5-seed logs, mean and
  std), ``README ablation``, ``original code`` (ptflops on the original code)), each with its ``source``. Metrics:
  ``mAP`` and ``mcAP`` in percent, ``flops_m`` (millions, ptflops as published: per window for OadTR, per step for
  CoOadTR), ``params``, ``max_memory_mb`` (CUDA, MB = 1e6 bytes). ``registry_name`` names the net of this framework
  compared with the row; ``profile_row`` the row of ``configs/profile_table/thumos14.yaml`` whose FLOPs sit beside it;
* ``oadtr_profile.csv``: our profiler on those nets (``make profile-transformers``: ``python -m
  experiments.profile_table --table thumos14``): ``gflops`` (executed multiply-accumulates) and ``gflops_ptflops``;
* ``oadtr_runs.csv`` (optional): the user's runs, one row per run with the columns ``model`` (a registry name:
  ``oadtr``, ``oadtr_b2``, ``oadtr_b1``, ``cooadtr_b2``, ``cooadtr_b1``), ``dataset`` (``thumos14`` | ``tvseries``),
  ``feature`` (``anet`` | ``kin`` | ``anet_audio`` | ``kin_audio``), ``seed``, ``eval_mode`` (``window`` | ``stream``),
  ``mAP`` and ``mcAP`` in percent (either may be empty) and ``run_dir``. ``collect`` writes it from run directories
  (``metrics.json`` beside the resolved ``config.yaml``, as ``experiments.train`` / ``experiments.eval`` write them):
  ``test/mAP`` and ``test/mcAP`` (fractions) in percent, ``model.variant``, ``data.dataset``, ``data.feature``,
  ``seed`` and ``eval.protocol`` from the config.

Writes ``oadtr_table6.{csv,md}`` and ``oadtr_table7.{csv,md}`` (published, the repository logs and ours side by
side: our runs as mean ± std over seeds, std with n - 1 as the logs' is, per evaluation protocol; our FLOPs in
both conventions) and ``oadtr_map_vs_flops.png``.

Where (``common.py``): by default into the user's results set ``outputs/results/mine/``, reading the set's own
profile/runs CSVs if it has them and the committed reference copies otherwise; ``--set reference`` (``make figures
RESULTS=reference``) replaces the committed files in ``paper/results`` and ``paper/figures``.

    python paper/transformers.py [--set mine|reference|<name>] [--profile <csv>] [--runs <csv>]     # make figures
    python paper/transformers.py [--set mine] collect <run dir> [<run dir> ...] [--out <csv>] [--replace]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import yaml
from matplotlib.lines import Line2D

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file, however it is loaded
from common import DEFAULT, REFERENCE_RESULTS, check_writable, count_axis, own_or_reference, set_dirs, study_main
from plotting import place_labels

PUBLISHED = REFERENCE_RESULTS / "oadtr_published.csv"
PROFILE_NAME = "oadtr_profile.csv"
RUNS_NAME = "oadtr_runs.csv"
TABLE6_NAME = "oadtr_table6"
TABLE7_NAME = "oadtr_table7"
FIGURE_NAME = "oadtr_map_vs_flops.png"
RUN_COLUMNS = ["model", "dataset", "feature", "seed", "eval_mode", "mAP", "mcAP", "run_dir"]
DATASETS = ("thumos14", "tvseries")
FEATURES = {"anet": "A.Net", "kin": "Kinetics", "anet_audio": "A.Net + AudioSet", "kin_audio": "Kinetics + AudioSet"}
PROTOCOLS = ("window", "stream")
SUMMARY_KEY = ["model", "dataset", "feature", "eval_mode", "metric"]
#: the run logs' setting that Tables 6 and 7 report (the paper configuration, spec of CoOadTR's main.py)
LOG_SETTING = "recycling_fixed 127"
COLORS = {"oadtr": "tab:blue", "oadtr_b2": "tab:orange", "oadtr_b1": "tab:green", "cooadtr_b2": "tab:red",
          "cooadtr_b1": "tab:purple", "": "0.45"}  # fmt: skip


def read_published(path: Path = PUBLISHED) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"registry_name": str, "profile_row": str}).fillna(
        {"registry_name": "", "profile_row": "", "settings": "", "notes": ""}
    )


def read_runs(path: Path) -> pd.DataFrame:
    """The user's runs (module docstring), checked."""
    runs = pd.read_csv(path)
    missing = {"model", "dataset", "feature", "seed", "eval_mode"} - set(runs.columns)
    if missing or not {"mAP", "mcAP"} & set(runs.columns):
        raise ValueError(f"{path}: missing columns {sorted(missing) or ['mAP or mcAP']} (module docstring lists them)")
    for column, known in (("dataset", DATASETS), ("feature", tuple(FEATURES)), ("eval_mode", PROTOCOLS)):
        unknown = sorted(set(runs[column]) - set(known))
        if unknown:
            raise ValueError(f"{path}: unknown {column} {unknown}; known: {list(known)}")
    return runs.reindex(columns=list(dict.fromkeys([*RUN_COLUMNS, *runs.columns])))


def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (n - 1; NaN for one run) and count, indexed by model x dataset x feature x protocol x metric."""
    long = runs.melt(["model", "dataset", "feature", "eval_mode"], ["mAP", "mcAP"], "metric", "value").dropna()
    return long.groupby(SUMMARY_KEY)["value"].agg(mean="mean", std="std", runs="count")


def _ours(summary: pd.DataFrame, model: str, dataset: str, feature: str, metric: str) -> dict[str, object]:
    """``{<metric>_<protocol>_ours, _std, _runs}`` of one cell, every protocol (NaN / 0 without runs)."""
    cells: dict[str, object] = {}
    for protocol in PROTOCOLS:
        key = (model, dataset, feature, protocol, metric)
        hit = summary.loc[key] if key in summary.index else {"mean": float("nan"), "std": float("nan"), "runs": 0}
        stem = f"{dataset}_{metric}_{protocol}"
        cells[f"{stem}_ours"], cells[f"{stem}_ours_std"] = hit["mean"], hit["std"]
        cells[f"{stem}_ours_runs"] = int(hit["runs"])
    return cells


def _value(rows: pd.DataFrame, **where: str) -> tuple[float, float]:
    """(value, std) of the one published row matching ``where``, NaNs if none."""
    hit = rows[(rows[list(where)] == pd.Series(where)).all(axis=1)]
    if len(hit) > 1:
        raise ValueError(f"{PUBLISHED.name}: {len(hit)} rows for {where}; one expected")
    return (hit["value"].iloc[0], hit["std"].iloc[0]) if len(hit) else (float("nan"), float("nan"))


def _profiled(profile: pd.DataFrame, row: str) -> dict[str, float]:
    """Our FLOPs (M) in both conventions and params (M) of one profile row, NaNs where not profiled."""
    hit = profile[profile["model"] == row] if row else profile.iloc[:0]
    take = {"flops_m_macs_ours": "gflops", "flops_m_ptflops_ours": "gflops_ptflops", "params_m_ours": "params_m"}
    out = {k: (hit[c].iloc[0] * (1e3 if c.startswith("gflops") else 1) if len(hit) and c in hit else float("nan"))
           for k, c in take.items()}  # fmt: skip
    return out


def _table(table_name: str, metrics: Sequence[tuple[str, str]], published: pd.DataFrame, profile: pd.DataFrame,
           summary: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """One row per (feature, model) of ``table_name``: published values, the run logs' mean ± std, ours."""
    rows = published[published["source_table"] == table_name]
    logs = published[(published["source_table"] == "run logs") & (published["settings"] == LOG_SETTING)]
    out = []
    for (feature, model), group in rows.groupby(["feature", "model"], sort=False):
        registry = group["registry_name"].iloc[0]
        flops_row = group[group["metric"] == "flops_m"]
        profile_row = flops_row["profile_row"].iloc[0] if len(flops_row) else ""
        record: dict[str, object] = {"feature": feature, "model": model, "registry_name": registry,
                                     "profile_row": profile_row, "notes": group["notes"].iloc[0]}  # fmt: skip
        for dataset, metric in metrics:
            record[f"{dataset}_{metric}"] = _value(group, dataset=dataset, metric=metric)[0]
            mean, std = _value(logs, registry_name=registry, dataset=dataset, feature=feature, metric=metric)
            record[f"{dataset}_{metric}_logs"], record[f"{dataset}_{metric}_logs_std"] = mean, std
            if registry:
                record.update(_ours(summary, registry, dataset, feature, metric))
        record["flops_m"] = _value(group, metric="flops_m")[0]
        record.update(_profiled(profile, profile_row))
        out.append(record)
    return pd.DataFrame(out)


def tables(published: Path = PUBLISHED, profile: Path | None = None, runs: Path | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(Table 6, Table 7) with the logs' and our numbers; ``profile`` and ``runs`` may be absent."""
    rows = read_published(published)
    measured = pd.read_csv(profile) if profile is not None and profile.is_file() else pd.DataFrame({"model": []})
    ran = read_runs(runs) if runs is not None and runs.is_file() else pd.DataFrame(columns=RUN_COLUMNS)
    summary = summarise_runs(ran)
    table6 = _table("Table 6", [("thumos14", "mAP"), ("tvseries", "mcAP")], rows, measured, summary)
    table7 = _table("Table 7", [("thumos14", "mAP")], rows, measured, summary)
    return table6, table7


def _num(value: object, digits: int = 1) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def _mean_std(mean: object, std: object, digits: int = 2) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def _ours_cell(row: pd.Series, stem: str) -> str:
    """'mean ± std (n protocol)' for each protocol with runs, joined by '; '."""
    parts = []
    for protocol in PROTOCOLS:
        n = row.get(f"{stem}_{protocol}_ours_runs", 0)
        if pd.notna(n) and n:
            mean, std = row[f"{stem}_{protocol}_ours"], row[f"{stem}_{protocol}_ours_std"]
            parts.append(f"{_mean_std(mean, std)} ({int(n)} {protocol})")
    return "; ".join(parts)


def _flops_cells(row: pd.Series) -> list[str]:
    return [_num(row["flops_m"]), _num(row["flops_m_ptflops_ours"], 2), _num(row["flops_m_macs_ours"], 2)]


def table_markdown(table: pd.DataFrame, metrics: Sequence[tuple[str, str]], title: str) -> str:
    """A table as markdown: per metric paper | repository logs | ours, then FLOPs paper | ours (two conventions)."""
    names = {("thumos14", "mAP"): "THUMOS14 mAP", ("tvseries", "mcAP"): "TVSeries mcAP"}
    head = ["Features", "Model"]
    for key in metrics:
        head += [f"{names[key]} paper", f"{names[key]} logs (5 seeds)", f"{names[key]} ours"]
    head += ["FLOPs M paper", "FLOPs M ours (ptflops)", "FLOPs M ours (executed MACs)"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, r in table.iterrows():
        cells = [FEATURES.get(r["feature"], r["feature"]), r["model"]]
        for dataset, metric in metrics:
            stem = f"{dataset}_{metric}"
            cells += [_num(r[stem]), _mean_std(r[f"{stem}_logs"], r[f"{stem}_logs_std"]), _ours_cell(r, stem)]
        lines.append("| " + " | ".join([*cells, *_flops_cells(r)]) + " |")
    ran = sum(int(table[c].sum()) for c in table.columns if c.endswith("_ours_runs"))
    profiled = int(table["flops_m_macs_ours"].notna().sum())
    dagger = " (OadTR (paper): the OadTR paper's numbers; †: the authors' runs of the original OadTR code)"
    paper = f"Paper: arXiv 2201.06268 {title.split(':')[0]}{dagger if table['model'].str.contains('†').any() else ''}."
    logs = (
        "Logs: LukasHedegaard/CoOadTR run logs, mean ± std over 5 seeds of the final epoch, the paper "
        f"configuration ({LOG_SETTING.replace(' ', ', ')} embeddings)."
    )
    flops = (
        "FLOPs per prediction: OadTR per 64-step window, CoOadTR per step after warm-up, at the THUMOS14 "
        "feature width; paper: ptflops; ours: ptflops' convention and the multiply-accumulates executed "
        f"({PROFILE_NAME}, {profiled} rows profiled)."
    )
    ours = (
        f"Ours: mean ± std (n - 1) over the user's runs ({RUNS_NAME}), per evaluation protocol (window: the "
        "paper's; stream: every step of each video in order)."
        if ran
        else f"No runs of this framework are in the results set ({RUNS_NAME}): published numbers only."
    )
    notes = ["", f"{paper} {logs} {flops}", ours]
    return "\n".join(lines + notes) + "\n"


def _points(table: pd.DataFrame, feature: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(published points, our points) of one feature's panel: x FLOPs per prediction, y THUMOS14 mAP."""
    rows = table[(table["feature"] == feature) & table["flops_m"].notna()]
    published = rows.assign(x=rows["flops_m"] * 1e6, y=rows["thumos14_mAP"], text=rows["model"])
    # ours: our window-protocol mAP where runs exist, at our executed MACs (or the paper's FLOPs if not profiled)
    x = rows["flops_m_macs_ours"].fillna(rows["flops_m"]) * 1e6
    mine = rows.assign(x=x, y=rows.get("thumos14_mAP_window_ours"), err=rows.get("thumos14_mAP_window_ours_std"))
    return published, mine


def _panel(ax: plt.Axes, table: pd.DataFrame, feature: str, lstr: float) -> pd.DataFrame:
    published, mine = _points(table, feature)
    for _, r in published.iterrows():
        color = COLORS.get(r["registry_name"], "k")
        marker = "o" if r["registry_name"].startswith("co") else "s"
        ax.scatter(r["x"], r["y"], marker=marker, s=55, facecolors="none", edgecolors=color, zorder=3)
        if pd.notna(r["flops_m_macs_ours"]):  # measured FLOPs at the published mAP, joined to the published point
            measured = r["flops_m_macs_ours"] * 1e6
            ax.scatter(measured, r["y"], marker=marker, s=40, color=color, zorder=4)
            ax.plot([r["x"], measured], [r["y"]] * 2, color=color, lw=0.8, zorder=2)
    for _, r in mine.dropna(subset=["y"]).iterrows():
        color = COLORS.get(r["registry_name"], "k")
        err = None if pd.isna(r["err"]) else r["err"]
        ax.errorbar(r["x"], r["y"], yerr=err, fmt="*", ms=11, color=color, capsize=3, zorder=5)
    if pd.notna(lstr):
        ax.axhline(lstr, color="0.5", ls="--", lw=0.8)
        ax.annotate(
            f"LSTR {lstr:.1f} (FLOPs not in Table 6)",
            (0.02, lstr),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=7,
            color="0.4",
        )
    ys = pd.concat([published["y"], mine["y"].dropna(), pd.Series([lstr]).dropna()])
    xs = pd.concat([published["x"], mine["x"]])
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 2.5, xs.max() * 4)
    ax.set_ylim(ys.min() - 1.5, ys.max() + 1.5)
    ax.set_title(f"{FEATURES[feature]} features", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    return published


def draw(table6: pd.DataFrame, published: pd.DataFrame, out: Path) -> Path:
    """THUMOS14 mAP vs FLOPs per prediction (log), one panel per feature: Table 6 as hollow markers, the same nets'
    FLOPs measured here filled (joined by a line), the user's runs as stars with ± std."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=False)
    lstr = published[(published["model"] == "LSTR") & (published["metric"] == "mAP")].set_index("feature")["value"]
    panels = [(ax, _panel(ax, table6, f, lstr.get(f, float("nan")))) for ax, f in zip(axes, ("anet", "kin"))]
    axes[0].set_ylabel("THUMOS14 mAP (%)")
    fig.supxlabel("FLOPs per prediction (OadTR: per 64-step window; CoOadTR: per step)", fontsize=9)
    gray = {"color": "0.35", "ls": ""}
    handles = [
        Line2D([], [], marker="s", **gray, label="OadTR: one prediction per 64-step window"),
        Line2D([], [], marker="o", **gray, label="CoOadTR: one prediction per step"),
        Line2D([], [], marker="o", markerfacecolor="none", **gray, label="hollow: Table 6 (mAP, ptflops FLOPs)"),
        Line2D([], [], marker="o", **gray, label="filled: FLOPs measured here (executed MACs), Table 6 mAP"),
        Line2D([], [], marker="*", ms=10, **gray, label="star: our runs' mAP (window protocol, ± std)"),
    ]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle("Continual Transformers (arXiv 2201.06268): THUMOS14 mAP vs FLOPs", fontsize=10)
    fig.tight_layout()
    for ax, points in panels:
        count_axis(ax.xaxis)
        place_labels(ax, points)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _run_row(metrics_path: Path, registry: set[str]) -> dict[str, object] | str:
    """One run's row of ``oadtr_runs.csv``, or why it is left out."""
    config_path = metrics_path.parent / "config.yaml"
    if not config_path.is_file():
        return "no config.yaml beside it"
    config = yaml.safe_load(config_path.read_text()) or {}
    model, data, evaluation = (config.get(k) or {} for k in ("model", "data", "eval"))
    variant = model.get("variant") or (model.get("net") or {}).get("name")
    if variant not in registry:
        return f"model {variant!r} is not a net of Tables 6/7 ({sorted(registry)})"
    if data.get("dataset") not in DATASETS:
        return f"dataset {data.get('dataset')!r} is not one of {list(DATASETS)}"
    if data.get("feature") not in FEATURES:
        return f"feature {data.get('feature')!r} is not one of {list(FEATURES)}"
    protocol = evaluation.get("protocol") or data.get("eval_mode")
    if protocol not in PROTOCOLS:
        return f"evaluation protocol {protocol!r} is not one of {list(PROTOCOLS)}"
    metrics = json.loads(metrics_path.read_text())
    scores = {name: 100 * metrics[f"test/{name}"] for name in ("mAP", "mcAP") if f"test/{name}" in metrics}
    if not scores:
        return "no test/mAP or test/mcAP in metrics.json"
    return {"model": variant, "dataset": data["dataset"], "feature": data["feature"], "seed": config.get("seed"),
            "eval_mode": protocol, **scores, "run_dir": str(metrics_path.parent)}  # fmt: skip


def collect(run_dirs: Sequence[Path], out: Path, replace: bool = False) -> pd.DataFrame:
    """``oadtr_runs.csv`` from every ``metrics.json`` under ``run_dirs``; the runs left out are printed."""
    if out.exists() and not replace:
        raise ValueError(f"{out} exists: name another results set (--set <name>), another --out, or pass --replace")
    registry = set(read_published()["registry_name"]) - {""}
    rows = []
    for metrics_path in sorted(p for d in run_dirs for p in Path(d).rglob("metrics.json")):
        row = _run_row(metrics_path, registry)
        if isinstance(row, str):
            print(f"left out {metrics_path}: {row}")
        else:
            rows.append(row)
    if not rows:
        raise ValueError(f"no THUMOS14/TVSeries test run of a Table 6/7 net under {[str(d) for d in run_dirs]}")
    runs = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS)
    twice = runs[runs.duplicated(["model", "dataset", "feature", "seed", "eval_mode"], keep=False)]
    if len(twice):  # e.g. a train run and a later eval of its checkpoint: both are kept and averaged
        print(f"note: {len(twice)} runs share model, dataset, feature, seed and protocol: {list(twice['run_dir'])}")
    out.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out, index=False)
    print(f"wrote {out} ({len(runs)} runs)")
    return runs


def build(set_name: str = DEFAULT, profile: Path | None = None, runs: Path | None = None,
          results_dir: Path | None = None, figures_dir: Path | None = None) -> list[Path]:  # fmt: skip
    """Tables and figure into a results set; profile and runs are the set's own, else the reference ones."""
    set_results, set_figures = set_dirs(set_name)
    results_dir, figures_dir = results_dir or set_results, figures_dir or set_figures
    outputs = [results_dir / f"{name}.{ext}" for name in (TABLE6_NAME, TABLE7_NAME) for ext in ("csv", "md")]
    figure = figures_dir / FIGURE_NAME
    check_writable(set_name, *outputs, figure)
    profile = profile or own_or_reference(results_dir, PROFILE_NAME)
    runs = runs or own_or_reference(results_dir, RUNS_NAME)
    for path, what in ((profile, "published FLOPs only"), (runs, "published mAP/mcAP only")):
        print(f"reading {path}" + ("" if path.is_file() else f" (absent: {what})"))
    table6, table7 = tables(PUBLISHED, profile, runs)
    results_dir.mkdir(parents=True, exist_ok=True)
    table6.to_csv(outputs[0], index=False)
    metrics6 = [("thumos14", "mAP"), ("tvseries", "mcAP")]
    outputs[1].write_text(table_markdown(table6, metrics6, "Table 6: CoOadTR vs OadTR, THUMOS14 and TVSeries"))
    table7.to_csv(outputs[2], index=False)
    title7 = "Table 7: audio-visual THUMOS14 (the visual features with audio features)"
    outputs[3].write_text(table_markdown(table7, [("thumos14", "mAP")], title7))
    draw(table6, read_published(PUBLISHED), figure)
    print(outputs[1].read_text())
    print(outputs[3].read_text())
    for path in (*outputs, figure):
        print(f"wrote {path}")
    return [*outputs, figure]


def main(argv: Sequence[str] | None = None) -> None:
    study_main(
        __doc__,
        profile_name=PROFILE_NAME,
        runs_name=RUNS_NAME,
        runs_help="the user's runs",
        collect_help="the THUMOS14/TVSeries test runs under run dirs",
        collect=collect,
        build=build,
        argv=argv,
    )


if __name__ == "__main__":
    main()
