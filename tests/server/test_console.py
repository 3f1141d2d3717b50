"""The server's console: moderation commands typed at its terminal, driven through a real pty."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from conftest import REPO, Peer


@pytest.fixture
def console(server_process):
    """A server whose stdin is a pseudo-terminal; returns (server, type_line)."""
    controller, terminal = pty.openpty()
    server = server_process(stdin=terminal)

    def type_line(text: str) -> None:
        os.write(controller, text.encode() + b"\n")

    yield server, type_line
    os.close(controller)
    os.close(terminal)


@pytest.fixture
def alice_and_bob(console):
    server, _ = console
    alice, bob = Peer(server.address), Peer(server.address)
    alice.join("alice")
    bob.join("bob")
    alice.expect("bob joined")
    yield alice, bob
    alice.close()
    bob.close()


def test_who_rooms_and_say(console, alice_and_bob):
    server, type_line = console
    alice, bob = alice_and_bob
    bob.say("/join dev")
    bob.expect("You are now in dev")
    type_line("/who")
    server.expect_output(r"^alice in lobby from 127\.0\.0\.1:\d+$")
    server.expect_output(r"^bob in dev from 127\.0\.0\.1:\d+$")
    type_line("rooms")  # the slash is optional at the console
    server.expect_output(r"^dev \(1\)$")
    type_line("/say maintenance at noon")
    server.expect_output(r"^Said to 2 people\.$")
    alice.expect(r"\*\*\* Notice from the server: maintenance at noon$")
    bob.expect(r"\*\*\* Notice from the server: maintenance at noon$")


def test_mistakes_get_one_line_and_the_console_keeps_working(console, alice_and_bob):
    server, type_line = console
    type_line("/nonsense")
    server.expect_output(r'^unknown command "/nonsense"; /help lists them$')
    type_line("/kick")
    server.expect_output(r"^usage: /kick NAME \[REASON\]$")
    type_line("/kick nobody")
    server.expect_output(r'^no one called "nobody" is here$')
    type_line("/help")
    server.expect_output(r"^/unban NAME\|--address ADDRESS +lift a ban on a name or an address$")


def test_kick_from_the_console(console, alice_and_bob):
    server, type_line = console
    alice, bob = alice_and_bob
    type_line("/kick bob too loud")
    server.expect_output("^Kicked bob.$")
    assert bob.expect_eof()[-1].endswith("*** You were kicked by the server: too loud.")
    alice.expect(r"\*\*\* bob left \(kicked by the server: too loud\)$")


def test_ban_unban_and_bans_from_the_console(console, alice_and_bob):
    server, type_line = console
    alice, bob = alice_and_bob
    type_line("/ban bob 1")
    server.expect_output(r'^Banned the name "bob" for 1 minute; kicked bob\.$')
    assert bob.expect_eof()[-1].endswith("You were kicked by the server: banned.")
    type_line("/ban --address alice 10")
    server.expect_output(r"^Banned 127\.0\.0\.1/32 \(alice's address\) for 10 minutes; kicked alice\.$")
    assert alice.expect_eof()[-1].endswith("You were kicked by the server: banned.")
    refused = Peer(server.address)
    assert refused.expect_eof() == ["*** Sorry, this address is banned."]
    refused.close()
    type_line("/bans")
    server.expect_output(r"^127\.0\.0\.1/32 for 10 more minutes$")
    server.expect_output(r'^the name "bob" for 1 more minute$')
    type_line("/unban --address 127.0.0.1")
    server.expect_output(r"^Lifted the ban on 127\.0\.0\.1\.$")
    carol = Peer(server.address)
    carol.join("carol")
    carol.close()


def test_quit_at_the_console_stops_the_server(console, alice_and_bob):
    server, type_line = console
    alice, _ = alice_and_bob
    type_line("/quit")
    assert alice.expect_eof()[-1].endswith("*** Server is shutting down.")
    assert server.finish()[0] == 0


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]|\r")


class Screen:
    """What a terminal shows of a process whose stdin, stdout and stderr are one pty."""

    def __init__(self, controller: int) -> None:
        self.controller = controller
        self.text = ""

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text)
            if match:
                self.text = self.text[match.end():]
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"the console never showed {pattern!r}; it showed {self.text[-2000:]!r}")
            if select.select([self.controller], [], [], remaining)[0]:
                try:
                    self.text += ANSI.sub("", os.read(self.controller, 65536).decode(errors="replace"))
                except OSError:  # the process ended
                    pytest.fail(f"the console ended without {pattern!r}; it showed {self.text[-2000:]!r}")


@pytest.mark.timeout(30)
def test_at_a_terminal_log_lines_print_above_the_prompt_and_a_half_typed_command_stays():
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "groupchat", "serve", "--host", "127.0.0.1", "--port", "0",
                             "--no-history"], stdin=terminal, stdout=terminal, stderr=terminal, cwd=REPO,
                            env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"})
    os.close(terminal)
    screen = Screen(controller)
    try:
        port = int(screen.expect(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        screen.expect("server>")
        os.write(controller, b"/wh")  # half typed when alice comes
        alice = Peer(("127.0.0.1", port))
        alice.join("alice")
        screen.expect(r"alice joined from 127\.0\.0\.1:\d+\n")
        screen.expect("server> ?/wh")  # the prompt, drawn again under the log line, with what was typed
        os.write(controller, b"o\r")
        screen.expect(r"alice in lobby from 127\.0\.0\.1:\d+")
        os.write(controller, b"/say tea is ready\r")
        screen.expect(r"Said to 1 person\.")
        alice.expect(r"\*\*\* Notice from the server: tea is ready$")
        os.write(controller, b"\x04")  # Ctrl-D on an empty line stops the server
        assert proc.wait(10) == 0
        assert alice.expect_eof()[-1].endswith("*** Server is shutting down.")
        alice.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
