"""The server's limits and defaults, named, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from groupchat.errors import GroupchatError
from groupchat.protocol import MAX_LINE_BYTES

HANDSHAKE_TIMEOUT_SECONDS = 30.0
# Outgoing bytes a connection may have waiting before it counts as not reading and is cut
# off; with as much again in flight to the kernel this bounds each connection's memory.
MAX_QUEUED_BYTES = 256 * 1024
SHUTDOWN_FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class ServerSettings:
    """What a :class:`groupchat.server.ChatServer` enforces; the defaults protect a public server."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    max_line: int = MAX_LINE_BYTES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    shutdown_flush: float = SHUTDOWN_FLUSH_SECONDS
    op_password: Optional[str] = None  # enables /op; None: no operators


def read_secret(path: str, what: str) -> str:
    """A password kept in a file (so it is never on a command line): its first line."""
    try:
        secret = Path(path).read_text(encoding="utf-8").partition("\n")[0].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupchatError(f"cannot read the {what} file {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
    if not secret:
        raise GroupchatError(f"the {what} file {path} is empty")
    return secret
