"""Bans hold, against a real server: no way in around one, and no one put out by one meant for another.

Peers connect from several loopback addresses (127.0.0.2, 127.0.1.5, ...), as people behind
different NATs would; everyone on 127.0.0.2 stands for a school behind one.
"""

from __future__ import annotations

import socket
from typing import Callable, Iterator

import pytest

from groupchat.protocol import NAME_PROMPT
from groupchat.server.tcp import ChatServer

from conftest import UNLIMITED, WAIT_SECONDS, Peer, wait_for

NOTICE = r"^\[\d\d:\d\d\] \*\*\* "


@pytest.fixture
def room(start_server) -> Iterator[tuple[ChatServer, Peer, Callable[..., Peer]]]:
    """A server, alice its operator (from 127.0.0.1), and ``peer(host, name=None)`` for others."""
    server = start_server(op_password="root", **UNLIMITED)
    peers: list[Peer] = []

    def peer(host: str, name: str | None = None) -> Peer:
        sock = socket.create_connection(server.server_address[:2], WAIT_SECONDS, source_address=(host, 0))
        peers.append(Peer(server.server_address, sock=sock))
        if name is not None:
            peers[-1].join(name)
        return peers[-1]

    alice = peer("127.0.0.1", "alice")
    alice.say("/op root")
    alice.expect(NOTICE + "You are now an operator.$")
    yield server, alice, peer
    for each in peers:
        each.close()


def test_a_connection_opened_before_a_ban_is_refused_when_it_names_itself(room):
    server, alice, peer = room
    early, early_too = peer("127.0.1.5"), peer("127.0.1.6")
    for each in (early, early_too):
        assert each.next_line() == NAME_PROMPT
    alice.say("/ban --address 127.0.1.5")
    alice.expect(NOTICE + r"Banned 127\.0\.1\.5/32 until lifted\.$")
    early.say("mallory")
    assert early.expect_eof() == ["*** Sorry, this address is banned; goodbye."]
    alice.say("/ban mallory")
    alice.expect(NOTICE + 'Banned the name "mallory" until lifted.$')
    early_too.say("Mallory")
    assert early_too.next_line() == '*** Sorry, the name "Mallory" is banned.'
    assert early_too.next_line() == NAME_PROMPT
    alice.say("/who")
    alice.expect(NOTICE + r"In lobby \(1\): alice\. 1 online in all\.$")


def test_a_name_that_looks_like_an_address_or_block_cannot_steer_a_ban(room):
    server, alice, peer = room
    mallory = peer("127.0.1.5", "127.0.1.6")  # a name that reads as an address
    bob = peer("127.0.0.2", "bob")
    alice.expect("bob joined")
    alice.say("/ban 127.0.1.6")  # without --address, a name: only its holder goes
    alice.expect(NOTICE + r'Banned the name "127\.0\.1\.6" until lifted; kicked 127\.0\.1\.6\.$')
    mallory.expect_eof()
    assert peer("127.0.1.6").next_line() == NAME_PROMPT  # no address was banned
    block = peer("127.0.1.7")
    block.next_line()
    block.say("127.0.1.0/24")  # refused as a name, or taken: the ban below is the block either way
    block.next_line()
    alice.say("/ban --address 127.0.1.0/24 5")
    alice.expect(NOTICE + r"Banned 127\.0\.1\.0/24 for 5 minutes")
    assert peer("127.0.1.99").expect_eof() == ["*** Sorry, this address is banned."]
    bob.say("still here")
    alice.expect("<bob> still here$")


def test_banning_a_name_puts_out_no_one_else_on_its_address_unless_asked_and_then_says_who(room):
    server, alice, peer = room
    bob, carol, dave = (peer("127.0.0.2", name) for name in ("bob", "carol", "dave"))  # one NAT
    alice.expect("dave joined")
    alice.say("/ban bob 1")
    alice.expect(NOTICE + 'Banned the name "bob" for 1 minute; kicked bob.$')
    assert bob.expect_eof()[-1].endswith("You were kicked by alice: banned.")
    carol.say("we are still here")
    dave.expect("<carol> we are still here$")
    alice.say("/ban --address carol 1")
    alice.expect(NOTICE + r"Banned 127\.0\.0\.2/32 \(carol's address\) for 1 minute; kicked carol; "
                 r"also kicked dave \(same address\)\.$")
    for each in (carol, dave):
        assert each.expect_eof()[-1].endswith("You were kicked by alice: banned.")


def test_a_name_just_kicked_can_be_banned(room):
    server, alice, peer = room
    bob = peer("127.0.0.2", "bob")
    alice.expect("bob joined")
    alice.say("/kick bob")
    bob.expect_eof()
    wait_for(lambda: server.registry.find("bob") is None, what="bob's connection to close")
    alice.say("/ban bob 10")
    alice.expect(NOTICE + 'Banned the name "bob" for 10 minutes.$')
    back = peer("127.0.0.3")
    assert back.next_line() == NAME_PROMPT
    back.say("bob")
    assert back.next_line() == '*** Sorry, the name "bob" is banned.'
