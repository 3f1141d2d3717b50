"""Join and leave notices, coalesced per room so that a crowd arriving costs a bounded number of lines.

Announcing every join to everyone is quadratic: 10,000 people joining would be 50 million
notice lines.  Instead each room gets at most one such line per interval: the first event
in a quiet room is told at once, and the rest of that interval's comings and goings wait
and are told together (``alice, bob and 37 others joined; carol left``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, NamedTuple, Optional, Sequence, TypeVar

from groupchat.protocol import JOINED, LEFT, render_comings, render_moved

HELD, BACK = "held", "back"  # dropped off and may resume; resumed

NOTICE_INTERVAL_SECONDS = 1.0
MAX_NOTICE_NAMES = 10  # names spelled out in one coalesced line; the rest are counted

Room = TypeVar("Room", bound=Hashable)


class Comings(NamedTuple):
    """A batch of comings and goings in one room, told as one notice.

    >>> Comings([f"p{n}" for n in range(40)], ["q"]).text()[-35:]
    'p8, p9 and 30 others joined; q left'
    >>> Comings([], ["bob"], to="dev").parts()
    [('leave', {'names': ['bob'], 'count': 1, 'reason': None, 'to': 'dev'})]
    """

    joined: list[str]
    left: list[str]
    reason: str = ""  # of the last leave: shown when it is the batch's only one
    to: Optional[str] = None  # the room a lone leaver went to
    held: Sequence[str] = ()  # dropped off, their sessions held (see groupchat.server.sessions)
    back: Sequence[str] = ()  # resumed their sessions

    def newcomers(self) -> frozenset[str]:
        """Who this notice is not for: those it says arrived (each had a welcome instead)."""
        return frozenset(self.joined) | frozenset(self.back)

    def text(self) -> str:
        """The notice's text: a bounded number of names spelled out; a lone leave keeps its
        reason, in a crowd reasons are left out."""
        if self.to is not None:
            return render_moved(self.left[0], self.to)
        return render_comings(self.joined, self.left, MAX_NOTICE_NAMES, self.reason, self.held, self.back)

    def parts(self) -> list[tuple[str, dict[str, Any]]]:
        """The JSON events it makes, (type, fields): a join, a reconnecting, a back and a
        leave, each if any, in the order the text names them."""
        parts: list[tuple[str, dict[str, Any]]] = [
            (kind, {"names": names[:MAX_NOTICE_NAMES], "count": len(names)})
            for kind, names in (("join", self.joined), ("reconnecting", self.held), ("back", self.back)) if names]
        if self.left:
            lone = len(self.left) == 1
            parts.append(("leave", {"names": self.left[:MAX_NOTICE_NAMES], "count": len(self.left),
                                    "reason": (self.reason or None) if lone else None, "to": self.to}))
        return parts


@dataclass
class _Batch:
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # everyone it names
    due: float = 0.0
    reason: str = ""  # of the last leave: shown when it is the batch's only one

    def comings(self) -> Comings:
        return Comings(self.joined, self.left, self.reason, held=self.held, back=self.back)


_FIELDS = {JOINED: "joined", LEFT: "left", HELD: "held", BACK: "back"}  # event -> its list in a batch


class NoticeBatcher(Generic[Room]):
    """Decides, per room, whether a join or leave is told now or waits for the room's next line.

    Thread-safe; :meth:`add` never blocks.  Whoever sends notices calls :meth:`take_due` when
    :meth:`wait` says something is due, and tells each batch to everyone then in the room but
    those it says arrived; :meth:`take_naming` takes a batch early, for someone it names who is
    about to speak.  An interval of 0 tells every event at once.
    """

    def __init__(self, interval: float = NOTICE_INTERVAL_SECONDS,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._now = now
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._last_told: dict[Room, float] = {}
        self._batches: dict[Room, _Batch] = {}

    def add(self, room: Room, event: str, name: str, audience: int, reason: str = "") -> Optional[Comings]:
        """Note that ``name`` joined, left, dropped off (HELD) or came back (BACK) before
        ``audience`` others; return what to tell now, or None if it waits (or, with no
        audience, needs no telling).

        A leave's ``reason`` (a /quit message, a kick) is told when it is the only leave in its
        line; in a crowd's line it is left out, so whatever the reasons a room hears at most
        one line per interval, of bounded length.
        """
        now = self._now()
        with self._lock:
            batch = self._batches.get(room)
            if batch is None and not audience:
                return None
            if batch is None and now - self._last_told.get(room, -self.interval) >= self.interval:
                self._last_told[room] = now
                return _Batch(**{_FIELDS[event]: [name]}, reason=reason).comings()
            if batch is None:
                batch = self._batches[room] = _Batch(due=self._last_told[room] + self.interval)
                self._changed.notify()
            getattr(batch, _FIELDS[event]).append(name)
            batch.names.add(name)
            if event == LEFT:
                batch.reason = reason
            return None

    def take_naming(self, room: Room, name: str) -> Optional[Comings]:
        """The room's waiting batch, now, if it names ``name``: someone about to speak is told
        to have arrived first (their leaving cannot wait: they are still here)."""
        if room not in self._batches:  # the usual case, without the lock: a batch naming the
            return None                # caller was added by the caller's own thread, before
        with self._lock:
            batch = self._batches.get(room)
            if batch is None or name not in batch.names:
                return None
            del self._batches[room]
            self._last_told[room] = self._now()
        return batch.comings()

    def take_due(self) -> list[tuple[Room, Comings]]:
        """The batches whose time has come, each taken once."""
        now = self._now()
        with self._lock:
            due = [room for room, batch in self._batches.items() if batch.due <= now]
            taken = [(room, self._batches.pop(room)) for room in due]
            for room, _ in taken:
                self._last_told[room] = now
            self._forget_quiet_rooms(now)
        return [(room, batch.comings()) for room, batch in taken]

    def wait(self, timeout: float) -> None:
        """Sleep until a batch is due, something new waits, or ``timeout`` passes."""
        with self._lock:
            if self._batches:
                timeout = min(timeout, max(0.0, min(b.due for b in self._batches.values()) - self._now()))
            self._changed.wait(timeout)

    def wake(self) -> None:
        """End a :meth:`wait` now (the server is stopping)."""
        with self._lock:
            self._changed.notify_all()

    def _forget_quiet_rooms(self, now: float) -> None:
        """Rooms quiet for a whole interval need no memory: their next event is told at once."""
        for room in [r for r, told in self._last_told.items()
                     if now - told >= self.interval and r not in self._batches]:
            del self._last_told[room]
