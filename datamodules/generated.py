"""Generated embedded datasets written once and atomically: a folder holds a ``generation.json`` marker with the
parameters it was made with; it is written into a temporary sibling that replaces the folder only when complete
(the marker last), so an interrupted run never leaves a half-written set, and a folder without a marker (not made
here) is never deleted."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["MARKER", "generate_once", "read_marker"]

log = logging.getLogger(__name__)

MARKER = "generation.json"


def read_marker(folder: Path) -> dict | None:
    """The parameters ``folder`` was generated with, or None (no marker, or an unreadable one)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def generate_once(folder: str | Path, params: dict, write: Callable[[Path], None], what: str) -> bool:
    """Generate ``folder`` with ``write(tmp_folder)`` (which writes the marker of ``params`` last) unless it holds
    those parameters' files already; returns whether it generated."""
    folder = Path(folder)
    if read_marker(folder) == params:
        return False
    if folder.exists() and read_marker(folder) is None:
        raise FileExistsError(f"{folder} exists but holds no {MARKER}, so it was not generated here; move it away")
    tmp = folder.with_name(f".{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info(f"Generating {what} in {folder}")
    write(tmp)
    if read_marker(folder) == params:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return True
    if folder.exists():
        shutil.rmtree(folder)  # generated with other parameters (it has a marker)
    try:
        tmp.rename(folder)
    except OSError:
        if read_marker(folder) != params:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return True
