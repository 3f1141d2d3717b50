"""A room's fan-out: its lines go out from one handler at a time, which takes the others' along.

Each handler fans its own lines out to the room.  When several people talk at once, their
handlers would each make one send per member and take turns with the interpreter lock at
every send.  Instead a handler queues its lines (:meth:`Fanout.add`) and takes the room's
turn (:meth:`Fanout.flush`); whoever has the turn sends everything queued so far, merged
into one send per member.  A handler that finds its lines already sent by another simply
returns.  So a busy room costs one send per member per turn, however many are talking.

Every flush returns only once the lines added before it are in the members' outboxes, so
what a handler does next (a notice, leaving) still follows its lines.  Sends never block
(see :mod:`groupchat.server.outbox`), so a turn is never held up by a slow member.

Each delivery is rendered once per wire format (text, JSON Lines), and in JSON only when
some member takes it.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, NamedTuple, Optional, Protocol, Sequence

from groupchat.server.events import Out


class Recipient(Protocol):
    """Whoever a room's lines go to (a :class:`~groupchat.server.registry.Member`): a send
    that never blocks, and the format it takes."""

    json: bool
    ignoring: set[str]  # name keys of senders whose lines it does not want (/ignore)

    def send(self, data: bytes, droppable: bool = False) -> None: ...


class Delivery(NamedTuple):
    """Bytes for a snapshot of a room's members, ``besides`` (the sender, usually) left out,
    and members ignoring ``sender`` (a name key; "" for the server's notices)."""

    members: tuple[Recipient, ...]
    out: Out
    droppable: bool  # see Outbox.put
    besides: Optional[Recipient]
    sender: str = ""


class Fanout:
    """One room's queue of deliveries and the turn to send them."""

    def __init__(self) -> None:
        self._queue: collections.deque[Delivery] = collections.deque()  # append/popleft are atomic
        self._turn = threading.Lock()

    def add(self, delivery: Delivery) -> None:
        """Queue a delivery: quick and without I/O, so it can be done under the registry's lock,
        which then fixes one order for the room's lines, the same as the history's."""
        self._queue.append(delivery)

    def flush(self) -> None:
        """Send what is queued (others' too); return once what was added before is handed over."""
        with self._turn:
            # What is added meanwhile waits for its own flush: a turn never grows without end.
            taken = [self._queue.popleft() for _ in range(len(self._queue))]
            for group in _groups(taken):
                _send(group)


def _groups(deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
    """Consecutive deliveries to the same snapshot of members and equally droppable, which can
    be merged; a join or a leave in between starts a new group, so nobody gets a line from
    before they came."""
    groups: list[list[Delivery]] = []
    for delivery in deliveries:
        if groups and groups[-1][0].members is delivery.members \
                and groups[-1][0].droppable == delivery.droppable:
            groups[-1].append(delivery)
        else:
            groups.append([delivery])
    return groups


def _send(group: list[Delivery]) -> None:
    """One send per member for the whole group, each member's own lines left out."""
    first = group[0]
    if len(group) == 1:  # the usual case, in a room that is not busy: paid per member per line
        out, sender, text, besides, droppable = first.out, first.sender, first.out.text, first.besides, first.droppable
        for member in first.members:
            if member is not besides and not (member.ignoring and sender in member.ignoring):
                member.send(out.json if member.json else text, droppable)
        return
    text, json = _Merged(group, lambda out: out.text), _Merged(group, lambda out: out.json)
    for member in first.members:
        data = (json if member.json else text).to(member)
        if data:
            member.send(data, first.droppable)


class _Merged:
    """A group's deliveries joined into one send, in one format: made when first needed."""

    def __init__(self, group: list[Delivery], render: Callable[[Out], bytes]) -> None:
        self._group = group
        self._render = render
        self._everything: Optional[bytes] = None
        self._datas: list[bytes] = []
        self._own: dict[Recipient, bytes] = {}

    def to(self, member: Recipient) -> bytes:
        """What ``member`` gets: everything, less its own lines (and those of whom it ignores)."""
        if self._everything is None:
            self._datas = [self._render(d.out) for d in self._group]
            self._everything = b"".join(self._datas)
            self._own = {d.besides: self._less(lambda o: o.besides is d.besides)
                         for d in self._group if d.besides is not None}
        if member.ignoring:
            return self._less(lambda o: o.besides is member or o.sender in member.ignoring)
        return self._own.get(member, self._everything)

    def _less(self, left_out: Callable[[Delivery], bool]) -> bytes:
        return b"".join(data for d, data in zip(self._group, self._datas) if not left_out(d))
