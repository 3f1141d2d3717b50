"""Who is connected, under which name, in which room, behind one lock.

The lock guards membership only: callers get snapshots (tuples) and do their socket I/O
after the lock is released, so a slow socket can never hold up a join, a leave or a
fan-out elsewhere.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from typing import Callable, NamedTuple, Optional, Protocol

from groupchat.errors import CommandError, NameTakenError
from groupchat.lookalikes import name_skeleton, render_lookalike
from groupchat.protocol import MAX_NAME_CHARS, name_key
from groupchat.server.events import Out
from groupchat.server.fanout import Fanout

LOBBY = "lobby"


class Stage(enum.Enum):
    """Where a connection is in its handshake; the chat handles each line by its stage."""

    PASSWORD = "password"  # the server has a password and it has not been given yet
    NAME = "name"  # asked for a name
    CHATTING = "chatting"  # named and in a room: lines are messages and commands
    CLOSING = "closing"  # the chat ended it (a refusal, /quit, a kick): nothing more is acted on


class Link(Protocol):
    """What reaches one connection (the server's :class:`~groupchat.server.outbox.Outbox`):
    sends never block, and bytes go out in the order they were sent."""

    def put(self, data: bytes, droppable: bool = False) -> None: ...
    def hold(self) -> None: ...
    def release(self, first: bytes) -> None: ...
    def end(self, last: bytes = b"") -> None: ...


class Member:
    """One connection as the chat sees it: where it comes from, its name, room and stage, and
    how to reach it.

    The chat only uses :meth:`send`, :meth:`hold`, :meth:`release` and :meth:`end`, so any
    :class:`Link` will do (the tests give one that records what it is sent).
    """

    def __init__(self, address: str, link: Link) -> None:
        self.address = address
        self.host = address.rpartition(":")[0].strip("[]")
        self.link = link  # for the server (flushing at shutdown); the chat uses the methods below
        self.send: Callable[..., None] = link.put  # (data, droppable=False); never blocks
        self.hold: Callable[[], None] = link.hold  # queue live lines until release(first)...
        self.release: Callable[[bytes], None] = link.release  # ...which sends ``first`` ahead of them
        self.stage = Stage.NAME
        self.json = False  # sent JSON Lines (after "/mode json") rather than text
        self.name: Optional[str] = None
        self.room: Optional[Room] = None
        self.is_op = False
        self.away = ""  # what /away said, until it is said without text
        self.ignoring: set[str] = set()  # name keys of people whose lines it does not want
        self.last_private_from = ""  # who /r answers
        self.published: Optional[int] = None  # the id of its last room event: a command's ack says it
        self.name_tries = 0  # names refused so far (see Chat's MAX_NAME_TRIES)
        self.since = time.monotonic()  # when it connected: the oldest unnamed make room first
        self.connected_at = time.time()  # the same, as /whois tells it
        self.leave_reason = ""  # set when the chat itself ends the connection (/quit, /kick)
        # In a cluster, when it entered its room by Redis's clock, in microseconds (0: not
        # known): an arrival before it that is told after it (a node held the notice back) is
        # not news to it.
        self.entered_at = 0

    def say(self, out: Out, droppable: bool = False) -> None:
        """Send ``out`` in this connection's format."""
        self.send(out.json if self.json else out.text, droppable)

    def end(self, last: Optional[Out] = None) -> None:
        """Send ``last`` as the last line it gets, and close once everything has gone out;
        nothing more from this connection is acted on."""
        self.stage = Stage.CLOSING
        self.link.end(b"" if last is None else last.json if self.json else last.text)

    def __repr__(self) -> str:
        return f"<Member {self.name or '(unnamed)'} from {self.address}>"


class Room:
    """A room: its members and its topic.  Only the :class:`Registry` changes it, under its lock.

    Members are kept in insertion order with O(1) joins and leaves; :attr:`members` is a
    snapshot tuple rebuilt on the first read after a change, so a crowd arriving costs no
    copying until someone speaks.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic = ""
        self.fanout = Fanout()  # its lines on their way out: see groupchat.server.fanout
        self._members: dict[Member, None] = {}
        self._snapshot: Optional[tuple[Member, ...]] = ()

    @property
    def members(self) -> tuple[Member, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self._members)
        return self._snapshot

    def add(self, member: Member) -> None:
        self._members[member] = None
        self._snapshot = None

    def discard(self, member: Member) -> None:
        self._members.pop(member, None)
        self._snapshot = None

    def first_names(self, count: int, besides: Member) -> list[str]:
        return [m.name for m in itertools.islice(self._members, count + 1) if m is not besides][:count]

    def __len__(self) -> int:
        return len(self._members)


class RoomInfo(NamedTuple):
    """What /rooms shows of a room."""

    name: str
    count: int
    topic: str


class Registry:
    """Every open connection, the names taken, and the rooms named members are in.

    A connection is added on connect and removed on every way out.  Naming is two steps so
    that the welcome line reaches a newcomer before any chat line does: :meth:`claim`
    reserves the name atomically, :meth:`enter` puts the member in a room, where it receives.
    A room exists while someone is in it.  No two names present, and no two rooms, look alike
    (one :func:`~groupchat.lookalikes.name_skeleton`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[Member] = set()
        self._names: dict[str, Member] = {}  # by name_key
        self._looks: dict[str, Member] = {}  # the same members, by name_skeleton
        self._rooms: dict[str, Room] = {}  # by name_key
        self._room_looks: dict[str, Room] = {}  # the same rooms, by name_skeleton

    def connect(self, member: Member) -> None:
        """Track a new connection (unnamed until :meth:`claim`)."""
        with self._lock:
            self._connections.add(member)

    def claim(self, member: Member, name: str) -> Optional[str]:
        """Give ``member`` the name (first or new), or raise :class:`NameTakenError` if someone
        else has it or one that looks like it; return the old name."""
        key, look = name_key(name), name_skeleton(name)
        with self._lock:
            holder = self._names.get(key)
            if holder is not None and holder is not member:
                raise NameTakenError(f'the name "{name}" is taken' + self._free_like(name))
            holder = self._looks.get(look)
            if holder is not None and holder is not member:
                raise NameTakenError(render_lookalike(name, holder.name) + self._free_like(name))
            old = member.name
            if old is not None:
                self._forget_name(member)
            self._names[key], self._looks[look] = member, member
            member.name = name
            return old

    def _forget_name(self, member: Member) -> None:
        """Free ``member``'s name and its skeleton, where they are still its own (under the lock)."""
        for table, key in ((self._names, name_key(member.name)), (self._looks, name_skeleton(member.name))):
            if table.get(key) is member:
                del table[key]

    def _free_like(self, name: str) -> str:
        """``; "alice2" is free``: the first free name made by adding a number, like no one's
        present (under the lock)."""
        stem = name[:MAX_NAME_CHARS - 2]
        for number in range(2, 100):
            free = f"{stem}{number}"
            if name_key(free) not in self._names and name_skeleton(free) not in self._looks:
                return f'; "{free}" is free'
        return ""

    def enter(self, member: Member, room_name: str, mark: Callable[[], int] = lambda: 0,
              ) -> tuple[Optional[Room], Room, int]:
        """Move a named member into a room (made if new): O(1), however full the room.

        Return the room it left (if any), the room it is in, and ``mark()`` taken at the
        moment of entering: with :meth:`post` this tells what the member
        gets live from what was said before it came.  A new room that looks like one in use
        is :class:`CommandError`, with nothing changed.
        """
        key, look = name_key(room_name), name_skeleton(room_name)
        with self._lock:
            alike = self._room_looks.get(look)
            if alike is not None and key not in self._rooms:
                raise CommandError(render_lookalike(room_name, alike.name,
                                                    f"a room in use: /join {alike.name} goes there"))
            left = self._remove_from_room(member)
            if member not in self._connections:  # gone meanwhile: a room of its own, shared by none
                return left, Room(room_name), mark()
            room = self._rooms.get(key)
            if room is None:
                room = self._rooms[key] = self._room_looks[look] = Room(room_name)
            room.add(member)
            member.room = room
            return left, room, mark()

    def hold(self, member: Member, mark: Callable[[], int]) -> int:
        """Forget a named connection that dropped but keep its name and its place in its room,
        for its session to be resumed (see :mod:`groupchat.server.sessions`); return ``mark()``
        taken then: what it was handed ends there.  Lines sent to it meanwhile go nowhere
        (its outbox is closed); :meth:`disconnect` ends the hold."""
        with self._lock:
            self._connections.discard(member)
            return mark()

    def resume(self, held: Member, member: Member, mark: Callable[[], int]) -> tuple[Optional[Room], int]:
        """Put ``member``, a new connection, in ``held``'s place: its name, room and operator
        status; return the room and ``mark()`` taken at that instant (see :meth:`enter`)."""
        with self._lock:
            for table, key in ((self._names, name_key(held.name)), (self._looks, name_skeleton(held.name))):
                if table.get(key) is held:
                    table[key] = member
            member.name, member.is_op, member.away = held.name, held.is_op, held.away
            member.ignoring, member.last_private_from = held.ignoring, held.last_private_from
            room, held.room = held.room, None
            if room is not None:
                room.discard(held)
                room.add(member)
                member.room = room
            self._connections.discard(held)
            return room, mark()

    def disconnect(self, member: Member) -> Optional[Room]:
        """Forget a connection; return the room it was in, if any (so that room hears it left)."""
        with self._lock:
            self._connections.discard(member)
            if member.name is not None:
                self._forget_name(member)
            return self._remove_from_room(member)

    def _remove_from_room(self, member: Member) -> Optional[Room]:
        room = member.room
        if room is None:
            return None
        room.discard(member)
        if not room:
            del self._rooms[name_key(room.name)]
            if self._room_looks.get(name_skeleton(room.name)) is room:
                del self._room_looks[name_skeleton(room.name)]
        member.room = None
        return room

    def glimpse(self, room: Room, besides: Member, count: int) -> tuple[list[str], int]:
        """The first ``count`` names in a room and how many are there, ``besides`` not counted."""
        with self._lock:
            return room.first_names(count, besides), len(room) - (besides.room is room)

    def roommates(self, member: Member) -> tuple[Member, ...]:
        """A snapshot of everyone in ``member``'s room, ``member`` included (empty if in none)."""
        with self._lock:
            return member.room.members if member.room is not None else ()

    def post(self, member: Member, post: Callable[[Room], object]) -> Optional[Room]:
        """Run ``post(room)`` for ``member``'s room in one instant with the joins and leaves;
        return the room (None, and nothing run, if it is in none).

        ``post`` must be quick and do no I/O: the chat appends to history's in-memory queue
        and to the room's fan-out queue there, with a snapshot of the members, so whoever
        the snapshot misses entered after the line (see :meth:`enter`'s ``mark``).
        """
        with self._lock:
            room = member.room
            if room is not None:
                post(room)
            return room

    def post_to(self, room: Room, post: Callable[[Room], object]) -> bool:
        """:meth:`post` for a room rather than a member's; False, and nothing run, if the
        room is gone (everyone left it)."""
        with self._lock:
            if self._rooms.get(name_key(room.name)) is not room:
                return False
            post(room)
            return True

    def post_named(self, room_name: str, post: Callable[[Optional[Room]], object]) -> Optional[Room]:
        """Run ``post`` for the room of that name, or None if no one here is in it, in one
        instant with the joins and leaves (see :meth:`post`); return the room."""
        with self._lock:
            room = self._rooms.get(name_key(room_name))
            post(room)
            return room

    def members_in(self, room: Room) -> tuple[Member, ...]:
        """A snapshot of a room's members (empty once the room is gone)."""
        with self._lock:
            return room.members

    def set_topic(self, room: Room, topic: str) -> None:
        with self._lock:
            room.topic = topic

    def find(self, name: str) -> Optional[Member]:
        """The connected member with this name, ignoring case."""
        with self._lock:
            return self._names.get(name_key(name))

    def rooms(self) -> list[RoomInfo]:
        """Every room with its member count and topic, largest first."""
        with self._lock:
            infos = [RoomInfo(r.name, len(r), r.topic) for r in self._rooms.values()]
        return sorted(infos, key=lambda info: (-info.count, name_key(info.name)))

    def named(self) -> list[Member]:
        """A snapshot of every member in a room."""
        with self._lock:
            return [m for room in self._rooms.values() for m in room.members]

    def connections(self) -> list[Member]:
        """A snapshot of every open connection, named or not."""
        with self._lock:
            return list(self._connections)

    def is_open(self, member: Member) -> bool:
        """Whether ``member``'s connection is open: not held (dropped off) nor gone."""
        with self._lock:
            return member in self._connections

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)
