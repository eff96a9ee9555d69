"""On-disk formats of the online action detection features (OadTR / CoOadTR): readers and their checks.

The files are those of the CoOadTR code (LukasHedegaard/CoOadTR, ``dataset.py``, ``main.py``), all in one folder
(the original's ``data/``)::

    data_info_new.json                        {"THUMOS": {...}, "TVSERIES": {...}, "HDD": {...}}: per dataset
                                              "class_index" (class names), "train_session_set", "test_session_set"
    thumos_{val,test}_anno.pickle             video -> {"anno": float (T, 22) one-hot, "feature_length": T}
    thumos_{anet|kin}[_plus_audio]_{val,test}.pickle
                                              video -> {"rgb": (T, Dr), "flow": (T, Df)[, "audio": (T, 4096)]}
    tvseries_anno.pickle                      episode -> bool (T, 31) multi-hot at 5 steps/s
                                              (``python -m datamodules.tvseries_parser`` makes it)
    tvseries_{anet|kin}_features.pickle       episode -> {"rgb": (T, 2048), "flow": (T, 2048)}

THUMOS14 trains on the ``video_validation_*`` videos (``*_val.pickle``) and tests on the ``video_test_*`` ones
(``*_test.pickle``); TVSeries reads both splits from the same two pickles. A step's feature is the concatenation
``rgb, flow[, audio]``, in that order (the original merges audio into flow, then concatenates camera and motion).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.robust import require_path, warn_skipped
from datamodules.tvseries_parser import ACTIONS

__all__ = [
    "AMBIGUOUS",
    "DATASETS",
    "THUMOS_CLASSES",
    "THUMOS_FEATURES",
    "TVSERIES_FEATURES",
    "DatasetFacts",
    "Videos",
    "feature_file",
    "feature_parts",
    "load_pickle",
    "load_split",
    "read_data_info",
    "tvseries_classes",
    "video_arrays",
]

log = logging.getLogger(__name__)

#: the THUMOS14 class that marks steps whose action is ambiguous; windows ending on it are dropped
AMBIGUOUS = 21

#: THUMOS14 feature name -> width of a step (rgb + flow [+ audio]); TSN features of the OadTR/TRN release
THUMOS_FEATURES: dict[str, int] = {"anet": 3072, "kin": 4096, "anet_audio": 7168, "kin_audio": 8192}
#: TVSeries feature name -> width (TSN-R50 rgb 2048 + flow 2048, mmaction2, ActivityNet- or Kinetics-pretrained)
TVSERIES_FEATURES: dict[str, int] = {"anet": 4096, "kin": 4096}

THUMOS_CLASSES: tuple[str, ...] = (
    "Background", "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
    "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow", "LongJump",
    "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking", "Ambiguous",
)  # fmt: skip

THUMOS_HOW = (
    "THUMOS14 features are the OadTR/TRN release (TSN, ActivityNet- or Kinetics-pretrained; links in "
    "wangxiang1230/OadTR and LukasHedegaard/CoOadTR READMEs); the annotations are CoOadTR's data/anno_thumos.zip "
    "(unzip it) and data/data_info_new.json."
)
TVSERIES_HOW = (
    "TVSeries features are not public: request the dataset from its authors (De Geest et al., "
    "homes.esat.kuleuven.be/psi-archive/rdegeest/TVSeries.html), extract TSN-R50 rgb+flow features, and build "
    "tvseries_anno.pickle from its GT-*.txt with `python -m datamodules.tvseries_parser`; data_info_new.json is "
    "CoOadTR's data/data_info_new.json."
)


class DatasetFacts:
    """What differs between the datasets: the key in data_info_new.json, the class count, the ignored class, the
    feature widths and where the files come from."""

    def __init__(
        self, key: str, num_classes: int, ignore_index: int | None, features: dict[str, int], how: str
    ) -> None:
        self.key, self.num_classes, self.ignore_index = key, num_classes, ignore_index
        self.features, self.how = features, how


DATASETS: dict[str, DatasetFacts] = {
    "thumos14": DatasetFacts("THUMOS", 22, AMBIGUOUS, THUMOS_FEATURES, THUMOS_HOW),
    "tvseries": DatasetFacts("TVSERIES", 31, None, TVSERIES_FEATURES, TVSERIES_HOW),
}


def load_pickle(path: Path, what: str, how: str) -> Any:
    """The object in the pickle at ``path`` (one written by Python 2 is read with latin-1); a missing file is an
    error naming ``what`` and ``how`` to get it."""
    require_path(path, what, how)
    try:
        with open(path, "rb") as f:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:
                f.seek(0)
                return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{path} is not a readable pickle ({error}); expected {what}. {how}") from error


def read_data_info(root: Path, dataset: str) -> tuple[list[str], list[str], list[str]]:
    """``(class names, train videos, test videos)`` of ``dataset`` from ``<root>/data_info_new.json``."""
    facts = DATASETS[dataset]
    path = root / "data_info_new.json"
    require_path(path, "CoOadTR's data_info_new.json (the videos of each split and the class names)", facts.how)
    info = json.loads(path.read_text())
    if facts.key not in info:
        raise ValueError(f"{path} has no {facts.key!r} entry (it has {sorted(info)}); use CoOadTR's data_info_new.json")
    entry = info[facts.key]
    missing = {"class_index", "train_session_set", "test_session_set"} - set(entry)
    if missing:
        raise ValueError(f"{path}: the {facts.key!r} entry lacks {sorted(missing)}")
    classes = [str(c) for c in entry["class_index"]]
    if len(classes) != facts.num_classes:
        raise ValueError(f"{path}: {facts.key} lists {len(classes)} classes, expected {facts.num_classes}")
    return classes, [str(v) for v in entry["train_session_set"]], [str(v) for v in entry["test_session_set"]]


def feature_parts(feature: str) -> tuple[str, ...]:
    """The arrays a THUMOS step concatenates, in order: ``("rgb", "flow")`` plus ``"audio"`` for ``*_audio``."""
    return ("rgb", "flow", "audio") if feature.endswith("_audio") else ("rgb", "flow")


def feature_file(root: Path, dataset: str, feature: str, part: str) -> Path:
    """The feature pickle of ``dataset``: THUMOS ``thumos_{anet|kin}[_plus_audio]_{val|test}.pickle`` (``part`` is
    ``val`` for training, ``test`` for testing, as the original's ``subnet``), TVSeries
    ``tvseries_{anet|kin}_features.pickle`` (both splits; ``feature`` may also name a ``.pickle`` file there)."""
    facts = DATASETS[dataset]
    if dataset == "tvseries" and feature.endswith((".pickle", ".pkl")):
        return root / feature
    if feature not in facts.features:
        raise ValueError(f"feature must be one of {sorted(facts.features)} for {dataset}, got {feature!r}")
    if dataset == "tvseries":
        return root / f"tvseries_{feature}_features.pickle"
    backbone = feature.removesuffix("_audio")
    audio = "plus_audio_" if feature.endswith("_audio") else ""
    return root / f"thumos_{backbone}_{audio}{part}.pickle"


def video_arrays(
    video: str, features: dict[str, np.ndarray], labels: np.ndarray, parts: tuple[str, ...], source: Path
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(features float32 (T, E), labels float32 (T, K), steps cut)`` of one video: its ``parts`` concatenated
    in order and, with the labels, truncated to the shortest of them (the original does so for TVSeries, whose
    feature and annotation lengths differ by a few steps)."""
    absent = [p for p in parts if p not in features]
    if absent:
        raise ValueError(f"{source}: video {video} has no {absent} arrays (it has {sorted(features)})")
    arrays = [np.asarray(features[p]) for p in parts]
    for part, array in zip(parts, arrays, strict=True):
        if array.ndim != 2:
            raise ValueError(f"{source}: {video}[{part!r}] has shape {array.shape}, expected (T, D)")
    length = min(len(labels), *(len(a) for a in arrays))
    cut = max(len(labels), *(len(a) for a in arrays)) - length
    joined = np.concatenate([a[:length] for a in arrays], axis=1, dtype=np.float32)
    return joined, np.asarray(labels[:length], dtype=np.float32), cut


def tvseries_classes(*, names_from_zero: bool = False) -> list[str]:
    """The name of each TVSeries annotation column: background, then the actions alphabetically; with the
    original's numbering (``names_from_zero``) column 0 is background and "Answer phone" at once, 30 unused."""
    if names_from_zero:
        return [f"background + {ACTIONS[0]}", *ACTIONS[1:], "(unused)"]
    return ["background", *ACTIONS]


class Videos:
    """The videos of one split in memory: ``features[i]`` float32 (T_i, E), ``labels[i]`` float32 (T_i, K)."""

    def __init__(self, names: list[str], features: list[np.ndarray], labels: list[np.ndarray], missing: list[str]):
        self.names, self.features, self.labels, self.missing = names, features, labels, missing


def load_split(
    root: Path, dataset: str, feature: str, videos: list[str], part: str, *, names_from_zero: bool = False
) -> Videos:
    """Read the annotations and features of ``videos`` (``part``: THUMOS ``val`` for training, ``test``); videos
    absent from either pickle are skipped with one warning and listed in ``missing``."""
    facts = DATASETS[dataset]
    if dataset == "thumos14":
        anno_path = root / f"thumos_{part}_anno.pickle"
        anno = load_pickle(anno_path, 'THUMOS14 annotations, video -> {"anno": (T, 22)}', facts.how)
        labels_of = {v: a["anno"] for v, a in anno.items()}
    else:
        anno_path = root / "tvseries_anno.pickle"
        labels_of = load_pickle(anno_path, "TVSeries annotations, episode -> (T, 31)", facts.how)
        _check_tvseries_numbering(labels_of, anno_path, names_from_zero)
    path = feature_file(root, dataset, feature, part)
    features_of = load_pickle(path, f'{dataset} {feature} features, video -> {{"rgb", "flow", ...}}', facts.how)
    parts = feature_parts(feature) if dataset == "thumos14" else ("rgb", "flow")
    names, features, labels, missing, cut = [], [], [], [], []
    for video in videos:
        if video not in labels_of or video not in features_of:
            missing.append(video)
            continue
        # popped: each video's pickled arrays are freed once its float32 copy exists (peak ~ pickle + one video)
        x, y, steps_cut = video_arrays(video, features_of.pop(video), labels_of.pop(video), parts, path)
        if y.shape[1] != facts.num_classes:
            raise ValueError(f"{anno_path}: {video} has {y.shape[1]} classes, expected {facts.num_classes}")
        names.append(video)
        features.append(x)
        labels.append(y)
        if steps_cut:
            cut.append(f"{video} (-{steps_cut})")
    warn_skipped(missing, len(videos), f"{root} {part}", items="videos", reason="are absent from the pickles")
    if cut:
        log.info(f"{root} {part}: {len(cut)} videos truncated to their shortest array: {', '.join(cut[:5])}")
    return Videos(names, features, labels, missing)


def _check_tvseries_numbering(labels: dict[str, np.ndarray], path: Path, names_from_zero: bool) -> None:
    """The original numbering (``names_from_zero``) never sets column 30; a file that does was not made so."""
    uses_last = any(np.asarray(y)[:, 30].any() for y in labels.values())
    if names_from_zero and uses_last:
        raise ValueError(
            f"{path} sets class 30, so its actions are numbered 1..30, not from 0: set names_from_zero=false"
        )
    if not names_from_zero and not uses_last:
        log.warning(
            f"{path} never sets class 30 ('Write'): it may have been made with the original parser's numbering "
            "(actions from 0, 'Answer phone' merged into background); rebuild it with "
            "`python -m datamodules.tvseries_parser` or set names_from_zero=true to run as the original"
        )
