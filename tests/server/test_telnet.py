"""Telnet at the edge of the wire: the filter fed bytes, then the real telnet in a pty."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from conftest import WAIT_SECONDS, Peer
from groupchat.errors import NoNewlineError
from groupchat.server.telnet import MAX_COMMAND_BYTES, TelnetFilter

IAC, DONT, DO, WONT, WILL, SB, SE, NOP, IP, BRK = 255, 254, 253, 252, 251, 250, 240, 241, 244, 243
BINARY, ECHO, SGA, TIMING_MARK, TTYPE = 0, 1, 3, 6, 24
DO_BINARY = bytes([IAC, DO, BINARY])
# What telnet (inetutils, not yet in binary mode) sends for "hello from telnet ✓": the 9c of
# ✓ (e2 9c 93) read as Ctrl-\ and sent as IAC BRK, then IAC DO TIMING-MARK (issue 16).
TELNET_CHECK_MARK = b"hello from telnet \xe2\xff\xf3\xff\xfd\x06\x93\r\n"


def command(*codes: int) -> bytes:
    return bytes([IAC, *codes])


def spoken() -> TelnetFilter:
    """A filter whose peer has spoken telnet once already (and been asked for BINARY)."""
    telnet = TelnetFilter()
    assert telnet.feed(command(NOP)) == (b"", DO_BINARY)
    return telnet


@pytest.mark.parametrize("data", [b"alice\n", "héllo ✓ 😀\r\n".encode(), b"", b"no newline yet", bytes(range(255))])
def test_text_without_iac_passes_untouched_and_is_never_answered(data):
    telnet = TelnetFilter()
    for _ in range(3):
        assert telnet.feed(data) == (data, b"")


def test_the_issue_line_comes_whole_and_telnet_is_asked_for_binary_and_answered():
    assert TelnetFilter().feed(TELNET_CHECK_MARK) == (
        "hello from telnet ✓\r\n".encode(), DO_BINARY + command(WONT, TIMING_MARK))


@pytest.mark.parametrize("lost", [IP, BRK])
def test_a_lost_byte_is_put_back_only_inside_a_character_and_before_binary(lost):
    restored = {IP: b"\x83", BRK: b"\x9c"}[lost]
    telnet = spoken()
    assert telnet.feed(b"\xe2" + command(lost) + b"\x93")[0] == b"\xe2" + restored + b"\x93"
    assert telnet.feed(b"a" + command(lost) + b"b")[0] == b"ab"  # a real Ctrl-C or Ctrl-\ means nothing
    assert telnet.feed(command(WILL, BINARY)) == (b"", b"")  # the answer to DO BINARY
    assert telnet.feed(b"\xe2" + command(lost) + b"\x93")[0] == b"\xe2\x93"  # 8-bit now: nothing is lost


def test_any_split_across_reads_gives_the_same_text_and_answers():
    data = (b"one\n" + command(SB, TTYPE, 1, IAC, IAC, 7) + command(SE) + TELNET_CHECK_MARK
            + command(DO, SGA) + b"\xff\xff" + command(WILL, BINARY) + b"\xc3" + command(BRK) + b"end\n")
    whole = TelnetFilter().feed(data)
    assert whole == (b"one\nhello from telnet \xe2\x9c\x93\r\n\xff\xc3end\n",
                     DO_BINARY + command(WONT, TIMING_MARK) + command(WONT, SGA))
    for cut in range(1, len(data)):
        telnet = TelnetFilter()
        first, second = telnet.feed(data[:cut]), telnet.feed(data[cut:])
        assert (first[0] + second[0], first[1] + second[1]) == whole, cut


@pytest.mark.parametrize("request_, answer", [
    (command(DO, BINARY), command(WONT, BINARY)),  # the server's "\n" would no longer start a line
    (command(DO, ECHO), command(WONT, ECHO)),
    (command(DO, SGA), command(WONT, SGA)),  # line mode: the terminal edits, the server gets lines
    (command(DO, TIMING_MARK), command(WONT, TIMING_MARK)),
    (command(WILL, SGA), command(DONT, SGA)),
    (command(WILL, TTYPE), command(DONT, TTYPE)),
    (command(DONT, SGA), b""),  # off already: not answered
    (command(WONT, TTYPE), b""),
    (command(WONT, BINARY), b""),  # the refusal of DO BINARY
    (command(SB, TTYPE, 0, ord("x")) + command(SE), b""),
])
def test_every_option_but_binary_from_the_peer_is_refused(request_, answer):
    telnet = spoken()
    assert telnet.feed(request_) == (b"", answer)
    assert telnet.feed(request_) == (b"", answer)  # each request answered alike: TM comes after each Ctrl-C


def test_binary_from_the_peer_is_agreed_and_each_change_answered_once():
    telnet = TelnetFilter()
    assert telnet.feed(command(WILL, BINARY)) == (b"", DO_BINARY)  # the offer is the answer
    assert telnet.feed(command(WILL, BINARY)) == (b"", b"")
    assert telnet.feed(command(WONT, BINARY)) == (b"", command(DONT, BINARY))
    assert telnet.feed(command(WONT, BINARY)) == (b"", b"")
    assert telnet.feed(command(WILL, BINARY)) == (b"", DO_BINARY)


def test_two_ends_with_this_policy_stop_negotiating():
    """Answers never answer answers: two filters fed each other's replies fall silent."""
    left, right = TelnetFilter(), TelnetFilter()
    said = command(WILL, BINARY) + command(DO, SGA) + command(WILL, TTYPE) + command(DO, BINARY)
    for _ in range(4):
        said = right.feed(left.feed(said)[1])[1]
        if not said:
            return
    pytest.fail(f"still negotiating: {said!r}")


def test_commands_with_no_line_between_them_are_bounded():
    telnet = TelnetFilter()
    for _ in range(MAX_COMMAND_BYTES):
        telnet.feed(command(NOP) + b"ok\n")  # a line starts the count again
    with pytest.raises(NoNewlineError):
        for _ in range(MAX_COMMAND_BYTES // 2 + 1):
            telnet.feed(command(NOP))


def test_a_subnegotiation_that_never_ends_is_bounded_and_its_newlines_are_no_lines():
    telnet = TelnetFilter()
    telnet.feed(command(SB, TTYPE))
    with pytest.raises(NoNewlineError):
        telnet.feed(b"\n" * MAX_COMMAND_BYTES)


def test_commands_amid_lines_under_flood_control(start_server):
    """Reads cut after lines (flood control's MSG_PEEK) may split a command: lines still come whole."""
    server = start_server(notice_interval=0, burst=2)  # reads are cut after 2 lines
    bob = Peer(server.server_address)
    carol = socket.create_connection(server.server_address, timeout=WAIT_SECONDS)
    try:
        bob.join("bob")
        carol.sendall(b"carol\n")
        bob.expect("carol joined")
        # option 10's byte is a newline: the first read ends in the middle of that command
        carol.sendall(b"one\n" + command(DO, 10) + b"two " + TELNET_CHECK_MARK + b"three\n")
        assert bob.expect("<carol> .*$").group() == "<carol> one"
        assert bob.expect("<carol> .*$").group() == "<carol> two hello from telnet ✓"
        assert bob.expect("<carol> .*$").group() == "<carol> three"
        answers = DO_BINARY + command(WONT, 10) + command(WONT, TIMING_MARK)
        received = b""
        while answers not in received:
            received += carol.recv(4096) or pytest.fail(f"closed; received {received!r}")
        assert received.count(b"\xff") == 3  # once each, nothing before the peer spoke telnet
    finally:
        bob.close()
        carol.close()


# -- the real telnet ------------------------------------------------------------------------

TELNET = shutil.which("telnet")


class TelnetTerminal:
    """The real ``telnet`` in a pseudo-terminal: lines typed in, what it shows read back raw."""

    def __init__(self, port: int) -> None:
        self.fd, child = os.openpty()
        self.proc = subprocess.Popen([TELNET, "127.0.0.1", str(port)], stdin=child, stdout=child,
                                     stderr=child, start_new_session=True)
        os.close(child)
        self.shown = b""

    def type_line(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\r")  # the Enter key

    def expect(self, data: bytes) -> None:
        """Wait until the terminal has shown ``data``, byte for byte."""
        deadline = time.monotonic() + WAIT_SECONDS
        while data not in self.shown:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                pytest.fail(f"telnet did not show {data!r}; it showed {self.shown!r}")
            try:
                self.shown += os.read(self.fd, 65536)
            except OSError:  # EIO: telnet has exited
                pytest.fail(f"telnet exited; it showed {self.shown!r}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.fd)


@pytest.mark.timeout(30)
@pytest.mark.skipif(TELNET is None, reason="needs the telnet client (Debian package telnet)")
def test_real_telnet_sends_utf8_whole_and_keeps_showing_lines(start_server):
    server = start_server(notice_interval=0)  # flood control on, as served
    bob = Peer(server.server_address)
    telnet = TelnetTerminal(server.server_address[1])
    try:
        bob.join("bob")
        telnet.expect(b"*** What is your name?")
        telnet.type_line("alice")
        telnet.expect(b"*** Welcome, alice!")
        bob.expect("alice joined")
        telnet.type_line("hello from telnet ✓")
        assert bob.expect("<alice> .*$").group() == "<alice> hello from telnet ✓"
        bob.say("bob sees it ✓")
        # shown, and on a line of its own: the server's "\n" still starts a new line there
        telnet.expect("<bob> bob sees it ✓\r\n".encode())
        telnet.type_line("still ✓ here")
        assert bob.expect("<alice> .*$").group() == "<alice> still ✓ here"
        bob.say("and again")
        telnet.expect(b"<bob> and again\r\n")
    finally:
        telnet.close()
        bob.close()
