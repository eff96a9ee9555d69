"""A counter shared with DataLoader workers (the skip-and-count of unreadable samples). Imports no decoder, so
image and video datamodules can both use it."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.context
from typing import Any

__all__ = ["SharedCounter"]


class SharedCounter:
    """An integer that DataLoader worker processes increment and the main process reads.

    Backed by a ``multiprocessing.Value``, which reaches workers started by fork (inherited memory) or spawn /
    forkserver (pickled at process creation, the one time a ``Value`` may be). It is made in the spawn context
    because a lock made in the fork context refuses to be pickled for spawned workers. Copying it otherwise
    (``pickle``, ``deepcopy``) gives a detached counter holding the current value, instead of raising.
    """

    def __init__(self, value: int = 0) -> None:
        self._value = _shared_int(value)

    @property
    def value(self) -> int:
        return int(self._value.value)

    def increment(self) -> int:
        with self._value.get_lock():
            self._value.value += 1
            return int(self._value.value)

    def __getstate__(self) -> dict:
        if multiprocessing.context.get_spawning_popen() is None:
            return {"value": self.value}
        return {"shared": self._value}

    def __setstate__(self, state: dict) -> None:
        self._value = state["shared"] if "shared" in state else _shared_int(state["value"])


def _shared_int(value: int) -> Any:
    return mp.get_context("spawn").Value("q", value)
