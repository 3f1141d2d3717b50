"""The protocol fuzzed with hypothesis: whatever bytes arrive, framing never raises unexpectedly
and never lets a control character through."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from groupchat.errors import InvalidNameError, NoNewlineError
from groupchat.protocol import LineBuffer, LineTooLong, check_name, clean_text, decode_line, parse_line

MAX_LINE = 64


# What could move a cursor, end a line, ring, or reorder text: C0 and C1 controls, DEL,
# line and paragraph separators, bidi marks, embeddings, overrides and isolates.
UNSAFE = set(map(chr, [*range(0x20), *range(0x7f, 0xa0), 0x61c, 0x200e, 0x200f,
                       *range(0x2028, 0x202f), *range(0x2066, 0x206a)]))


def is_safe(text: str) -> bool:
    return not UNSAFE.intersection(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_line_buffer_takes_any_bytes_in_any_chunks(chunks):
    buf = LineBuffer(max_line=MAX_LINE, max_unterminated=1000)
    data = b"".join(chunks)
    lines = []
    try:
        for chunk in chunks:
            lines.extend(buf.feed(chunk))
    except NoNewlineError:  # only for a run with no newline past the cut-off
        assert any(len(run) > 1000 for run in data.split(b"\n"))
        return
    assert buf.pending <= MAX_LINE + 1
    expected = data.split(b"\n")[:-1]  # the last piece is unfinished
    assert len(lines) == len(expected)
    for line, raw in zip(lines, expected):
        if isinstance(line, LineTooLong):
            assert len(raw.rstrip(b"\r")) > MAX_LINE
        else:
            assert len(raw.rstrip(b"\r")) <= MAX_LINE and is_safe(line)
            assert line == decode_line(raw[:-1] if raw.endswith(b"\r") else raw)


@given(st.text())
def test_clean_text_leaves_only_printable_characters(text):
    cleaned = clean_text(text)
    assert is_safe(cleaned)
    assert clean_text(cleaned) == cleaned


@given(st.text())
def test_check_name_accepts_only_safe_names_and_raises_nothing_else(text):
    try:
        name = check_name(text)
    except InvalidNameError:
        return
    assert name and is_safe(name) and " " not in name and not name.startswith(("*", "[", "<"))


@given(st.text())
def test_parse_line_takes_any_text(text):
    assert parse_line(text).kind
