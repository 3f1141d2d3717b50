"""Who is connected, under which name, behind one lock.

The lock guards membership only: callers get snapshots (tuples) and do their socket I/O
after the lock is released, so a slow socket can never hold up a join, a leave or a
fan-out elsewhere.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

from groupchat.errors import NameTakenError
from groupchat.protocol import name_key

if TYPE_CHECKING:
    from groupchat.outbox import Outbox


class Member:
    """One connection as the chat sees it: where it comes from, its name once given, how to reach it."""

    def __init__(self, address: str, outbox: Outbox) -> None:
        self.address = address
        self.outbox = outbox
        self.send = outbox.put  # never blocks: see Outbox
        self.name: Optional[str] = None

    def __repr__(self) -> str:
        return f"<Member {self.name or '(unnamed)'} from {self.address}>"


class Registry:
    """Every open connection, and the named members who receive the chat.

    A connection is added on connect and removed on every way out.  Naming is two steps so
    that the welcome line reaches a newcomer before any chat line does: :meth:`claim`
    reserves the name atomically, :meth:`activate` starts delivery to it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[Member] = set()
        self._names: dict[str, Member] = {}
        self._active: tuple[Member, ...] = ()

    def connect(self, member: Member) -> None:
        """Track a new connection (unnamed until :meth:`claim`)."""
        with self._lock:
            self._connections.add(member)

    def claim(self, member: Member, name: str) -> tuple[Member, ...]:
        """Give ``member`` the name, or raise :class:`NameTakenError`; return who else is here."""
        key = name_key(name)
        with self._lock:
            holder = self._names.get(key)
            if holder is not None and holder is not member:
                raise NameTakenError(f'the name "{name}" is taken')
            if member.name is not None:
                del self._names[name_key(member.name)]
            self._names[key] = member
            member.name = name
            return tuple(m for m in self._active if m is not member)

    def activate(self, member: Member) -> None:
        """Start delivering the chat to a named member."""
        with self._lock:
            if member in self._connections and member not in self._active:
                self._active = self._active + (member,)

    def disconnect(self, member: Member) -> bool:
        """Forget a connection; return whether it was an active member (so others hear it left)."""
        with self._lock:
            self._connections.discard(member)
            if member.name is not None and self._names.get(name_key(member.name)) is member:
                del self._names[name_key(member.name)]
            was_active = member in self._active
            if was_active:
                self._active = tuple(m for m in self._active if m is not member)
            return was_active

    def active(self) -> tuple[Member, ...]:
        """A snapshot of the members receiving the chat."""
        with self._lock:
            return self._active

    def connections(self) -> list[Member]:
        """A snapshot of every open connection, named or not."""
        with self._lock:
            return list(self._connections)

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)
