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
starts with a letter or digit: so no one can make a line that looks like a notice or like
someone else's.  Names are compared by :func:`name_key`, and :func:`check_name` refuses a name
made to look like another (invisible characters, mixed scripts), so no one can pass for
someone else either; a name in one script that still looks like a present one ("аре" for
"ape", "rn" for "m") shares its skeleton (:mod:`groupchat.lookalikes`), and the server refuses it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple, Optional, Sequence, Union

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
# The only punctuation a name may have, and only between letters or digits (as in "r2-d2").
NAME_JOINERS = "-_."
# Enough for Vietnamese or Indic letters; "Zalgo" text stacks dozens.
MAX_MARKS_PER_LETTER = 3
# A longer run of blanks in a line becomes one space, so no padding can push text onto a
# row of its own in a terminal that wraps.
MAX_BLANK_RUN = 2

# CSI/OSC/other escape sequences first (so their parameters go too), then any lone control
# character, C1 control or bidi override left over.
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-_]?)")
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# What shows as blank space but is not whitespace: the Hangul fillers and the blank Braille cell.
_FILLERS = "\u115f\u1160\u2800\u3164\uffa0"
# What shows as nothing at all: Unicode's Default_Ignorable_Code_Point (which unicodedata
# lacks) less the fillers above.
_ZERO_WIDTH = ("\u00ad\u034f\u061c\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
               "\u2060-\u206f\ufe00-\ufe0f\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3"
               "\U0001d173-\U0001d17a\U000e0000-\U000e0fff")
_SPACE_RUN = " " * (MAX_BLANK_RUN + 1)  # all an ASCII line's run can be made of
_INVISIBLE = re.compile(f"[{_FILLERS}{_ZERO_WIDTH}]")
# More than MAX_BLANK_RUN blanks with nothing visible between them (the two classes are
# disjoint, so matching is linear; starting with a blank keeps searching cheap).
_BLANK_RUN = re.compile(f"[\\s{_FILLERS}](?:[{_ZERO_WIDTH}]*[\\s{_FILLERS}]){{{MAX_BLANK_RUN},}}[{_ZERO_WIDTH}]*")


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

    ``collapse_blanks`` is for what people send; a client reading the server turns it off, so
    the server's own padding (the columns of /help) shows as sent.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES, max_unterminated: int = 0,
                 collapse_blanks: bool = True) -> None:
        self.max_line = max_line
        self.collapse_blanks = collapse_blanks
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
                lines.extend(_decode_lines(b"\n".join(raws), self.collapse_blanks))
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
        if len(raw) > self.max_line:
            return LineTooLong(self.max_line)
        return clean_text(raw.decode(ENCODING, errors="replace"), self.collapse_blanks)

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished line are held."""
        return len(self._tail)


def _decode_lines(raw: bytes, collapse_blanks: bool = True) -> list[str]:
    """:func:`decode_line` for many lines joined by newlines, in a few C calls.

    A newline byte is never part of a multi-byte UTF-8 character, so decoding them together
    splits the same way as decoding each.
    """
    lines = raw.decode(ENCODING, errors="replace").split("\n")
    if b"\r" in raw:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [line if _is_clean(line, collapse_blanks) else clean_text(line, collapse_blanks) for line in lines]


def decode_line(raw: bytes) -> str:
    """Turn one line's bytes into safe text: bad UTF-8 replaced, control characters removed,
    runs of blanks collapsed.

    >>> decode_line(b"hi \\xff\\x1b[2Jthere\\r")
    'hi \\ufffdthere'
    """
    return clean_text(raw.decode(ENCODING, errors="replace"))


def clean_text(text: str, collapse_blanks: bool = True) -> str:
    """Remove what could move a terminal's cursor, clear it, ring it or reorder it; tabs become
    spaces, and a run of more than :data:`MAX_BLANK_RUN` blanks (spaces, fillers, with nothing
    visible between them) becomes one space, so padding cannot fake a line break.

    >>> clean_text("a\\tb\\x07\\u202ec")
    'a bc'
    >>> clean_text("hi" + " " * 70 + "[14:03] <bob> psst")
    'hi [14:03] <bob> psst'
    """
    if _is_clean(text, collapse_blanks):
        return text
    text = _UNSAFE_CHARS.sub("", _ESCAPE_SEQUENCE.sub("", text.replace("\t", " ")))
    return _BLANK_RUN.sub(" ", text) if collapse_blanks else text


def _is_clean(text: str, collapse_blanks: bool = True) -> bool:
    """Whether :func:`clean_text` would leave ``text`` as it is, in a few C calls for most lines."""
    return text.isprintable() and (not collapse_blanks or _SPACE_RUN not in text
                                   and (text.isascii() or not _BLANK_RUN.search(text)))


def check_name(raw: str) -> str:
    """Return ``raw`` as a name, or raise :class:`InvalidNameError` saying what is wrong
    (see :func:`name_problem` for the rules).

    >>> check_name("  alice ")
    'alice'
    >>> check_name("<bob>")
    Traceback (most recent call last):
    ...
    groupchat.errors.InvalidNameError: a name cannot start with "<"
    """
    name = raw.strip()
    problem = name_problem(name, "a name")
    if problem:
        raise InvalidNameError(problem)
    if name_key(name) in RESERVED_NAMES:
        raise InvalidNameError(f'"{name}" is reserved')
    return name


def check_room(raw: str) -> str:
    """Return ``raw`` as a room name (a leading "#" is dropped), or raise :class:`CommandError`;
    the rules are a name's.

    >>> check_room("#dev")
    'dev'
    """
    room = raw.strip().lstrip("#")
    problem = name_problem(room, "a room name")
    if problem:
        raise CommandError(problem)
    return room


def name_problem(name: str, noun: str) -> Optional[str]:
    """Why ``name`` cannot be a name (one line, starting with ``noun``), or None if it can.

    The rules keep two names that look alike from being told apart only by :func:`name_key`:
    nothing invisible, letters and digits with ``-``, ``_`` or ``.`` between them, marks only
    on letters, and one script (Unicode TR39's single-script rule). They are checked on the
    NFKC form, the one the key is made from, so ``ｂｏｂ`` is ruled on as ``bob``.

    >>> name_problem("r2-d2", "a name") is None
    True
    >>> name_problem("bоb", "a name")  # the middle letter is Cyrillic
    'a name cannot mix Cyrillic and Latin letters'
    >>> name_problem("bob\\u034f", "a name")
    'a name cannot have invisible or control characters such as U+034F'
    """
    folded = unicodedata.normalize("NFKC", name)
    if not name:
        return f"{noun} cannot be empty"
    if max(len(name), len(folded)) > MAX_NAME_CHARS:
        return f"{noun} can have at most {MAX_NAME_CHARS} characters"
    if any(ch.isspace() for ch in name + folded):
        return f"{noun} cannot contain spaces"
    hidden = next((ch for ch in name + folded if not ch.isprintable() or _INVISIBLE.match(ch)), None)
    if hidden is not None:
        return f"{noun} cannot have invisible or control characters such as U+{ord(hidden):04X}"
    first = folded[0]
    if unicodedata.category(first).startswith("M"):
        return f"{noun} must start with a letter or digit"
    if not _is_letter_or_digit(first):
        return f'{noun} cannot start with "{first}"'
    if folded[-1] in NAME_JOINERS:
        return f'{noun} cannot end with "{folded[-1]}"'
    marks = 0
    for previous, ch in zip(" " + folded, folded):
        if unicodedata.category(ch).startswith("M"):
            marks += 1
            if marks == 1 and not unicodedata.category(previous).startswith("L"):
                return f"{noun} can only have accents and other marks on letters"
            if marks > MAX_MARKS_PER_LETTER:
                return f"{noun} can have at most {MAX_MARKS_PER_LETTER} marks on a letter"
            continue
        marks = 0
        if not _is_letter_or_digit(ch) and ch not in NAME_JOINERS:
            return f'{noun} can only have letters, digits, "-", "_" and "." (not "{ch}")'
    scripts = sorted({script_of(ch) for ch in folded} - {""})
    if len(scripts) > 1:
        return f"{noun} cannot mix {', '.join(scripts[:-1])} and {scripts[-1]} letters"
    return None


def _is_letter_or_digit(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


# Scripts written together in one name, under one name (as TR39's "highly restrictive"
# level lets Han go with Hiragana and Katakana, with Hangul, or with Bopomofo); the keys are
# the first word of the characters' Unicode names.
_SCRIPT_ALIASES = {"CJK": "Han", "IDEOGRAPHIC": "Han", "HIRAGANA": "Han", "KATAKANA": "Han",
                   "HANGUL": "Han", "BOPOMOFO": "Han", "EXTENDED": "Arabic"}


def script_of(ch: str) -> str:
    """The script a letter, digit or mark of a name is written in, from its Unicode name;
    "" for what every script shares (ASCII digits, the joiners, combining accents).

    >>> [script_of(ch) for ch in "bо7李カ"]
    ['Latin', 'Cyrillic', '', 'Han', 'Han']
    >>> script_of("\\u0301"), script_of("\\u0663")  # a combining acute; an Arabic-Indic 3
    ('', 'Arabic')
    """
    if ch.isascii() and not ch.isalpha():
        return ""
    word = re.split("[ -]", unicodedata.name(ch, ""), maxsplit=1)[0]
    if word == "COMBINING":
        return ""
    return _SCRIPT_ALIASES.get(word, word.title())


def name_key(name: str) -> str:
    """The form names (and room names) are compared in: case, width and compatibility forms
    folded (NFKC and casefold, and nothing dropped), so ``ＢＯＢ`` and ``𝐛𝐨𝐛`` are ``bob``.
    An ASCII name's key is its casefold, as it always was, so stored history still matches.

    >>> name_key("ＢＯＢ") == name_key("𝐛𝐨𝐛") == name_key("Bob") == "bob"
    True
    """
    if name.isascii():
        return name.casefold()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


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


# -- the server's sentences -------------------------------------------------------------
# Each sentence a program still reads back from the text mode (the bench, /who's names) is a
# render/parse pair here, so the wording lives in one place and the doctests show that the two
# agree; programs that want fields use the JSON mode (groupchat.jsonl).

def render_refusal(reason: str) -> str:
    """The line before the name prompt is asked again."""
    return f"{_REFUSAL_START}{reason}."


def is_refusal(line: str) -> bool:
    """Whether a handshake line from the server refuses the name just sent (for clients)."""
    return line.startswith(_REFUSAL_START)


def refusal_reason(line: str) -> str:
    """The reason in a refusal line (the inverse of :func:`render_refusal`).

    >>> refusal_reason(render_refusal('the name "bob" is taken'))
    'the name "bob" is taken'
    """
    reason = line[len(_REFUSAL_START):]
    return reason[:-1] if reason.endswith(".") else reason


_REFUSAL_START = f"{NOTICE_MARK} Sorry, "


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


def parse_names(listing: str) -> list[str]:
    """The names spelled out by :func:`list_names` (names have no spaces, so each item's first
    word is one; the count of the others is not a name).

    >>> parse_names(list_names(["a", "b", "c"], 2))
    ['a', 'b']
    """
    return [item.split(" ", 1)[0] for item in listing.split(", ")] if listing else []


_NAMES = r"\S+(?:, \S+)*(?: and [\d,]+ others?)?"  # what list_names makes


def render_welcome(name: str, others: str) -> str:
    """The line that ends the handshake and says who else is here (``others`` from :func:`list_names`).

    >>> render_welcome("alice", "bob, carol")
    '*** Welcome, alice! Here now: bob, carol.'
    >>> render_welcome("alice", "")
    '*** Welcome, alice! Nobody else is here yet.'
    """
    return f"{WELCOME_PREFIX}{name}! {_here_now(others)}"


def is_welcome(line: str) -> bool:
    """Whether a line from the server ends the handshake (for clients)."""
    return line.startswith(WELCOME_PREFIX)


def _here_now(others: str) -> str:
    return f"Here now: {others}." if others else "Nobody else is here yet."


def render_session(token: str, window: float, name: str) -> str:
    """The handshake line, just before the welcome, that gives a connection its resume token.

    >>> parse_session(render_session("Xy-z", 120, "alice"))
    'Xy-z'
    """
    return (f"{SESSION_PREFIX}{token}. If you lose the connection, reconnect within {window:g} s and "
            f'send "/resume {token}" instead of your name to come back as {name} with what you missed.')


def parse_session(line: str) -> Optional[str]:
    """The token in a :func:`render_session` line, else None."""
    return line[len(SESSION_PREFIX):].split(".", 1)[0] if line.startswith(SESSION_PREFIX) else None


SESSION_PREFIX = f"{NOTICE_MARK} Your session: "


def render_entered(room: str, others: str) -> str:
    """The notice a member gets on moving to another room.

    >>> render_entered("dev", "bob")
    'You are now in dev. Here now: bob.'
    """
    return f"You are now in {room}. {_here_now(others)}"


def render_moved(name: str, room: str) -> str:
    """The notice a room gets when one of its members goes to another room."""
    return f"{name} went to {room}"


def render_who(room: str, here: list[str], online: int, cap: int) -> str:
    """The answer to /who: who is in the room (at most ``cap`` named) and how many are online."""
    return f"In {room} ({len(here)}): {list_names(here, cap)}. {online} online in all."


def parse_who(text: str) -> Optional[tuple[str, list[str], int]]:
    """``(room, the names listed, how many online)`` from a /who answer, else None.

    >>> parse_who(render_who("lobby", ["alice", "bob", "carol"], 5, cap=2))
    ('lobby', ['alice', 'bob'], 5)
    """
    match = _WHO.fullmatch(text)
    return (match["room"], parse_names(match["names"]), int(match["online"])) if match else None


_WHO = re.compile(rf"In (?P<room>\S+) \(\d+\): (?P<names>{_NAMES})\. (?P<online>\d+) online in all\.")


def render_comings(joined: list[str], left: list[str], cap: int, reason: str = "",
                   held: Sequence[str] = (), back: Sequence[str] = ()) -> str:
    """One notice for a room's comings and goings, at most ``cap`` names spelled out for each;
    a lone leave may keep its ``reason`` (a /quit message, a kick), which comes last.  ``held``
    dropped off and may resume their sessions; ``back`` did.

    >>> render_comings(["alice", "bob", "carol"], ["dave"], cap=10)
    'alice, bob, carol joined; dave left'
    >>> render_comings([f"p{n}" for n in range(40)], [], cap=10)[-27:]
    'p8, p9 and 30 others joined'
    >>> render_comings(["bob"], ["bob"], cap=10, reason="quit: bye; see you")
    'bob joined; bob left (quit: bye; see you)'
    >>> render_comings([], ["carol"], cap=10, held=["alice"], back=["bob", "dave"])
    'alice is reconnecting; bob, dave are back; carol left'
    """
    parts = [f"{list_names(names, cap)} {verb}" for names, verb in (
        (joined, JOINED), (held, _plural(held, RECONNECTING)), (back, _plural(back, BACK)), (left, LEFT)) if names]
    if reason and len(left) == 1:
        parts[-1] += f" ({reason})"
    return "; ".join(parts)


def _plural(names: Sequence[str], state: str) -> str:
    return f"{'is' if len(names) == 1 else 'are'} {state}"


JOINED, LEFT = "joined", "left"
RECONNECTING, BACK = "reconnecting", "back"


def render_missed(count: int) -> str:
    """What a reader too slow for its queue is told in place of the messages it lost."""
    return f"{MISSED_START}{count} messages while you were not reading; /history {count} shows them."


def parse_missed(text: str) -> Optional[int]:
    """How many messages :func:`render_missed`'s notice text says were lost, else None.

    >>> parse_missed(render_missed(12))
    12
    """
    match = _MISSED.match(text)
    return int(match[1]) if match else None


MISSED_START = "You missed "
_MISSED = re.compile(rf"{MISSED_START}(\d+) messages")


def render_missed_since(missed: int, shown: int, last_shown: int) -> str:
    """What a resumed session (or /history after ID) is told before the lines it missed.

    >>> render_missed_since(3, 3, 41)
    '3 messages were said since: here they are.'
    >>> render_missed_since(1200, 500, 941)
    '1,200 messages were said since: here are the first 500; /history after 941 shows more.'
    """
    if shown < missed:
        return f"{missed:,} messages were said since: here are the first {shown}; /history after {last_shown} shows more."
    return f"{missed:,} message{'s were' if missed != 1 else ' was'} said since" + (": here they are." if missed else ".")


def render_throttled(waiting: int, rate: float) -> str:
    """What a sender is told when flood control starts holding its lines back.

    >>> render_throttled(40, 5.0)
    'Slowing down: 40 lines waiting, 5 a second.'
    """
    return f"Slowing down: {waiting:,} line{'s' if waiting != 1 else ''} waiting, {rate:g} a second."


def render_rename(old: str, new: str) -> str:
    """The notice text a room gets for /nick."""
    return f"{old} is now known as {new}"


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


# -- the chat's commands ------------------------------------------------------------------
# One table for the server (which binds each to a cmd_NAME method, and makes /help from it)
# and for clients (which complete the names).

MAX_HISTORY = 500  # most lines one /history (or a replay) shows
# An event id as a person or a client gives it (/resume, /history after): ASCII digits, not too many.
EVENT_ID = re.compile(r"[0-9]{1,18}")
MAX_SEARCH = 50  # most matches one /search shows
DEFAULT_HISTORY_LINES = 20  # /history with no number


class CommandSpec(NamedTuple):
    """One command: its name, how it is used, a line of help, whether only operators may use
    it, and other names it answers to (IRC's, for people's habits)."""

    name: str
    args: str
    help: str
    ops_only: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        """``/name ARGS``, as help and a usage error show it.

        >>> CommandSpec("msg", "NAME TEXT", "").usage
        '/msg NAME TEXT'
        """
        return f"/{self.name} {self.args}".rstrip()


CHAT_COMMANDS = (
    CommandSpec("help", "[COMMAND]", "list the commands, or explain one"),
    CommandSpec("nick", "NEW", "change your name"),
    CommandSpec("who", "", "who is in your room, and how many are online", aliases=("names",)),
    CommandSpec("whois", "NAME", "where someone is, since when, and whether away"),
    CommandSpec("me", "ACTION", "say what you do, shown as * NAME ACTION"),
    CommandSpec("msg", "NAME TEXT", "a private message only NAME sees", aliases=("query",)),
    CommandSpec("r", "TEXT", "answer the last private message you got"),
    CommandSpec("away", "[TEXT]", "say you are away (shown in /who and to whoever writes to you); "
                                  "without TEXT, that you are back"),
    CommandSpec("ignore", "[NAME]", "see nothing more from NAME (your view only); without NAME, list "
                                    "whom you ignore"),
    CommandSpec("unignore", "NAME", "see NAME's lines again"),
    CommandSpec("quit", "[REASON]", "leave the chat; the others see the reason", aliases=("exit",)),
    CommandSpec("join", "ROOM", "move to another room (made if new)"),
    CommandSpec("part", "", "leave your room for the lobby", aliases=("leave",)),
    CommandSpec("rooms", "", "list the rooms and how many are in each", aliases=("list",)),
    CommandSpec("topic", "[TEXT]", "show or set your room's topic"),
    CommandSpec("history", "[N|after ID]", f"show the last N messages of your room (default "
                                  f"{DEFAULT_HISTORY_LINES}, at most {MAX_HISTORY}), or those after ID"),
    CommandSpec("search", "TEXT", f"find earlier messages in your room, newest first (at most {MAX_SEARCH})"),
    CommandSpec("mode", "json|text", "switch this connection to JSON Lines, for programs, or back"),
    CommandSpec("resume", "TOKEN [LAST_ID]", "as the first line of a new connection: come back to a "
                "session that dropped, with what you missed"),
    CommandSpec("op", "PASSWORD", "become an operator"),
    CommandSpec("kick", "NAME [REASON]", "disconnect someone", ops_only=True),
    CommandSpec("ban", "NAME|--address ADDRESS [MINUTES]", "refuse a name, or an address or block (or a "
                "connected NAME's address), kicking whom it covers; for good if no minutes", ops_only=True),
    CommandSpec("unban", "NAME|--address ADDRESS", "lift a ban on a name or an address", ops_only=True),
    CommandSpec("bans", "", "list the bans in force", ops_only=True),
)
