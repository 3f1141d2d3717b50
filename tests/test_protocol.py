"""The protocol's pure functions, fed bytes and strings with no socket."""

from __future__ import annotations

import pytest

from groupchat.errors import InvalidNameError, NoNewlineError
from groupchat.protocol import (
    LineBuffer,
    LineTooLong,
    check_name,
    clean_text,
    decode_line,
    encode_line,
    is_refusal,
    is_welcome,
    render_refusal,
    render_welcome,
)


def test_lines_split_across_feeds_at_any_byte_come_out_whole():
    data = "héllo\r\nwörld\nthird\n".encode()
    for cut in range(len(data) + 1):
        buf = LineBuffer()
        assert buf.feed(data[:cut]) + buf.feed(data[cut:]) == ["héllo", "wörld", "third"]
        assert buf.pending == 0


def test_many_lines_in_one_feed_and_empty_lines_kept():
    assert LineBuffer().feed(b"a\n\nb\r\n\r\n") == ["a", "", "b", ""]


def test_overlong_line_is_reported_once_and_the_next_line_is_fine():
    buf = LineBuffer(max_line=10)
    assert buf.feed(b"0123456789\n") == ["0123456789"]
    assert buf.feed(b"0123456789\r\n") == ["0123456789"]
    assert buf.feed(b"0123456789A\n") == [LineTooLong(10)]
    assert buf.feed(b"x" * 7) == []
    assert buf.feed(b"x" * 7) == []
    assert buf.feed(b"x" * 7 + b"\nok\n") == [LineTooLong(10), "ok"]


def test_memory_stays_bounded_and_a_stream_with_no_newline_is_refused():
    buf = LineBuffer(max_line=100, max_unterminated=10_000)
    with pytest.raises(NoNewlineError, match="more than 10000 bytes without a newline"):
        for _ in range(1000):
            assert buf.feed(b"z" * 99) == []
            assert buf.pending <= 101


def test_an_overlong_line_under_the_cut_off_is_only_refused():
    buf = LineBuffer(max_line=100)
    assert buf.feed(b"z" * 1500) == []
    assert buf.feed(b"\nfine\n") == [LineTooLong(100), "fine"]


def test_decoding_replaces_bad_utf8_and_drops_control_characters():
    assert decode_line(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert decode_line(b"a\x00b\x07c\x08d\x7fe") == "abcde"


@pytest.mark.parametrize("dirty, clean", [
    ("\x1b[2J\x1b[Hcleared", "cleared"),
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b]0;title\x07after", "after"),
    ("\x1b]8;;http://x\x1b\\link", "link"),
    ("evil\u202egnp.exe", "evilgnp.exe"),
    ("\u2066iso\u2069", "iso"),
    ("back\rover", "backover"),
    ("\x9bcsi", "csi"),
    ("plain text, ünïcödé ✓", "plain text, ünïcödé ✓"),
])
def test_clean_text_removes_what_could_fool_a_terminal(dirty, clean):
    assert clean_text(dirty) == clean


@pytest.mark.parametrize("name", ["alice", "Bob_2", "ünï", "x" * 32, "a.b-c", "zoë"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "a b", "x" * 33, "*op", "[x]", "<bob>", "server",
                                  "SERVER", "tab\there", "bell\x07"])
def test_bad_names(name):
    with pytest.raises(InvalidNameError):
        check_name(name)


def test_handshake_lines_are_recognisable_by_clients():
    assert is_welcome(render_welcome("a", ["b"]))
    assert is_refusal(render_refusal("the name is taken"))
    assert not is_welcome("[12:00] <x> *** Welcome, a!")
    assert not is_refusal("[12:00] <x> *** Sorry, ")


def test_encode_line_is_utf8_with_newline():
    assert encode_line("é") == b"\xc3\xa9\n"


def test_runs_of_blanks_collapse_in_what_people_send_but_not_in_what_the_server_pads():
    help_line = b"[14:03] *** /help [COMMAND]          list the commands\n"
    assert LineBuffer().feed(help_line) == ["[14:03] *** /help [COMMAND] list the commands"]
    assert LineBuffer(collapse_blanks=False).feed(help_line) == [help_line.decode().rstrip("\n")]
    assert LineBuffer(collapse_blanks=False).feed(b"a\x1b[2Jb\tc\n") == ["ab c"]  # still cleaned
