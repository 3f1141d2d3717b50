"""Sessions: what lets a connection that dropped come back as itself, with what it missed.

A named connection gets a resume token.  When it drops without ``/quit`` (a reset, a lid
closed, a write that failed), its session is *held*: the name and the room stay, nobody else
may take the name, and the token brings it all back on a new connection within the window;
then the session ends as an ordinary leave.  Each resume gives a new token, so a token works
once.  Tokens are kept only as their SHA-256 and looked up by it, so how long a comparison
takes says nothing of any token (as a constant-time comparison would ensure); they are never
logged.

In a cluster (``serve --redis``) each session is also kept in Redis under its token's digest
(see :mod:`groupchat.server.cluster.presence`), so that a person whose node died resumes on
another one.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

TOKEN_BYTES = 16  # 128 bits
DEFAULT_WINDOW_SECONDS = 120.0

Holder = TypeVar("Holder")


@dataclass
class Session(Generic[Holder]):
    """One person's session: who holds it now and, while held, until when and from which id."""

    holder: Holder
    digest: bytes
    expires: Optional[float] = None  # None while connected
    held_from: int = 0  # the first id the dropped connection was not handed
    reason: str = ""  # why it dropped: the leave's reason if it is never resumed


class SessionTable(Generic[Holder]):
    """The sessions of connected and held members; thread-safe, no I/O.

    >>> table = SessionTable(window=120, now=lambda: 0.0)
    >>> token = table.open("alice")
    >>> table.hold("alice", held_from=7, reason="connection lost")
    True
    >>> session, new_token = table.resume(token)
    >>> session.holder, session.held_from, table.resume(token)
    ('alice', 7, None)
    """

    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS, now: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._now = now
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Session[Holder]] = {}
        self._by_holder: dict[Holder, Session[Holder]] = {}

    def open(self, holder: Holder) -> str:
        """A new session for ``holder``; return its token."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = Session(holder, digest(token))
        with self._lock:
            self._by_digest[session.digest] = session
            self._by_holder[holder] = session
        return token

    def hold(self, holder: Holder, held_from: int, reason: str) -> bool:
        """Keep ``holder``'s session for the window after its connection dropped; False if it
        has none, or it is held already."""
        with self._lock:
            session = self._by_holder.get(holder)
            if session is None or session.expires is not None:
                return False
            session.expires = self._now() + self.window
            session.held_from = held_from
            session.reason = reason
            return True

    def close(self, holder: Holder) -> Optional[bytes]:
        """End ``holder``'s session (a /quit, a kick, a ban): its token works no more.  Return
        its digest (None if it had none)."""
        with self._lock:
            session = self._by_holder.pop(holder, None)
            if session is None:
                return None
            del self._by_digest[session.digest]
            return session.digest

    def digest_of(self, holder: Holder) -> Optional[bytes]:
        """The digest of ``holder``'s token now (None if it has no session)."""
        with self._lock:
            session = self._by_holder.get(holder)
            return session.digest if session is not None else None

    def resume(self, token: str) -> Optional[tuple[Session[Holder], str]]:
        """The session ``token`` opens and a new token for it (the old one is spent), or None
        if there is no such session or its window has passed.  The caller moves the session
        to its new holder with :meth:`move`."""
        with self._lock:
            session = self._by_digest.get(digest(token))
            if session is None:
                return None
            if session.expires is not None and session.expires <= self._now():
                return None
            token = secrets.token_urlsafe(TOKEN_BYTES)
            del self._by_digest[session.digest]
            session.digest = digest(token)
            self._by_digest[session.digest] = session
            return session, token

    def move(self, session: Session[Holder], holder: Holder) -> None:
        """Give a resumed session to the connection that resumed it."""
        with self._lock:
            self._by_holder.pop(session.holder, None)
            session.holder = holder
            session.expires = None
            self._by_holder[holder] = session

    def expired(self) -> list[Session[Holder]]:
        """Take the held sessions whose window has passed (each once)."""
        now = self._now()
        with self._lock:
            gone = [s for s in self._by_holder.values() if s.expires is not None and s.expires <= now]
            for session in gone:
                del self._by_holder[session.holder]
                del self._by_digest[session.digest]
        return gone


def digest(token: str) -> bytes:
    """What a token is kept as: its SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()
