"""What connections are sent, in both wire formats, each rendered at most once.

An :class:`Out` is one thing said, as text and as JSON Lines, each made when first asked for:
a room's line costs one rendering per format however many members take it.  A
:class:`RoomEvent` is one thing said or done in a room; :meth:`~groupchat.server.chat.Chat.publish`
is the one place room events go out: given ids, kept in history and queued for the room's
fan-out in one instant.  Another source of events (a second server, later) plugs in there.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from groupchat.jsonl import iso_time, render_event
from groupchat.protocol import (
    LINE_ACTION,
    LINE_MESSAGE,
    LINE_NOTICE,
    encode_line,
    render_action,
    render_message,
    render_notice,
    render_rename,
)
from groupchat.server.notices import Comings

# The JSON event type of each kind of stored line.
EVENT_TYPES = {LINE_MESSAGE: "msg", LINE_ACTION: "me", LINE_NOTICE: "topic"}


class Out:
    """One thing for one or many connections: ``text`` and ``json`` bytes, each made once when
    first asked for (a race between two threads only makes the same bytes twice)."""

    __slots__ = ("_text", "_json", "_make_text", "_make_json")

    def __init__(self, text: Callable[[], bytes], json: Callable[[], bytes]) -> None:
        self._text: Optional[bytes] = None
        self._json: Optional[bytes] = None
        self._make_text = text
        self._make_json = json

    @classmethod
    def line(cls, said: str, kind: str, /, **fields: Any) -> Out:
        """A one-line sentence in text, and the JSON event of ``kind`` with ``fields``."""
        return cls(lambda: encode_line(said), lambda: render_event(kind, **fields))

    @property
    def text(self) -> bytes:
        if self._text is None:
            self._text = self._make_text()
        return self._text

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = self._make_json()
        return self._json

    def __add__(self, other: Out) -> Out:
        return Out(lambda: self.text + other.text, lambda: self.json + other.json)


class RoomEvent(NamedTuple):
    """Lines of one kind from one sender, for the sender's room.

    >>> RoomEvent.message("alice", ["hi", "there"]).render_text("14:03")
    b'[14:03] <alice> hi\\n[14:03] <alice> there\\n'
    >>> RoomEvent.renamed("alice", "al").render_json(7, "lobby", 0.0)
    b'{"v":1,"type":"nick","id":7,"room":"lobby","ts":"1970-01-01T00:00:00.000Z","old":"alice","new":"al"}\\n'
    """

    kind: str  # LINE_MESSAGE, LINE_ACTION or LINE_NOTICE
    sender: str
    texts: list[str]  # one per line
    echo: bool = False  # the sender hears it too; else everyone in the room but the sender
    kept: bool = True  # stored in history, and so droppable for a reader too slow to take it live
    json: Optional[Callable[[int, str, str], bytes]] = None  # (first id, room, ts) -> a notice's events
    ids: int = 1  # how many ids it takes: one per JSON event

    @classmethod
    def message(cls, sender: str, texts: list[str]) -> RoomEvent:
        return cls(LINE_MESSAGE, sender, texts, ids=len(texts))

    @classmethod
    def action(cls, sender: str, text: str) -> RoomEvent:
        """A /me line."""
        return cls(LINE_ACTION, sender, [text])

    @classmethod
    def renamed(cls, old: str, new: str) -> RoomEvent:
        """A /nick: everyone hears it, and it is not a message to keep."""
        return cls(LINE_NOTICE, new, [render_rename(old, new)], echo=True, kept=False,
                   json=lambda first, room, ts: render_event("nick", id=first, room=room, ts=ts, old=old, new=new))

    @classmethod
    def topic_set(cls, sender: str, topic: str) -> RoomEvent:
        return cls(LINE_NOTICE, sender, [f"{sender} set the topic: {topic}"], echo=True,
                   json=lambda first, room, ts: render_event("topic", id=first, room=room, ts=ts,
                                                             **{"from": sender}, text=topic))

    @classmethod
    def comings(cls, comings: Comings) -> RoomEvent:
        """Joins and leaves told together (see :mod:`groupchat.server.notices`): a join and a
        leave event in JSON, one id each."""
        parts = comings.parts()

        def json(first: int, room: str, ts: str) -> bytes:
            return b"".join(render_event(kind, id=first + n, room=room, ts=ts, **fields)
                            for n, (kind, fields) in enumerate(parts))

        return cls(LINE_NOTICE, "", [comings.text()], echo=True, kept=False, json=json, ids=len(parts))

    def render_text(self, stamp: str) -> bytes:
        """The bytes every text recipient gets, whatever their number."""
        if self.kind == LINE_MESSAGE:
            lines = [render_message(stamp, self.sender, text) for text in self.texts]
        elif self.kind == LINE_ACTION:
            lines = [render_action(stamp, self.sender, text) for text in self.texts]
        else:
            lines = [render_notice(stamp, text) for text in self.texts]
        return "".join(line + "\n" for line in lines).encode()

    def render_json(self, first: int, room: str, when: float) -> bytes:
        """The bytes every JSON recipient gets: one event per line, ids from ``first`` on."""
        ts = iso_time(when)
        if self.json is not None:
            return self.json(first, room, ts)
        kind = EVENT_TYPES[self.kind]
        return b"".join(render_event(kind, id=first + n, room=room, ts=ts, **{"from": self.sender}, text=text)
                        for n, text in enumerate(self.texts))
