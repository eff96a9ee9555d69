"""Deprecated: the clip classification system moved to ``modules.systems`` (``modules/systems/classification.py``).

Kept for one release so that configs naming ``_target_: modules.system.ClassificationSystem`` and code importing
from here still work; the names are the same objects as in ``modules.systems``.
"""

import warnings

from modules.systems.classification import (
    PROTOCOLS,
    STEPPED,
    ClassificationSystem,
    ClipLengthNeed,
    required_clip_length,
)

__all__ = ["PROTOCOLS", "STEPPED", "ClassificationSystem", "ClipLengthNeed", "required_clip_length"]

warnings.warn(
    "modules.system is deprecated and will be removed in the next release: import from modules.systems "
    "(configs: _target_: modules.systems.ClassificationSystem)",
    DeprecationWarning,
    stacklevel=2,
)
