"""The server's console: moderation commands typed at its terminal, driven through a real pty."""

from __future__ import annotations

import os
import pty

import pytest

from conftest import Peer


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
