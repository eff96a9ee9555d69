"""Kinetics-400 accuracy vs FLOPs (Continual 3D CNNs, arXiv 2106.00050, the results figure).

Merges the published table (``results/kinetics400_published.csv``) with the GFLOPs our profiler measured
(``results/kinetics400_profile.csv``, written by ``make profile-cox3d``) into ``results/kinetics400.csv``, and
draws ``figures/kinetics400_acc_vs_flops.png``: clip models as squares, continual models as circles, the global
pool size beside each point, arrows from each clip model to its continual twins. Reads CSVs only.

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


def merge(published: Path = PUBLISHED, profile: Path = PROFILE) -> pd.DataFrame:
    """Published rows with ``gflops_measured`` and ``params_m_measured`` where our profiler has the model."""
    table = pd.read_csv(published)
    if profile.is_file():
        measured = pd.read_csv(profile)[["model", "gflops", "params_m"]].rename(
            columns={"gflops": "gflops_measured", "params_m": "params_m_measured"}
        )
        table = table.merge(measured, on="model", how="left")
    else:
        table["gflops_measured"] = float("nan")
        table["params_m_measured"] = float("nan")
    table["gflops_plotted"] = table["gflops_measured"].fillna(table["gflops"])
    return table


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
    ax.set_xlabel("GFLOPs per prediction (multiply-accumulates; clip models: per clip, continual: per frame)")
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
    parser.add_argument("--profile", type=Path, default=PROFILE, help="our profiler's CSV (model,gflops,params_m)")
    args = parser.parse_args()
    table = merge(PUBLISHED, args.profile)
    MERGED.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(MERGED, index=False)
    print(f"wrote {MERGED} ({len(table)} rows) and {draw(table)}")


if __name__ == "__main__":
    main()
