"""Guessing passwords against a real server: one guess per connection, slower and slower, then none.

Every test here failed before the guessing limits: a wrong password followed by the right one
in the same write got in, and /op answered about 1,300 reconnecting guesses a second.
"""

from __future__ import annotations

import logging
import time

from groupchat.server.tcp import ChatServer

from conftest import Peer

PASSWORD = "RIGHT"
PIPELINED = "wrong1\n{}\nsneaky\nhello from sneaky\n"


def enter(server: ChatServer, name: str) -> Peer:
    """An honest client on a password server, in the lobby as ``name``."""
    peer = Peer(server.server_address)
    assert peer.next_line() == "*** Password?"
    peer.say(PASSWORD)
    peer.join(name)
    return peer


def still_chatting(alice: Peer, bob: Peer, marker: str) -> list[str]:
    """Alice says ``marker`` and bob hears it; return what bob heard before it."""
    alice.say(marker)
    heard = []
    while not (line := bob.next_line()).endswith(f"<alice> {marker}"):
        heard.append(line)
    return heard


def test_after_a_wrong_password_nothing_more_from_the_connection_is_acted_on(start_server):
    server = start_server(password=PASSWORD, wrong_password_delay=0.2, notice_interval=0)
    alice, bob = enter(server, "alice"), enter(server, "bob")
    alice.expect("bob joined")
    for then in (PASSWORD, "nope"):  # the close is the same whether the next line was right or not
        sneaky = Peer(server.server_address)
        assert sneaky.next_line() == "*** Password?"
        started = time.monotonic()
        sneaky.send(PIPELINED.format(then).encode())
        assert sneaky.expect_eof() == ["*** Sorry, wrong password; goodbye."]
        assert time.monotonic() - started >= 0.2, "answered only after the wrong-password delay"
        sneaky.close()
    heard = still_chatting(alice, bob, "anyone sneaky here?")
    assert not [line for line in heard if "sneaky" in line], heard
    assert len(server.registry) == 2


def test_op_guesses_by_reconnecting_wait_longer_then_are_locked_out_while_others_chat(start_server, caplog):
    server = start_server(op_password=PASSWORD, wrong_password_delay=0.05, password_lockout_after=8,
                          password_lockout_minutes=1, notice_interval=0, max_per_address=0)
    alice, bob = Peer(server.server_address), Peer(server.server_address)
    alice.join("alice")
    bob.join("bob")
    answers, waited = [], []
    with caplog.at_level(logging.INFO):
        for attempt in range(10):
            guesser = Peer(server.server_address)
            guesser.join(f"guesser{attempt}")
            started = time.monotonic()
            guesser.say(f"/op {PASSWORD if attempt == 9 else f'guess{attempt}'}")
            answers.append(guesser.expect("wrong operator|too many|operator").string.split("*** ")[1])
            waited.append(time.monotonic() - started)
            guesser.close()
            still_chatting(alice, bob, f"still here {attempt}")
    lockout = "too many wrong operator passwords from your address; try again in 1 minute"
    assert answers == ["wrong operator password"] * 7 + [lockout] * 3, "the right one too, once locked out"
    assert waited[5] >= 0.1 and waited[6] >= 0.2, f"the delay doubles after 5 misses: {waited}"
    locked = [r for r in caplog.records if "locked out" in r.getMessage()]
    misses = [r for r in caplog.records if "wrong operator password from" in r.getMessage()]
    assert len(locked) == 1 and len(misses) == 3, "the lockout once, and misses 1, 2 and 4 only"


def test_an_address_locked_out_of_the_password_is_told_at_once_and_closed(start_server):
    server = start_server(password=PASSWORD, wrong_password_delay=0.01, password_lockout_after=5,
                          password_lockout_minutes=2, notice_interval=0)
    alice, bob = enter(server, "alice"), enter(server, "bob")
    lockout = "*** Sorry, too many wrong passwords from your address; try again in 2 minutes; goodbye."
    for attempt in range(5):
        guesser = Peer(server.server_address)
        assert guesser.next_line() == "*** Password?"
        guesser.say(f"guess{attempt}")
        assert guesser.expect_eof() == ["*** Sorry, wrong password; goodbye." if attempt < 4 else lockout]
        guesser.close()
    for then in ("", PASSWORD):  # nothing sent, or the right password: no prompt, one line, closed
        guesser = Peer(server.server_address)
        if then:
            guesser.say(then)
        assert guesser.expect_eof() == [lockout]
        guesser.close()
    assert still_chatting(alice, bob, "we are still here") == []
