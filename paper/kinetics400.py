"""Kinetics-400 accuracy vs FLOPs (Continual 3D CNNs, arXiv 2106.00050, the results figure).

Merges the published table (``results/kinetics400_published.csv``) with what our profiler measured
(``results/kinetics400_profile.csv``, written by ``make profile-cox3d``) into ``results/kinetics400.csv``, and
draws ``figures/kinetics400_acc_vs_flops.png``: clip models as squares, continual models as circles, the global
pool size beside each point, arrows from each clip model to its continual twins. Reads CSVs only.

Measured GFLOPs come in three conventions (``modules/profiling.py``), each with its error relative to the paper's
column (``measured / paper - 1``):

* ``gflops_measured``: conv/matmul multiply-accumulates executed per prediction (ours; the figure plots these);
* ``gflops_ptflops_measured``: plus ptflops' BatchNorm/ReLU/pooling/bias terms, each module call once;
* ``gflops_co3d_published_measured``: ptflops as the paper ran it (per frame, BatchNorm and ReLU counted twice
  and only the emitting step of a strided net), which reproduces the paper's column.

    python paper/kinetics400.py            # or: make figures
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

HERE = Path(__file__).resolve().parent
PUBLISHED = HERE / "results" / "kinetics400_published.csv"
PROFILE = HERE / "results" / "kinetics400_profile.csv"
MERGED = HERE / "results" / "kinetics400.csv"
FIGURE = HERE / "figures" / "kinetics400_acc_vs_flops.png"
COLORS = {"x3d": "tab:blue", "slow": "tab:orange", "i3d": "tab:green", "r2plus1d": "tab:red",
          "slowfast": "tab:purple", "rcu": "tab:gray"}  # fmt: skip
#: profile CSV column -> merged column, one per FLOP convention (the first is the one plotted)
MEASURED_GFLOPS = {
    "gflops": "gflops_measured",
    "gflops_ptflops": "gflops_ptflops_measured",
    "gflops_co3d_published": "gflops_co3d_published_measured",
}


def merge(published: Path = PUBLISHED, profile: Path = PROFILE) -> pd.DataFrame:
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


def draw(table: pd.DataFrame, out: Path = FIGURE) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for _, row in table.iterrows():
        marker = "o" if row["mode"] == "frame" else "s"
        ax.scatter(row["gflops_plotted"], row["top1"], marker=marker, s=50, color=COLORS.get(row["family"], "k"))
        ax.annotate(f"{row['model']} ({int(row['pool_size'])})", (row["gflops_plotted"], row["top1"]),
                    textcoords="offset points", xytext=(4, 3), fontsize=7)  # fmt: skip
    points = table.set_index("model")
    for _, twin in table[table["twin_of"].notna() & (table["twin_of"] != "")].iterrows():
        clip_row = points.loc[twin["twin_of"]]  # the clip model whose weights the continual twin reuses
        ax.annotate("", (twin["gflops_plotted"], twin["top1"]), (clip_row["gflops_plotted"], clip_row["top1"]),
                    arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8})  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(
        "GFLOPs per prediction: conv/matmul multiply-accumulates executed, measured here\n"
        "(the paper's ptflops value where not measured; clip models: per clip, continual: per prediction)",
        fontsize=8,
    )
    ax.set_ylabel("Kinetics-400 top-1 (%)")
    measured = table["gflops_measured"].notna().sum()
    ax.set_title(f"Accuracy vs FLOPs (squares: clip, circles: continual; {measured} FLOP values measured here)")
    ax.grid(True, which="both", alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=PROFILE, help="our profiler's CSV (model,gflops,...)")
    args = parser.parse_args()
    table = merge(PUBLISHED, args.profile)
    MERGED.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(MERGED, index=False)
    print(report(table))
    print(f"wrote {MERGED} ({len(table)} rows) and {draw(table)}")


if __name__ == "__main__":
    main()
