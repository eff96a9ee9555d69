"""TVSeries annotations: the release's ``GT-{train,val,test}.txt`` to the dense ``tvseries_anno.pickle`` CoOadTR reads.

``python -m datamodules.tvseries_parser --gt-dir <folder with GT-*.txt> --out <root>/tvseries_anno.pickle``

The output, as CoOadTR's ``data/tvseries_parser.py`` writes it: a pickle ``episode -> bool (T, 31)``, one row per
step at 5 steps/s (the features' rate; ``EPISODE_STEPS`` holds each episode's length), multi-hot: column ``c`` is
set on the steps of every instance of action ``c``, and column 0 (background) on the steps without any action.

Each GT line is tab-separated: episode (``<Series>_ep<N>``), class name, start and end (seconds), then the
release's yes/no attributes (occlusion, viewpoint, ...) that are ignored here. A first line that is not an
annotation (a header row) is skipped; the original reads the files with ``pandas.read_table``, which always takes
the first line as the header. An instance covers steps ``round(start * 5) .. round(end * 5) - 1``
(Python's round, half to even, as the original).

Classes: the 30 action names in alphabetical order are numbered **1..30** (``CLASS_INDEX``), background 0. The
original enumerates them from 0, so "Answer phone" (its first) shares column 0 with the background and column 30
("Write" here) is never set: ``names_from_zero=True`` reproduces that numbering (``--names-from-zero``).
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path

import numpy as np

__all__ = ["ACTIONS", "EPISODE_STEPS", "GT_FILES", "STEPS_PER_SECOND", "class_index", "parse_gt", "write_anno"]

log = logging.getLogger(__name__)

NUM_CLASSES = 31  # background + 30 actions
STEPS_PER_SECOND = 5.0
GT_FILES = ("GT-train.txt", "GT-val.txt", "GT-test.txt")

#: the 30 TVSeries actions, alphabetically (the original parser's order)
ACTIONS: tuple[str, ...] = (
    "Answer phone", "Clap", "Close door", "Dress up", "Drink", "Drive car", "Eat", "Fall/trip", "Fire weapon",
    "Get in/out of car", "Give something", "Go down stairway", "Go up stairway", "Hang up phone", "Kiss",
    "Open door", "Pick something up", "Point", "Pour", "Punch", "Read", "Run", "Sit down", "Smoke", "Stand up",
    "Throw something", "Undress", "Use computer", "Wave", "Write",
)  # fmt: skip

#: episode -> number of steps at 5 steps/s (CoOadTR data/tvseries_parser.py)
EPISODE_STEPS: dict[str, int] = {
    "24_ep1": 12290, "24_ep2": 12385, "24_ep3": 12685, "24_ep4": 12465,
    "Breaking_Bad_ep1": 16720, "Breaking_Bad_ep2": 13875, "Breaking_Bad_ep3": 13870,
    "How_I_Met_Your_Mother_ep1": 6348, "How_I_Met_Your_Mother_ep2": 6333, "How_I_Met_Your_Mother_ep3": 6140,
    "How_I_Met_Your_Mother_ep4": 6335, "How_I_Met_Your_Mother_ep5": 6334, "How_I_Met_Your_Mother_ep6": 6360,
    "How_I_Met_Your_Mother_ep7": 6340, "How_I_Met_Your_Mother_ep8": 6340,
    "Mad_Men_ep1": 14590, "Mad_Men_ep2": 14105, "Mad_Men_ep3": 13260,
    "Modern_Family_ep1": 6615, "Modern_Family_ep2": 6210, "Modern_Family_ep3": 6110, "Modern_Family_ep4": 6235,
    "Modern_Family_ep5": 6040, "Modern_Family_ep6": 5990,
    "Sons_of_Anarchy_ep1": 16455, "Sons_of_Anarchy_ep2": 13350, "Sons_of_Anarchy_ep3": 13685,
}  # fmt: skip


def class_index(*, names_from_zero: bool = False) -> dict[str, int]:
    """Action name -> column: 1..30 (background is 0), or the original's 0..29 with ``names_from_zero``."""
    first = 0 if names_from_zero else 1
    return {name: first + i for i, name in enumerate(ACTIONS)}


def _instance(line: str) -> tuple[str, str, float, float] | None:
    """``(episode, class name, start s, end s)`` of a GT line; None for a line that is not one (header, blank)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 4:
        return None
    try:
        return fields[0].strip(), fields[1].strip(), float(fields[2]), float(fields[3])
    except ValueError:
        return None


def parse_gt(
    gt_dir: str | Path,
    *,
    names_from_zero: bool = False,
    episode_steps: dict[str, int] | None = None,
    files: tuple[str, ...] = GT_FILES,
) -> dict[str, np.ndarray]:
    """The dense annotations ``episode -> bool (T, 31)`` from ``<gt_dir>/GT-{train,val,test}.txt`` (module
    docstring). ``episode_steps`` overrides the episode lengths (tests use short ones)."""
    gt_dir, steps = Path(gt_dir), EPISODE_STEPS if episode_steps is None else episode_steps
    columns = class_index(names_from_zero=names_from_zero)
    anno = {episode: np.zeros((length, NUM_CLASSES), dtype=bool) for episode, length in steps.items()}
    for name in files:
        path = gt_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: expected the TVSeries ground truth {name} (request it "
                "from the dataset's authors, homes.esat.kuleuven.be/psi-archive/rdegeest/TVSeries.html)"
            )
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            parsed = _instance(line)
            if parsed is None:
                if number == 1 or not line.strip():
                    continue  # the header row / a blank line
                raise ValueError(f"{path}:{number} is not 'episode<TAB>class<TAB>start<TAB>end...': {line!r}")
            episode, action, start, end = parsed
            if episode not in anno:
                raise ValueError(f"{path}:{number}: unknown episode {episode!r} (known: {', '.join(sorted(anno))})")
            if action not in columns:
                raise ValueError(f"{path}:{number}: unknown class {action!r} (known: {', '.join(ACTIONS)})")
            anno[episode][round(start * STEPS_PER_SECOND) : round(end * STEPS_PER_SECOND), columns[action]] = True
    for array in anno.values():
        array[~array.any(axis=1), 0] = True  # background where no action is
    return anno


def write_anno(gt_dir: str | Path, out: str | Path, *, names_from_zero: bool = False) -> Path:
    """Parse ``gt_dir`` and pickle the result to ``out`` (``tvseries_anno.pickle``)."""
    anno = parse_gt(gt_dir, names_from_zero=names_from_zero)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump(anno, f, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt-dir", required=True, help="folder of GT-train.txt, GT-val.txt, GT-test.txt")
    parser.add_argument("--out", required=True, help="output pickle, e.g. <data_dir>/tvseries/tvseries_anno.pickle")
    parser.add_argument(
        "--names-from-zero",
        action="store_true",
        help="the original CoOadTR numbering: actions 0..29, so 'Answer phone' collides with background",
    )
    args = parser.parse_args(argv)
    out = write_anno(args.gt_dir, args.out, names_from_zero=args.names_from_zero)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
