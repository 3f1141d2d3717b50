"""Impostors against a real server with its default limits (issue 11): a name made to look
like a present one is refused at the door and by /nick, a room name likewise, and padding
cannot push a message's tail onto a row that looks like a line of its own. Honest clients
keep chatting throughout."""

from __future__ import annotations

import contextlib
import re
import socket

import pytest

from groupchat.protocol import NAME_PROMPT, is_refusal

from conftest import WAIT_SECONDS, Peer

STAMP = r"\[\d\d:\d\d\] "
COLUMNS = 80  # the nc view the issue describes
TRIES_PER_CONNECTION = 3  # fewer than the server lets one connection try before it closes it

# Each made to pass for "bob" (or for nobody, or for a notice).
LOOKALIKES = ["b\u043eb", "\uff42\uff4f\uff42", "BOB", "bob\u034f", "bob\ufe0f", "bob\ufe00", "bob\u3164",
              "bob\u1160", "\u0301\u0301", "\u3164", "bob.", "bob>", "/bob", "\uff0a\uff0a\uff0a"]


class RawWatcher:
    """A client that keeps the server's bytes as they came, as nc shows them: no cleaning
    (a :class:`Peer` cleans what it reads, so it would hide padding the server let through)."""

    def __init__(self, address: tuple, name: str) -> None:
        self.sock = socket.create_connection(address[:2], timeout=WAIT_SECONDS)
        self.buffer = b""
        assert self.line_with(NAME_PROMPT.encode())
        self.sock.sendall(name.encode() + b"\n")

    def line_with(self, marker: bytes) -> str:
        """The next line from the server that holds ``marker``, decoded but otherwise raw."""
        while True:
            line, newline, rest = self.buffer.partition(b"\n")
            if newline:
                self.buffer = rest
                if marker in line:
                    return line.decode()
                continue
            data = self.sock.recv(65536)
            if not data:
                pytest.fail(f"server closed before a line with {marker!r}")
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


def rows_of(line: str, columns: int = COLUMNS) -> list[str]:
    """How a terminal that wraps shows ``line``: rows of ``columns`` characters."""
    return [line[start:start + columns] for start in range(0, len(line), columns)]


@pytest.fixture
def honest(start_server):
    """alice and bob, on a server with default settings; bob's view is kept raw."""
    server = start_server()
    alice = Peer(server.server_address)
    alice.join("alice")
    bob = RawWatcher(server.server_address, "bob")
    alice.expect("bob joined")
    yield server, alice, bob
    alice.close()
    bob.close()


def check_honest_chat(alice: Peer, bob: RawWatcher, said: str) -> None:
    alice.say(said)
    assert re.fullmatch(f"{STAMP}<alice> {said}", bob.line_with(f"<alice> {said}".encode()))


def refusals_at_the_door(address: tuple, names: list[str], between=lambda tried: None) -> list[str]:
    """Offer each name as a newcomer, a few to a connection (fewer than the server allows one),
    each refused: the refusal lines.  ``between(tried)`` runs after each connection's names."""
    refusals = []
    for start in range(0, len(names), TRIES_PER_CONNECTION):
        with contextlib.closing(Peer(address)) as impostor:
            assert impostor.next_line() == NAME_PROMPT
            for name in names[start:start + TRIES_PER_CONNECTION]:
                impostor.say(name)
                refusals.append(impostor.next_line())
                assert is_refusal(refusals[-1]), (name, refusals[-1])
                assert impostor.next_line() == NAME_PROMPT
        between(start)
    return refusals


def test_lookalikes_of_a_present_name_are_refused_at_the_door_and_by_nick(honest):
    server, alice, bob = honest
    refusals_at_the_door(server.server_address, LOOKALIKES,
                         lambda tried: check_honest_chat(alice, bob, f"at the door {tried}"))
    impostor = Peer(server.server_address)
    assert impostor.next_line() == NAME_PROMPT
    impostor.say("mallory")
    impostor.expect(re.escape("*** Welcome, mallory!"))
    alice.expect("mallory joined")
    for n, lookalike in enumerate(LOOKALIKES):
        impostor.say(f"/nick {lookalike}")
        impostor.expect("^" + STAMP + re.escape("*** Sorry, "))
        check_honest_chat(alice, bob, f"by nick {n}")
    impostor.say("/who")
    assert impostor.expect(r"In lobby \(3\): (.*)\. ").group(1) == "alice, bob, mallory"
    impostor.close()


def test_lookalike_room_names_are_refused_or_are_the_same_room(honest):
    server, alice, bob = honest
    alice.say("/join cop")
    alice.expect("You are now in cop")
    impostor = Peer(server.server_address)
    impostor.join("mallory")
    impostor.say("/join c\u043ep")  # a Cyrillic "о"
    impostor.expect(re.escape("*** a room name cannot mix Cyrillic and Latin letters"))
    for room in ("\u0441\u043e\u0440", "c0p", "C0P"):  # all Cyrillic; a zero for the "o"
        impostor.say(f"/join {room}")
        impostor.expect(re.escape(f'*** "{room}" looks too much like "cop", a room in use: /join cop goes there'))
    impostor.say("still in the lobby")  # a refused /join leaves its asker where it was, chatting
    assert bob.line_with(b"<mallory> still in the lobby")
    impostor.say("/join \uff43\uff4f\uff50")  # fullwidth: the same room as "cop"
    impostor.expect(re.escape("You are now in cop. Here now: alice."))
    for peer in (impostor, alice):
        peer.say("/join lobby")
        peer.expect("You are now in lobby")
    impostor.say("/join \u0441\u043e\u0440")  # "cop" is empty and gone: a room like it may be made
    impostor.expect(re.escape("You are now in \u0441\u043e\u0440"))
    check_honest_chat(alice, bob, "back in the lobby")
    impostor.close()


@pytest.mark.parametrize("line, shown", [
    ("hi{pad}[12:00] <alice> psst", "<mallory> hi [12:00] <alice> psst"),
    ("/me waves{pad}[12:00] <alice> psst", "* mallory waves [12:00] <alice> psst"),
    ("/topic fun{pad}[12:00] *** alice left (connection closed)",
     "*** mallory set the topic: fun [12:00] *** alice left (connection closed)"),
    ("/quit bye{pad}[12:00] *** alice left (connection closed)",
     "*** mallory left (quit: bye [12:00] *** alice left (connection closed))"),
])
@pytest.mark.parametrize("pad", [" " * 70, "\t" * 70, "\u3164" * 35, " \u200b" * 70],
                         ids=["spaces", "tabs", "hangul-fillers", "zero-width-spaced"])
def test_padding_cannot_push_text_onto_a_row_of_its_own(honest, line, shown, pad):
    server, alice, bob = honest
    impostor = Peer(server.server_address)
    impostor.join("mallory")
    bob.line_with(b"mallory joined")  # so a /quit's leave is told in a line of its own
    impostor.say(line.format(pad=pad))
    got = bob.line_with(shown.split(" [12:00]")[0].encode())
    assert re.fullmatch(STAMP + re.escape(shown), got), got
    assert all(not re.match(STAMP, row) for row in rows_of(got)[1:])
    check_honest_chat(alice, bob, "still here")
    impostor.close()


# A present name, and one written to look like it in a single script (so the naming rules let
# it through): Cyrillic, Greek, and letters or digits that pass for others in Latin.
SAME_SCRIPT_LOOKALIKES = [("ape", "\u0430\u0440\u0435"), ("cop", "\u0421\u041e\u0420"), ("ABO", "\u0391\u0392\u039f"),
                          ("mike", "rnike"), ("will", "VVill"), ("lan", "Ian"), ("oscar", "0scar"), ("dan", "c1an")]


def test_a_name_in_one_script_that_looks_like_a_present_one_is_refused_saying_which(start_server):
    server = start_server()
    present = [Peer(server.server_address) for _ in SAME_SCRIPT_LOOKALIKES]
    for peer, (name, _) in zip(present, SAME_SCRIPT_LOOKALIKES):
        peer.join(name)
    try:
        refusals = refusals_at_the_door(server.server_address, [pair[1] for pair in SAME_SCRIPT_LOOKALIKES])
        assert refusals == [f'*** Sorry, "{lookalike}" looks too much like "{name}", who is here; '
                            f'"{lookalike}2" is free.' for name, lookalike in SAME_SCRIPT_LOOKALIKES]
        impostor = Peer(server.server_address)
        present.append(impostor)
        impostor.join("mallory")
        for name, lookalike in SAME_SCRIPT_LOOKALIKES:
            impostor.say(f"/nick {lookalike}")
            impostor.expect(re.escape(f'*** Sorry, "{lookalike}" looks too much like "{name}", who is here'))
        present[0].say("/who")
        assert present[0].expect(r"In lobby \((\d+)\)").group(1) == str(len(SAME_SCRIPT_LOOKALIKES) + 1)
        present[0].say("/quit")  # "ape" goes: a name like it is free again
        present[1].expect(r"\bape left")
        impostor.say("/nick \u0430\u0440\u0435")
        impostor.expect(re.escape("*** mallory is now known as \u0430\u0440\u0435"))
    finally:
        for peer in present:
            peer.close()
