"""Profile every model of the Continual 3D CNNs Kinetics table: ``python -m experiments.profile_table``
(``make profile-cox3d``).

Builds each model at the paper's input (clip models: one clip; continual models: one prediction after warm-up),
measures params, GFLOPs, peak memory and throughput with ``modules.profiling.profile_model``, and writes
``kinetics400_profile.csv`` (read by ``paper/kinetics400.py``), with the paper's GFLOPs beside ours: by default into
the user's results set ``outputs/results/mine/``; the committed ``paper/results/kinetics400_profile.csv`` is replaced
only by ``--output`` naming it (``make profile-cox3d RESULTS=reference``). An existing output file is replaced
only with ``--replace``.
GFLOPs come in three conventions (``modules.profiling`` docstring):

* ``gflops``: the multiply-accumulates of the conv/matmul ops executed per prediction (ours);
* ``gflops_ptflops``: plus ptflops' BatchNorm/ReLU/pooling/bias terms, each executed module call once;
* ``gflops_co3d_published``: ptflops as the paper ran it on continual-inference, per frame counting BatchNorm and
  ReLU twice and only the emitting step of a strided net (CoI3D). It reproduces the paper's column.

    python -m experiments.profile_table [--device cpu|cuda] [--batch-size 1] [--repeats 5] [--only X3D-S,CoX3D-S_13]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from tqdm import tqdm

from experiments import utils
from modules.nets import build
from modules.profiling import profile_model

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "paper" / "results" / "kinetics400_published.csv"
OUTPUT = ROOT / "outputs" / "results" / "mine" / "kinetics400_profile.csv"  # never the committed reference copy

# paper row -> (registry name, mode, frames, crop, builder overrides)
ROWS: dict[str, tuple[str, str, int, int, dict]] = {
    "X3D-XS": ("x3d_xs", "clip", 4, 160, {}),
    "X3D-S": ("x3d_s", "clip", 13, 160, {}),
    "X3D-M": ("x3d_m", "clip", 16, 224, {}),
    "X3D-L": ("x3d_l", "clip", 16, 312, {}),
    "CoX3D-S_13": ("cox3d_s", "frame", 13, 160, {"temporal_window": 13}),
    "CoX3D-S_64": ("cox3d_s", "frame", 13, 160, {"temporal_window": 64}),
    "CoX3D-M_16": ("cox3d_m", "frame", 16, 224, {"temporal_window": 16}),
    "CoX3D-M_64": ("cox3d_m", "frame", 16, 224, {"temporal_window": 64}),
    "CoX3D-L_16": ("cox3d_l", "frame", 16, 312, {"temporal_window": 16}),
    "CoX3D-L_64": ("cox3d_l", "frame", 16, 312, {"temporal_window": 64}),
    "Slow-8x8-R50": ("slow_8x8_r50", "clip", 8, 256, {}),
    "CoSlow_8": ("coslow_8x8_r50", "frame", 8, 256, {"temporal_window": 8}),
    "CoSlow_64": ("coslow_8x8_r50", "frame", 8, 256, {"temporal_window": 64}),
    "I3D-R50": ("i3d_8x8_r50", "clip", 8, 224, {}),
    "CoI3D_8": ("coi3d_8x8_r50", "frame", 8, 224, {"temporal_window": 4}),
    "CoI3D_64": ("coi3d_8x8_r50", "frame", 8, 224, {"temporal_window": 32}),
    "R(2+1)D-18_8": ("r2plus1d_18", "clip", 8, 112, {}),
    "R(2+1)D-18_16": ("r2plus1d_18", "clip", 16, 112, {}),
}


def _published_gflops() -> dict[str, float]:
    with PUBLISHED.open() as f:
        return {r["model"]: float(r["gflops"]) for r in csv.DictReader(f) if r["gflops"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls at least")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls at least, per row")
    parser.add_argument("--only", default="", help="comma-separated paper rows (default: all)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--replace", action="store_true", help="overwrite an existing --output file")
    args = parser.parse_args()
    if args.output.exists() and not args.replace:  # checked before minutes of profiling, never silently replaced
        parser.error(f"{args.output} exists: name another results set (make profile-cox3d RESULTS=<name>) or "
                     "pass --replace")  # fmt: skip
    names = [n for n in args.only.split(",") if n] or list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    published = _published_gflops()
    rows = []
    for name in tqdm(names, desc="profiling", unit="model"):
        registry_name, mode, frames, crop, overrides = ROWS[name]
        torch.manual_seed(0)
        result = profile_model(
            build(registry_name, **overrides), mode=mode, input_shape=(3, frames, crop, crop),
            batch_size=args.batch_size, device=args.device, warmup=args.warmup, repeats=args.repeats,
            convention="macs", min_time_s=args.min_time,
        )  # fmt: skip
        by_convention = result["gflops_by_convention"]
        rows.append({
            "model": name, "registry_name": registry_name, "mode": mode, "frames": frames, "crop": crop,
            "params_m": result["params"] / 1e6, "gflops": by_convention["macs"],
            "gflops_ptflops": by_convention["ptflops"], "gflops_co3d_published": by_convention["co3d_published"],
            "gflops_paper": published.get(name, ""),
            "peak_memory_mb": result["peak_memory_bytes"] / 2**20,
            # median and interquartile range of the per-call rates, over timed_calls calls
            "throughput_median": result["throughput_median"], "throughput_iqr": result["throughput_iqr"],
            "timed_calls": result["timed_calls"], "throughput_busy": result["throughput_busy"],
            # continual rows: one prediction per `frames_per_prediction` frames (CoI3D: 2)
            "throughput_unit": "predictions/s" if mode == "frame" else "clips/s",
            "frames_per_prediction": result["steps_per_prediction"] if mode == "frame" else frames,
            "device": result["device_name"], "threads": torch.get_num_threads(), "batch_size": args.batch_size,
            "torch": result["torch_version"],
        })  # fmt: skip
        row = rows[-1]
        tqdm.write(
            f"{name:<15} {row['params_m']:7.2f} M  GFLOPs {row['gflops']:8.3f} (ptflops {row['gflops_ptflops']:.3f}, "
            f"as published {row['gflops_co3d_published']:.3f}; paper {row['gflops_paper']})  "
            f"{row['throughput_median']:8.2f} {row['throughput_unit']} (IQR {row['throughput_iqr']:.2g})"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    busy = sum(row["throughput_busy"] for row in rows)
    headline = {"rows": len(rows), "rows timed on a busy machine": busy}
    utils.report_run("profile_table", args.output.parent, {"profile table": args.output}, headline)


if __name__ == "__main__":
    main()
