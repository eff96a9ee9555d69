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

from datamodules.robust import require_path

__all__ = [
    "AMBIGUOUS",
    "DATASETS",
    "THUMOS_CLASSES",
    "THUMOS_FEATURES",
    "TVSERIES_FEATURES",
    "DatasetFacts",
    "feature_file",
    "feature_parts",
    "load_pickle",
    "read_data_info",
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
