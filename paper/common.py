"""What the paper scripts share: results sets (where they read and write) and readable count axes.

``reference`` is the committed set (tables and CSVs in ``paper/results``, PNGs in ``paper/figures``); it is replaced
only when named (``make figures RESULTS=reference``, ``--set reference``). Any other name is a user's own set,
``outputs/results/<name>/`` (git-ignored), with tables and figures side by side; an input it lacks (e.g. no sweep of
its own yet) is read from the reference set, and the scripts print which file they read.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axis import Axis
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REFERENCE = "reference"
DEFAULT = "mine"  # the Makefile's RESULTS default
REFERENCE_RESULTS = HERE / "results"
REFERENCE_FIGURES = HERE / "figures"
USER_SETS = ROOT / "outputs" / "results"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ReferenceSetError(ValueError):
    """A write into the committed reference set that was not asked for by naming it."""


def set_dirs(name: str) -> tuple[Path, Path]:
    """(results dir, figures dir) of a results set."""
    if name == REFERENCE:
        return REFERENCE_RESULTS, REFERENCE_FIGURES
    if not _NAME.fullmatch(name):
        raise ValueError(f"results set {name!r}: use a plain folder name (letters, digits, '_', '.', '-'), e.g. mine")
    return USER_SETS / name, USER_SETS / name


def is_reference(path: Path) -> bool:
    """Whether ``path`` lies in the committed reference folders."""
    resolved = Path(path).resolve()
    return any(resolved == d or d in resolved.parents for d in (REFERENCE_RESULTS, REFERENCE_FIGURES))


def check_writable(name: str, *paths: Path) -> None:
    """Refuse to write into the reference folders unless the set named is ``reference``."""
    if name == REFERENCE:
        return
    for path in paths:
        if is_reference(path):
            raise ReferenceSetError(
                f"{path} is in the committed reference set; write elsewhere (another --results-dir / --set) or, to "
                f"replace the reference, name it: --set {REFERENCE} (make ... RESULTS={REFERENCE})"
            )


def own_or_reference(results_dir: Path, filename: str) -> Path:
    """``results_dir/filename`` if the set has it, else the reference set's copy (which may not exist either)."""
    own = Path(results_dir) / filename
    return own if own.is_file() else REFERENCE_RESULTS / filename


def si(value: float, _position: object = None) -> str:
    """A count as people write it: 500, 2K, 20K, 1.5M, 2G (a tick formatter too)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def count_axis(axis: Axis, log: bool = True) -> None:
    """Count labels 1K, 2K, 5K, 10K, ...; on a log axis the densest of 1-2-5, 1-3 or 1 per decade that fits its
    width (call it once the limits are set)."""
    if log:
        low, high = axis.get_view_interval()
        inches = axis.axes.get_window_extent().width / axis.axes.figure.dpi
        decades = math.log10(high / low)
        fits = [s for s in ((1.0, 2.0, 5.0), (1.0, 3.0)) if decades * len(s) <= 2.2 * inches]  # ~0.45 in a label
        axis.set_major_locator(LogLocator(base=10, subs=fits[0] if fits else (1.0,)))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(si))


def study_main(
    doc: str,
    *,
    profile_name: str,
    runs_name: str,
    runs_help: str,
    collect_help: str,
    collect: Callable[[list[Path], Path, bool], object],
    build: Callable[..., object],
    argv: Sequence[str] | None = None,
) -> None:
    """The command line of a study script: ``[--set S] [--profile P] [--runs R] [--results-dir] [--figures-dir]``
    builds its tables and figure (``build(set_name, profile, runs, results_dir, figures_dir)``); ``collect <run
    dir> ... [--out] [--replace]`` gathers run results into the set's ``runs_name`` (``collect(run_dirs, out,
    replace)``), never over an existing file without ``--replace``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--set", dest="set_name", default=DEFAULT,
                        help="reference (the committed files) or a name: outputs/results/<name>/")  # fmt: skip
    parser.add_argument("--profile", type=Path, help=f"our profiler's CSV (default: the set's {profile_name})")
    parser.add_argument("--runs", type=Path, help=f"{runs_help} (default: the set's {runs_name})")
    parser.add_argument("--results-dir", type=Path, help="where the tables go (default: the set's)")
    parser.add_argument("--figures-dir", type=Path, help="where the PNG goes (default: the set's)")
    commands = parser.add_subparsers(dest="command")
    gather = commands.add_parser("collect", help=f"{collect_help} -> {runs_name}")
    gather.add_argument("run_dirs", type=Path, nargs="+", help="folders holding metrics.json + config.yaml")
    gather.add_argument("--out", type=Path, help=f"default: the set's {runs_name}")
    gather.add_argument("--replace", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            out = args.out or set_dirs(args.set_name)[0] / runs_name
            check_writable(args.set_name, out)
            collect(args.run_dirs, out, args.replace)
        else:
            build(args.set_name, args.profile, args.runs, args.results_dir, args.figures_dir)
    except (ValueError, ReferenceSetError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
