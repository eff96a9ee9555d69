"""Figures the demos draw from the values they measured (``experiments.demo``): accuracy against the
multiply-accumulates per prediction of a clip model and its continual twin."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["accuracy_vs_macs", "map_vs_macs"]


def accuracy_vs_macs(table: pd.DataFrame, path: Path, *, num_classes: int, dataset: str) -> None:
    """Test top-1 vs multiply-accumulates per prediction of the clip model and its continual twin (same weights),
    every value measured in this run; a dotted line marks chance. ``table`` has a row per model: ``model``,
    ``protocol`` (``clip`` or ``frame``), ``top1`` (a fraction) and ``gflops`` (per prediction)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def si(value: float, _position: object = None) -> str:  # 5.5M, not 10^6.7
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
            if value >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.3g}"

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    points = table.assign(x=table["gflops"] * 1e9, y=table["top1"] * 100)
    styles = {"clip": ("s", "tab:blue"), "frame": ("o", "tab:orange")}
    for _, row in points.iterrows():
        marker, color = styles.get(row["protocol"], ("D", "k"))
        ax.scatter(row["x"], row["y"], marker=marker, color=color, s=60, zorder=3)
    clips, frames = points[points["protocol"] == "clip"], points[points["protocol"] == "frame"]
    if len(clips) and len(frames):  # the continual twin runs the clip model's weights stepwise
        ax.annotate("", (frames["x"].iloc[0], frames["y"].iloc[0]), (clips["x"].iloc[0], clips["y"].iloc[0]),
                    arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 1, "shrinkA": 6, "shrinkB": 6})  # fmt: skip
    ax.axhline(100 / num_classes, color="0.35", ls=":", lw=1.2)
    ax.set_xscale("log")
    ax.set_xlim(points["x"].min() / 3, points["x"].max() * 3)
    ax.set_ylim(0, 100)
    # labels point inwards (inside the axes) and away from the arrow: the lower point's below it, the other's above
    middle, lowest = (points["x"].min() * points["x"].max()) ** 0.5, points["y"].idxmin()
    for i, row in points.iterrows():
        side, below = (1 if row["x"] <= middle else -1), (i == lowest and len(points) > 1)
        ax.annotate(f"{row['model']}\n{row['y']:.1f} %, {si(row['x'])} MACs", (row["x"], row["y"]), fontsize=8,
                    textcoords="offset points", xytext=(8 * side, -8 if below else 8), va="top" if below else "bottom",
                    ha="left" if side > 0 else "right")  # fmt: skip
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(si))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("multiply-accumulates per prediction (log scale)")
    ax.set_ylabel(f"{dataset} test top-1 (%)")
    ax.set_title("Clip model vs its continual twin, all values measured in this run", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker="s", color="tab:blue", label="clip model: one prediction per clip"),
        Line2D([], [], ls="", marker="o", color="tab:orange", label="continual twin: one prediction per frame"),
        Line2D([], [], color="0.5", marker=">", markevery=[1], label="same weights, clip → stepwise"),
        Line2D([], [], color="0.35", ls=":", label=f"chance: {100 / num_classes:g} % ({num_classes} classes)"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)  # off data
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def map_vs_macs(table: pd.DataFrame, path: Path, *, dataset: str) -> None:
    """Online detection mAP (64-step windows and whole streams) vs multiply-accumulates per prediction, every value
    measured in this run (``experiments.demo_transformers``). ``table`` has a row per net: ``model``,
    ``prediction`` (``window``: an offline net re-runs its window per prediction; ``step``: a continual net),
    ``window_mAP``, ``stream_mAP`` (fractions) and ``mmacs_per_prediction``."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    colors = {"window": "tab:blue", "step": "tab:orange"}
    for _, row in table.iterrows():
        x, color = row["mmacs_per_prediction"] * 1e6, colors.get(row["prediction"], "k")
        ax.scatter(x, row["window_mAP"] * 100, marker="s", color=color, s=55, zorder=3)
        ax.scatter(x, row["stream_mAP"] * 100, marker="o", facecolors="none", edgecolors=color, s=55, zorder=3)
        ax.annotate(f"{row['model']}\n{row['window_mAP'] * 100:.1f} %", (x, row["window_mAP"] * 100), fontsize=8,
                    textcoords="offset points", xytext=(7, 4))  # fmt: skip
    ax.set_xscale("log")
    x = table["mmacs_per_prediction"] * 1e6
    ax.set_xlim(x.min() / 3, x.max() * 4)
    ax.set_ylim(0, 100)
    ax.set_xlabel("multiply-accumulates per prediction (log scale)")
    ax.set_ylabel(f"{dataset}: test mAP (%)")
    ax.set_title("Offline windows vs continual steps, all values measured in this run", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker="s", color="tab:blue", label="offline: the whole window per prediction"),
        Line2D([], [], ls="", marker="s", color="tab:orange", label="continual: one step per prediction"),
        Line2D([], [], ls="", marker="s", color="0.4", label="mAP on 64-step windows (the paper's protocol)"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", color="0.4", label="mAP on whole streams"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
