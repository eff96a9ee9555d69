"""Filters for library output that a user of this project cannot act on; real warnings stay. Applied on import."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ignore_checkpoint_callback_states", "quiet_known_noise"]


# --- output a user cannot act on -------------------------------------------------------------------------------
#: Lightning's rank-zero info lines to drop, by prefix.
_QUIET_PREFIXES = (
    # "💡 Tip: ... try installing litlogger / litmodels": advertisements for Lightning's cloud services, printed by
    # every Trainer (litmodels' whenever it creates a default checkpoint callback, as in eval)
    "💡 Tip:",
    # Lightning's note that it adds no default summary because configs/callbacks/model_summary.yaml gave ours
    "Trainer already configured with model summary callbacks",
)
# rank_zero_info logs through whichever of these its last importer named
_RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_QUIET_PREFIXES)


def quiet_known_noise() -> None:
    """Drop library output that says nothing a user of this project can act on; real warnings stay.

    Runs when this module is imported (every entry point imports it); calling it again changes nothing.
    """
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes())
    # Lightning 2.6's own pytree helper (pytorch_lightning/utilities/_pytree.py) builds torch's deprecated
    # LeafSpec on every dataloader batch it inspects: a FutureWarning for Lightning's authors, not for a user
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.",
    )


@contextmanager
def ignore_checkpoint_callback_states() -> Iterator[None]:
    """Around testing a checkpoint: Lightning warns that the callbacks which saved it (checkpointing, LR monitor)
    are missing, but their state matters only to resumed fitting; testing reads the weights."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
        yield


quiet_known_noise()
