"""How a line from the server looks at a colour terminal, and whether it rings the bell.

Pure functions of the line and your name, so every rule is tested without a terminal:
each name has its own colour, the same in every run (a CRC of the name, not Python's
randomised ``hash``); notices are dimmed; private messages and lines that mention you are
highlighted; a private message or a mention from someone else rings the bell.  The colours
are the terminal's own six hues, so they follow its theme and read on light and dark alike.

>>> to_ansi(style_line("[14:03] <bob> hi alice", "alice")) == (
...     "\\x1b[7m[14:03]\\x1b[0m \\x1b[1;35m<bob>\\x1b[0m\\x1b[1m hi alice\\x1b[0m")
True
>>> should_ring("[14:03] <bob> hi alice", "alice"), should_ring("[14:03] <alice> hi bob", "alice")
(True, False)
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Mapping

from groupchat.protocol import (
    LINE_ACTION,
    LINE_HANDSHAKE,
    LINE_MESSAGE,
    LINE_NOTICE,
    LINE_PRIVATE,
    name_key,
    parse_line,
)

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


def is_highlighted(line: str, me: str) -> bool:
    """Whether a line is a private message (either way) or someone else's line that mentions ``me``."""
    parsed = parse_line(line)
    if parsed.kind == LINE_PRIVATE:
        return True
    return (parsed.kind in _PEOPLE_KINDS and name_key(parsed.sender) != name_key(me)
            and mentions(parsed.text, me))


def should_ring(line: str, me: str) -> bool:
    """Whether a line should ring the bell: someone else's private message to you, or mention of you.

    >>> should_ring("[14:03] (private) <bob> psst", "alice")
    True
    >>> should_ring("[14:03] (private to bob) <alice> psst", "alice")
    False
    """
    parsed = parse_line(line)
    return name_key(parsed.sender) != name_key(me) and is_highlighted(line, me)


def style_line(line: str, me: str) -> list[Fragment]:
    """The line cut into styled fragments that join back into exactly ``line``.

    >>> style_line("[14:03] *** bob joined", "alice")
    [((2,), '[14:03] *** bob joined')]
    """
    parsed = parse_line(line)
    if parsed.kind in (LINE_NOTICE, LINE_HANDSHAKE):
        return [(NOTICE_STYLE, line)]
    highlighted = is_highlighted(line, me)
    stamp_end = len(f"[{parsed.stamp}]")
    text_start = len(line) - len(parsed.text) - 1  # the text with the space before it
    return [
        (HIGHLIGHT_STAMP_STYLE if highlighted else STAMP_STYLE, line[:stamp_end]),
        ((), " "),
        ((BOLD, name_colour(parsed.sender)), line[stamp_end + 1:text_start]),  # "<bob>", "* bob", ...
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


class Painter:
    """Turns each line for the transcript into what is printed: coloured and ringing, if asked.

    With ``colour`` off a line is printed exactly as it came, with no escape code at all.
    """

    def __init__(self, colour: bool, bell: bool) -> None:
        self.colour = colour
        self.bell = bell

    def paint(self, line: str, me: str) -> str:
        """``line`` as it should be printed for ``me``."""
        shown = to_ansi(style_line(line, me)) if self.colour else line
        return shown + BELL if self.bell and should_ring(line, me) else shown
