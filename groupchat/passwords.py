"""Where a password comes from: a file's first line (so it is never on a command line), else
the environment.  The server and the join client read theirs the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from groupchat.errors import GroupchatError

PASSWORD_ENV = "GROUPCHAT_PASSWORD"  # where server and client look when no password file is given


def read_secret(path: str, what: str) -> str:
    """A password kept in a file: its first line, or a :class:`GroupchatError` saying what is wrong."""
    try:
        secret = Path(path).read_text(encoding="utf-8").partition("\n")[0].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupchatError(f"cannot read the {what} file {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
    if not secret:
        raise GroupchatError(f"the {what} file {path} is empty")
    return secret


def chat_password(path: Optional[str]) -> Optional[str]:
    """The chat's password: from ``path`` when given, else from ``$GROUPCHAT_PASSWORD``, else None."""
    return read_secret(path, "password") if path else os.environ.get(PASSWORD_ENV) or None
