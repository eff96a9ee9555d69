"""Continual ST-GCNs (Hedegaard, Heidari & Iosifidis, Pattern Recognition 2023, arXiv 2203.11009): Tables II-V and
NTU-60 accuracy vs FLOPs.

Reads CSVs only:

* ``results/ntu60_published.csv``: Table II (NTU-60 joints, one stream) with the GFLOPs that ptflops 0.6.9 gives on
  the original code (``gflops_original_code``, LukasHedegaard/continual-skeletons a8fe293);
* ``results/skeletons_published.csv``: Tables III-V (1 and 2 streams; NTU-60, NTU-120, Kinetics-Skeleton);
* ``ntu60_profile.csv``: our profiler on the 12 nets (``make profile-skeletons``);
* ``skeletons_runs.csv`` (optional): accuracies of the user's own runs, one row per run with the columns ``model``
  (a Table III name, e.g. ``CoST-GCN*``), ``streams`` (1 or 2), ``dataset`` (ntu60, ntu120, kinetics), ``subset``
  (xsub, xview, xset; empty for kinetics), ``top1`` and optionally ``top5`` in percent. ``collect`` writes it from
  the run directories of ``experiments.eval`` / ``experiments.train`` (``metrics.json`` beside ``config.yaml``):
  the joint-stream test runs of the 12 nets, ``test/top1`` and ``test/top5`` (fractions) in percent.

Writes ``ntu60_table2.{csv,md}`` (Table II: published beside measured params, GFLOPs in two conventions, peak
memory and CPU predictions/s, and the original code's GFLOPs), ``skeletons_tables3to5.{csv,md}`` (published, ours
beside where runs exist) and ``skeletons_acc_vs_flops.png``.

Where (``common.py``): by default into the user's results set ``outputs/results/mine/``, reading the set's own
profile/runs CSVs if it has them and the committed reference copies otherwise; ``--set reference`` (``make figures
RESULTS=reference``) replaces the committed files in ``paper/results`` and ``paper/figures``.

    python paper/skeletons.py [--set mine|reference|<name>] [--profile <csv>] [--runs <csv>]     # or: make figures
    python paper/skeletons.py [--set mine] collect <run dir> [<run dir> ...] [--out <csv>] [--replace]
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
from matplotlib.patches import Patch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file, however it is loaded
from common import DEFAULT, REFERENCE_RESULTS, check_writable, count_axis, own_or_reference, set_dirs, study_main
from plotting import place_labels  # the same label placement as the Kinetics figure

TABLE2_PUBLISHED = REFERENCE_RESULTS / "ntu60_published.csv"
TABLES3TO5_PUBLISHED = REFERENCE_RESULTS / "skeletons_published.csv"
PROFILE_NAME = "ntu60_profile.csv"
RUNS_NAME = "skeletons_runs.csv"
TABLE2_NAME = "ntu60_table2"
TABLES3TO5_NAME = "skeletons_tables3to5"
FIGURE_NAME = "skeletons_acc_vs_flops.png"
COLORS = {"st_gcn": "tab:blue", "agcn": "tab:orange", "s_tr": "tab:green"}
FAMILIES = {"st_gcn": "ST-GCN", "agcn": "AGCN", "s_tr": "S-TR"}
#: profile CSV column -> Table II column
MEASURED = {
    "params_m": "params_m_measured",
    "gflops": "gflops_measured",
    "gflops_ptflops": "gflops_ptflops_measured",
    "peak_memory_mb": "mem_mb_measured",
    "throughput_median": "cpu_measured",
    "throughput_iqr": "cpu_measured_iqr",
    "throughput_busy": "cpu_measured_busy",
}
#: (dataset, subset, metric) of a run -> Tables III-V column
RUN_COLUMNS = {
    ("ntu60", "xsub", "top1"): "ntu60_xsub",
    ("ntu60", "xview", "top1"): "ntu60_xview",
    ("ntu120", "xsub", "top1"): "ntu120_xsub",
    ("ntu120", "xset", "top1"): "ntu120_xset",
    ("kinetics", "", "top1"): "kinetics_top1",
    ("kinetics", "", "top5"): "kinetics_top5",
}
ACCURACIES = list(dict.fromkeys(RUN_COLUMNS.values()))


def table2(published: Path = TABLE2_PUBLISHED, profile: Path = REFERENCE_RESULTS / PROFILE_NAME) -> pd.DataFrame:
    """Table II with our measurements (``*_measured``) and the relative errors of our GFLOPs against the paper's
    column and against the original code's ptflops figures."""
    table = pd.read_csv(published)
    measured = pd.read_csv(profile) if profile.is_file() else pd.DataFrame({"model": []})
    columns = {k: v for k, v in MEASURED.items() if k in measured}
    extra = [c for c in ("device", "threads", "torch") if c in measured]  # the conditions of the measurement
    table = table.merge(measured[["model", *columns, *extra]].rename(columns=columns), on="model", how="left")
    for column in MEASURED.values():
        if column not in table:
            table[column] = float("nan")
    for column in ("gflops_measured", "gflops_ptflops_measured"):
        stem = column.removesuffix("_measured")
        table[f"{stem}_rel_err_paper"] = table[column] / table["gflops"] - 1
        table[f"{stem}_rel_err_original_code"] = table[column] / table["gflops_original_code"] - 1
    return table


def disagreements(table2_rows: pd.DataFrame, tables3to5: pd.DataFrame) -> list[str]:
    """Where Table II and the one-stream NTU-60 entries of Table III differ (both are kept, spec skeletons.md B5)."""
    one_stream = tables3to5[tables3to5["streams"] == 1].set_index("model")
    pairs = (
        ("xsub", "ntu60_xsub", "X-Sub", 1),
        ("xview", "ntu60_xview", "X-View", 1),
        ("gflops", "gflops_ntu", "GFLOPs", 2),
    )
    notes = []
    for _, row in table2_rows.iterrows():
        if row["model"] not in one_stream.index:
            continue
        other = one_stream.loc[row["model"]]
        for column2, column3, label, digits in pairs:
            if abs(row[column2] - other[column3]) > 1e-9:
                two, three = f"{row[column2]:.{digits}f}", f"{other[column3]:.{digits}f}"
                notes.append(f"{row['model']} {label}: {two} in Table II, {three} in Table III")
    return notes


def read_runs(path: Path) -> pd.DataFrame:
    """The user's runs averaged per Tables III-V cell: columns model, streams, the accuracy columns and ``runs``."""
    runs = pd.read_csv(path, dtype={"subset": str}).fillna({"subset": ""})
    missing = {"model", "streams", "dataset", "subset", "top1"} - set(runs.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (module docstring lists them)")
    cells = []
    for (dataset, subset, metric), column in RUN_COLUMNS.items():
        if metric not in runs:
            continue
        chosen = runs[(runs["dataset"] == dataset) & (runs["subset"] == subset)].dropna(subset=[metric])
        cells.append(chosen.assign(column=column, value=chosen[metric])[["model", "streams", "column", "value"]])
    cells = pd.concat(cells, ignore_index=True)
    unknown = sorted(set(runs["dataset"] + "/" + runs["subset"]) - {f"{d}/{s}" for d, s, _ in RUN_COLUMNS})
    if unknown:
        raise ValueError(
            f"{path}: unknown dataset/subset {unknown}; known: ntu60/xsub, ntu60/xview, ntu120/xsub, "
            "ntu120/xset, kinetics/ (empty subset)"
        )
    mean = cells.pivot_table(index=["model", "streams"], columns="column", values="value", aggfunc="mean")
    count = runs.groupby(["model", "streams"]).size().rename("runs")  # one row per run
    return mean.add_suffix("_ours").join(count).reset_index()


def _run_row(metrics_path: Path, names: dict[str, str]) -> dict[str, object] | str:
    """One run's row of ``skeletons_runs.csv``, or why it is left out."""
    config_path = metrics_path.parent / "config.yaml"
    if not config_path.is_file():
        return "no config.yaml beside it"
    config = yaml.safe_load(config_path.read_text()) or {}
    model, data = config.get("model") or {}, config.get("data") or {}
    variant = model.get("variant")
    if variant not in names:
        return f"model.variant {variant!r} is not a Table II net"
    if data.get("stream") != "joint":  # Tables III-V's S = 1 rows are joint; fused streams: experiments.streams
        return f"stream {data.get('stream')!r}, not joint"
    metrics = json.loads(metrics_path.read_text())
    if "test/top1" not in metrics:
        return "no test/top1 in metrics.json"
    dataset = data.get("dataset")
    subset = "" if dataset == "kinetics" else (data.get("subset") or "")
    top5 = metrics.get("test/top5")
    return {"model": names[variant], "streams": 1, "dataset": dataset, "subset": subset,
            "top1": 100 * metrics["test/top1"], "top5": None if top5 is None else 100 * top5,
            "run_dir": str(metrics_path.parent)}  # fmt: skip


def collect(run_dirs: Sequence[Path], out: Path, replace: bool = False) -> pd.DataFrame:
    """``skeletons_runs.csv`` from every ``metrics.json`` under ``run_dirs``; the runs left out are printed."""
    if out.exists() and not replace:
        raise ValueError(f"{out} exists: name another results set (--set <name>), another --out, or pass --replace")
    names = dict(zip(*pd.read_csv(TABLE2_PUBLISHED)[["registry_name", "model"]].to_numpy().T))
    rows = []
    for metrics_path in sorted(p for d in run_dirs for p in Path(d).rglob("metrics.json")):
        row = _run_row(metrics_path, names)
        if isinstance(row, str):
            print(f"left out {metrics_path}: {row}")
        else:
            rows.append(row)
    if not rows:
        raise ValueError(f"no joint-stream test run of a Table II net under {[str(d) for d in run_dirs]}")
    runs = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out, index=False)
    print(f"wrote {out} ({len(runs)} runs)")
    return runs


def tables3to5(published: Path = TABLES3TO5_PUBLISHED, runs: Path | None = None) -> pd.DataFrame:
    """Tables III-V as published, with ``<column>_ours`` (the mean of the user's runs) and ``runs`` where any."""
    table = pd.read_csv(published)
    if runs is not None and runs.is_file():
        table = table.merge(read_runs(runs), on=["model", "streams"], how="left")
    for column in ACCURACIES:
        if f"{column}_ours" not in table:
            table[f"{column}_ours"] = float("nan")
    if "runs" not in table:
        table["runs"] = 0
    table["runs"] = table["runs"].fillna(0).astype(int)
    return table


def _num(value: float, digits: int) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def table2_markdown(table: pd.DataFrame, notes: list[str]) -> str:
    """Table II: paper | ours per column."""
    head = (
        "| Model | frames/pred | X-Sub | X-View | Params M paper / ours | Max mem MB paper / ours | GFLOPs paper | "
        "GFLOPs original code | GFLOPs ours ptflops | GFLOPs ours MACs | CPU preds/s paper | CPU preds/s ours "
        "(IQR) | GPU preds/s paper |"
    )
    lines = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for _, r in table.iterrows():
        busy = " busy" if str(r["cpu_measured_busy"]) == "True" else ""
        cpu = f"{r['cpu_measured']:.2f} ({r['cpu_measured_iqr']:.2g}){busy}" if pd.notna(r["cpu_measured"]) else ""
        cells = [
            r["model"], str(int(r["frames_per_pred"])), _num(r["xsub"], 1), _num(r["xview"], 1),
            f"{r['params_m']:.2f} / {_num(r['params_m_measured'], 3)}",
            f"{r['mem_mb']:.1f} / {_num(r['mem_mb_measured'], 1)}", _num(r["gflops"], 2),
            _num(r["gflops_original_code"], 3), _num(r["gflops_ptflops_measured"], 3), _num(r["gflops_measured"], 3),
            _num(r["cpu"], 1), cpu, _num(r["gpu"], 1),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    measured = table["gflops_measured"].notna()
    where = ""
    if measured.any():
        first = table[measured].iloc[0]
        threads = int(first["threads"]) if pd.notna(first.get("threads")) else "?"
        where = f" on {first.get('device', '?')}, {threads} threads, batch 1, torch {first.get('torch', '?')}"
    note = [
        "",
        "Published: Table II of arXiv 2203.11009 (NTU-60 joints, top-1 %; GPU: RTX 2080 Ti at the largest fitting "
        "batch). GFLOPs original code: ptflops 0.6.9 on LukasHedegaard/continual-skeletons a8fe293. Ours"
        f"{where}: GFLOPs as multiply-accumulates executed (MACs) and in ptflops' convention; peak memory of one "
        "call (CPU: live tensor storages; the paper: CUDA max_memory_allocated); CPU predictions/s: median (IQR) of "
        "the per-call rates, 'busy' where other processes shared the cores.",
    ]
    if not measured.any():
        note.append("No profile CSV was found: the measured columns are empty (make profile-skeletons).")
    if notes:
        note.append("Tables II and III disagree (both kept): " + "; ".join(notes) + ".")
    return "\n".join(lines + note) + "\n"


def tables3to5_markdown(table: pd.DataFrame) -> str:
    """Tables III-V: published, with '/ ours (n)' in the cells the user's runs fill."""
    names = ["NTU60 X-Sub", "NTU60 X-View", "NTU120 X-Sub", "NTU120 X-Set", "Kinetics top-1", "Kinetics top-5"]
    head = "| Model | S | " + " | ".join(names) + " | GFLOPs NTU (Kinetics) |"
    lines = [head, "|" + " --- |" * (len(names) + 3)]
    for _, r in table.iterrows():
        cells = [r["model"] + ("†" if str(r.get("authors_run")) == "True" else ""), str(int(r["streams"]))]
        for column in ACCURACIES:
            ours = r[f"{column}_ours"]
            cells.append(f"{r[column]:.1f}" + (f" / {ours:.1f}" if pd.notna(ours) else ""))
        cells.append(f"{r['gflops_ntu']:.2f} ({r['gflops_kinetics']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    ran = int(table["runs"].sum())
    source = "Published: Tables III-V of arXiv 2203.11009 (top-1/top-5 %; S = streams, 2 = joint + bone; † the "
    source += "authors' runs of the offline models)."
    ours = (
        f"'published / ours': the mean of {ran} of the user's runs ({RUNS_NAME})."
        if ran
        else (f"No runs of this framework are in the results set ({RUNS_NAME}): published numbers only.")
    )
    return "\n".join([*lines, "", f"{source} {ours}"]) + "\n"


def draw(table: pd.DataFrame, out: Path) -> Path:
    """Published NTU-60 X-Sub top-1 vs GFLOPs per prediction (log): published as hollow markers, ours (executed
    MACs) filled, joined by a line; offline nets squares, continual twins circles."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for _, r in table.iterrows():
        color, marker = COLORS.get(r["family"], "k"), "o" if r["mode"] == "frame" else "s"
        ax.scatter(r["gflops"] * 1e9, r["xsub"], marker=marker, s=55, facecolors="none", edgecolors=color, zorder=3)
        if pd.notna(r["gflops_measured"]):
            ax.scatter(r["gflops_measured"] * 1e9, r["xsub"], marker=marker, s=40, color=color, zorder=4)
            ax.plot([r["gflops"] * 1e9, r["gflops_measured"] * 1e9], [r["xsub"]] * 2, color=color, lw=0.8, zorder=2)
    # labels beside the measured marker where there is one
    points = table.assign(
        x=table["gflops_measured"].fillna(table["gflops"]) * 1e9, y=table["xsub"], text=table["model"]
    )
    xs = pd.concat([table["gflops"], table["gflops_measured"].dropna()]) * 1e9
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 2, xs.max() * 3)
    ax.set_ylim(table["xsub"].min() - 1, table["xsub"].max() + 1)
    count_axis(ax.xaxis)
    ax.set_xlabel("FLOPs per prediction (offline: per 300-frame clip; continual: per prediction step(s))")
    ax.set_ylabel("NTU-60 X-Sub top-1 (%), as published (Table II)")
    measured = int(table["gflops_measured"].notna().sum())
    ax.set_title(
        f"Continual ST-GCNs (arXiv 2203.11009): accuracy vs FLOPs, {measured} of {len(table)} nets profiled here",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    gray = {"color": "0.35", "ls": ""}
    handles = [Patch(color=COLORS[f], label=FAMILIES[f]) for f in FAMILIES if f in set(table["family"])]
    handles += [
        Line2D([], [], marker="s", **gray, label="offline: one prediction per clip"),
        Line2D([], [], marker="o", **gray, label="continual: one prediction per 4 frames, or per frame (* twins)"),
        Line2D([], [], marker="o", markerfacecolor="none", **gray, label="hollow: GFLOPs as published"),
        Line2D([], [], marker="o", **gray, label="filled: MACs executed, measured here"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    place_labels(ax, points)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def build(set_name: str = DEFAULT, profile: Path | None = None, runs: Path | None = None,
          results_dir: Path | None = None, figures_dir: Path | None = None) -> list[Path]:  # fmt: skip
    """Tables and figure into a results set; profile and runs are the set's own, else the reference ones."""
    set_results, set_figures = set_dirs(set_name)
    results_dir, figures_dir = results_dir or set_results, figures_dir or set_figures
    outputs = [results_dir / f"{name}.{ext}" for name in (TABLE2_NAME, TABLES3TO5_NAME) for ext in ("csv", "md")]
    figure = figures_dir / FIGURE_NAME
    check_writable(set_name, *outputs, figure)
    profile = profile or own_or_reference(results_dir, PROFILE_NAME)
    runs = runs or own_or_reference(results_dir, RUNS_NAME)
    for path, what in ((profile, "published FLOPs only"), (runs, "published accuracies only")):
        print(f"reading {path}" + ("" if path.is_file() else f" (absent: {what})"))
    t2, t3 = table2(TABLE2_PUBLISHED, profile), tables3to5(TABLES3TO5_PUBLISHED, runs)
    results_dir.mkdir(parents=True, exist_ok=True)
    t2.to_csv(outputs[0], index=False)
    outputs[1].write_text(table2_markdown(t2, disagreements(t2, t3)))
    t3.to_csv(outputs[2], index=False)
    outputs[3].write_text(tables3to5_markdown(t3))
    draw(t2, figure)
    print(outputs[1].read_text())
    for path in (*outputs, figure):
        print(f"wrote {path}")
    return [*outputs, figure]


def main(argv: Sequence[str] | None = None) -> None:
    study_main(
        __doc__,
        profile_name=PROFILE_NAME,
        runs_name=RUNS_NAME,
        runs_help="the user's run accuracies",
        collect_help="the joint-stream test runs under run dirs",
        collect=collect,
        build=build,
        argv=argv,
    )


if __name__ == "__main__":
    main()
