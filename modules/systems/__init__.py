"""LightningModules: one classification family (``ClassifierBase``: loss, ``stage/name`` metrics as fractions,
optimiser and scheduler partials), the clip system with the continual evaluation protocols
(``ClassificationSystem``) and the image system of the SPA study (``ImageClassificationSystem``). No
architecture code."""

from .base import ClassifierBase, classification_metrics
from .classification import PROTOCOLS, STEPPED, ClassificationSystem, ClipLengthNeed, required_clip_length
from .image import ImageClassificationSystem, phase_step_lr

__all__ = [
    "PROTOCOLS",
    "STEPPED",
    "ClassificationSystem",
    "ClassifierBase",
    "ClipLengthNeed",
    "ImageClassificationSystem",
    "classification_metrics",
    "phase_step_lr",
    "required_clip_length",
]
