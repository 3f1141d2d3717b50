"""How a line for the transcript looks at a colour terminal, and whether it rings the bell.

Pure functions of a :class:`~groupchat.client.view.Shown` line and your name, so every rule is
tested without a terminal: each name has its own colour, the same in every run (a CRC of the
name, not Python's randomised ``hash``); notices are dimmed; private messages and lines that
mention you are highlighted; a private message or a mention from someone else rings the bell.
Whose line it is and what they said come from the event's fields, never from reading the line.
The colours are the terminal's own six hues, so they follow its theme and read on light and
dark alike.

>>> bob = Shown(LINE_MESSAGE, "[14:03] <bob> hi alice", "bob", "hi alice")
>>> to_ansi(style_line(bob, "alice")) == (
...     "\\x1b[7m[14:03]\\x1b[0m \\x1b[1;35m<bob>\\x1b[0m\\x1b[1m hi alice\\x1b[0m")
True
>>> should_ring(bob, "alice"), should_ring(bob, "bob")
(True, False)
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Callable, Mapping, Optional

from groupchat.client.view import Shown
from groupchat.protocol import LINE_ACTION, LINE_MESSAGE, LINE_PRIVATE, name_key

# SGR codes (ECMA-48 "select graphic rendition").
BOLD, DIM, REVERSE = 1, 2, 7
# Foregrounds for names: red, green, yellow, blue, magenta, cyan and the bright ones that
# stay readable on a white background too (no bright green or yellow, no black, white or grey).
NAME_COLOURS = (31, 32, 33, 34, 35, 36, 91, 94, 95, 96)
STAMP_STYLE = (DIM,)
NOTICE_STYLE = (DIM,)
HIGHLIGHT_STAMP_STYLE = (REVERSE,)  # marks a highlighted line where the eye scans
HIGHLIGHT_TEXT_STYLE = (BOLD,)
BELL = "\a"
NO_COLOR_ENV = "NO_COLOR"  # https://no-color.org: any non-empty value turns colour off

Style = tuple[int, ...]  # SGR codes; () is the terminal's default
Fragment = tuple[Style, str]

_PEOPLE_KINDS = (LINE_MESSAGE, LINE_ACTION, LINE_PRIVATE)


def name_colour(name: str) -> int:
    """The SGR foreground of a name: the same for every spelling of its case, in every run.

    >>> name_colour("Alice") == name_colour("alice")
    True
    """
    return NAME_COLOURS[zlib.crc32(name_key(name).encode()) % len(NAME_COLOURS)]


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` has ``name`` as a whole word, ignoring case.

    >>> mentions("Alice: lunch?", "alice"), mentions("malice aforethought", "alice")
    (True, False)
    """
    return _mention_pattern(name).search(text) is not None


@functools.lru_cache(maxsize=8)  # one name at a time, and a few after /nick
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)


def is_highlighted(shown: Shown, me: str) -> bool:
    """Whether a line is a private message (either way) or someone else's line that mentions ``me``."""
    if shown.kind == LINE_PRIVATE:
        return True
    return shown.kind in _PEOPLE_KINDS and name_key(shown.sender) != name_key(me) and mentions(shown.text, me)


def should_ring(shown: Shown, me: str) -> bool:
    """Whether a line should ring the bell: someone else's private message to you, or mention of you.

    >>> should_ring(Shown(LINE_PRIVATE, "[14:03] (private) <bob> psst", "bob", "psst"), "alice")
    True
    >>> should_ring(Shown(LINE_PRIVATE, "[14:03] (private to bob) <alice> psst", "alice", "psst"), "alice")
    False
    """
    return name_key(shown.sender) != name_key(me) and is_highlighted(shown, me)


def style_line(shown: Shown, me: str) -> list[Fragment]:
    """The line cut into styled fragments that join back into exactly ``shown.line``: a person's
    line is its stamp, the mark with their name (``<bob>``, ``* bob``, ``(private) <bob>``) and
    what they said; anything else is dimmed whole.

    >>> style_line(Shown("notice", "[14:03] *** bob joined"), "alice")
    [((2,), '[14:03] *** bob joined')]
    """
    line = shown.line
    if not shown.sender or not line.startswith("[") or not line.endswith(" " + shown.text):
        return [(NOTICE_STYLE, line)]
    highlighted = is_highlighted(shown, me)
    stamp_end = line.index("]") + 1
    text_start = len(line) - len(shown.text) - 1  # the text with the space before it
    return [
        (HIGHLIGHT_STAMP_STYLE if highlighted else STAMP_STYLE, line[:stamp_end]),
        ((), " "),
        ((BOLD, name_colour(shown.sender)), line[stamp_end + 1:text_start]),  # "<bob>", "* bob", ...
        (HIGHLIGHT_TEXT_STYLE if highlighted else (), line[text_start:]),
    ]


def to_ansi(fragments: list[Fragment]) -> str:
    """The fragments as text with ANSI escape codes; each styled one ends in a reset.

    >>> to_ansi([((BOLD, 31), "red"), ((), " plain")])
    '\\x1b[1;31mred\\x1b[0m plain'
    """
    return "".join(f"\x1b[{';'.join(map(str, style))}m{text}\x1b[0m" if style else text
                   for style, text in fragments if text)


def colour_allowed(environ: Mapping[str, str]) -> bool:
    """Whether the environment lets a terminal program use colour (no-color.org).

    >>> colour_allowed({}), colour_allowed({"NO_COLOR": "1"}), colour_allowed({"NO_COLOR": ""})
    (True, False, True)
    """
    return not environ.get(NO_COLOR_ENV)


def text_column(shown: Shown) -> int:
    """Where the text of a line starts: after ``[14:03] <bob> `` or ``[14:03] *** ``, else 0.

    >>> text_column(Shown(LINE_MESSAGE, "[14:03] <bob> hi", "bob", "hi"))
    14
    >>> text_column(Shown("notice", "[14:03] *** bob joined")), text_column(Shown("handshake", "Name:"))
    (12, 0)
    """
    if shown.sender and shown.line.endswith(" " + shown.text):
        return len(shown.line) - len(shown.text)
    match = _NOTICE_START.match(shown.line)
    return match.end() if match else 0


_NOTICE_START = re.compile(r"\[[^]]*\] \*\*\* ")


def wrap_points(line: str, width: int, indent: int) -> list[tuple[int, int]]:
    """Where to cut ``line`` to fit ``width`` columns: (start, end) of each piece, cut at a
    space (which is dropped), the pieces after the first being shown after ``indent`` spaces;
    a word longer than a whole piece is cut where it must.

    >>> line = "[14:03] <bob> the quick brown fox jumps over the lazy dog"
    >>> [line[start:end] for start, end in wrap_points(line, 30, 14)]
    ['[14:03] <bob> the quick brown', 'fox jumps over', 'the lazy dog']
    >>> [line[start:end] for start, end in wrap_points(line, 4, 0)][:3]
    ['[14:', '03]', '<bob']
    """
    indent = hanging_indent(indent, width)
    pieces, start, room = [], 0, width
    while len(line) - start > room:
        cut = line.rfind(" ", start + 1, start + room + 1)
        pieces.append((start, cut if cut > start else start + room))
        start = cut + 1 if cut > start else start + room
        room = width - indent
    pieces.append((start, len(line)))
    return pieces


def hanging_indent(column: int, width: int) -> int:
    """How far a wrapped line's later pieces are indented: to ``column``, where its text starts,
    unless the terminal is so narrow that the indent would leave no room for text."""
    return 0 if column >= width // 2 else column


def _slice(fragments: list[Fragment], start: int, end: int) -> list[Fragment]:
    """The part of a line's fragments between two offsets of the line, styles kept."""
    sliced, offset = [], 0
    for style, text in fragments:
        low, high = max(start - offset, 0), min(end - offset, len(text))
        if low < high:
            sliced.append((style, text[low:high]))
        offset += len(text)
    return sliced


class Painter:
    """Turns each line for the transcript into what is printed: coloured, wrapped and ringing, if asked.

    With ``colour`` off a line is printed with no escape code at all.  With ``width`` (the
    terminal's columns, asked for each line) a long line is wrapped at spaces, and its text
    goes on under where it started (a hanging indent); without it, a line is printed whole.
    """

    def __init__(self, colour: bool, bell: bool, width: Optional[Callable[[], int]] = None) -> None:
        self.colour = colour
        self.bell = bell
        self.width = width

    def paint(self, shown: Shown, me: str) -> str:
        """The line as it should be printed for ``me``."""
        fragments = style_line(shown, me) if self.colour else [((), shown.line)]
        width = self.width() if self.width is not None else 0
        if width <= 0 or len(shown.line) <= width:
            printed = to_ansi(fragments)
        else:
            indent = hanging_indent(text_column(shown), width)
            pieces = wrap_points(shown.line, width, indent)
            printed = ("\n" + " " * indent).join(to_ansi(_slice(fragments, start, end)) for start, end in pieces)
        return printed + BELL if self.bell and should_ring(shown, me) else printed
