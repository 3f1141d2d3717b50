"""The client's side of a JSON-mode connection, with no I/O: the handshake, and what you send.

The join client switches the connection to JSON Lines (:mod:`groupchat.jsonl`) with its first
line, so it reads the server's events, never its sentences.  Three small decisions live here,
each tested by feeding it events:

- :class:`Handshake`: what to do with each event until the server lets you in (password, name).
- :class:`Labels`: each line you send goes as an operation with a label; the label is kept,
  with what it carried, until the server answers it with an ``ack`` or an ``error``.
- :class:`Session`: who you are and where, as the events say: your name (after ``/nick``),
  your room, the last id seen in each room and the session's token (to resume with), and the
  server's ``bye``.
- :class:`CatchUp`: after a reconnect, or when the server says a slow reader missed lines,
  what to ask for (``/history after ID``, page by page) and the lines missed, each once, in order.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections import deque
from typing import Any, Callable, NamedTuple, Optional, Union

from groupchat import jsonl
from groupchat.protocol import (
    NAME_PROMPT,
    PASSWORD_PROMPT,
    LineTooLong,
    is_refusal,
    message_text,
    name_key,
    refusal_reason,
    split_command,
)

Event = dict[str, Any]
# What the server sent: an event, or a line of text from before it read our switch to JSON.
Heard = Union[Event, str, LineTooLong]
LABEL_PREFIX = "c"
# Goodbyes after which coming back is pointless: the person left, was sent away, or the
# session went on elsewhere.  After any other end (a drop, SHUTDOWN for a restart, CUT_OFF
# for a reader too slow) the client reconnects.
FINAL_BYES = (jsonl.BYE_QUIT, jsonl.BYE_KICKED, jsonl.BYE_BANNED, jsonl.BYE_REFUSED, jsonl.BYE_TIMEOUT,
              jsonl.BYE_WRONG_PASSWORD, jsonl.BYE_LOCKED_OUT)
MODE_COMMAND = "mode"  # switches a connection's format: the client asks for JSON once, itself
# Bye codes that answer the password: the handshake is over, and no other name would help.
PASSWORD_BYES = (jsonl.BYE_WRONG_PASSWORD, jsonl.BYE_LOCKED_OUT)


class Step(enum.Enum):
    """What to do with one thing the server sent during the handshake."""

    SWITCH = enum.auto()  # the server's greeting, in text: switch the connection to JSON
    WAIT = enum.auto()  # nothing to do or show: the answer to /mode
    NO_JSON = enum.auto()  # a greeting in text again after the switch: the server has no JSON mode
    SEND_PASSWORD = enum.auto()  # the server has a password and asks for it
    SEND_NAME = enum.auto()  # the server asks for the name
    SEND_RESUME = enum.auto()  # the server asks for the name: resume the session instead
    ASK_ANOTHER_NAME = enum.auto()  # it refused the name and asks again
    SHOW = enum.auto()  # for the person: a refusal, or anything unexpected
    PASSWORD_REFUSED = enum.auto()  # the password was refused: show it; it is over
    JOINED = enum.auto()  # the welcome: show it; the chat has begun


class Handshake:
    """The client's half of the handshake: fed what the server sends, it says what next.

    The server greets in text, with the question it asks (the password, or the name): the
    client answers with the switch to JSON, and the server asks again as an event.  The client
    sends nothing before that greeting, so a server that refuses at once (a full server, a
    banned address) closes a connection with nothing unread, and its one line of text, kept
    as the reason, arrives whole.

    >>> handshake = Handshake("bob")
    >>> handshake.feed(NAME_PROMPT).name, handshake.feed({"type": "mode", "mode": "json"}).name
    ('SWITCH', 'WAIT')
    >>> handshake.feed({"type": "prompt", "for": "name"}).name
    'SEND_NAME'
    >>> handshake.feed({"type": "error", "code": "NAME_TAKEN", "message": 'the name "bob" is taken'}).name
    'SHOW'
    >>> handshake.feed({"type": "prompt", "for": "name"}).name, handshake.refusal, handshake.name_taken
    ('ASK_ANOTHER_NAME', 'the name "bob" is taken', True)
    >>> handshake.rename("rob")
    >>> handshake.feed({"type": "welcome", "name": "rob", "room": "lobby", "names": ["bob"], "count": 1}).name
    'JOINED'

    With ``resume`` (the ``/resume TOKEN LAST_ID`` line of a session that dropped) the first
    name prompt is answered with it; if the server no longer knows the session (it restarted,
    or the window passed), the name is given at the next prompt:

    >>> handshake = Handshake("bob", resume="/resume kq3X 41")
    >>> handshake.feed({"type": "prompt", "for": "name"}).name
    'SEND_RESUME'
    >>> handshake.feed({"type": "error", "code": "RESUME_FAILED", "message": "no session"}).name
    'WAIT'
    >>> handshake.feed({"type": "prompt", "for": "name"}).name
    'SEND_NAME'
    """

    def __init__(self, name: str, resume: Optional[str] = None) -> None:
        self.name = name.strip()  # as the server will take it
        self.refusal: Optional[str] = None  # the server's last reason for refusing a name, or you
        self._refusal_code: Optional[str] = None  # and its code, when it came as an event
        self.resume = resume  # the line to resume with, until the server refuses it
        self.greeted = False  # the server's greeting in text came
        self._switched = False  # the switch to JSON was asked for
        self._early = False  # it was asked for before the greeting (see probe)

    def feed(self, heard: Heard) -> Step:
        if isinstance(heard, LineTooLong):
            return Step.SHOW
        if isinstance(heard, str):
            if heard in (NAME_PROMPT, PASSWORD_PROMPT):
                if self._switched and (self.greeted or not self._early):
                    return Step.NO_JSON
                self.greeted = True
                if self._switched:
                    return Step.WAIT  # the greeting, sent before the early switch was read
                self._switched = True
                return Step.SWITCH
            if is_refusal(heard):
                self.refusal = refusal_reason(heard)
            return Step.SHOW
        kind = heard.get("type")
        if kind == "mode":
            return Step.WAIT
        if kind == "prompt":
            if heard.get("for") == "password":
                return Step.SEND_PASSWORD
            if self.resume is not None:
                return Step.SEND_RESUME
            return Step.SEND_NAME if self.refusal is None else Step.ASK_ANOTHER_NAME
        if kind == "error" and heard.get("code") == jsonl.RESUME_FAILED:
            self.resume = None  # a restarted server, or the window passed: give the name instead
            return Step.WAIT
        if kind == "welcome":
            return Step.JOINED
        if kind in ("error", "bye"):
            self.refusal = str(heard.get("message", ""))
            self._refusal_code = heard.get("code")
            if kind == "bye" and heard.get("code") in PASSWORD_BYES:
                return Step.PASSWORD_REFUSED
        return Step.SHOW

    def probe(self) -> None:
        """Note that the switch to JSON went before any greeting: a server that is silent may
        be waiting for TLS, and closes when it hears plain text instead; a slow groupchat
        server greets, then answers the switch.

        >>> handshake = Handshake("bob")
        >>> handshake.probe()
        >>> handshake.feed(NAME_PROMPT).name, handshake.feed({"type": "prompt", "for": "name"}).name
        ('WAIT', 'SEND_NAME')
        """
        self._switched = self._early = True

    @property
    def probed(self) -> bool:
        """Whether the switch went before any greeting (see :meth:`probe`)."""
        return self._early

    @property
    def name_taken(self) -> bool:
        """Whether the name was refused because someone has it (on this server or another node)."""
        return self.refusal is not None and self._refusal_code == jsonl.NAME_TAKEN

    def rename(self, name: str) -> None:
        """Take the name to offer next, after a refusal."""
        self.name = name.strip()
        self.refusal = self._refusal_code = None


class Sent(NamedTuple):
    """What a labeled operation carried, kept until the server answers it."""

    op: str  # jsonl.OP_SEND or jsonl.OP_CMD
    text: str  # the message, or the command line


class Labels:
    """The labels of your operations that the server has not answered yet, and what each carried.

    Thread-safe: the input side labels, the reader answers, and at the end of piped input
    :meth:`wait` waits for the last answers.  The server answers a connection's operations in
    the order it sent them; a label a program chose itself may repeat, and each use waits for
    an answer of its own.

    >>> labels = Labels()
    >>> labels.new(Sent("send", "hi")), labels.new(Sent("cmd", "/who"))
    ('c1', 'c2')
    >>> labels.answer("c1"), len(labels)
    (Sent(op='send', text='hi'), 1)
    >>> labels.answer("c9") is None
    True
    """

    def __init__(self) -> None:
        self._waiting: deque[tuple[str, Optional[Sent]]] = deque()  # in the order sent
        self._count = 0
        self._answered = threading.Condition()
        self._closed = False

    def new(self, sent: Optional[Sent]) -> str:
        """A fresh label for an operation carrying ``sent`` (None: a program's, kept as it wrote it)."""
        with self._answered:
            self._count += 1
            label = f"{LABEL_PREFIX}{self._count}"
            self._waiting.append((label, sent))
        return label

    def expect(self, label: str) -> None:
        """Wait for an answer to a label a program gave its operation itself."""
        with self._answered:
            self._waiting.append((label, None))

    def answer(self, label: Any) -> Optional[Sent]:
        """Note the server's answer to ``label``; what it carried, if it was ours and is known."""
        with self._answered:
            # The answers come in order: the one sought is the first, but for labels never answered.
            for index, (waiting, sent) in enumerate(self._waiting):
                if waiting == label:
                    del self._waiting[index]
                    self._answered.notify_all()
                    return sent
            return None

    def oldest(self) -> Optional[Sent]:
        """What the oldest operation still waiting carried: the one the server is answering now."""
        with self._answered:
            return self._waiting[0][1] if self._waiting else None

    def answer_oldest(self) -> Optional[Sent]:
        """Note an answer that could not name its label (the line was too long for the server
        to read it): in order, it answers the oldest operation still waiting."""
        with self._answered:
            if not self._waiting:
                return None
            self._answered.notify_all()
            return self._waiting.popleft()[1]

    def take_unanswered(self) -> list[Sent]:
        """Forget the operations still waiting (the connection dropped before their answers);
        return what the client's own carried, oldest first: the server may or may not have them."""
        with self._answered:
            unanswered = [sent for _, sent in self._waiting if sent is not None]
            self._waiting.clear()
            self._answered.notify_all()
            return unanswered

    def close(self) -> None:
        """The connection is over: no answer will come, so nobody should wait for one."""
        with self._answered:
            self._closed = True
            self._answered.notify_all()

    def wait(self, quiet_seconds: float, monotonic: Callable[[], float] = time.monotonic) -> int:
        """Wait until every label is answered, the connection ends, or ``quiet_seconds`` pass
        with no answer at all (a server slowed by flood control still answers, later); return
        how many are left unanswered."""
        with self._answered:
            deadline = monotonic() + quiet_seconds
            left = len(self)
            while left and not self._closed:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                self._answered.wait(remaining)
                if len(self) < left:  # progress: the quiet time starts again
                    deadline = monotonic() + quiet_seconds
                left = len(self)
            return left

    def __len__(self) -> int:
        return len(self._waiting)


def kept_back(line: str) -> Optional[str]:
    """Why the client keeps a typed or piped line to itself, or None to send it: ``/mode``
    would take the connection out of the JSON mode the client reads.

    >>> kept_back("/MODE text"), kept_back("//mode text")
    ('not sent: the join client needs the connection in JSON mode', None)
    """
    command = split_command(line)
    if command is not None and command[0] == MODE_COMMAND:
        return "not sent: the join client needs the connection in JSON mode"
    return None


class Session:
    """You, as the server's events describe you, and the operations you send.

    ``name`` follows the welcome and your own ``/nick``; ``room`` the welcome and ``/join``;
    ``last_ids`` holds the highest id seen in each room (room events, history, and the ids
    the server acknowledged your messages with), for resuming from; ``token`` and ``window``
    the latest ``session`` event's.  ``bye`` is the server's last word, once it came.

    >>> session = Session("alice")
    >>> session.op_line("hi")
    b'{"op":"send","text":"hi","label":"c1"}\\n'
    >>> session.heard({"type": "welcome", "name": "alice", "room": "lobby", "names": [], "count": 0})
    >>> session.heard({"type": "ack", "label": "c1", "id": 7})
    Sent(op='send', text='hi')
    >>> session.heard({"type": "nick", "id": 8, "room": "lobby", "old": "alice", "new": "al"})
    >>> session.name, session.last_ids
    ('al', {'lobby': 8})
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.room: Optional[str] = None  # None until the welcome
        self.last_ids: dict[str, int] = {}
        self.bye: Optional[Event] = None
        self.token: Optional[str] = None
        self.window = 0.0  # seconds a server holds this session after a drop
        self.labels = Labels()

    @property
    def joined(self) -> bool:
        return self.room is not None

    @property
    def final(self) -> bool:
        """Whether the server's goodbye says coming back is pointless (see :data:`FINAL_BYES`)."""
        return self.bye is not None and self.bye.get("code") in FINAL_BYES

    @property
    def quitting(self) -> bool:
        """Whether the server said goodbye to a ``/quit``: the connection's end is expected."""
        return self.bye is not None and self.bye.get("code") == jsonl.BYE_QUIT

    def resume_line(self, last_id: int) -> Optional[str]:
        """The line that resumes this session on a new connection, with what was seen up to
        ``last_id``; None without a session to resume.

        >>> session = Session("alice")
        >>> session.resume_line(0) is None
        True
        >>> session.heard({"type": "session", "token": "kq3X", "window": 120})
        >>> session.resume_line(41)
        '/resume kq3X 41'
        """
        return None if self.token is None else f"/resume {self.token} {last_id}"

    def may_be_held(self, since_drop: float) -> bool:
        """Whether a server may still hold this session, and so its name, ``since_drop`` seconds
        after the connection dropped: within the window its ``session`` event gave.  Another
        node of the chat does not know the session, and refuses the name while the old one
        holds it (a node that died holds it until its lease runs out).

        >>> session = Session("alice")
        >>> session.may_be_held(1.0)
        False
        >>> session.heard({"type": "session", "token": "kq3X", "window": 120})
        >>> session.may_be_held(1.0), session.may_be_held(121.0)
        (True, False)
        """
        return self.token is not None and since_drop < self.window

    def op_line(self, line: str) -> bytes:
        """The labeled operation for a line typed or piped: ``/command ...`` is a command,
        anything else a message (``//text`` is the message ``/text``)."""
        if split_command(line) is None:
            sent = Sent(jsonl.OP_SEND, message_text(line))
        else:
            sent = Sent(jsonl.OP_CMD, line)
        return jsonl.render_operation(sent.op, sent.text, self.labels.new(sent))

    def own_line(self, line: str) -> bytes:
        """A command the client sends for itself (``/history after ID``): labeled, but nothing
        to show for its ack, nor to send again after a drop."""
        return jsonl.render_operation(jsonl.OP_CMD, line, self.labels.new(None))

    def program_line(self, line: str) -> bytes:
        """What to send for a line a program wrote: a JSON object goes as written, given a label
        if it has none (one the server cannot read goes too, for its answer); else :meth:`op_line`."""
        if not jsonl.is_operation(line):
            return self.op_line(line)
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            return (line + "\n").encode()
        label = obj.get("label")
        if label is None:
            obj["label"] = self.labels.new(None)
        elif isinstance(label, str) and len(label) <= jsonl.MAX_LABEL_CHARS:
            self.labels.expect(label)
        # else the server refuses the label, and cannot name it in its answer: nothing to wait for
        return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def heard(self, event: Event) -> Optional[Sent]:
        """Follow one event; for the answer to one of your operations, what that carried."""
        kind = event.get("type")
        room = event.get("room")
        if kind in ("welcome", "enter"):
            self.room = room
            if kind == "welcome":
                self.name = event.get("name", self.name)
        elif kind == "nick" and name_key(str(event.get("old"))) == name_key(self.name):
            self.name = event.get("new", self.name)
        elif kind == "bye":
            self.bye = event
        elif kind == "session" and isinstance(event.get("token"), str):
            self.token = event["token"]
            window = event.get("window")
            self.window = float(window) if isinstance(window, (int, float)) else 0.0
        if kind == "ack" and self.room is not None:
            room = self.room  # a message's id, acknowledged: it went to your room
        if isinstance(event.get("id"), int) and isinstance(room, str):
            self.last_ids[room] = max(event["id"], self.last_ids.get(room, 0))
        if kind in ("ack", "error") and "label" in event:
            return self.labels.answer(event["label"])
        if kind == "error" and event.get("code") == jsonl.LINE_TOO_LONG:
            return self.labels.answer_oldest()
        return None


class Caught(NamedTuple):
    """What a :class:`CatchUp` makes of one event: the events to show now, the command lines to
    send, and, once the last missed line is in, how many messages were missed (else None)."""

    show: list[tuple[Event, Optional[Sent]]]
    ask: list[str]
    missed: Optional[int] = None


HISTORY_AFTER = "/history after {}"
# Events that carry a line someone said: what "N missed messages" counts.
SAID_EVENTS = ("history", "msg", "me", "dm")


class CatchUp:
    """The lines of ``room`` after id ``since`` that the person has not seen, each shown once, in order.

    It runs after a reconnect (the session resumed, or, on a restarted server, a new one under
    the same name) and when the server says a slow reader missed lines.  Until the last missed
    line is in, every event with an id is kept back, and the server is asked for the room's
    lines after ``since`` (``/history after ID``; again from each page's last line while more
    were missed than a page holds).  Then the kept events come out sorted by id, each id once,
    history at or before ``since`` left out.  Events without an id (the welcome, a topic, a
    notice) are shown at once; the answers to ``/history`` are the catch-up's own.

    A resumed session is handed what it missed by the server itself:

    >>> catch_up = CatchUp("lobby", since=41)
    >>> catch_up.feed({"type": "welcome", "name": "bob", "room": "lobby", "resumed": True}, None).ask
    []
    >>> catch_up.feed({"type": "history", "id": 42, "room": "lobby", "from": "al", "kind": "msg"}, None).show
    []
    >>> catch_up.feed({"type": "msg", "id": 44, "room": "lobby", "from": "al"}, None).show  # live, kept back
    []
    >>> catch_up.feed({"type": "history_end", "room": "lobby", "count": 1, "missed": 2}, None).ask
    ['/history after 42']
    >>> catch_up.feed({"type": "history", "id": 43, "room": "lobby", "from": "al", "kind": "msg"}, None).show
    []
    >>> caught = catch_up.feed({"type": "history_end", "room": "lobby", "count": 1, "missed": 1}, None)
    >>> [event["id"] for event, _ in caught.show], caught.missed
    ([42, 43, 44], 3)

    A restarted server knows no session: the client is let in anew, goes back to its room
    and asks for what was said there after ``since``:

    >>> catch_up = CatchUp("dev", since=41)
    >>> catch_up.feed({"type": "welcome", "name": "bob", "room": "lobby"}, None).ask
    ['/join dev', '/history after 41']
    """

    def __init__(self, room: str, since: int) -> None:
        self.room = room
        self.since = since
        self._kept: dict[int, tuple[Event, Optional[Sent]]] = {}
        self._page_last = since  # the last id of the history pages so far

    @classmethod
    def after_missed(cls, room: str, since: int) -> tuple["CatchUp", str]:
        """The catch-up for a slow reader's ``missed`` event, and the line that asks for the lines."""
        return cls(room, since), HISTORY_AFTER.format(since)

    def feed(self, event: Event, answered: Optional[Sent]) -> Caught:
        kind = event.get("type")
        if kind == "welcome" and not event.get("resumed"):
            ask = [] if event.get("room") == self.room else [f"/join {self.room}"]
            return Caught([(event, answered)], ask + [HISTORY_AFTER.format(self.since)])
        if kind == "error" and event.get("code") == jsonl.RESUME_FAILED:
            return Caught([], [])  # expected after a restart: the name is given instead
        if kind == "error" and event.get("code") == jsonl.NAME_TAKEN and "label" not in event:
            return Caught([], [])  # the handshake's: the link's status says so, or its end
        if kind == "history_end":
            return self._page_end(event)
        event_id = event.get("id")
        if not isinstance(event_id, int):
            return Caught([(event, answered)], [])
        if kind == "history":
            if event_id <= self.since:
                return Caught([], [])  # seen before the drop (a welcome's replay)
            self._page_last = max(self._page_last, event_id)
        self._kept.setdefault(event_id, (event, answered))
        return Caught([], [])

    def _page_end(self, event: Event) -> Caught:
        missed = event.get("missed")
        if not isinstance(missed, int):
            return Caught([], [])  # the end of a replay on entering a room: the pages say more
        if missed > event.get("count", 0):
            return Caught([], [HISTORY_AFTER.format(self._page_last)])
        shown = [self._kept[event_id] for event_id in sorted(self._kept)]
        return Caught(shown, [], sum(1 for event, _ in shown if event.get("type") in SAID_EVENTS
                                     or (event.get("type") == "ack" and event.get("id") is not None)))
