"""Kinetics-400 accuracy vs FLOPs (Continual 3D CNNs, arXiv 2106.00050, the results figure).

Merges the published table (``results/kinetics400_published.csv``) with what our profiler measured
(``kinetics400_profile.csv``, written by ``make profile-cox3d``) into ``kinetics400.csv``, and draws
``kinetics400_acc_vs_flops.png``: published top-1 against FLOPs per prediction, clip models as squares, continual
models as circles, filled where the FLOPs were measured here, the global pool size in parentheses, arrows from each
clip model to its continual twins. Reads CSVs only.

Where (``common.py``): by default into the user's results set ``outputs/results/mine/``, reading its own profile
CSV if it has one and the committed reference profile otherwise; ``--set reference`` (``make figures
RESULTS=reference``) replaces the committed ``paper/results/kinetics400.csv`` and
``paper/figures/kinetics400_acc_vs_flops.png``.

Measured GFLOPs come in three conventions (``modules/profiling/conventions.py``), each with its error relative to
the paper's column (``measured / paper - 1``):

* ``gflops_measured``: conv/matmul multiply-accumulates executed per prediction (ours; the figure plots these);
* ``gflops_ptflops_measured``: plus ptflops' BatchNorm/ReLU/pooling/bias terms, each module call once;
* ``gflops_co3d_published_measured``: ptflops as the paper ran it (per frame, BatchNorm and ReLU counted twice
  and only the emitting step of a strided net), which reproduces the paper's column.

    python paper/kinetics400.py [--set mine|reference|<name>] [--profile <csv>]     # or: make figures
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file, however it is loaded
from common import DEFAULT, REFERENCE_RESULTS, ReferenceSetError, check_writable, count_axis, own_or_reference, set_dirs
from plotting import place_labels

HERE = Path(__file__).resolve().parent
PUBLISHED = REFERENCE_RESULTS / "kinetics400_published.csv"
PROFILE_NAME = "kinetics400_profile.csv"
MERGED_NAME = "kinetics400.csv"
FIGURE_NAME = "kinetics400_acc_vs_flops.png"
COLORS = {"x3d": "tab:blue", "slow": "tab:orange", "i3d": "tab:green", "r2plus1d": "tab:red",
          "slowfast": "tab:purple", "rcu": "tab:gray"}  # fmt: skip
FAMILIES = {"x3d": "X3D", "slow": "Slow", "i3d": "I3D", "r2plus1d": "R(2+1)D", "slowfast": "SlowFast", "rcu": "RCU"}
CLASSES = 400  # chance 0.25 %, far below every model: named in the legend rather than drawn
#: profile CSV column -> merged column, one per FLOP convention (the first is the one plotted)
MEASURED_GFLOPS = {
    "gflops": "gflops_measured",
    "gflops_ptflops": "gflops_ptflops_measured",
    "gflops_co3d_published": "gflops_co3d_published_measured",
}


def merge(published: Path = PUBLISHED, profile: Path = REFERENCE_RESULTS / PROFILE_NAME) -> pd.DataFrame:
    """Published rows with our measured GFLOPs (every convention of the profile CSV), their error relative to the
    paper (``*_rel_err``) and ``params_m_measured`` where our profiler has the model."""
    table = pd.read_csv(published)
    measured = pd.read_csv(profile) if profile.is_file() else pd.DataFrame({"model": []})
    columns = {k: v for k, v in {**MEASURED_GFLOPS, "params_m": "params_m_measured"}.items() if k in measured}
    table = table.merge(measured[["model", *columns]].rename(columns=columns), on="model", how="left")
    for column in [*MEASURED_GFLOPS.values(), "params_m_measured"]:
        if column not in table:
            table[column] = float("nan")
    for column in MEASURED_GFLOPS.values():
        table[column.removesuffix("_measured") + "_rel_err"] = table[column] / table["gflops"] - 1
    table["gflops_plotted"] = table["gflops_measured"].fillna(table["gflops"])
    return table


def report(table: pd.DataFrame) -> str:
    """Paper vs measured GFLOPs of every measured row, in each convention, as text."""
    rows = table[table["gflops_measured"].notna()]
    lines = [f"{'model':<15} {'paper':>7} {'MACs':>8} {'err':>7} {'ptflops':>8} {'err':>7} {'as publ.':>8} {'err':>7}"]
    for _, r in rows.iterrows():
        cells = "".join(
            f" {r[c]:8.3f} {100 * r[c.removesuffix('_measured') + '_rel_err']:+6.1f}%" for c in MEASURED_GFLOPS.values()
        )
        lines.append(f"{r['model']:<15} {r['gflops']:7.2f}{cells}")
    return "\n".join(lines)


def _legend(ax: plt.Axes, table: pd.DataFrame) -> None:
    families = [f for f in FAMILIES if f in set(table["family"])]
    handles = [Patch(color=COLORS[f], label=FAMILIES[f]) for f in families]
    gray = {"color": "0.35", "ls": ""}
    handles += [
        Line2D([], [], marker="s", **gray, label="clip model: one prediction per clip"),
        Line2D([], [], marker="o", **gray, label="continual model: one prediction per frame step"),
        Line2D([], [], marker="o", **gray, label="filled: FLOPs measured here"),
        Line2D([], [], marker="o", markerfacecolor="none", **gray, label="hollow: FLOPs as published, not profiled"),
        Line2D([], [], color="0.6", lw=1, marker=">", markevery=[1], label="clip model → continual twin, same weights"),
        Line2D([], [], ls="", label="(n): global pool size in frames"),
        Line2D([], [], ls="", label=f"top-1 as published; chance {100 / CLASSES:g} % is off the axis"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              handlelength=1.6, borderaxespad=0)  # fmt: skip


def draw(table: pd.DataFrame, out: Path) -> Path:
    """Published top-1 vs FLOPs per prediction (log axis, measured multiply-accumulates where we have them)."""
    fig, ax = plt.subplots(figsize=(10, 6))
    points = table.assign(x=table["gflops_plotted"] * 1e9, y=table["top1"],
                          text=[f"{m} ({int(p)})" for m, p in zip(table["model"], table["pool_size"])])  # fmt: skip
    for _, row in points.iterrows():
        color = COLORS.get(row["family"], "k")
        measured = pd.notna(row["gflops_measured"])
        ax.scatter(row["x"], row["y"], marker="o" if row["mode"] == "frame" else "s", s=50, zorder=3, linewidths=1.5,
                   facecolors=color if measured else "none", edgecolors=color)  # fmt: skip
    by_model = points.set_index("model")
    for _, twin in points[points["twin_of"].notna() & (points["twin_of"] != "")].iterrows():
        clip_row = by_model.loc[twin["twin_of"]]  # the clip model whose weights the continual twin reuses
        ax.annotate("", (twin["x"], twin["y"]), (clip_row["x"], clip_row["y"]),
                    arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8, "shrinkA": 5, "shrinkB": 5})  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(points["x"].min() / 1.6, points["x"].max() * 3.5)  # room for the labels right of the heaviest
    ax.set_ylim(points["y"].min() - 1.5, points["y"].max() + 1.5)
    count_axis(ax.xaxis)
    ax.set_xlabel("FLOPs per prediction (multiply-accumulates executed; clip models: per clip, continual: per step)")
    ax.set_ylabel("Kinetics-400 top-1 (%), as published")
    measured = table["gflops_measured"].notna().sum()
    ax.set_title(f"Continual 3D CNNs (arXiv 2106.00050): accuracy vs FLOPs, {measured} of {len(table)} FLOP values "
                 "measured here", fontsize=10)  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, table)
    fig.tight_layout()
    place_labels(ax, points)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def build(set_name: str = DEFAULT, profile: Path | None = None, results_dir: Path | None = None,
          figures_dir: Path | None = None) -> list[Path]:  # fmt: skip
    """Merge and draw into a results set; the profile is the set's own, else the reference one. Returns the paths."""
    set_results, set_figures = set_dirs(set_name)
    results_dir, figures_dir = results_dir or set_results, figures_dir or set_figures
    merged, figure = results_dir / MERGED_NAME, figures_dir / FIGURE_NAME
    check_writable(set_name, merged, figure)
    profile = profile or own_or_reference(results_dir, PROFILE_NAME)
    print(f"reading {PUBLISHED} and {profile}" + ("" if profile.is_file() else " (absent: published FLOPs only)"))
    table = merge(PUBLISHED, profile)
    merged.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(merged, index=False)
    print(report(table))
    draw(table, figure)
    print(f"wrote {merged} ({len(table)} rows)\nwrote {figure}")
    return [merged, figure]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="set_name", default=DEFAULT,
                        help="reference (the committed files) or a name: outputs/results/<name>/")  # fmt: skip
    parser.add_argument("--profile", type=Path, help="our profiler's CSV (default: the set's, else the reference)")
    parser.add_argument("--results-dir", type=Path, help="where kinetics400.csv goes (default: the set's)")
    parser.add_argument("--figures-dir", type=Path, help="where the PNG goes (default: the set's)")
    args = parser.parse_args(argv)
    try:
        build(args.set_name, args.profile, args.results_dir, args.figures_dir)
    except (ValueError, ReferenceSetError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
