"""The server's log stays small however often one thing happens: repeats are counted, not written.

One address can be refused thousands of times a second, and each refusal would be a line.
:class:`RepeatFilter` lets a few lines of each kind through per window and counts the rest;
the next line of that kind to get through says how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable

REPEATS_SHOWN = 5  # lines of one kind logged per window
REPEAT_WINDOW_SECONDS = 10.0


class _Kind:
    __slots__ = ("start", "shown", "left_out")

    def __init__(self, start: float) -> None:
        self.start = start
        self.shown = 0
        self.left_out = 0


class RepeatFilter(logging.Filter):
    """At most ``shown`` records of one kind (logger and message template, whatever the
    arguments) per ``window`` seconds.

    >>> now = [0.0]
    >>> repeats = RepeatFilter(shown=2, window=10, now=lambda: now[0])
    >>> def refused(port):
    ...     record = logging.LogRecord("tcp", logging.INFO, "", 0, "refused %s", (port,), None)
    ...     return record.getMessage() if repeats.filter(record) else None
    >>> [refused(port) for port in range(4)]
    ['refused 0', 'refused 1', None, None]
    >>> now[0] = 11
    >>> refused(4)
    'refused 4 (and 2 more like it in the 10 s before, not logged)'
    """

    def __init__(self, shown: int = REPEATS_SHOWN, window: float = REPEAT_WINDOW_SECONDS,
                 now: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.shown = shown
        self.window = window
        self._now = now
        self._lock = threading.Lock()
        self._kinds: dict[Hashable, _Kind] = {}  # as many as the code has log calls: bounded

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._now()
        key = (record.name, record.msg)
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None or now - kind.start >= self.window:
                left_out = kind.left_out if kind else 0
                kind = self._kinds[key] = _Kind(now)
                if left_out:
                    record.msg, record.args = "%s (and %s more like it in the %g s before, not logged)", (
                        record.getMessage(), f"{left_out:,}", self.window)
            if kind.shown < self.shown:
                kind.shown += 1
                return True
            kind.left_out += 1
            return False
