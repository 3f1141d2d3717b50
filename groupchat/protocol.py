"""The wire protocol as pure functions: framing bytes into lines, checking names, rendering lines.

Nothing here touches a socket, a thread or a clock, so every rule of the protocol can be
tested by calling it.  The wire is UTF-8 text, one line per message, ended by "\\n" ("\\r\\n"
accepted), so ``nc`` and ``telnet`` are full clients.

What the server says, in the order a connection sees it::

    *** Password?                           (PASSWORD_PROMPT, only on a server with a password)
    *** What is your name?                  (NAME_PROMPT; asked again after a refusal)
    *** Sorry, the name "bob" is taken.     (a refusal: one line, then the prompt again)
    *** Welcome, alice! Here now: bob.      (the handshake is over)
    [14:03] *** bob joined                  (a notice: "***" after the time)
    [14:03] <bob> hi                        (a message: the sender's name is stamped by the server)
    [14:03] * bob waves                     (an action, from /me)
    [14:03] (private) <bob> psst            (a private message, from /msg, as its target sees it)
    [14:03] (private to carol) <bob> psst   (the same, as its sender sees it)

Every line a person causes starts, after the time, with "<", "* " or "(private", and a name
cannot start with "*", "[" or "<": so no one can make a line that looks like a notice or
like someone else's.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union

from groupchat.errors import CommandError, InvalidNameError, NoNewlineError

ENCODING = "utf-8"
DEFAULT_PORT = 7111
MAX_LINE_BYTES = 4096
MAX_NAME_CHARS = 32
# A peer that sends this many times MAX_LINE_BYTES with no newline is not sending lines.
UNTERMINATED_LINES = 16

NOTICE_MARK = "***"
STAMP_FORMAT = "%H:%M"  # the time on every line, as strftime takes it
NAME_PROMPT = f"{NOTICE_MARK} What is your name?"
PASSWORD_PROMPT = f"{NOTICE_MARK} Password?"  # first, on a server with a password
WELCOME_PREFIX = f"{NOTICE_MARK} Welcome, "
RESERVED_NAMES = frozenset({"server"})
# A name may not start like a notice, a timestamp or a stamped sender, so no name can make a
# line that looks like the server's.
FORBIDDEN_NAME_STARTS = ("*", "[", "<")

# CSI/OSC/other escape sequences first (so their parameters go too), then any lone control
# character, C1 control or bidi override left over.
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-_]?)")
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class LineTooLong(NamedTuple):
    """Stands in :meth:`LineBuffer.feed`'s output for a line that was longer than allowed."""

    limit: int


class LineBuffer:
    """Splits a byte stream into text lines, keeping the unfinished tail for the next feed.

    Memory stays bounded whatever the peer sends: a line past ``max_line`` bytes is dropped
    as it arrives and reported once, as :class:`LineTooLong`, when its newline comes; a peer
    that goes on past ``max_unterminated`` bytes with no newline at all is not sending lines,
    and :class:`NoNewlineError` is raised.

    >>> buf = LineBuffer(max_line=8)
    >>> buf.feed(b"hi\\r\\nthe")
    ['hi']
    >>> buf.feed(b"re\\n")
    ['there']
    >>> buf.feed(b"far too long\\nok\\n")
    [LineTooLong(limit=8), 'ok']
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES, max_unterminated: int = 0) -> None:
        self.max_line = max_line
        self.max_unterminated = max_unterminated or UNTERMINATED_LINES * max_line
        self._tail = b""
        self._discarded = -1  # bytes of an overlong line dropped so far; -1 while not dropping

    def feed(self, data: bytes) -> list[Union[str, LineTooLong]]:
        """Return the complete lines in ``data`` plus what earlier feeds left unfinished."""
        end = data.rfind(b"\n") + 1
        whole, rest = data[:end], data[end:]
        lines: list[Union[str, LineTooLong]] = []
        if whole:
            if self._tail:
                whole = self._tail + whole
                self._tail = b""
            raws = whole[:-1].split(b"\n")
            if self._discarded >= 0:  # the first line ends one already too long
                self._discarded = -1
                lines.append(LineTooLong(self.max_line))
                raws = raws[1:]
            if raws and max(map(len, raws)) <= self.max_line:  # a busy peer's usual read
                lines.extend(_decode_lines(b"\n".join(raws)))
            else:
                lines.extend(self._decode_one(raw) for raw in raws)
        if not rest:
            return lines
        if self._discarded >= 0:
            self._discarded += len(rest)
        elif len(self._tail) + len(rest) > self.max_line + 1:  # +1 for a "\r" still to come
            self._discarded = len(self._tail) + len(rest)
            self._tail = b""
        else:
            self._tail += rest
        if self._discarded > self.max_unterminated:
            raise NoNewlineError(f"sent more than {self.max_unterminated} bytes without a newline")
        return lines

    def _decode_one(self, raw: bytes) -> Union[str, LineTooLong]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return LineTooLong(self.max_line) if len(raw) > self.max_line else decode_line(raw)

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished line are held."""
        return len(self._tail)


def _decode_lines(raw: bytes) -> list[str]:
    """:func:`decode_line` for many lines joined by newlines, in a few C calls.

    A newline byte is never part of a multi-byte UTF-8 character, so decoding them together
    splits the same way as decoding each.
    """
    lines = raw.decode(ENCODING, errors="replace").split("\n")
    if b"\r" in raw:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [line if line.isprintable() else clean_text(line) for line in lines]


def decode_line(raw: bytes) -> str:
    """Turn one line's bytes into safe text: bad UTF-8 replaced, control characters removed.

    >>> decode_line(b"hi \\xff\\x1b[2Jthere\\r")
    'hi \\ufffdthere'
    """
    return clean_text(raw.decode(ENCODING, errors="replace"))


def clean_text(text: str) -> str:
    """Remove what could move a terminal's cursor, clear it, ring it or reorder it; tabs become spaces.

    >>> clean_text("a\\tb\\x07\\u202ec")
    'a bc'
    """
    if text.isprintable():  # the common case costs one C call
        return text
    text = text.replace("\t", " ")
    return _UNSAFE_CHARS.sub("", _ESCAPE_SEQUENCE.sub("", text))


def check_name(raw: str) -> str:
    """Return ``raw`` as a name, or raise :class:`InvalidNameError` saying what is wrong.

    >>> check_name("  alice ")
    'alice'
    >>> check_name("<bob>")
    Traceback (most recent call last):
    ...
    groupchat.errors.InvalidNameError: a name cannot start with "<"
    """
    name = raw.strip()
    if not name:
        raise InvalidNameError("a name cannot be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidNameError(f"a name can have at most {MAX_NAME_CHARS} characters")
    if any(ch.isspace() for ch in name):
        raise InvalidNameError("a name cannot contain spaces")
    if not name.isprintable():
        raise InvalidNameError("a name can only have printable characters")
    if name.startswith(FORBIDDEN_NAME_STARTS):
        raise InvalidNameError(f'a name cannot start with "{name[0]}"')
    if name_key(name) in RESERVED_NAMES:
        raise InvalidNameError(f'"{name}" is reserved')
    return name


def check_room(raw: str) -> str:
    """Return ``raw`` as a room name (a leading "#" is dropped), or raise :class:`CommandError`.

    >>> check_room("#dev")
    'dev'
    """
    room = raw.strip().lstrip("#")
    if not room or len(room) > MAX_NAME_CHARS or not room.isprintable() or " " in room:
        raise CommandError(f"a room name is 1 to {MAX_NAME_CHARS} printable characters, no spaces")
    return room


def name_key(name: str) -> str:
    """The form names are compared in: unique ignoring case."""
    return name.casefold()


def encode_line(line: str) -> bytes:
    """The bytes that carry one line on the wire."""
    return (line + "\n").encode(ENCODING)


def render_message(stamp: str, sender: str, text: str) -> str:
    """A chat line as everyone else sees it: ``[14:03] <alice> hi``."""
    return f"[{stamp}] <{sender}> {text}"


def render_notice(stamp: str, text: str) -> str:
    """A server notice, marked so that no user's line can look like one: ``[14:03] *** bob joined``."""
    return f"[{stamp}] {NOTICE_MARK} {text}"


def render_action(stamp: str, sender: str, text: str) -> str:
    """A /me line: ``[14:03] * alice waves``."""
    return f"[{stamp}] * {sender} {text}"


def render_private(stamp: str, sender: str, text: str, to: Optional[str] = None) -> str:
    """A /msg line, as its target sees it or (with ``to``) as its sender sees it."""
    mark = f"(private to {to})" if to else "(private)"
    return f"[{stamp}] {mark} <{sender}> {text}"


class ParsedLine(NamedTuple):
    """A line from the server taken apart, for clients that show kinds differently."""

    kind: str  # one of the LINE_* kinds
    stamp: str
    sender: str  # "" for notices and handshake lines
    text: str


LINE_MESSAGE, LINE_ACTION, LINE_PRIVATE, LINE_NOTICE, LINE_HANDSHAKE, LINE_HISTORY = (
    "message", "action", "private", "notice", "handshake", "history")
_PARSED = re.compile(
    r"\[(?P<stamp>(?:\d{4}-\d\d-\d\d )?\d\d:\d\d)\] (?P<history>\(history\) )?(?:"
    r"<(?P<message>[^>\s]+)> |\* (?P<action>\S+) |\(private(?: to \S+)?\) <(?P<private>[^>\s]+)> "
    r"|(?P<notice>\*\*\* ))(?P<text>.*)", re.DOTALL)


def parse_line(line: str) -> ParsedLine:
    """Tell what kind of line the server sent, and whose.

    >>> parse_line("[14:03] <bob> hi")
    ParsedLine(kind='message', stamp='14:03', sender='bob', text='hi')
    >>> parse_line("[14:03] (private to carol) <bob> psst").kind
    'private'
    >>> parse_line("*** What is your name?").kind
    'handshake'
    >>> parse_line("[2026-11-24 14:03] (history) <bob> hi")
    ParsedLine(kind='history', stamp='2026-11-24 14:03', sender='bob', text='hi')
    """
    match = _PARSED.fullmatch(line)
    if match is None:
        return ParsedLine(LINE_HANDSHAKE, "", "", line)
    kind, sender = LINE_NOTICE, ""
    for candidate in (LINE_MESSAGE, LINE_ACTION, LINE_PRIVATE):
        if match[candidate]:
            kind, sender = candidate, match[candidate]
    return ParsedLine(LINE_HISTORY if match["history"] else kind, match["stamp"], sender, match["text"])


HISTORY_MARK = "(history)"
LIVE_MARKER = "End of history; live chat from here."


def render_history(stamp: str, kind: str, sender: str, text: str) -> str:
    """A stored room line played back, marked so it cannot be taken for a live one.

    >>> render_history("2026-11-24 14:03", "action", "bob", "waves")
    '[2026-11-24 14:03] (history) * bob waves'
    """
    if kind == LINE_ACTION:
        said = f"* {sender} {text}"
    elif kind == LINE_NOTICE:
        said = f"{NOTICE_MARK} {text}"
    else:
        said = f"<{sender}> {text}"
    return f"[{stamp}] {HISTORY_MARK} {said}"


def render_refusal(reason: str) -> str:
    """The line before the name prompt is asked again."""
    return f"{NOTICE_MARK} Sorry, {reason}."


def render_welcome(name: str, others: str) -> str:
    """The line that ends the handshake and says who else is here (``others`` from :func:`list_names`).

    >>> render_welcome("alice", "bob, carol")
    '*** Welcome, alice! Here now: bob, carol.'
    >>> render_welcome("alice", "")
    '*** Welcome, alice! Nobody else is here yet.'
    """
    if not others:
        return f"{WELCOME_PREFIX}{name}! Nobody else is here yet."
    return f"{WELCOME_PREFIX}{name}! Here now: {others}."


def list_names(names: list[str], cap: int, total: Optional[int] = None) -> str:
    """Names for a line, at most ``cap`` of them, so a crowd costs a bounded number of bytes;
    ``total`` counts those not passed in too.

    >>> list_names(["a", "b", "c"], 2)
    'a, b and 1 other'
    >>> list_names(["a", "b"], 2, total=10002)
    'a, b and 10,000 others'
    """
    shown = ", ".join(names[:cap])
    more = (len(names) if total is None else total) - min(cap, len(names))
    if more <= 0:
        return shown
    return f"{shown} and {more:,} other{'s' if more > 1 else ''}"


def is_welcome(line: str) -> bool:
    """Whether a line from the server ends the handshake (for clients)."""
    return line.startswith(WELCOME_PREFIX)


_REFUSAL_START = f"{NOTICE_MARK} Sorry, "
_RENAMED = re.compile(r"(?P<old>\S+) is now known as (?P<new>\S+)")


def is_refusal(line: str) -> bool:
    """Whether a handshake line from the server refuses the name just sent (for clients)."""
    return line.startswith(_REFUSAL_START)


def refusal_reason(line: str) -> str:
    """The reason in a refusal line (the inverse of :func:`render_refusal`).

    >>> refusal_reason('*** Sorry, the name "bob" is taken.')
    'the name "bob" is taken'
    """
    reason = line[len(_REFUSAL_START):]
    return reason[:-1] if reason.endswith(".") else reason


def render_rename(old: str, new: str) -> str:
    """The notice text a room gets for /nick."""
    return f"{old} is now known as {new}"


def parse_rename(text: str) -> Optional[tuple[str, str]]:
    """``(old, new)`` from a /nick notice's text, else None.

    >>> parse_rename("alice is now known as al")
    ('alice', 'al')
    """
    match = _RENAMED.fullmatch(text)
    return (match["old"], match["new"]) if match else None


def split_command(line: str) -> Optional[tuple[str, str]]:
    """``(name, argument)`` of a slash command; None for a message ("//text" is the message "/text").

    >>> split_command("/MSG bob hi there")
    ('msg', 'bob hi there')
    >>> split_command("//etc") is None
    True
    """
    if not line.startswith("/") or line.startswith("//"):
        return None
    name, _, argument = line[1:].partition(" ")
    return name.lower(), argument.strip()


def message_text(line: str) -> str:
    """The text of a message line: a leading "//" stands for "/"."""
    return line[1:] if line.startswith("//") else line

