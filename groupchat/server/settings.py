"""The server's limits and defaults, named, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from groupchat.protocol import MAX_LINE_BYTES
from groupchat.server.flood import DEFAULT_ADDRESS_BURST, DEFAULT_ADDRESS_RATE, DEFAULT_BURST, DEFAULT_RATE
from groupchat.server.notices import NOTICE_INTERVAL_SECONDS
from groupchat.server.sessions import DEFAULT_WINDOW_SECONDS

HANDSHAKE_TIMEOUT_SECONDS = 30.0  # to complete TLS, give the password and a name
MAX_CLIENTS = 1000
MAX_PER_ADDRESS = 16
WRONG_PASSWORD_DELAY_SECONDS = 2.0  # doubling after a few misses from one address (guesses.py)
PASSWORD_LOCKOUT_AFTER = 20  # wrong passwords from one address before it is locked out
PASSWORD_LOCKOUT_MINUTES = 15.0
DEFAULT_REPLAY = 20
# Megabytes of messages (their text) history keeps; past it the oldest are pruned.  The file,
# with its search index, takes up to about four times as much: 256 keeps it near 1 GB.
MAX_HISTORY_MB = 256
MAX_LISTED_NAMES = 20  # the welcome and /who name this many, then say how many more
MAX_TOPIC_CHARS = 200  # a longer topic is refused
MAX_REASON_CHARS = 100  # a /quit reason is cut to this many characters
# Outgoing bytes a connection may have waiting; past it the oldest room messages are
# dropped for it.  With as much again in flight to the kernel this bounds its memory.
MAX_QUEUED_BYTES = 256 * 1024
STALL_TIMEOUT_SECONDS = 60.0  # a client that takes no bytes at all for this long is cut off
SHUTDOWN_FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class ServerSettings:
    """What a :class:`groupchat.server.tcp.ChatServer` enforces; the defaults protect a public server.

    A limit of 0 turns that limit off.
    """

    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    idle_timeout: float = 0  # seconds without a line before a named client is dropped
    max_line: int = MAX_LINE_BYTES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    stall_timeout: float = STALL_TIMEOUT_SECONDS
    rate: float = DEFAULT_RATE  # lines per second per connection, as backpressure
    burst: int = DEFAULT_BURST
    address_rate: float = DEFAULT_ADDRESS_RATE  # every connection from one address together
    address_burst: int = DEFAULT_ADDRESS_BURST
    max_clients: int = MAX_CLIENTS
    max_per_address: int = MAX_PER_ADDRESS
    allow: Sequence[str] = ()  # addresses or CIDR blocks; empty: everyone not denied
    deny: Sequence[str] = ()
    certfile: Optional[str] = None  # serve TLS with this certificate chain
    keyfile: Optional[str] = None
    password: Optional[str] = None  # asked for before the name
    wrong_password_delay: float = WRONG_PASSWORD_DELAY_SECONDS
    password_lockout_after: int = PASSWORD_LOCKOUT_AFTER  # each password (server, /op) counts its own
    password_lockout_minutes: float = PASSWORD_LOCKOUT_MINUTES
    shutdown_flush: float = SHUTDOWN_FLUSH_SECONDS
    op_password: Optional[str] = None  # enables /op; None: no operators
    history_path: Optional[str] = None  # the history database; None keeps history in memory
    retention_days: float = 0  # history older than this is pruned; 0 keeps everything
    max_history_mb: int = MAX_HISTORY_MB  # of text; past it the oldest history is pruned; 0: no bound
    replay: int = DEFAULT_REPLAY  # lines of history shown on entering a room
    notice_interval: float = NOTICE_INTERVAL_SECONDS  # join/leave notice lines per room, at most one per
    redis: Optional[str] = None  # redis://HOST:PORT/DB: one node of the chat of all servers on it
    resume_window: float = DEFAULT_WINDOW_SECONDS  # a dropped session is held this long; 0: no sessions

