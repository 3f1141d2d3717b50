"""What the server says to whom: naming, welcome, joins, leaves and relayed lines.

No sockets here: each :class:`~groupchat.registry.Member` carries a ``send(bytes)`` that
must not block (the server gives it an :class:`~groupchat.outbox.Outbox`), so this logic
is tested by calling it with members that record what they are sent.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Union

from groupchat.errors import InvalidNameError, NameTakenError
from groupchat.protocol import (
    NAME_PROMPT,
    LineTooLong,
    check_name,
    encode_line,
    render_message,
    render_notice,
    render_refusal,
    render_welcome,
)
from groupchat.registry import Member, Registry

log = logging.getLogger(__name__)

_PROMPT = encode_line(NAME_PROMPT)


class Clock:
    """The ``HH:MM`` stamp put on lines, computed once a minute rather than once a line."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._minute = -1
        self._stamp = ""

    def stamp(self) -> str:
        minute = int(self._now() // 60)
        if minute != self._minute:  # a race here only recomputes the same string
            self._stamp = time.strftime("%H:%M", time.localtime(minute * 60))
            self._minute = minute
        return self._stamp


class Chat:
    """The chat room shared by every named member of a :class:`Registry`."""

    def __init__(self, registry: Registry, clock: Clock | None = None) -> None:
        self.registry = registry
        self.clock = clock or Clock()

    def greet(self, member: Member) -> None:
        """Ask a new connection for its name."""
        member.send(_PROMPT)

    def receive(self, member: Member, line: Union[str, LineTooLong]) -> None:
        """Handle one line from a connection: its name until it has one, then its messages."""
        if isinstance(line, LineTooLong):
            self._tell(member, f"Line not sent: longer than {line.limit} bytes.")
        elif member.name is None:
            self._offer_name(member, line)
        elif line:
            self._broadcast(member, render_message(self.clock.stamp(), member.name, line))

    def expire(self, member: Member, seconds: float) -> None:
        """Tell a connection that gave no name in time why it is being closed."""
        member.send(encode_line(render_refusal(f"no name came within {seconds:g} seconds; goodbye")))

    def leave(self, member: Member, reason: str = "") -> None:
        """Forget a connection; if it was in the chat, tell the others it left (and why)."""
        if not self.registry.disconnect(member):
            return
        log.info("%s left from %s%s", member.name, member.address, f" ({reason})" if reason else "")
        text = f"{member.name} left" + (f" ({reason})" if reason else "")
        self._broadcast(member, render_notice(self.clock.stamp(), text))

    def announce(self, text: str) -> None:
        """A server notice to every member, e.g. that the server is going down."""
        self._send_all(self.registry.active(), render_notice(self.clock.stamp(), text))

    def _offer_name(self, member: Member, raw: str) -> None:
        try:
            others = self.registry.claim(member, check_name(raw))
        except (InvalidNameError, NameTakenError) as exc:
            member.send(encode_line(render_refusal(str(exc))) + _PROMPT)
            return
        member.send(encode_line(render_welcome(member.name, [m.name for m in others])))
        self.registry.activate(member)
        log.info("%s joined from %s", member.name, member.address)
        self._broadcast(member, render_notice(self.clock.stamp(), f"{member.name} joined"))

    def _tell(self, member: Member, text: str) -> None:
        member.send(encode_line(render_notice(self.clock.stamp(), text)))

    def _broadcast(self, sender: Member, line: str) -> None:
        """Send a line to every active member but ``sender``, encoded once for all."""
        self._send_all((m for m in self.registry.active() if m is not sender), line)

    @staticmethod
    def _send_all(members: Iterable[Member], line: str) -> None:
        data = encode_line(line)
        for member in members:
            member.send(data)
