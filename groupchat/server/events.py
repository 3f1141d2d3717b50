"""What a room hears: one thing said or done there, rendered once for everyone in it.

:meth:`~groupchat.server.chat.Chat.publish` is the one place a room event goes out: kept in
history and queued for the room's fan-out in one instant.  Another source of events (a second
server, later) plugs in there.
"""

from __future__ import annotations

from typing import NamedTuple

from groupchat.protocol import (
    ENCODING,
    LINE_ACTION,
    LINE_MESSAGE,
    LINE_NOTICE,
    render_action,
    render_message,
    render_notice,
    render_rename,
)


class RoomEvent(NamedTuple):
    """Lines of one kind from one sender, for the sender's room.

    >>> RoomEvent.message("alice", ["hi", "there"]).render("14:03")
    b'[14:03] <alice> hi\\n[14:03] <alice> there\\n'
    >>> RoomEvent.renamed("alice", "al").render("14:03")
    b'[14:03] *** alice is now known as al\\n'
    """

    kind: str  # LINE_MESSAGE, LINE_ACTION or LINE_NOTICE
    sender: str
    texts: list[str]  # one per line
    echo: bool = False  # the sender hears it too; else everyone in the room but the sender
    kept: bool = True  # stored in history, and so droppable for a reader too slow to take it live

    @classmethod
    def message(cls, sender: str, texts: list[str]) -> RoomEvent:
        return cls(LINE_MESSAGE, sender, texts)

    @classmethod
    def action(cls, sender: str, text: str) -> RoomEvent:
        """A /me line."""
        return cls(LINE_ACTION, sender, [text])

    @classmethod
    def renamed(cls, old: str, new: str) -> RoomEvent:
        """A /nick: everyone hears it, and it is not a message to keep."""
        return cls(LINE_NOTICE, new, [render_rename(old, new)], echo=True, kept=False)

    @classmethod
    def topic_set(cls, sender: str, topic: str) -> RoomEvent:
        return cls(LINE_NOTICE, sender, [f"{sender} set the topic: {topic}"], echo=True)

    def render(self, stamp: str) -> bytes:
        """The bytes every recipient gets, whatever their number."""
        if self.kind == LINE_MESSAGE:
            lines = [render_message(stamp, self.sender, text) for text in self.texts]
        elif self.kind == LINE_ACTION:
            lines = [render_action(stamp, self.sender, text) for text in self.texts]
        else:
            lines = [render_notice(stamp, text) for text in self.texts]
        return "".join(line + "\n" for line in lines).encode(ENCODING)
