"""Deadlines that hold however bytes arrive: one thread runs each callback when its time comes.

A receive timeout only fires while a read is blocked, so a peer that trickles a byte now and
then, or sends a thousand refused names in one write, would never meet it.  The handshake
deadline is set here at accept instead, and its callback hangs the connection up from the
outside, whatever its thread is doing.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Optional


class Deadline:
    """One pending callback; :meth:`cancel` it once it is no longer needed (the peer is named)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Optional[Callable[[], None]]) -> None:
        self.callback: Optional[Callable[[], None]] = callback

    def cancel(self) -> None:
        self.callback = None  # dropped from the heap when its time comes: no search needed


class Deadlines:
    """Callbacks run at their deadlines by one thread (:meth:`run`), in order of time.

    Callbacks run in that thread and must be quick and never block: hanging a connection
    up (a non-blocking send and a socket shutdown) is what they are for.

    >>> now = [0.0]
    >>> deadlines = Deadlines(now=lambda: now[0])
    >>> fired = []
    >>> late = deadlines.add(2.0, lambda: fired.append("late"))
    >>> early = deadlines.add(1.0, lambda: fired.append("early"))
    >>> gone = deadlines.add(1.5, lambda: fired.append("cancelled"))
    >>> gone.cancel()
    >>> now[0] = 1.75
    >>> deadlines.run_due(), fired
    (0.25, ['early'])
    >>> now[0] = 5.0
    >>> deadlines.run_due(), fired
    (None, ['early', 'late'])
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties are broken by arrival, never by comparing Deadlines
        self._changed = threading.Condition()
        self._stopping = False

    def add(self, seconds: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback`` in ``seconds`` unless cancelled first; 0 seconds means never, as a
        limit of 0 does everywhere."""
        if not seconds:
            return Deadline(None)
        deadline = Deadline(callback)
        with self._changed:
            heapq.heappush(self._heap, (self._now() + seconds, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self._changed.notify()
        return deadline

    def run_due(self) -> Optional[float]:
        """Run every callback whose time has come; return the seconds until the next (None: none)."""
        while True:
            with self._changed:
                if not self._heap:
                    return None
                wait = self._heap[0][0] - self._now()
                if wait > 0:
                    return wait
                callback = heapq.heappop(self._heap)[2].callback
            if callback is not None:
                callback()

    def run(self) -> None:
        """Run callbacks as they fall due until :meth:`stop`."""
        while True:
            wait = self.run_due()
            with self._changed:
                if self._stopping:
                    return
                self._changed.wait(wait)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
