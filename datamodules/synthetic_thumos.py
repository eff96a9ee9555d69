"""Generated online-detection features in the THUMOS14 file layout: a small CPU-sized default and test bed.

These are **generated features**, not THUMOS14: untrimmed streams of 64-d steps ("rgb" 48 + "flow" 16) whose
labels need temporal context. Every video alternates background stretches (15-60 steps; the first 60-100) and
action instances. An instance of action class c (1..20) is the ordered sequence of the three phases ``PHASES[c]``
(6-14 steps each), drawn from 8 prototypes **shared by all classes**, and the 20 classes are 10 pairs whose second
member plays the first one's phases in reverse order (``(a, b, c)`` and ``(c, b, a)``). So one step shows a
prototype that 6-8 classes use: only the history tells them apart, and only the order tells a pair apart. About 5 %
of the instances are labelled Ambiguous (21) while showing an action's phases. Background steps show one of 3
background prototypes, switching every 8-30 steps. Each step adds Gaussian noise (``noise``) and a per-video gain,
offset and slow drift. Video i of a split starts with class ``i % 20 + 1``, so 20 videos hold every class.

Files (read by ``datamodules.online_detection`` with ``dataset=thumos14, feature=anet``)::

    <root>/generated_oad_v<VERSION>/data_info_new.json             "THUMOS": class names, train / test videos
    <root>/generated_oad_v<VERSION>/thumos_{val,test}_anno.pickle  video -> {"anno": (T, 22), "feature_length": T}
    <root>/generated_oad_v<VERSION>/thumos_anet_{val,test}.pickle  video -> {"rgb": (T, 48), "flow": (T, 16)}
    <root>/generated_oad_v<VERSION>/generation.json                the parameters; written last (the marker)

Train videos are named ``video_validation_<i>``, test videos ``video_test_<i>``, as THUMOS14's; the class names
are ``generated_action_<c>_<phases>``. Every video draws from its own generator ``(seed, part, index)``, so the files
are the same on every run; the default (40 + 20 videos of 200-400 steps) is made in well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.generated import MARKER, generate_once, read_marker
from datamodules.oad_formats import AMBIGUOUS
from datamodules.online_detection import OnlineDetectionDataModule

__all__ = [
    "PHASES",
    "VERSION",
    "GeneratedDetectionDataModule",
    "GeneratedDetectionParams",
    "dataset_root",
    "ensure_generated",
    "render_video",
]

log = logging.getLogger(__name__)

#: bump when the generator changes: the folder name carries it, so old files are never read as new
VERSION = 1
NUM_PROTOTYPES, NUM_BACKGROUND = 8, 3
RGB, FLOW = 48, 16

#: the first member of each pair of classes: three distinct prototypes; the second member is its reversal
_FORWARD = (
    (0, 1, 2),
    (1, 3, 5),
    (2, 4, 6),
    (3, 6, 0),
    (4, 7, 1),
    (5, 0, 3),
    (6, 2, 7),
    (7, 5, 4),
    (0, 4, 5),
    (1, 6, 7),
)
#: class (1..20) -> its phases, in order; class 2k + 1 is _FORWARD[k], class 2k + 2 the same reversed
PHASES: dict[int, tuple[int, ...]] = {
    c: (_FORWARD[(c - 1) // 2] if c % 2 else _FORWARD[(c - 1) // 2][::-1]) for c in range(1, 21)
}


@dataclass(frozen=True)
class GeneratedDetectionParams:
    """Everything the generated files depend on (recorded in ``generation.json``)."""

    num_train: int = 40
    num_test: int = 20
    min_steps: int = 200
    max_steps: int = 400
    noise: float = 1.0  # std of the per-step Gaussian noise; prototypes have unit-variance entries
    ambiguous: float = 0.05  # fraction of instances labelled Ambiguous
    seed: int = 0
    version: int = VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _prototypes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared action prototypes ``(8, 64)`` and background prototypes ``(3, 64)`` of a seed."""
    rng = np.random.default_rng([seed, 7])
    return rng.standard_normal((NUM_PROTOTYPES, RGB + FLOW)), rng.standard_normal((NUM_BACKGROUND, RGB + FLOW))


def _timeline(
    length: int, first: int, rng: np.random.Generator, params: GeneratedDetectionParams
) -> tuple[np.ndarray, ...]:
    """Per step: the label (0..21) and the prototype shown (action 0..7, background 8..10). The first instance is of
    class ``first`` and starts after 60-100 steps (so that windows, whose last step is 63 or later, see it); the
    next ones run through a random order of the other classes."""
    labels, shown = np.zeros(length, np.int64), np.zeros(length, np.int64)
    others = [c for c in rng.permutation(np.arange(1, 21)).tolist() if c != first]
    order = [first, *others]
    t, instance = 0, 0
    while t < length:
        gap = int(rng.integers(60, 101) if t == 0 else rng.integers(15, 61))  # background, switching prototypes
        end = min(t + gap, length)
        while t < end:
            steps = int(rng.integers(8, 31))
            shown[t : min(t + steps, end)] = NUM_PROTOTYPES + int(rng.integers(NUM_BACKGROUND))
            t += steps
        t = end
        if t >= length:
            break
        action, instance = order[instance % len(order)], instance + 1
        label = AMBIGUOUS if rng.uniform() < params.ambiguous else action
        for phase in PHASES[action]:
            steps = int(rng.integers(6, 15))
            labels[t : t + steps], shown[t : t + steps] = label, phase
            t += steps
    return labels[:length], shown[:length]


def render_video(
    index: int, rng: np.random.Generator, params: GeneratedDetectionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video ``index`` of a split: ``(rgb float32 (T, 48), flow float32 (T, 16), one-hot float64 (T, 22))``. Its
    first action is class ``index % 20 + 1``, so 20 videos hold every class."""
    length = int(rng.integers(params.min_steps, params.max_steps + 1))
    labels, shown = _timeline(length, index % 20 + 1, rng, params)
    actions, background = _prototypes(params.seed)
    table = np.concatenate([actions, background])
    gain = rng.uniform(0.8, 1.2)
    offset = 0.3 * rng.standard_normal(RGB + FLOW)
    drift = np.cumsum(0.03 * rng.standard_normal((length, RGB + FLOW)), axis=0)
    x = gain * table[shown] + offset + drift + params.noise * rng.standard_normal((length, RGB + FLOW))
    x = x.astype(np.float32)
    return x[:, :RGB], x[:, RGB:], np.eye(AMBIGUOUS + 1)[labels]


def class_names() -> list[str]:
    """Background, the 20 generated actions (named by their phases), Ambiguous."""
    actions = [f"generated_action_{c:02d}_{''.join(map(str, PHASES[c]))}" for c in range(1, 21)]
    return ["Background", *actions, "Ambiguous"]


# --- the dataset folder ----------------------------------------------------------------------------------------


def dataset_root(root: str | Path) -> Path:
    """Where the generated set of this ``VERSION`` lives under the data root."""
    return Path(root) / f"generated_oad_v{VERSION}"


def is_generated(folder: Path, params: GeneratedDetectionParams) -> bool:
    return read_marker(folder) == params.to_json()


def ensure_generated(folder: str | Path, params: GeneratedDetectionParams) -> bool:
    """Generate ``folder`` (a ``dataset_root``) unless it holds these parameters' files; returns whether it did.

    Written into a temporary sibling renamed to ``folder`` when complete (the marker last), so an interruption never
    leaves a half-written set; a ``folder`` without a marker was not made here and is never deleted.
    """
    return generate_once(
        folder, params.to_json(), lambda tmp: _write(tmp, params), f"online-detection features ({params})"
    )


def _write(out: Path, params: GeneratedDetectionParams) -> None:
    out.mkdir(parents=True)
    sessions = {}
    for part_index, (part, prefix, count) in enumerate(
        (("val", "video_validation", params.num_train), ("test", "video_test", params.num_test))
    ):
        anno, features = {}, {}
        for i in range(count):
            rgb, flow, one_hot = render_video(i, np.random.default_rng([params.seed, part_index, i]), params)
            name = f"{prefix}_{i:07d}"
            anno[name] = {"anno": one_hot, "feature_length": len(one_hot)}
            features[name] = {"rgb": rgb, "flow": flow}
        for path, content in ((f"thumos_{part}_anno.pickle", anno), (f"thumos_anet_{part}.pickle", features)):
            with open(out / path, "wb") as f:
                pickle.dump(content, f, protocol=pickle.HIGHEST_PROTOCOL)
        sessions[part] = list(anno)
    info = {"class_index": class_names(), "train_session_set": sessions["val"], "test_session_set": sessions["test"]}
    (out / "data_info_new.json").write_text(json.dumps({"THUMOS": info}, indent=1))
    (out / MARKER).write_text(json.dumps(params.to_json(), indent=1))  # last: the set is complete


# --- datamodule --------------------------------------------------------------------------------------------------


class GeneratedDetectionDataModule(OnlineDetectionDataModule):
    """``OnlineDetectionDataModule`` (``dataset=thumos14``, ``feature=anet``, 64-d steps) on the generated set under
    ``root``, made by ``prepare_data`` (or by ``setup`` outside a Trainer) when missing. Generation parameters:
    ``num_train``, ``num_test``, ``min_steps``, ``max_steps``, ``noise``, ``ambiguous``, ``generator_seed``
    (``GeneratedDetectionParams``); the other arguments are ``OnlineDetectionDataModule``'s."""

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_train: int = 40,
        num_test: int = 20,
        min_steps: int = 200,
        max_steps: int = 400,
        noise: float = 1.0,
        ambiguous: float = 0.05,
        generator_seed: int = 0,
        dataset: str = "thumos14",
        feature: str = "anet",
        dim_feature: int | None = RGB + FLOW,
        num_classes: int | None = AMBIGUOUS + 1,
        sequence_len: int = 64,
        queries: int = 8,
        eval_mode: str = "window",
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        seed: int | None = None,
    ) -> None:
        if dataset != "thumos14" or feature != "anet":
            raise ValueError(
                f"the generated features use the thumos14 layout with feature 'anet', got {dataset!r}, {feature!r}"
            )
        if min_steps <= sequence_len + queries:
            raise ValueError(f"min_steps={min_steps} leaves no window of sequence_len + queries steps: raise it")
        super().__init__(
            root=dataset_root(root),
            dataset=dataset,
            feature=feature,
            dim_feature=dim_feature,
            num_classes=num_classes,
            sequence_len=sequence_len,
            queries=queries,
            eval_mode=eval_mode,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            limit=limit,
            seed=seed,
        )
        self.params = GeneratedDetectionParams(
            num_train=num_train,
            num_test=num_test,
            min_steps=min_steps,
            max_steps=max_steps,
            noise=noise,
            ambiguous=ambiguous,
            seed=generator_seed,
        )

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.params)

    def setup(self, stage: str | None = None) -> None:
        if not is_generated(self.root, self.params):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                raise RuntimeError(f"{self.root} is not generated: prepare_data should have run first")
            self.prepare_data()
        super().setup(stage)
