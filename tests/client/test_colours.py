"""How lines look at a colour terminal, and when they ring: pure functions, no terminal needed.

The lines are :class:`Shown` ones, as the view makes them from events: whose line it is and what
they said are fields, so a line is never read back to find them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from groupchat.client.colours import (
    BELL,
    BOLD,
    HIGHLIGHT_STAMP_STYLE,
    HIGHLIGHT_TEXT_STYLE,
    NAME_COLOURS,
    NOTICE_STYLE,
    STAMP_STYLE,
    Painter,
    colour_allowed,
    mentions,
    name_colour,
    should_ring,
    style_line,
    to_ansi,
)

from groupchat.client.view import Shown
from groupchat.protocol import LINE_ACTION, LINE_HANDSHAKE, LINE_HISTORY, LINE_MESSAGE, LINE_NOTICE, LINE_PRIVATE

from conftest import REPO, WAIT_SECONDS


def said(kind: str, line: str, sender: str, text: str) -> Shown:
    """A person's line as the view makes it from an event: ``line`` ends with what they said."""
    assert line.endswith(" " + text)
    return Shown(kind, line, sender, text)


MESSAGE = said(LINE_MESSAGE, "[14:03] <bob> lunch, alice?", "bob", "lunch, alice?")
INCOMING = said(LINE_PRIVATE, "[14:03] (private) <bob> psst", "bob", "psst")
OUTGOING = said(LINE_PRIVATE, "[14:03] (private to bob) <alice> psst", "alice", "psst")
LINES = [
    MESSAGE,
    said(LINE_ACTION, "[14:03] * bob waves at alice", "bob", "waves at alice"),
    INCOMING,
    OUTGOING,
    Shown(LINE_NOTICE, "[14:03] *** alice is now known as al"),
    Shown(LINE_HANDSHAKE, "*** Welcome, alice! Here now: bob."),
    said(LINE_MESSAGE, "[14:03] <alice> hi", "alice", "hi"),
    said(LINE_MESSAGE, "[14:03] <bob> ", "bob", ""),
    said(LINE_HISTORY, "[2026-11-24 14:03] (history) <bob> alice?", "bob", "alice?"),
]


def test_a_name_has_the_same_colour_whatever_its_case_and_in_every_run():
    script = "from groupchat.client.colours import name_colour; print(name_colour('alice'), name_colour('bob'))"
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                           env=dict(os.environ, PYTHONHASHSEED=seed), timeout=WAIT_SECONDS).stdout
            for seed in ("1", "2")}
    assert runs == {f"{name_colour('alice')} {name_colour('bob')}\n"}
    assert name_colour("ALICE") == name_colour("alice")


def test_names_spread_over_the_palette():
    colours = {name_colour(f"user{n}") for n in range(50)}
    assert colours <= set(NAME_COLOURS)
    assert len(colours) >= len(NAME_COLOURS) - 2


@pytest.mark.parametrize("shown", LINES)
def test_the_fragments_join_back_into_the_line(shown):
    assert "".join(text for _, text in style_line(shown, "alice")) == shown.line


def test_someone_elses_message_has_a_dim_stamp_and_a_coloured_bold_name():
    assert style_line(said(LINE_MESSAGE, "[14:03] <bob> hi", "bob", "hi"), "alice") == [
        (STAMP_STYLE, "[14:03]"), ((), " "), ((BOLD, name_colour("bob")), "<bob>"), ((), " hi")]


def test_an_action_a_private_message_and_history_colour_the_whole_mark():
    action = said(LINE_ACTION, "[14:03] * bob waves", "bob", "waves")
    assert style_line(action, "carol")[2] == ((BOLD, name_colour("bob")), "* bob")
    private = said(LINE_PRIVATE, "[14:03] (private to carol) <bob> psst", "bob", "psst")
    assert style_line(private, "bob")[2] == ((BOLD, name_colour("bob")), "(private to carol) <bob>")
    assert style_line(LINES[-1], "alice")[2] == ((BOLD, name_colour("bob")), "(history) <bob>")


@pytest.mark.parametrize("line", [Shown(LINE_NOTICE, "[14:03] *** alice joined"),
                                  Shown(LINE_HANDSHAKE, "*** Sorry, the name \"alice\" is taken."),
                                  Shown(LINE_HANDSHAKE, "*** Welcome, alice! Here now: bob.")])
def test_notices_and_handshake_lines_are_dimmed_whole_even_when_they_name_you(line):
    assert style_line(line, "alice") == [(NOTICE_STYLE, line.line)]
    assert not should_ring(line, "alice")


def test_a_mention_is_highlighted_and_rings():
    stamp, _, _, text = style_line(MESSAGE, "alice")
    assert stamp == (HIGHLIGHT_STAMP_STYLE, "[14:03]")
    assert text == (HIGHLIGHT_TEXT_STYLE, " lunch, alice?")
    assert should_ring(MESSAGE, "alice")
    assert should_ring(said(LINE_ACTION, "[14:03] * bob waves at ALICE", "bob", "waves at ALICE"), "alice")


def test_played_back_history_is_never_a_mention():
    assert style_line(LINES[-1], "alice")[3] == ((), " alice?")
    assert not should_ring(LINES[-1], "alice")


@pytest.mark.parametrize("text, name, mentioned", [
    ("alice?", "alice", True),
    ("@Alice: hi", "alice", True),
    ("hi ALICE", "alice", True),
    ("malice", "alice", False),
    ("alice2 is here", "alice", False),
    ("a.b here", "a.b", True),
    ("axb here", "a.b", False),  # a name is matched as written, not as a pattern
    ("ci-bot done", "ci-bot", True),
])
def test_a_mention_is_the_name_as_a_whole_word_ignoring_case(text, name, mentioned):
    assert mentions(text, name) is mentioned


def test_your_own_lines_are_yours_not_mentions():
    own = said(LINE_MESSAGE, "[14:03] <alice> I am alice", "alice", "I am alice")
    assert style_line(own, "Alice")[3] == ((), " I am alice")
    assert not should_ring(own, "Alice")


def test_private_messages_are_highlighted_both_ways_and_ring_only_when_they_come_to_you():
    assert style_line(INCOMING, "alice")[3] == (HIGHLIGHT_TEXT_STYLE, " psst")
    assert style_line(OUTGOING, "alice")[3] == (HIGHLIGHT_TEXT_STYLE, " psst")
    assert should_ring(INCOMING, "alice")
    assert not should_ring(OUTGOING, "alice")


def test_ansi_resets_after_each_styled_fragment_and_skips_empty_ones():
    assert to_ansi([((BOLD, 31), "<bob>"), ((), " hi"), ((BOLD,), "")]) == "\x1b[1;31m<bob>\x1b[0m hi"


def test_the_painter_without_colour_prints_the_line_exactly():
    for shown in LINES:
        assert Painter(colour=False, bell=False).paint(shown, "alice") == shown.line


def test_the_painter_rings_only_when_asked_and_the_line_calls_for_it():
    assert Painter(colour=False, bell=True).paint(MESSAGE, "alice") == MESSAGE.line + BELL
    plain = said(LINE_MESSAGE, "[14:03] <bob> hi", "bob", "hi")
    assert Painter(colour=False, bell=True).paint(plain, "alice") == plain.line
    assert Painter(colour=False, bell=False).paint(MESSAGE, "alice") == MESSAGE.line
    coloured = Painter(colour=True, bell=True).paint(MESSAGE, "alice")
    assert coloured == to_ansi(style_line(MESSAGE, "alice")) + BELL


def test_no_color_with_any_value_turns_colour_off():
    assert colour_allowed({"TERM": "xterm"})
    assert colour_allowed({"NO_COLOR": ""})
    assert not colour_allowed({"NO_COLOR": "1"})
    assert not colour_allowed({"NO_COLOR": "yes please"})


def test_a_long_line_wraps_at_spaces_under_where_its_text_starts():
    line = Shown(LINE_MESSAGE, "[14:03] <bob> the quick brown fox jumps over the lazy dog", "bob",
                 "the quick brown fox jumps over the lazy dog")
    plain = Painter(colour=False, bell=False, width=lambda: 30).paint(line, "alice")
    assert plain.split("\n") == ["[14:03] <bob> the quick brown", " " * 14 + "fox jumps over", " " * 14 + "the lazy dog"]
    coloured = Painter(colour=True, bell=False, width=lambda: 30).paint(line, "alice")
    assert re.sub(r"\x1b\[[\d;]*m", "", coloured) == plain  # the same cuts, each piece styled
    mention = Painter(colour=True, bell=False, width=lambda: 30).paint(line, "dog")  # bold text, each piece
    assert [piece.lstrip().startswith("\x1b[1m") for piece in mention.split("\n")[1:]] == [True, True]
    assert Painter(colour=False, bell=False).paint(line, "alice") == line.line  # no width: whole
