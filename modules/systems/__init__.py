"""LightningModules: one classification family (``ClassifierBase``: loss, ``stage/name`` metrics as fractions,
optimiser and scheduler partials), the clip system with the continual evaluation protocols
(``ClassificationSystem``), the image system of the SPA study (``ImageClassificationSystem``) and the online
action detection system of the Continual Transformers study (``OnlineDetectionSystem``, with its frame-level mAP /
mcAP metric ``DetectionAP``). No architecture code."""

from .base import ClassifierBase, classification_metrics
from .classification import PROTOCOLS, STEPPED, ClassificationSystem, ClipLengthNeed, required_clip_length
from .detection import OnlineDetectionSystem, soft_cross_entropy
from .detection_metrics import DetectionAP
from .image import ImageClassificationSystem, phase_step_lr

__all__ = [
    "PROTOCOLS",
    "STEPPED",
    "ClassificationSystem",
    "ClassifierBase",
    "ClipLengthNeed",
    "DetectionAP",
    "ImageClassificationSystem",
    "OnlineDetectionSystem",
    "classification_metrics",
    "phase_step_lr",
    "required_clip_length",
    "soft_cross_entropy",
]
