"""Wiring shared by the entry points, in one namespace: ``loggers`` (loggers with the wandb offline rule,
callbacks, the model summary), ``runs`` (the system, run files, metrics), ``report`` (the summary that ends every
run) and
``noise`` (filters for library output that a user cannot act on, applied on import)."""

from experiments.loggers import *  # noqa: F403
from experiments.loggers import __all__ as _loggers
from experiments.noise import *  # noqa: F403
from experiments.noise import __all__ as _noise
from experiments.report import *  # noqa: F403
from experiments.report import __all__ as _report
from experiments.runs import *  # noqa: F403
from experiments.runs import __all__ as _runs

__all__ = sorted([*_loggers, *_noise, *_report, *_runs])
