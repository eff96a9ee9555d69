"""What the data of a run skipped, for its end: ``report_data(datamodule, metrics)`` adds ``data/<split>/<kind>``
counts to the metrics that go to ``metrics.json`` and logs one line per split.

The kinds are those of ``datamodules.robust.skip_counts``: ``missing`` (annotated, absent from disk),
``unreadable`` (found unreadable when the split was built), ``unknown_label`` (a label outside the class list),
``duplicate`` (annotated twice) and ``failed`` (failed to decode while loading; left out of evaluation). A
datamodule without ``skipped()`` (data that cannot be skipped, e.g. generated in memory) reports nothing.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["data_metrics", "report_data"]

log = logging.getLogger(__name__)

#: how each kind reads in the end-of-run line
WORDS = {
    "missing": "missing",
    "unreadable": "unreadable at indexing",
    "unknown_label": "with a label outside the classes",
    "duplicate": "annotated twice",
    "failed": "unreadable",
}


def data_metrics(datamodule: Any) -> dict[str, int]:
    """``{"data/<split>/<kind>": count}`` from ``datamodule.skipped()``; empty without one."""
    skipped = getattr(datamodule, "skipped", None)
    if not callable(skipped):
        return {}
    return {f"data/{split}/{kind}": int(n) for split, counts in skipped().items() for kind, n in counts.items()}


def report_data(datamodule: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the ``data/<split>/<kind>`` counts added, and one log line per split that skipped
    something (or one saying nothing was skipped). Call it after the last stage, before writing metrics.json."""
    counts = data_metrics(datamodule)
    if not counts:
        return dict(metrics)
    splits: dict[str, list[str]] = {}
    for key, n in counts.items():
        _, split, kind = key.split("/")
        splits.setdefault(split, [])
        if n:
            splits[split].append(f"{n} {WORDS.get(kind, kind)}")
    lines = [f"{split}: {', '.join(parts)}" for split, parts in splits.items() if parts]
    if lines:
        log.warning("Data skipped (data/<split>/<kind> in metrics.json): " + "; ".join(lines))
    else:
        log.info(f"Data: no sample skipped ({', '.join(splits)})")
    return {**metrics, **counts}
