"""What a person sees: each event from the server as the line text mode shows for it.

The join client reads JSON events and renders them itself, into exactly the sentences a
text-mode connection gets (``[14:03] <bob> hi``, ``[14:03] *** bob joined``), with the
times in the person's own time zone.  Each line comes as a :class:`Shown`, which keeps whose
line it is and what they said apart, so colours and mentions (:mod:`groupchat.client.colours`)
come from the event's fields, never from reading the line back.

>>> view = View(Session("alice"), localtime=time.gmtime)
>>> [shown.line for shown in view.lines({"type": "msg", "id": 7, "room": "lobby",
...  "ts": "2026-12-01T14:03:12.345Z", "from": "bob", "text": "hi alice"})]
['[14:03] <bob> hi alice']
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Optional

from groupchat import jsonl
from groupchat.client.session import Event, Sent, Session
from groupchat.protocol import (
    JOINED,
    LEFT,
    LINE_ACTION,
    LINE_HANDSHAKE,
    LINE_HISTORY,
    LINE_MESSAGE,
    LINE_NOTICE,
    LINE_PRIVATE,
    LIVE_MARKER,
    STAMP_FORMAT,
    clean_text,
    list_names,
    name_key,
    render_action,
    render_entered,
    render_history,
    render_message,
    render_missed,
    render_moved,
    render_notice,
    render_private,
    render_comings,
    render_refusal,
    render_rename,
    render_welcome,
    render_who,
    split_command,
)

WHO_LISTED_NAMES = 20  # names /who spells out, as the server's text does; the rest are counted
HISTORY_STAMP_FORMAT = "%Y-%m-%d %H:%M"  # a played-back line not from today
_HISTORY_KINDS = {"msg": LINE_MESSAGE, "me": LINE_ACTION, "topic": LINE_NOTICE}
_PEOPLE_EVENTS = {"msg": (LINE_MESSAGE, render_message), "me": (LINE_ACTION, render_action)}


class Shown(NamedTuple):
    """One line for the transcript: its kind (a ``LINE_*`` of :mod:`groupchat.protocol`), the
    line as shown, and, for a line from a person, whose it is and what they said (the line's end)."""

    kind: str
    line: str
    sender: str = ""
    text: str = ""


def clean_event(value: Any) -> Any:
    """``value`` with every string in it made safe for a terminal (:func:`clean_text`): JSON
    carries any character, and no event may move the cursor or recolour the screen.

    >>> clean_event({"type": "msg", "text": "hi\\x1b[2J", "names": ["b\\x07ob"]})
    {'type': 'msg', 'text': 'hi', 'names': ['bob']}
    """
    if isinstance(value, str):
        return clean_text(value, collapse_blanks=False)
    if isinstance(value, list):
        return [clean_event(item) for item in value]
    if isinstance(value, dict):
        return {key: clean_event(item) for key, item in value.items()}
    return value


class View:
    """Renders events for ``session``'s person; call it after ``session.heard`` saw the event.

    ``localtime`` turns seconds into the person's time (``time.gmtime`` in tests), ``now``
    stamps what the server sends with no ``ts`` (notices, acknowledgements), as it did in text.
    """

    def __init__(self, session: Session, localtime: Callable[[float], time.struct_time] = time.localtime,
                 now: Callable[[], float] = time.time) -> None:
        self.session = session
        self._localtime = localtime
        self._now = now

    def lines(self, event: Event, answered: Optional[Sent] = None) -> list[Shown]:
        """The lines to show for ``event``; ``answered`` is what an ``ack`` answers, if it is yours."""
        event = clean_event(event)
        render = getattr(self, f"_on_{event.get('type')}", None)
        try:
            return render(event, answered) if render else []  # a type added later is not for people
        except (KeyError, TypeError, ValueError, AttributeError):  # fields missing or of the wrong type
            return [Shown(LINE_NOTICE, f"(an event the client cannot show: {event.get('type')})")]

    def notice(self, text: str, event: Optional[Event] = None) -> Shown:
        """A notice (the server's, or the client's own), stamped with the event's time, else now."""
        return Shown(LINE_NOTICE, render_notice(self._stamp(event), text))

    # -- one method per event type ---------------------------------------------------------------

    def _on_welcome(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [Shown(LINE_HANDSHAKE, render_welcome(event["name"], self._names(event)))]

    def _on_enter(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_entered(event["room"], self._names(event)))]

    def _on_msg(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self._said(event["type"], self._stamp(event), event["from"], event["text"])]

    _on_me = _on_msg

    def _on_dm(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        sender = event["from"]
        to = event["to"] if name_key(sender) == name_key(self.session.name) else None
        line = render_private(self._stamp(event), sender, event["text"], to=to)
        return [Shown(LINE_PRIVATE, line, sender, event["text"])]

    def _on_join(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(f"{self._names(event)} {JOINED}", event)]

    def _on_leave(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        names = event["names"]
        if event.get("to") and len(names) == 1:
            return [self.notice(render_moved(names[0], event["to"]), event)]
        reason = f" ({event['reason']})" if event.get("reason") else ""
        return [self.notice(f"{self._names(event)} {LEFT}{reason}", event)]

    def _on_reconnecting(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_comings([], [], WHO_LISTED_NAMES, held=event["names"]), event)]

    def _on_back(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_comings([], [], WHO_LISTED_NAMES, back=event["names"]), event)]

    def _on_nick(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_rename(event["old"], event["new"]), event)]

    def _on_topic(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        if event.get("from"):
            return [self.notice(f"{event['from']} set the topic: {event['text']}", event)]
        if event.get("text"):
            return [self.notice(f"Topic of {event['room']}: {event['text']}")]
        return [self.notice(f"No topic is set in {event['room']}.")]

    def _on_notice(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(event["text"])]

    def _on_who(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_who(event["room"], event["names"], event["online"], WHO_LISTED_NAMES))]

    def _on_rooms(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        rooms = [f"{room['name']} ({room['count']})" + (f": {room['topic']}" if room.get("topic") else "")
                 for room in event["rooms"]]
        return [self.notice(text) for text in rooms or ["No rooms: nobody is here."]]

    def _on_history(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        kind = _HISTORY_KINDS[event["kind"]]
        moment = self._localtime(jsonl.parse_iso_time(event["ts"]))
        today = self._localtime(self._now())
        same_day = (moment.tm_year, moment.tm_yday) == (today.tm_year, today.tm_yday)
        stamp = time.strftime(STAMP_FORMAT if same_day else HISTORY_STAMP_FORMAT, moment)
        line = render_history(stamp, kind, event["from"], event["text"])
        if kind == LINE_NOTICE:
            return [Shown(LINE_NOTICE, line)]
        return [Shown(LINE_HISTORY, line, event["from"], event["text"])]

    def _on_history_end(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        if event["count"]:
            return [self.notice(LIVE_MARKER)] if event.get("replay") else []
        if event.get("replay"):
            return []
        query = event.get("query", self._searched())
        if query is not None:
            return [self.notice(f'No messages in {event["room"]} contain "{query}".')]
        return [self.notice(f"No history in {event['room']} yet.")]

    def _searched(self) -> Optional[str]:
        """What the /search being answered looks for: the server answers in order, so it is the
        oldest of your commands still waiting (an empty answer does not say what was searched)."""
        sent = self.session.labels.oldest()
        command = split_command(sent.text) if sent is not None and sent.op == jsonl.OP_CMD else None
        return command[1] if command is not None and command[0] == "search" else None

    def _on_missed(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        return [self.notice(render_missed(event["count"]))]

    def _on_ack(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        """Your own line, shown once the server has taken it, as the others see it."""
        if answered is None:
            return []
        if answered.op == jsonl.OP_SEND:
            return [self._said("msg", self._stamp(), self.session.name, answered.text)]
        command = split_command(answered.text)
        if command and command[0] == "me" and command[1]:
            return [self._said("me", self._stamp(), self.session.name, command[1])]
        return []

    def _on_error(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        if not self.session.joined:
            return [Shown(LINE_HANDSHAKE, render_refusal(event["message"]))]
        return [self.notice(event["message"])]

    def _on_bye(self, event: Event, answered: Optional[Sent]) -> list[Shown]:
        if not self.session.joined:  # a refusal: the server closes the connection after it
            return [Shown(LINE_HANDSHAKE, render_refusal(f"{event['message']}; goodbye"))]
        return [self.notice(event["message"])]

    # -- helpers ---------------------------------------------------------------------------------

    def _stamp(self, event: Optional[Event] = None) -> str:
        """``HH:MM`` in local time: the event's own time, else now."""
        seconds = jsonl.parse_iso_time(event["ts"]) if event and "ts" in event else self._now()
        return time.strftime(STAMP_FORMAT, self._localtime(seconds))

    @staticmethod
    def _names(event: Event) -> str:
        """The event's names and count as text lists them (``bob, carol and 3 others``)."""
        return list_names(event["names"], len(event["names"]), total=event["count"])

    @staticmethod
    def _said(kind: str, stamp: str, sender: str, text: str) -> Shown:
        line_kind, render = _PEOPLE_EVENTS[kind]
        return Shown(line_kind, render(stamp, sender, text), sender, text)
