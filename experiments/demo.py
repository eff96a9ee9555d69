"""The whole chain on the embedded default, on CPU: ``python -m experiments.demo`` (``make demo``).

1. trains X3D-tiny on Moving Digits clips (generated on first use) and tests it under the clip protocol;
2. evaluates the same checkpoint as CoX3D-tiny, stepwise, under the frame protocol (same weights and keys);
3. profiles both (GFLOPs per prediction, params, throughput);
4. writes ``results.csv`` and ``acc_vs_flops.png`` into the run directory and prints where they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import utils
from experiments.eval import evaluate
from experiments.profile import profile
from experiments.train import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)


def _stage(name: str, experiment: str, out: Path, extra: list[str]) -> DictConfig:
    cfg = hydra.compose(name, overrides=[f"experiment={experiment}", f"paths.output_dir={out}", *extra])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _best_checkpoint(run: Path) -> Path:
    best = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    if not best:
        raise FileNotFoundError(f"training wrote no checkpoint under {run / 'checkpoints'}")
    return best[-1]


def _figure(table: pd.DataFrame, path: Path, num_classes: int = 10) -> None:
    """Test top-1 vs multiply-accumulates per prediction of the clip model and its continual twin (same weights),
    every value measured in this run; a dotted line marks chance (Moving Digits: 10 classes)."""
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
    ax.set_ylabel("Moving Digits test top-1 (%)")
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


def demo(cfg: DictConfig) -> pd.DataFrame:
    out = Path(cfg.paths.output_dir)
    extra = list(cfg.overrides)
    log.info("1/3 training the clip model (Moving Digits is generated on first use)")
    clip_metrics = train(_stage("train.yaml", cfg.train_experiment, out / "train", [*extra, *cfg.train_overrides]))
    ckpt = _best_checkpoint(out / "train")
    log.info(f"2/3 evaluating {ckpt.name} stepwise as the continual twin")
    frame_metrics = evaluate(
        _stage("eval.yaml", cfg.continual_experiment, out / "eval_frame", [*extra, f"ckpt_path={ckpt}"])
    )
    log.info("3/3 profiling both")
    rows: list[dict[str, Any]] = []
    for experiment, mode, metrics in (
        (cfg.train_experiment, "clip", clip_metrics),
        (cfg.continual_experiment, "frame", frame_metrics),
    ):
        overrides = [*extra, *cfg.profile_overrides, f"mode={mode}", f"device={cfg.device}"]
        stage = _stage("profile.yaml", experiment, out / f"profile_{mode}", overrides)
        result = profile(stage)
        rows.append({
            "model": result["model"], "protocol": mode, "top1": metrics["test/top1"],
            "gflops": result["gflops_per_prediction"], "params": result["params"],
            "predictions_per_s": result["throughput_median"], "predictions_per_s_iqr": result["throughput_iqr"],
            "device": result["device"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    _figure(table, out / "acc_vs_flops.png")
    print(table.to_string(index=False))
    files = {"results": out / "results.csv", "figure": out / "acc_vs_flops.png", "best checkpoint": ckpt}
    files |= {f"{stage} run": out / stage for stage in ("train", "eval_frame", "profile_clip", "profile_frame")}
    headline = {
        f"{r['model']} ({r['protocol']})": f"top-1 {r['top1']:.3f}, {r['gflops'] * 1e3:.3g} MFLOPs, "
        f"{r['predictions_per_s']:.4g} predictions/s (median)"
        for r in rows
    }
    utils.report_run("demo", out, files, headline)
    return table


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo.yaml")
def main(cfg: DictConfig) -> None:
    log.info("demo config:\n" + OmegaConf.to_yaml(cfg))
    demo(cfg)


if __name__ == "__main__":
    main()
