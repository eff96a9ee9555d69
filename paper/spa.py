"""Structured Pruning Adapters (Hedegaard et al., arXiv 2211.10155): Table 1 and Fig. 6 from the sweep's CSVs.

Two commands (spec ``specs/spa.md`` §4.1 for what a run logs, §4.3 for the table and the figure):

    python paper/spa.py [--set mine] collect <sweep_dir> [--out <csv>] [--replace] [--skip-incomplete]
    python paper/spa.py [--set mine] [--results-dir <dir>] [--figures-dir <dir>]       # make figures

``collect`` concatenates every ``spa_results.csv`` under one sweep directory (one row per density of one run) into
``spa_runs_<dataset>.csv``, with the sweep directory's name in a ``sweep`` column; it refuses to overwrite an existing
file unless given ``--replace``. It refuses a sweep with unfinished runs (a ``spa_results.csv`` without the
``spa_results_complete.json`` the run writes last: killed, or still running; resume it in its directory) and job
directories without results (a run that failed before its first row); ``--skip-incomplete`` collects the finished
runs and lists the others. The second command turns each ``spa_runs_<dataset>.csv`` into Table 1
(``spa_table1_<dataset>.csv`` and ``.md``: criterion x learning method at 100/30/10 % density, mean ± std over
seeds, n = number of seeds, Δacc and the ΔParams ratio against fine-pruning) and Fig. 6 (``spa_<dataset>.png``:
accuracy vs learned parameters and vs FLOPs, one column per criterion, the published points beside ours), and always
writes the published Table 1 (``spa_table1_published.md`` from ``paper/results/spa_published.csv``).
Reads CSVs only.

Where (``common.py``): by default the user's results set ``outputs/results/mine/`` (``--set <name>``:
``outputs/results/<name>/``), reading the committed reference runs for every dataset the set has no runs of;
``--set reference`` (``make figures RESULTS=reference``) is the only way to write ``paper/results`` and
``paper/figures``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file, however it is loaded
from common import DEFAULT, REFERENCE, REFERENCE_FIGURES, REFERENCE_RESULTS, check_writable, count_axis, set_dirs

RESULTS = REFERENCE_RESULTS
FIGURES = REFERENCE_FIGURES
PUBLISHED = RESULTS / "spa_published.csv"

#: Columns of the sweep's per-run CSV: one row per density (step 0 = unpruned, then one row per pruning step).
COLUMNS = ["arch", "dataset", "criterion", "method", "rank", "init_range", "seed", "mask_mode", "coupling", "step",
           "density", "acc_pre_recovery", "acc", "loss", "delta_params_legacy", "delta_params_exact",
           "flops_legacy", "flops_exact", "fused_params", "exported_params"]  # fmt: skip
#: The accuracy columns and their units. Runs write fractions and say so in an ``acc_unit`` column; files without it
#: (the committed reference runs, written before the column existed) hold percent. Reading gives percent, the unit
#: of the tables and figures.
ACC_COLUMNS = ("acc_pre_recovery", "acc")
ACC_UNITS = {"percent": 1.0, "fraction": 100.0}
#: What identifies one run (a prune-recover schedule); ``step`` then identifies a row within it.
RUN_KEY = ["arch", "dataset", "criterion", "method", "rank", "init_range", "seed", "mask_mode", "coupling"]
#: What identifies one table row / figure series within a criterion: everything but the seed.
SERIES_KEY = ["arch", "method", "rank", "init_range", "mask_mode", "coupling"]
CRITERIA = {"weight": "Weight", "grad": "Gradient", "taylor": "Taylor", "lrp": "LRP"}  # Fig. 6 column order
METHODS = ("finetune", "splora", "sppara")
MASK_MODES = ("legacy", "enforced")
COUPLINGS = ("none", "group")
PUBLISHED_SETTING = ("legacy", "none")  # mask_mode, coupling of the arXiv runs (spec §1.6, §7)
TARGETS = (1.0, 0.3, 0.1)  # Table 1 densities
#: A run whose nearest density is further than one pruning step (5 % of filters, spec §2.1) from a target has not
#: reached it (stopped early); it is left out of that row with a printed note rather than reported at 45 %.
TOLERANCE = 0.05
DATASETS = {"cifar10": "CIFAR-10", "flowers102": "Flowers102", "catsdogs": "Cats&Dogs"}  # published in Table 1
#: classes of each spa_data task, for the chance line (digits: the adapt task's digits 5-9)
CLASSES = {"digits": 5, "cifar10": 10, "cifar100": 100, "flowers102": 102, "catsdogs": 2, "cars": 196}
COLORS = {"Fine-pruning": "tab:blue", "SPLoRA r32": "tab:orange", "SPLoRA r8": "tab:green", "SPPaRA": "tab:red"}
SPARE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
MARKERS = ("o", "^", "s", "D", "v", "P", "X")  # one per variant suffix; the published setting gets "o"
#: Quantities averaged over seeds: (run column, table column, divisor to the table's unit).
QUANTITIES = [("acc", "acc", 1.0), ("delta_params_legacy", "delta_params_legacy_k", 1e3),
              ("delta_params_exact", "delta_params_exact_k", 1e3), ("flops_legacy", "flops_legacy_m", 1e6),
              ("flops_exact", "flops_exact_m", 1e6)]  # fmt: skip


#: A run's rows, and the file it writes last (modules/prune_recover.py ``complete_marker``): rows without it are a
#: partial run
RESULTS_FILE = "spa_results.csv"
COMPLETE_MARKER = "spa_results_complete.json"


class SpaInputError(ValueError):
    """A per-run or published CSV that cannot be used as it is; the message names the file and the fix."""


def _read(path: Path) -> pd.DataFrame:
    # "none" / "NA" are labels here, not missing values; only empty cells are missing
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def read_runs(path: Path) -> pd.DataFrame:
    """Read one per-run CSV (the sweep's ``spa_results.csv`` or a collected ``spa_runs_*.csv``) and check it;
    accuracies come back in percent whatever the file's ``acc_unit`` (``ACC_UNITS``)."""
    frame = _read(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SpaInputError(f"{path}: missing columns {missing}; the SPA sweep writes {COLUMNS}")
    for column, allowed in [("criterion", tuple(CRITERIA)), ("method", METHODS), ("mask_mode", MASK_MODES),
                            ("coupling", COUPLINGS)]:  # fmt: skip
        bad = sorted(set(frame[column].astype(str)) - set(allowed))
        if bad:
            raise SpaInputError(f"{path}: column {column!r} has {bad}; expected one of {list(allowed)}")
    if "acc_unit" in frame:
        bad = sorted(set(frame["acc_unit"].astype(str)) - set(ACC_UNITS))
        if bad:
            raise SpaInputError(f"{path}: column 'acc_unit' has {bad}; expected one of {list(ACC_UNITS)}")
        scale = frame["acc_unit"].map(ACC_UNITS)
        frame[list(ACC_COLUMNS)] = frame[list(ACC_COLUMNS)].mul(scale, axis=0)
        frame["acc_unit"] = "percent"
    # an adapter-free run has no init range; 0 keeps it a groupable key instead of a NaN that groupby would drop
    frame["init_range"] = frame["init_range"].fillna(0.0)
    return frame


def method_label(method: str, rank: int) -> str:
    """The paper's name of a learning method: "Fine-pruning", "SPLoRA r32", "SPPaRA"."""
    return {"finetune": "Fine-pruning", "sppara": "SPPaRA"}.get(method, f"SPLoRA r{int(rank)}")


def series_labels(runs: pd.DataFrame) -> pd.Series:
    """Label each row's learning method, with a suffix for whatever sets it apart from the published runs.

    The suffix names the mask mode / coupling when they differ from the arXiv setting (legacy, none), the arch when
    the file holds several, and the init range when one method was run with several."""
    several_archs = runs["arch"].nunique() > 1
    init_ranges = runs.groupby(["method", "rank"])["init_range"].nunique()

    def label(row: pd.Series) -> str:
        extra = [str(row["arch"])] if several_archs else []
        if init_ranges[(row["method"], row["rank"])] > 1:
            extra.append(f"init {row['init_range']:g}")
        extra += [str(row[c]) for c, default in zip(("mask_mode", "coupling"), PUBLISHED_SETTING) if row[c] != default]
        base = method_label(row["method"], row["rank"])
        return f"{base} ({', '.join(extra)})" if extra else base

    return runs.apply(label, axis=1) if len(runs) else pd.Series([], dtype=str)


def collect(sweep_dir: Path, out: Path | None = None, results_dir: Path | None = None, replace: bool = False,
            set_name: str = DEFAULT, skip_incomplete: bool = False) -> list[Path]:  # fmt: skip
    """Concatenate every ``spa_results.csv`` under one sweep's ``sweep_dir`` into tidy per-dataset CSVs, the
    sweep's name (its timestamped directory) in a ``sweep`` column; return their paths.

    Without ``out`` each dataset goes to ``results_dir/spa_runs_<dataset>.csv`` (default: the results set's folder);
    with it, everything goes there. A file that exists is overwritten only with ``replace``: one sweep per file,
    never two mixed. Unfinished runs and job directories without results are an error listing them, or, with
    ``skip_incomplete``, left out with a printed list."""
    files = sorted(Path(sweep_dir).rglob(RESULTS_FILE))
    if not files:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {sweep_dir}: point collect at the SPA sweep's output dir")
    files = _complete_runs(Path(sweep_dir), files, skip_incomplete)
    runs = pd.concat([read_runs(f).assign(_file=str(f)) for f in files], ignore_index=True)
    dupes = runs[runs.duplicated([*RUN_KEY, "step"], keep=False)]
    if len(dupes):  # the same run twice (a rerun beside the old output) would be averaged as two seeds
        first = dupes.iloc[0]
        raise SpaInputError(f"run {first[RUN_KEY].to_dict()} step {first['step']} appears in several files: "
                         f"{sorted(set(dupes['_file']))}; delete the stale copy")  # fmt: skip
    extra = [c for c in runs.columns if c not in COLUMNS and c not in ("_file", "sweep")]
    runs = runs[COLUMNS + extra].sort_values([*RUN_KEY, "step"], ignore_index=True)
    runs["sweep"] = Path(sweep_dir).resolve().name
    results_dir = results_dir or set_dirs(set_name)[0]
    parts = {out: runs} if out else {results_dir / f"spa_runs_{d}.csv": g for d, g in runs.groupby("dataset")}
    check_writable(set_name, *parts)
    _check_free(list(parts), replace)
    for path, part in parts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_csv(path, index=False)
        n_runs = len(part.groupby(RUN_KEY, dropna=False))
        print(f"wrote {path} ({n_runs} runs, {len(part)} rows, from {len(files)} spa_results.csv under {sweep_dir})")
    return list(parts)


def _complete_runs(sweep_dir: Path, files: list[Path], skip_incomplete: bool) -> list[Path]:
    """The results files of finished runs (their completion marker beside them); the unfinished ones and the job
    directories (Hydra's ``.hydra`` inside) without results are an error, or with ``skip_incomplete`` a note."""
    partial = [f for f in files if not (f.parent / COMPLETE_MARKER).exists()]
    with_results = {f.parent for f in files}
    empty = sorted(d.parent for d in sweep_dir.rglob(".hydra") if d.parent not in with_results)
    problems = [f"{f.parent}: unfinished run ({len(_read(f))} rows, no {COMPLETE_MARKER})" for f in partial]
    problems += [f"{d}: job directory without {RESULTS_FILE} (the run failed before its first row: see its log)"
                 for d in empty]  # fmt: skip
    if problems and not skip_incomplete:
        raise SpaInputError(
            f"{sweep_dir} has {len(partial)} unfinished run(s) and {len(empty)} job(s) without results:\n  "
            + "\n  ".join(problems)
            + "\nresume a killed run by starting it again in its directory (hydra.run.dir=<dir>, same overrides), "
            "or collect the finished runs only with --skip-incomplete"
        )
    if problems:
        print("left out (--skip-incomplete):\n  " + "\n  ".join(problems))
    complete = [f for f in files if f not in partial]
    if not complete:
        raise SpaInputError(f"no finished run under {sweep_dir} (every {RESULTS_FILE} lacks its {COMPLETE_MARKER})")
    return complete


def _check_free(paths: Sequence[Path], replace: bool) -> None:
    """Refuse to overwrite a collected sweep unless asked: a set's file holds one sweep, never two mixed."""
    for path in paths:
        if path.exists() and not replace:
            old = _read(path)
            sweeps = sorted(set(old["sweep"].astype(str))) if "sweep" in old else ["unrecorded"]
            raise SpaInputError(f"{path} already holds {len(old)} rows of sweep {', '.join(sweeps)}; collect into "
                                "another results set (--set <name>; make sweep-spa RESULTS=<name>) or pass "
                                "--replace to overwrite it")  # fmt: skip


def select_steps(runs: pd.DataFrame, targets: Sequence[float] = TARGETS) -> tuple[pd.DataFrame, list[str]]:
    """Per run and target density, the row of the step whose density is nearest (spec §4.1: the value reported for
    a density is the one before the next pruning step, which is the ``acc`` the sweep logs for that step).

    Returns the picked rows (with ``target_density``) and a note per target that some run did not reach."""
    picked, notes = [], []
    for target in targets:
        gap = (runs["density"] - target).abs()
        # idxmin keeps the first of a tie, i.e. the earlier step with the larger density
        nearest = gap.groupby([runs[c] for c in RUN_KEY], dropna=False).idxmin()
        reached = nearest[gap[nearest].to_numpy() <= TOLERANCE]
        if len(reached) < len(nearest):
            short = runs.loc[nearest[gap[nearest].to_numpy() > TOLERANCE], "density"]
            nearest_text = ", ".join(f"{d:.0%}" for d in sorted(set(short)))
            notes.append(f"{len(nearest) - len(reached)} run(s) never reach density {target:.0%} (nearest "
                         f"{nearest_text}); left out of the {target:.0%} rows")  # fmt: skip
        picked.append(runs.loc[reached.to_numpy()].assign(target_density=target))
    return pd.concat(picked, ignore_index=True), notes


def table1(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Table 1 of the paper for our runs: one row per (criterion, learning method, target density).

    Mean ± std (ddof 1; none for one seed) over seeds of acc (%), ΔParams (K, legacy and exact) and FLOPs (M MACs,
    legacy and exact), ``n`` = the number of seeds, and the paper's annotations against fine-pruning at the same
    criterion, density and mask/coupling setting: ``d_acc`` (points) and ``params_ratio_*`` (fine-pruning's
    ΔParams / this row's; the paper's "↓14.3×"). The 100 % rows (criterion "none") precede pruning: every criterion
    run of a seed starts from the same unpruned model, so each seed counts once there, its runs' mean."""
    runs = runs.assign(label=series_labels(runs))
    picks, notes = select_steps(runs)
    picks.loc[picks["target_density"] == 1.0, "criterion"] = "none"
    keys = ["arch", "criterion", "target_density", *SERIES_KEY[1:], "label"]
    per_seed, spread = _per_seed(picks, keys)
    notes += spread
    grouped = per_seed.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(density=("density", "mean"), n=("seed", "size"),
                        seeds=("seed", lambda s: " ".join(str(v) for v in sorted(s))))  # fmt: skip
    for _column, name, _unit in QUANTITIES:
        table[f"{name}_mean"] = grouped[name].mean()
        table[f"{name}_std"] = grouped[name].std()  # NaN for a single seed: no spread to report
    table = table.reset_index()
    ref_key = ["arch", "criterion", "target_density", "mask_mode", "coupling"]
    ref_cols = ["acc_mean", "delta_params_legacy_k_mean", "delta_params_exact_k_mean"]
    ref = table[table["method"] == "finetune"].groupby(ref_key, dropna=False)[ref_cols].mean()
    ref = table[ref_key].merge(ref.reset_index(), on=ref_key, how="left")
    is_ref = (table["method"] == "finetune").to_numpy()
    table["d_acc"] = (table["acc_mean"] - ref["acc_mean"]).where(~is_ref)
    for count in ("legacy", "exact"):
        ratio = ref[f"delta_params_{count}_k_mean"] / table[f"delta_params_{count}_k_mean"]
        table[f"params_ratio_{count}"] = ratio.where(~is_ref)
    return _paper_order(table), notes


def _per_seed(picks: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per table row and seed, in the table's units: the mean of that seed's runs (several only for the
    unpruned rows, one per criterion), with a note where those runs disagree."""
    scaled = picks[[*keys, "seed", "density"]].assign(**{n: picks[c] / u for c, n, u in QUANTITIES})
    grouped = scaled.groupby([*keys, "seed"], dropna=False, sort=False)
    spread = grouped["acc"].max() - grouped["acc"].min()
    notes = [f"{(spread > 1e-9).sum()} (row, seed) pair(s) have runs that differ (unpruned: across criteria) by up "
             f"to {spread.max():.2f} points; their mean is used"] if (spread > 1e-9).any() else []  # fmt: skip
    return grouped.mean().reset_index(), notes


def _method_rank(frame: pd.DataFrame) -> pd.Series:
    # the paper's row order: fine-pruning, SPLoRA by falling rank, then SPPaRA
    order = frame["method"].map({"finetune": 0, "splora": 1, "sppara": 2})
    return order * 1e4 - frame["rank"].where(frame["method"] == "splora", 0)


def _paper_order(table: pd.DataFrame) -> pd.DataFrame:
    """Unpruned rows first, then criterion (Fig. 6 order) > learning method > variant > density falling."""
    published = (table["mask_mode"] == PUBLISHED_SETTING[0]) & (table["coupling"] == PUBLISHED_SETTING[1])
    order = table.assign(
        _crit=table["criterion"].map({"none": -1, **{c: i for i, c in enumerate(CRITERIA)}}),
        _method=_method_rank(table),
        _variant=~published,
        _dens=-table["target_density"],
    )
    order = order.sort_values(["arch", "_crit", "_method", "_variant", "label", "_dens"], kind="stable")
    return order.drop(columns=["_crit", "_method", "_variant", "_dens"]).reset_index(drop=True)


def _pm(mean: float, std: float, digits: int | None = None, thousands: bool = False) -> str:
    """ "96.38 ± 0.12"; only the mean when there is a single seed (std undefined). Without ``digits``, as many
    decimals as keep a small count readable (0.044 M FLOPs is not "0.0")."""
    if pd.isna(mean):
        return "–"
    if digits is None:
        digits = 1 if abs(mean) >= 10 else 2 if abs(mean) >= 1 else 3
    spec = f",.{digits}f" if thousands else f".{digits}f"
    return f"{mean:{spec}}" if pd.isna(std) else f"{mean:{spec}} ± {std:{spec}}"


def ratio_text(ratio: float) -> str:
    """The paper's ΔParams annotation: "↓14.3×" (fewer learned parameters than fine-pruning), "↑1.2×" (more)."""
    if pd.isna(ratio):
        return ""
    return f"↓{ratio:.1f}×" if ratio >= 1 else f"↑{1 / ratio:.1f}×"


def _delta_text(delta: float) -> str:
    return "" if pd.isna(delta) else f"{delta:+.2f}"


def _criterion_text(criterion: str) -> str:
    return "Unpruned" if criterion == "none" else CRITERIA[criterion]


def table1_markdown(table: pd.DataFrame, dataset: str) -> str:
    """Table 1 as markdown: the annotations beside the accuracy and each ΔParams count, as in the paper."""
    lines = [f"# Table 1, ours: {DATASETS.get(dataset, dataset)}", "",
             "Mean ± std over seeds at the step nearest each density (actual density shown); n = number of seeds, "
             "and a single seed shows its value alone. The unpruned rows precede pruning: each seed counts once "
             "there, not once per criterion. Δacc (points) and ΔParams ratio are against fine-pruning at the same "
             "criterion, density and mask/coupling setting. ΔParams in K, FLOPs in M multiply-accumulates; "
             "legacy = the paper's counters, exact = spec §1.7/§4.2.",
             "",
             "| Arch | Pruning | Learning method | Density | n | Acc (%) | Δacc | ΔParams legacy (K) | ratio | "
             "ΔParams exact (K) | ratio | FLOPs legacy (M) | FLOPs exact (M) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, row in table.iterrows():
        cells = [row["arch"], _criterion_text(row["criterion"]), row["label"], f"{row['density']:.1%}", row["n"],
                 _pm(row["acc_mean"], row["acc_std"], 2), _delta_text(row["d_acc"]),
                 _pm(row["delta_params_legacy_k_mean"], row["delta_params_legacy_k_std"], thousands=True),
                 ratio_text(row["params_ratio_legacy"]),
                 _pm(row["delta_params_exact_k_mean"], row["delta_params_exact_k_std"], thousands=True),
                 ratio_text(row["params_ratio_exact"]),
                 _pm(row["flops_legacy_m_mean"], row["flops_legacy_m_std"], thousands=True),
                 _pm(row["flops_exact_m_mean"], row["flops_exact_m_std"], thousands=True)]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def read_published(path: Path = PUBLISHED) -> pd.DataFrame:
    """The published Table 1 in long format (one row per value of accuracy); see ``results/spa_published.csv``."""
    published = _read(path)
    published["label"] = [method_label(m, r) for m, r in zip(published["method"], published["rank"])]
    return published


def published_markdown(published: pd.DataFrame) -> str:
    """The published Table 1 (arXiv 2211.10155; spec §4.3) with its annotations recomputed from the values."""
    # pivot, not pivot_table: it keeps the one missing value ("–", LRP FP 10 % Cats&Dogs) without a cartesian product
    wide = published.pivot(index=["criterion", "method", "rank", "label", "density"], columns="dataset", values="acc")
    wide = wide.reset_index()
    # first() skips empty cells: FLOPs were published once per row, for CIFAR-10, and ΔParams once per row
    firsts = published.groupby(["criterion", "method", "rank", "density"])[["delta_params_k", "flops_m"]].first()
    wide = wide.merge(firsts.reset_index(), on=["criterion", "method", "rank", "density"])
    ref = wide[wide["method"] == "finetune"].set_index(["criterion", "density"]).to_dict("index")
    datasets = [d for d in DATASETS if d in wide.columns]
    lines = [f"# Table 1, published: ResNet-50 ({published['source'].iloc[0]})", "",
             "Means over 3 seeds (LRP FP 10 %: n = 1; the std values are only in the paper's PNG). In brackets: "
             "Δacc (points) and the ΔParams ratio against fine-pruning at the same criterion and density, "
             "recomputed from these values.", "",
             "| Pruning | Learning method | Density | ΔParams (K) | FLOPs (M, CIFAR-10) | "
             + " | ".join(DATASETS[d] for d in datasets) + " |",
             "|---|---|---|---|---|" + "---|" * len(datasets)]  # fmt: skip
    wide = wide.assign(_crit=wide["criterion"].map({"none": -1, **{c: i for i, c in enumerate(CRITERIA)}}),
                       _method=_method_rank(wide))  # fmt: skip
    for _, row in wide.sort_values(["_crit", "_method", "density"], ascending=[True, True, False]).iterrows():
        fp = ref[(row["criterion"], row["density"])]
        own = row["method"] == "finetune"
        params = f"{row['delta_params_k']:,.1f}"
        if not own:
            params += f" ({ratio_text(fp['delta_params_k'] / row['delta_params_k'])})"
        accs = []
        for d in datasets:
            acc = "–" if pd.isna(row[d]) else f"{row[d]:.2f}"
            if not own and not pd.isna(row[d]) and not pd.isna(fp[d]):
                acc += f" ({_delta_text(row[d] - fp[d])})"
            accs.append(acc)
        flops = "–" if pd.isna(row["flops_m"]) else f"{row['flops_m']:,.1f}"
        cells = [_criterion_text(row["criterion"]), row["label"], f"{row['density']:.0%}", params, flops, *accs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _style(labels: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour per learning method (the published points share it), marker per variant suffix."""
    colors, markers, spare = dict(COLORS), {"": MARKERS[0]}, iter(SPARE_COLORS)
    styles = {}
    for label in labels:
        base, _, suffix = label.partition(" (")
        if base not in colors:
            colors[base] = next(spare, "k")
        if suffix not in markers:
            markers[suffix] = MARKERS[len(markers) % len(MARKERS)]
        styles[label] = (colors[base], markers[suffix])
    return styles


def seed_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """One series' pruning steps averaged over seeds: mean ``params``, ``flops``, ``acc``, ``acc_std`` (ddof 1; NaN
    for one seed) and ``n`` seeds per step."""
    grouped = rows.groupby("step")
    return grouped.agg(params=("params", "mean"), flops=("flops", "mean"), acc=("acc", "mean"),
                       acc_std=("acc", "std"), n=("seed", "nunique")).reset_index()  # fmt: skip


def _chance_line(axes: Sequence[plt.Axes], dataset: str) -> Line2D | None:
    classes = CLASSES.get(dataset)
    if classes is None:
        return None
    for ax in axes:
        ax.axhline(100 / classes, color="0.35", ls=":", lw=1.2, zorder=1)
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 100 / classes - 5), high)  # the line clear of the frame, not hidden under it
    return Line2D([], [], color="0.35", ls=":", lw=1.2, label=f"chance: {100 / classes:.3g} % ({classes} classes)")


def _draw_ours(axes: Sequence[plt.Axes], rows: pd.DataFrame, style: tuple[str, str]) -> None:
    """One learning method in one criterion column: its densities joined, mean ± std over seeds."""
    curve = seed_curves(rows)
    color, marker = style
    for ax, x in zip(axes, ("params", "flops")):
        ax.errorbar(curve[x], curve["acc"], yerr=curve["acc_std"].fillna(0), color=color, marker=marker, ms=3.5,
                    lw=1.1, elinewidth=0.7, capsize=1.5, alpha=0.9, zorder=2)  # fmt: skip


def _legend_handles(labels: Sequence[str], styles: dict[str, tuple[str, str]], seeds: str, theirs: bool,
                    count: str) -> list[Line2D]:  # fmt: skip
    handles = [Line2D([], [], marker=styles[lab][1], color=styles[lab][0], ms=4, label=lab) for lab in labels]
    marker = styles[labels[0]][1] if labels else "o"
    handles.append(Line2D([], [], color="0.3", marker=marker, ms=3.5, label=f"measured here: one point per pruning "
                          f"step, mean ± std over seeds {seeds}"))  # fmt: skip
    if theirs:
        only_theirs = [lab for lab in styles if lab not in labels]  # e.g. SPLoRA r32 when we ran r8 only
        handles += [Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor=styles[lab][0],
                           label=f"{lab} (published only)") for lab in only_theirs]  # fmt: skip
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="0.3", markersize=8,
                              label="published (arXiv 2211.10155 Table 1, mean of 3 seeds)"
                              + ("" if count == "legacy" else ", legacy count")))  # fmt: skip
    return handles


def draw_figure(runs: pd.DataFrame, dataset: str, out: Path, published: pd.DataFrame | None = None,
                count: str = "legacy") -> Path:  # fmt: skip
    """Fig. 6 (spec §4.3): one column per criterion; accuracy vs learned parameters ‖ΔW‖₀ (log x, top) and vs
    FLOPs (linear, bottom). Each learning method is a line through its pruning steps, mean ± std over seeds; for a
    dataset of the published Table 1 its points (100/30/10 %; FLOPs were published for CIFAR-10 only) are hollow
    markers of the same colour. A dotted line marks chance."""
    runs = runs.assign(label=series_labels(runs))
    criteria = [c for c in CRITERIA if c in set(runs["criterion"])]
    labels = sorted(set(runs["label"]), key=lambda lab: (_method_rank(runs[runs["label"] == lab]).iloc[0], lab))
    ours = runs.assign(params=runs[f"delta_params_{count}"], flops=runs[f"flops_{count}"])
    theirs = None
    if published is not None and dataset in set(published["dataset"]):
        theirs = published[published["dataset"] == dataset]
        theirs = theirs.assign(params=theirs["delta_params_k"] * 1e3, flops=theirs["flops_m"] * 1e6)
    styles = _style(list(labels) + ([] if theirs is None else sorted(set(theirs["label"]) - set(labels))))
    width = max(4.2 * len(criteria), 11)  # room for the title and legend beside one or two columns
    fig, axes = plt.subplots(2, len(criteria), figsize=(width, 8), squeeze=False, sharey="row")
    for col, criterion in enumerate(criteria):
        for label in labels:
            _draw_ours(axes[:, col], ours[(ours["criterion"] == criterion) & (ours["label"] == label)], styles[label])
        if theirs is not None:  # the unpruned rows precede pruning, so they belong in every column
            rows = theirs[theirs["criterion"].isin([criterion, "none"])]
            for ax, x in zip(axes[:, col], ("params", "flops")):
                ax.scatter(rows[x], rows["acc"], s=60, facecolors="none", linewidths=1.3, zorder=3,
                           edgecolors=[styles[lab][0] for lab in rows["label"]], marker="o")  # fmt: skip
        axes[0, col].set_title(CRITERIA[criterion])
        axes[0, col].set_xscale("log")
        axes[0, col].set_xlabel(f"learned parameters ‖ΔW‖₀ ({count} count)")
        axes[1, col].set_xlabel(f"FLOPs (multiply-accumulates, {count} count)")
    chance = _chance_line(axes.flat, dataset)
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.3)
        count_axis(ax.xaxis, log=ax.get_xscale() == "log")
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[1, 0].set_ylabel("accuracy (%)")
    seeds = ", ".join(str(s) for s in sorted(set(runs["seed"])))
    handles = _legend_handles(labels, styles, seeds, theirs is not None, count) + ([chance] if chance else [])
    ncol = min(len(handles), 3 if width >= 14 else 2)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    archs = ", ".join(sorted(set(runs["arch"].astype(str))))
    source = "hollow circles: published" if theirs is not None else "no published values for this dataset"
    fig.suptitle(f"SPA on {DATASETS.get(dataset, dataset)} ({archs}): accuracy vs learned parameters (top) and FLOPs "
                 f"(bottom)\nlines: measured here, seeds {seeds}; {source}")  # fmt: skip
    fig.tight_layout(rect=(0, 0.03 * math.ceil(len(handles) / ncol) + 0.01, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _runs_files(results_dir: Path, reference_dir: Path) -> list[Path]:
    """The set's own ``spa_runs_<dataset>.csv``, plus the reference's for every dataset the set has none of."""
    own = {p.name: p for p in sorted(results_dir.glob("spa_runs_*.csv"))}
    reference = {p.name: p for p in sorted(reference_dir.glob("spa_runs_*.csv")) if p.name not in own}
    for path in reference.values():
        print(f"no {path.name} in {results_dir}: reading the reference runs {path}")
    return sorted([*own.values(), *reference.values()], key=lambda p: p.name)


def figures(results_dir: Path | None = None, figures_dir: Path | None = None, published_csv: Path = PUBLISHED,
            count: str = "legacy", set_name: str = DEFAULT, reference_dir: Path = RESULTS) -> list[Path]:  # fmt: skip
    """Table 1 and Fig. 6 for every ``spa_runs_<dataset>.csv`` of a results set (the reference's where the set has
    none of its own), and the published Table 1; written into the set's folders, never into the reference unless
    ``set_name`` is ``reference``. Returns the paths written."""
    set_results, set_figures = set_dirs(set_name)
    results_dir, figures_dir = results_dir or set_results, figures_dir or set_figures
    check_writable(set_name, results_dir, figures_dir)
    published = read_published(published_csv)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = [results_dir / "spa_table1_published.md"]
    written[0].write_text(published_markdown(published))
    files = _runs_files(results_dir, reference_dir)
    if not files:
        print(f"no spa_runs_<dataset>.csv in {results_dir}: run the SPA sweep, then `python paper/spa.py collect "
              f"<sweep_dir>`; wrote only the published table {written[0]}")  # fmt: skip
    for path in files:
        written += _table_and_figure(path, results_dir, figures_dir, published, count)
    for path in written:
        print(f"wrote {path}")
    return written


def _table_and_figure(path: Path, results_dir: Path, figures_dir: Path, published: pd.DataFrame,
                      count: str) -> list[Path]:  # fmt: skip
    name = path.stem.removeprefix("spa_runs_")
    runs = read_runs(path)
    datasets = sorted(set(runs["dataset"].astype(str)))
    if len(datasets) != 1:
        raise SpaInputError(f"{path} holds datasets {datasets}; collect one spa_runs_<dataset>.csv per dataset")
    table, notes = table1(runs)
    for note in notes:
        print(f"{path.name}: {note}")
    csv, markdown = results_dir / f"spa_table1_{name}.csv", results_dir / f"spa_table1_{name}.md"
    table.to_csv(csv, index=False)
    markdown.write_text(table1_markdown(table, datasets[0]))
    return [csv, markdown, draw_figure(runs, datasets[0], figures_dir / f"spa_{name}.png", published, count)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="set_name", default=DEFAULT,
                        help=f"{REFERENCE} (the committed files) or a name: outputs/results/<name>/")  # fmt: skip
    parser.add_argument("--results-dir", type=Path, help="where spa_runs_*.csv are and tables go (default: the set's)")
    parser.add_argument("--figures-dir", type=Path, help="where spa_<dataset>.png go (default: the set's)")
    parser.add_argument("--published", type=Path, default=PUBLISHED, help="the published Table 1 (long CSV)")
    parser.add_argument("--count", choices=("legacy", "exact"), default="legacy",
                        help="which ΔParams/FLOPs counter the figure plots (published points are legacy)")  # fmt: skip
    commands = parser.add_subparsers(dest="command")
    gather = commands.add_parser("collect", help="concatenate a sweep's spa_results.csv into spa_runs_<dataset>.csv")
    gather.add_argument("sweep_dir", type=Path)
    gather.add_argument("--out", type=Path, help="one CSV for everything (default: one per dataset in results-dir)")
    gather.add_argument("--replace", action="store_true", help="overwrite a spa_runs CSV that already exists")
    gather.add_argument("--skip-incomplete", action="store_true",
                        help="collect the finished runs; list unfinished ones and jobs without results")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            collect(args.sweep_dir, args.out, args.results_dir, args.replace, args.set_name, args.skip_incomplete)
        else:
            figures(args.results_dir, args.figures_dir, args.published, args.count, args.set_name)
    except (FileNotFoundError, ValueError) as error:  # SpaInputError, ReferenceSetError, a bad set name
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
