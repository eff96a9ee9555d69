"""Profile every row of a paper's table: ``python -m experiments.profile_table --table kinetics400``
(``make profile-cox3d``; the tables are ``configs/profile_table/<table>.yaml``).

Builds each row's model at its registered input (clip models: one clip; continual models: one prediction after
warm-up), measures params, GFLOPs, peak memory and throughput with ``modules.profiling.profile_model``, and writes
``<output_name>`` (read by ``paper/``), the paper's GFLOPs beside ours: by default into the user's results set
``outputs/results/mine/``; the committed ``paper/results/`` copy is replaced only by ``--output`` naming it
(``RESULTS=reference``). An existing output file is replaced only with ``--replace``. GFLOPs come in conventions
(``modules/profiling/conventions.py``): ``gflops`` the executed multiply-accumulates, ``gflops_<convention>``
for each convention the table lists (e.g. ``co3d_published``, which reproduces the Co3D paper's column).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from experiments import utils
from experiments.inputs import clip_input_shape
from modules.nets import build
from modules.profiling import profile_model

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "configs" / "profile_table"
MINE = ROOT / "outputs" / "results" / "mine"  # never the committed reference copy


def _published_gflops(path: Path) -> dict[str, float]:
    """Row name -> the paper's GFLOPs: a table's ``gflops`` column by ``model``, or the ``flops_m`` rows (millions)
    of a long CSV (one row per ``metric`` and ``value``) by ``profile_row``."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if rows and "gflops" not in rows[0]:
        flops = [r for r in rows if r["metric"] == "flops_m" and r["profile_row"]]
        return {r["profile_row"]: round(float(r["value"]) / 1e3, 6) for r in flops}
    return {r["model"]: float(r["gflops"]) for r in rows if r["gflops"]}


def profile_row(name: str, spec: Any, conventions: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One table row: ``spec`` is its entry in the table file."""
    overrides = OmegaConf.to_container(spec.get("overrides") or OmegaConf.create({}))
    shape = list(clip_input_shape(spec.net))
    shape[1] = int(spec.get("frames") or shape[1])
    shape[0] = int(overrides.get("dim_feature", shape[0]))  # feature nets ((E, T) windows): the width is a builder key
    torch.manual_seed(0)
    net = build(spec.net, **overrides)
    result = profile_model(
        net, mode=spec.mode, input_shape=shape, batch_size=args.batch_size, device=args.device,
        warmup=args.warmup, repeats=args.repeats, convention="macs", min_time_s=args.min_time,
    )  # fmt: skip
    by_convention = result["gflops_by_convention"]
    clip = spec.mode == "clip"
    return {
        "model": name, "registry_name": spec.net, "mode": spec.mode, "input_shape": "x".join(map(str, shape)),
        "params_m": result["params"] / 1e6, "gflops": by_convention["macs"],
        **{f"gflops_{c}": by_convention[c] for c in conventions},
        "peak_memory_mb": result["peak_memory_bytes"] / 2**20,
        # median and interquartile range of the per-call rates, over timed_calls calls
        "throughput_median": result["throughput_median"], "throughput_iqr": result["throughput_iqr"],
        "timed_calls": result["timed_calls"], "throughput_busy": result["throughput_busy"],
        # continual rows: one prediction per `frames_per_prediction` frames (CoI3D: 2)
        "throughput_unit": "clips/s" if clip else "predictions/s",
        "frames_per_prediction": shape[1] if clip else result["steps_per_prediction"],
        "device": result["device_name"], "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "torch": result["torch_version"],
    }  # fmt: skip


def _arguments() -> tuple[argparse.Namespace, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="kinetics400", help=f"a table of {TABLES} (name without .yaml)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls at least")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls at least, per row")
    parser.add_argument("--only", default="", help="comma-separated rows (default: all)")
    parser.add_argument("--output", type=Path, help="default: outputs/results/mine/<the table's output_name>")
    parser.add_argument("--replace", action="store_true", help="overwrite an existing --output file")
    args = parser.parse_args()
    path = TABLES / f"{args.table}.yaml"
    if not path.exists():
        parser.error(f"no table {path}; known: {sorted(p.stem for p in TABLES.glob('*.yaml'))}")
    table = OmegaConf.load(path)
    args.output = args.output or MINE / table.output_name
    if args.output.exists() and not args.replace:  # checked before minutes of profiling, never silently replaced
        parser.error(f"{args.output} exists: name another results set (RESULTS=<name>) or pass --replace")
    args.names = [n for n in args.only.split(",") if n] or list(table.rows)
    unknown = sorted(set(args.names) - set(table.rows))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(table.rows)}")
    return args, table


def main() -> None:
    args, table = _arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    published = _published_gflops(ROOT / table.published)
    conventions = list(table.conventions)
    rows = []
    for name in tqdm(args.names, desc="profiling", unit="model"):
        row = profile_row(name, table.rows[name], conventions, args)
        rows.append({**row, "gflops_paper": published.get(name, "")})
        others = ", ".join(f"{c} {row[f'gflops_{c}']:.3f}" for c in conventions)
        paper = rows[-1]["gflops_paper"]
        tqdm.write(
            f"{name:<15} {row['params_m']:7.2f} M  GFLOPs {row['gflops']:8.3f} ({others}; paper {paper})"
            f"  {row['throughput_median']:8.2f} {row['throughput_unit']} (IQR {row['throughput_iqr']:.2g})"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    headline = {"rows": len(rows), "rows timed on a busy machine": sum(row["throughput_busy"] for row in rows)}
    utils.report_run("profile_table", args.output.parent, {"profile table": args.output}, headline)


if __name__ == "__main__":
    main()
