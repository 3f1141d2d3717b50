"""Who is connected, under which name, in which room, behind one lock.

The lock guards membership only: callers get snapshots (tuples) and do their socket I/O
after the lock is released, so a slow socket can never hold up a join, a leave or a
fan-out elsewhere.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

from groupchat.errors import NameTakenError
from groupchat.protocol import name_key

if TYPE_CHECKING:
    from groupchat.outbox import Outbox

LOBBY = "lobby"


class Member:
    """One connection as the chat sees it: where it comes from, its name and room, how to reach it."""

    def __init__(self, address: str, outbox: Outbox) -> None:
        self.address = address
        self.host = address.rpartition(":")[0].strip("[]")
        self.outbox = outbox
        self.send = outbox.put  # never blocks: see Outbox
        self.name: Optional[str] = None
        self.room: Optional[Room] = None
        self.is_op = False
        self.authenticated = False  # gave the server's password (when it has one)
        self.leave_reason = ""  # set when the chat itself ends the connection (/quit, /kick)

    def __repr__(self) -> str:
        return f"<Member {self.name or '(unnamed)'} from {self.address}>"


class Room:
    """A room: its members as a snapshot tuple (replaced, never changed) and its topic."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: tuple[Member, ...] = ()
        self.topic = ""


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
    A room exists while someone is in it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[Member] = set()
        self._names: dict[str, Member] = {}
        self._rooms: dict[str, Room] = {}

    def connect(self, member: Member) -> None:
        """Track a new connection (unnamed until :meth:`claim`)."""
        with self._lock:
            self._connections.add(member)

    def claim(self, member: Member, name: str) -> Optional[str]:
        """Give ``member`` the name (first or new), or raise :class:`NameTakenError`; return the old name."""
        key = name_key(name)
        with self._lock:
            holder = self._names.get(key)
            if holder is not None and holder is not member:
                raise NameTakenError(f'the name "{name}" is taken')
            old = member.name
            if old is not None:
                del self._names[name_key(old)]
            self._names[key] = member
            member.name = name
            return old

    def enter(self, member: Member, room_name: str, mark: Callable[[], int] = lambda: 0,
              ) -> tuple[tuple[Member, ...], tuple[Member, ...], int]:
        """Move a named member into a room (made if new).

        Return who stays behind, who was there, and ``mark()`` taken at the moment of entering:
        with :meth:`roommates`' ``record`` this tells what the member gets live from what
        was said before it came.
        """
        key = name_key(room_name)
        with self._lock:
            if member not in self._connections:
                return (), (), mark()
            left_behind = self._remove_from_room(member)
            room = self._rooms.get(key)
            if room is None:
                room = self._rooms[key] = Room(room_name)
            already_there = room.members
            room.members = already_there + (member,)
            member.room = room
            return left_behind, already_there, mark()

    def disconnect(self, member: Member) -> Optional[tuple[Member, ...]]:
        """Forget a connection; if it was in a room, return who is left there (to hear it left)."""
        with self._lock:
            self._connections.discard(member)
            if member.name is not None and self._names.get(name_key(member.name)) is member:
                del self._names[name_key(member.name)]
            if member.room is None:
                return None
            return self._remove_from_room(member)

    def _remove_from_room(self, member: Member) -> tuple[Member, ...]:
        room = member.room
        if room is None:
            return ()
        room.members = tuple(m for m in room.members if m is not member)
        if not room.members:
            del self._rooms[name_key(room.name)]
        member.room = None
        return room.members

    def roommates(self, member: Member, record: Optional[Callable[[Room], object]] = None,
                  ) -> tuple[Member, ...]:
        """A snapshot of everyone in ``member``'s room, ``member`` included (empty if in none).

        ``record(room)`` runs in the same instant (it must be quick and do no I/O: the chat
        appends to history's in-memory queue), so whoever the snapshot misses entered after it.
        """
        with self._lock:
            room = member.room
            if room is None:
                return ()
            if record is not None:
                record(room)
            return room.members

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
            infos = [RoomInfo(r.name, len(r.members), r.topic) for r in self._rooms.values()]
        return sorted(infos, key=lambda info: (-info.count, name_key(info.name)))

    def named(self) -> list[Member]:
        """A snapshot of every member in a room."""
        with self._lock:
            return [m for room in self._rooms.values() for m in room.members]

    def connections(self) -> list[Member]:
        """A snapshot of every open connection, named or not."""
        with self._lock:
            return list(self._connections)

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)
