"""Writers of tiny online action detection files in the formats of CoOadTR's ``data/`` folder (``datamodules/
oad_formats.py``): data_info_new.json, THUMOS14 annotation and feature pickles, TVSeries ones and GT-*.txt.

The features identify themselves: every entry of step ``t`` of video number ``v`` of an array is
``v * 1000 + t + PART[part]``, so a window tells which video, steps and arrays (in which order) it holds. Labels are
``label(t) = (t // 7) % K``: class 21 (THUMOS14 Ambiguous) covers steps 147-153.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

#: the fraction that marks each array of a step
PART = {"rgb": 0.0, "flow": 0.25, "audio": 0.5}
#: small widths standing in for 2048 / 1024 / 4096
WIDTHS = {"rgb": 6, "flow": 3, "audio": 4}


#: CoOadTR's data_info_new.json lists the TVSeries classes in this order, not the parser's (alphabetical) one
TVSERIES_INFO_CLASSES = [
    "background", "Pick something up", "Point", "Drink", "Stand up", "Run", "Sit down", "Read", "Smoke", "Drive car",
    "Open door", "Give something", "Use computer", "Write", "Go down stairway", "Close door", "Throw something",
    "Go up stairway", "Get in/out of car", "Hang up phone", "Eat", "Answer phone", "Dress up", "Clap", "Undress",
    "Kiss", "Fall/trip", "Wave", "Pour", "Punch", "Fire weapon",
]  # fmt: skip


def label(t: np.ndarray | int, num_classes: int) -> np.ndarray | int:
    return (np.asarray(t) // 7) % num_classes


def one_hot(length: int, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[label(np.arange(length), num_classes)]


def features(v: int, length: int, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
    base = v * 1000 + np.arange(length, dtype=np.float32)[:, None]
    return {p: np.repeat(base + PART[p], WIDTHS[p], axis=1).astype(np.float32) for p in parts}


def write_data_info(root: Path, thumos: tuple[list[str], list[str]], tvseries: tuple[list[str], list[str]]) -> None:
    """CoOadTR's data_info_new.json with these THUMOS / TVSERIES (train, test) videos and the real class names."""
    from datamodules.oad_formats import THUMOS_CLASSES

    info = {
        "HDD": {"class_index": ["background"], "train_session_set": [], "test_session_set": []},
        "TVSERIES": {"class_index": TVSERIES_INFO_CLASSES, "train_session_set": tvseries[0],
                     "test_session_set": tvseries[1]},
        "THUMOS": {"class_index": list(THUMOS_CLASSES), "train_session_set": thumos[0], "test_session_set": thumos[1]},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "data_info_new.json").write_text(json.dumps(info))


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_thumos(
    root: Path,
    lengths: dict[str, dict[str, int]],
    *,
    features_longer_by: int = 0,
    backbones: tuple[str, ...] = ("anet", "kin"),
    audio: bool = True,
) -> None:
    """THUMOS14 files for ``lengths`` = ``{"val": {video: T}, "test": {...}}``: annotations ``video ->
    {"anno": float64 (T, 22), "feature_length": T}`` and feature pickles ``thumos_<backbone>[_plus_audio]_<part>``
    (features ``features_longer_by`` steps longer than the annotations). Video numbers v count over both parts."""
    v = 0
    for part, videos in lengths.items():
        anno, feats, with_audio = {}, {}, {}
        for video, length in videos.items():
            anno[video] = {"anno": one_hot(length, 22), "feature_length": length}
            feats[video] = features(v, length + features_longer_by, ("rgb", "flow"))
            with_audio[video] = features(v, length + features_longer_by, ("rgb", "flow", "audio"))
            v += 1
        _dump(root / f"thumos_{part}_anno.pickle", anno)
        for backbone in backbones:
            _dump(root / f"thumos_{backbone}_{part}.pickle", feats)
            if audio:
                _dump(root / f"thumos_{backbone}_plus_audio_{part}.pickle", with_audio)


def write_tvseries(root: Path, lengths: dict[str, int], *, anno_shorter_by: int = 0) -> None:
    """TVSeries files: ``tvseries_anno.pickle`` (episode -> bool (T, 31)) and ``tvseries_{anet,kin}_features.pickle``
    (features ``anno_shorter_by`` steps longer than the annotations)."""
    anno = {e: one_hot(length - anno_shorter_by, 31).astype(bool) for e, length in lengths.items()}
    anno_of_all = dict(anno)
    _dump(root / "tvseries_anno.pickle", anno_of_all)
    feats = {e: features(v, length, ("rgb", "flow")) for v, (e, length) in enumerate(lengths.items())}
    for backbone in ("anet", "kin"):
        _dump(root / f"tvseries_{backbone}_features.pickle", feats)


def write_gt(folder: Path, lines: dict[str, list[str]], *, header: bool = True) -> None:
    """``GT-{train,val,test}.txt`` with these tab-separated lines (the release's format), a header row first."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "video\tclass\tstart\tend\tone_person\tatypical\n" if header else ""
    for name in ("GT-train.txt", "GT-val.txt", "GT-test.txt"):
        (folder / name).write_text(head + "".join(f"{line}\n" for line in lines.get(name, [])))
