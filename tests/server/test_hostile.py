"""Hostile clients against a real server with its default limits.

In every case the honest clients, connected throughout, get every message in order, and
the server's registry and thread count come back to where they were.
"""

from __future__ import annotations

import os
import random
import signal
import re
import socket
import threading
import time

import pytest

from groupchat.server.tcp import ChatServer

from conftest import Peer, wait_for

STAMP = r"\[\d\d:\d\d\] "


class Honest:
    """Three honest clients that keep talking, bob reading text and carol JSON (so every hostile
    test runs against both modes); :meth:`check` proves nothing alice said was lost to either."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.alice, self.bob, self.carol = (Peer(server.server_address) for _ in range(3))
        self.alice.join("alice")
        self.bob.join("bob")
        self.carol.join_json("carol")
        self.alice.expect("carol joined")
        self.said = 0
        self.threads = threading.active_count()

    def check(self, lines: int = 5) -> None:
        """Alice says a few numbered lines; bob and carol must get exactly those next, in order."""
        for _ in range(lines):
            self.alice.say(f"honest {self.said}")
            self.said += 1
        expected = [f"honest {n}" for n in range(self.said - lines, self.said)]
        got = [self.bob.expect(f"^{STAMP}<alice> (honest \\d+)$").group(1) for _ in range(lines)]
        assert got == expected
        got = [self._next_honest_event()["text"] for _ in range(lines)]
        assert got == expected

    def _next_honest_event(self) -> dict:
        while not (event := self.carol.expect_event("msg", **{"from": "alice"}))["text"].startswith("honest "):
            pass
        return event

    def back_to_baseline(self) -> None:
        wait_for(lambda: len(self.server.registry) == 3, what="the registry to hold only the honest three")
        wait_for(lambda: threading.active_count() <= self.threads, what="the thread count to return")
        self.check()

    def close(self) -> None:
        for peer in (self.alice, self.bob, self.carol):
            peer.close()


@pytest.fixture
def honest_on(start_server):
    """Start a server with the given settings (defaults otherwise) and two honest clients on it."""
    made: list[Honest] = []

    def make(**settings) -> Honest:
        made.append(Honest(start_server(**settings)))
        return made[-1]

    yield make
    for honest in made:
        honest.close()


@pytest.fixture
def honest(honest_on) -> Honest:
    return honest_on(handshake_timeout=1.0)


def test_random_bytes_nuls_and_escapes_harm_nobody(honest):
    rng = random.Random(4)
    for n in range(10):
        peer = Peer(honest.server.server_address)
        if n % 2:
            peer.join(f"noisy{n}")
        peer.send(bytes(rng.getrandbits(8) for _ in range(3000)))
        peer.send(b"\x00\x00\x1b[2J\x1b]0;owned\x07\xff\xfe\r\n")
        honest.check(2)
        peer.close()
    honest.back_to_baseline()


def test_malformed_and_hostile_json_is_answered_one_error_each_and_harms_nobody(honest):
    peer = Peer(honest.server.server_address)
    peer.join_json("jason")
    honest.carol.expect_event("join", names=["jason"])
    bad = ['{"op": "send"', '{"a": ' + "[" * 2000 + "]" * 2000 + "}", '{"op": "send", "text": 1e999}',
           '{"op": ["send"]}', '{"op": "send", "text": "x", "label": "' + "L" * 100 + '"}', "{}",
           '{"op": "send", "text": "two\\nlines"}', '{"op": "cmd", "line": null}', '{"op": "\\ud800"}']
    peer.send("".join(line + "\n" for line in bad).encode())
    errors = [peer.expect_event("error") for _ in bad]
    assert {e["code"] for e in errors} == {"BAD_JSON", "UNKNOWN_OP"}
    peer.say('{"op": "send", "text": "\\u001b[2Jwipe \\ud800 \\u202eevil", "label": "x"}')
    assert peer.expect_event("ack", label="x")
    assert honest.carol.expect_event("msg", **{"from": "jason"})["text"] == "wipe \ufffd\ufffd\ufffd evil"
    assert re.fullmatch(f"{STAMP}<jason> wipe \ufffd\ufffd\ufffd evil", honest.bob.expect("<jason>").string)
    honest.check()
    peer.close()
    honest.back_to_baseline()


def test_escape_sequences_never_reach_another_terminal(honest):
    peer = Peer(honest.server.server_address)
    assert peer.next_line() == "*** What is your name?"
    peer.send(b"\x1b[31mmallory\x1b[0m\n")
    assert peer.expect("^\\*\\*\\* Welcome").string.startswith("*** Welcome, mallory!")
    peer.send("\x1b[2J\x1b[Hwipe\x07\x08\x9b1m\u202eevil\n".encode())
    line = honest.bob.expect("<mallory>").string
    assert re.fullmatch(f"{STAMP}<mallory> wipe1mevil", line)
    assert not any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 for ch in line)
    peer.close()
    honest.back_to_baseline()


def test_overlong_names_and_lines(honest):
    peer = Peer(honest.server.server_address)
    assert peer.next_line() == "*** What is your name?"
    peer.say("n" * 1000)
    assert peer.next_line() == "*** Sorry, a name can have at most 32 characters."
    peer.join("long")
    peer.send(b"x" * 10_000 + b"\n")
    peer.expect(r"\*\*\* Line not sent: longer than 4096 bytes\.$")
    peer.say("short again")
    honest.bob.expect("<long> short again")
    honest.check()
    peer.close()
    honest.back_to_baseline()


def test_a_peer_streaming_without_newline_is_cut_off(honest):
    peer = Peer(honest.server.server_address)
    peer.join("streamer")
    chunk = b"z" * 65536
    with pytest.raises(OSError):  # the server hangs up; our sends then fail or hit EOF
        for _ in range(100):  # 6.4 MB, far past the 64 KiB cut-off
            peer.send(chunk)
            honest.check(1)
    honest.alice.expect(r"streamer left \(sent more than 65536 bytes without a newline\)$")
    peer.close()
    honest.back_to_baseline()


def test_connect_and_hang_is_dropped_after_the_handshake_timeout(honest):
    hangers = [Peer(honest.server.server_address) for _ in range(10)]
    honest.check()  # while they hang
    for peer in hangers:
        assert peer.expect_eof()[-1] == "*** Sorry, no name came within 1 seconds; goodbye."
        peer.close()
    honest.back_to_baseline()


def test_a_handshake_trickled_byte_by_byte_still_has_one_deadline(honest):
    peer = Peer(honest.server.server_address)
    peer.next_line()
    with pytest.raises((OSError, EOFError)):
        for _ in range(100):  # one byte every 0.1 s would take 10 s; the deadline is 1 s
            peer.send(b"x")
            time.sleep(0.1)
        peer.expect_eof()
    peer.close()
    honest.back_to_baseline()


def test_a_silent_named_client_is_dropped_by_the_idle_timeout(honest_on):
    honest = honest_on(idle_timeout=0.5, max_per_address=0, notice_interval=0)  # alice idles too
    silent = Peer(honest.server.server_address)
    silent.join("silent")
    for _ in range(3):  # the honest two keep talking, so only the silent one idles out
        honest.check(1)
        honest.bob.say("still here")
        time.sleep(0.2)
    silent.expect(r"\*\*\* Sorry, nothing came for 0.5 seconds; goodbye\.$")
    honest.alice.expect(r"\*\*\* silent left \(nothing came for 0.5 seconds\)")
    silent.close()


def test_a_thousand_connect_disconnect_cycles(honest):
    address = honest.server.server_address
    for n in range(1000):
        with socket.create_connection(address[:2]) as sock:
            if n % 10 == 0:
                sock.sendall(f"cycler{n}\nhello\n".encode())
            if n % 3 == 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if n % 100 == 0:
            honest.check(1)
    honest.back_to_baseline()


def test_a_flood_past_max_clients_is_refused_one_line_each(honest_on):
    honest = honest_on(max_clients=13, max_per_address=0)
    admitted = [Peer(honest.server.server_address) for _ in range(10)]
    for n, peer in enumerate(admitted):
        peer.join(f"p{n}")  # named: unnamed ones would make room (see the test below)
    refused = [Peer(honest.server.server_address) for _ in range(50)]
    for peer in refused:
        assert peer.expect_eof() == ["*** Sorry, the server is full (13 connections); try again later."]
        peer.close()
    honest.check()
    for peer in admitted:
        peer.close()
    honest.back_to_baseline()
    late = Peer(honest.server.server_address)
    late.join("late")  # room again once the others left
    late.close()


def test_connections_that_give_no_name_cannot_keep_newcomers_out(honest_on):
    honest = honest_on(max_clients=13, max_per_address=0)
    squatters = [Peer(honest.server.server_address) for _ in range(10)]
    for peer in squatters:
        assert peer.next_line() == "*** What is your name?"
    newcomers = []
    for n in range(10):  # each newcomer gets in while the server is full: a squatter makes room
        newcomers.append(Peer(honest.server.server_address))
        newcomers[-1].join(f"new{n}")
        honest.check(1)
    for peer in squatters:
        assert peer.expect_eof() == ["*** Sorry, the server is full and you gave no name; goodbye."]
        peer.close()
    for peer in newcomers:
        peer.close()
    honest.back_to_baseline()


def test_a_thousand_refused_names_in_one_write_end_the_connection_at_once(honest_on):
    honest = honest_on(handshake_timeout=30.0)
    peer = Peer(honest.server.server_address)
    peer.send(b"".join(b"<bad%d\n" % n for n in range(2000)))
    lines = peer.expect_eof(timeout=5.0)  # not the 400 s flood control would take for 2,000 lines
    assert lines[-1] == "*** Sorry, 5 names refused; goodbye."
    assert len(lines) == 1 + 5 * 2 - 1 + 1  # the prompt, 5 refusals and 4 prompts again, goodbye
    peer.close()
    honest.back_to_baseline()


@pytest.mark.parametrize("close", ["FIN", "RST"])
@pytest.mark.parametrize("held", [True, False], ids=["session-held", "no-sessions"])
def test_a_connection_that_wrote_a_backlog_and_closed_leaves_at_once(honest_on, close, held):
    # The defaults: 5 lines a second, bursts of 20; a session held for a resume, or none.
    honest = honest_on() if held else honest_on(resume_window=0)
    ghost = Peer(honest.server.server_address)
    ghost.join("ghost")
    honest.alice.expect("ghost joined")
    ghost.send(b"".join(b"backlog %d\n" % n for n in range(20_000)))  # 400 s of flood control
    if close == "RST":
        ghost.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ghost.close()
    started = time.monotonic()
    honest.alice.expect(f"^{STAMP}\\*\\*\\* ghost {'is reconnecting' if held else 'left'}$", timeout=5)
    assert time.monotonic() - started < 3
    time.sleep(1.0)  # what flood control would have let through by now, had it kept reading
    honest.alice.say("/who")
    who = honest.alice.expect(r"\*\*\* In lobby").string
    assert ("ghost" in who) == held  # a held name stays taken
    honest.alice.say("after the ghost")
    seen = []
    while not (line := honest.bob.next_line()).endswith("<alice> after the ghost"):
        seen.append(line)
    told = next(n for n, line in enumerate(seen) if re.search(r"\*\*\* ghost (is reconnecting|left)$", line))
    assert not [line for line in seen[told:] if "<ghost>" in line], "its backlog went on after it was gone"
    honest.back_to_baseline()


def test_a_half_closed_connection_that_still_reads_has_all_its_lines_relayed(honest_on):
    honest = honest_on()
    piper = Peer(honest.server.server_address, source="127.0.0.6")  # as `printf ... | nc -N`
    piper.join("piper")
    piper.send(b"".join(b"piped %d\n" % n for n in range(40)))  # twice the burst
    piper.sock.shutdown(socket.SHUT_WR)
    piper.expect("You closed your side of the connection; the lines you sent still go out")
    got = [honest.bob.expect(f"^{STAMP}<piper> piped (\\d+)$", timeout=15).group(1) for _ in range(40)]
    assert got == [str(n) for n in range(40)]
    piper.close()
    honest.back_to_baseline()


def test_a_flooders_backlog_stays_on_its_side_and_goes_when_it_closes(honest_on):
    honest = honest_on()
    flooder = Peer(honest.server.server_address)
    flooder.join("flooder")
    flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)  # count the server's bytes
    flooder.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 2
    line = b"x" * 60 + b"\n"
    while time.monotonic() < deadline:  # write until the server stops taking bytes
        try:
            sent += flooder.sock.send(line * 100)
        except BlockingIOError:
            time.sleep(0.05)
    # The server holds at most its fixed 64 KiB receive buffer and one burst of lines; the
    # rest waits with the flooder.
    assert sent < 512 * 1024, f"the server took {sent} bytes from a flooder"
    flooder.close()
    honest.back_to_baseline()  # and what it held is not relayed for minutes after it left


def test_private_messages_from_many_connections_cannot_get_their_target_cut_off(honest_on):
    honest = honest_on()
    victim = Peer(honest.server.server_address)
    victim.join("victim")
    attackers = [Peer(honest.server.server_address, source="127.0.0.3") for _ in range(14)]
    for n, attacker in enumerate(attackers):
        attacker.join(f"a{n}")
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that pauses
    text = "x" * 3900
    for attacker in attackers:
        attacker.send(b"".join(f"/msg victim {text}\n".encode() for _ in range(25)))
    time.sleep(1.5)  # the victim reads nothing for a while
    honest.alice.say("/msg victim still with you?")
    victim.expect("<alice> still with you\\?$", timeout=15)  # still connected, and reached
    honest.alice.say("/who")
    assert "victim" in honest.alice.expect(r"\*\*\* In lobby").string
    for attacker in attackers:
        attacker.close()
    victim.close()
    honest.back_to_baseline()


def test_quitting_with_long_reasons_in_a_loop_costs_others_a_line_a_second(honest_on):
    honest = honest_on()
    reason = "r" * 4000
    for n in range(40):
        with socket.create_connection(honest.server.server_address[:2], source_address=("127.0.0.4", 0)) as sock:
            sock.sendall(f"q{n}\n/quit {reason}\n".encode())
            sock.settimeout(5)
            while sock.recv(65536):
                pass
    time.sleep(1.5)  # what waited for the room's next notice line is told by then
    honest.alice.say("marker")
    told = []
    while not (line := honest.bob.next_line()).endswith("<alice> marker"):
        told.append(line)
    comings = [line for line in told if " joined" in line or " left" in line]
    assert all(len(line) < 300 for line in comings), "a quit reason reached others whole"
    assert sum(map(len, comings)) < 20_000, f"{len(comings)} notice lines for 40 people quitting"
    honest.back_to_baseline()


def test_reconnecting_does_not_give_a_fresh_burst(honest_on):
    honest = honest_on(address_rate=5, address_burst=10)
    for round in range(2):
        flooder = Peer(honest.server.server_address, source="127.0.0.5")
        flooder.join(f"f{round}")
        flooder.send(b"".join(b"line %d\n" % n for n in range(10)))
        honest.bob.expect(f"<f{round}> line 9$")
        flooder.close()
    started = time.monotonic()
    flooder = Peer(honest.server.server_address, source="127.0.0.5")
    flooder.join("f2")  # the address spent its burst and more: the name waits too
    flooder.send(b"".join(b"line %d\n" % n for n in range(5)))
    honest.bob.expect("<f2> line 4$", timeout=15)
    assert time.monotonic() - started >= 1.0, "a new connection from the address got a fresh burst"
    flooder.close()
    honest.back_to_baseline()


def test_more_than_16_connections_from_one_address_are_refused(honest_on):
    honest = honest_on()  # the defaults: 16 per address; the honest three count
    mine = [Peer(honest.server.server_address) for _ in range(13)]
    for peer in mine:
        assert peer.next_line() == "*** What is your name?"
    extra = Peer(honest.server.server_address)
    assert extra.expect_eof() == ["*** Sorry, too many connections from your address (at most 16)."]
    extra.close()
    for peer in mine:
        peer.close()
    honest.back_to_baseline()


def test_a_flooder_is_slowed_not_dropped_and_others_are_not_held_up(honest_on):
    honest = honest_on(rate=50, burst=20)
    flooder = Peer(honest.server.server_address, source="127.0.0.2")  # its own address's budget
    flooder.join("flooder")
    honest.bob.expect("flooder joined")
    count = 150  # 20 at once, then 50 a second: about 2.6 s to get through
    flooder.send(b"".join(b"flood %d\n" % n for n in range(count)))
    honest.bob.expect(f"^{STAMP}<flooder> flood 0$")
    honest.alice.say("I am not stuck behind the flood")
    flood_seen, alice_seen_at = 1, None
    while flood_seen < count:
        line = honest.bob.next_line()
        if line.endswith("<alice> I am not stuck behind the flood"):
            alice_seen_at = flood_seen
            continue
        assert line.endswith(f"<flooder> flood {flood_seen}"), "a flood line was lost or reordered"
        flood_seen += 1
    assert alice_seen_at is not None and alice_seen_at < count - 50, \
        "alice's line waited behind the flood"
    flooder.close()
    honest.back_to_baseline()


def test_wrong_password_is_answered_late_and_closed_right_one_gets_in(start_server):
    server = start_server(password="open sesame", wrong_password_delay=0.3)
    alice = Peer(server.server_address)
    assert alice.next_line() == "*** Password?"
    alice.say("open sesame")
    alice.join("alice")
    intruder = Peer(server.server_address)
    assert intruder.next_line() == "*** Password?"
    intruder.say("guess")
    assert intruder.expect_eof() == ["*** Sorry, wrong password; goodbye."]
    intruder.close()
    bob = Peer(server.server_address)
    bob.next_line()
    bob.say("open sesame")
    bob.join("bob")
    alice.expect("bob joined")
    alice.close()
    bob.close()


@pytest.mark.parametrize("allow, deny, admitted", [
    ((), ("127.0.0.0/8",), False),
    (("10.0.0.0/8",), (), False),
    (("127.0.0.1", "::1"), (), True),
    (("127.0.0.0/8",), ("127.0.0.1",), False),
])
def test_allow_and_deny_lists(start_server, allow, deny, admitted):
    server = start_server(allow=allow, deny=deny)
    peer = Peer(server.server_address)
    if admitted:
        peer.join("ok")
    else:
        assert peer.expect_eof() == ["*** Sorry, this address is not allowed here."]
    peer.close()


def test_server_memory_stays_bounded_under_garbage(server_process):
    """RSS of the real server process, before and after 50 MB of hostile input."""
    server = server_process()
    honest = Peer(server.address)
    honest.join("honest")

    def rss_kib() -> int:
        with open(f"/proc/{server.proc.pid}/status") as status:
            return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))

    before = rss_kib()
    blob = os.urandom(1 << 20).replace(b"\n", b"x")
    for n in range(50):
        with socket.create_connection(server.address) as sock:
            try:
                sock.sendall(f"garbage{n}\n".encode() + blob)
            except OSError:
                pass  # cut off mid-send: that's the point
    honest.say("/who")
    honest.expect(r"\*\*\* In lobby \(\d+\): honest")  # still served
    assert rss_kib() - before < 30 * 1024, "the server's memory grew with what peers sent"
    honest.close()


def test_thousands_of_refused_connects_cost_the_log_a_few_lines(server_process):
    server = server_process("--max-per-address", "1")
    holder = Peer(server.address)  # the address's one connection: every other is refused
    holder.join("holder")
    for _ in range(2000):
        with socket.create_connection(server.address) as sock:
            sock.recv(100)
    holder.say("/who")
    holder.expect(r"\*\*\* In lobby")  # still served
    server.proc.send_signal(signal.SIGTERM)
    code, stderr = server.finish()
    refusals = [line for line in stderr.splitlines() if "refused" in line]
    assert code == 0 and 1 <= len(refusals) <= 10, f"{len(refusals)} lines for 2,000 refusals"
    holder.close()


def test_each_name_offered_gets_its_own_time_and_the_total_is_bounded(honest_on):
    honest = honest_on(handshake_timeout=1.0)
    peer = Peer(honest.server.server_address)
    assert peer.next_line() == "*** What is your name?"
    started = time.monotonic()
    for n in range(3):  # a person retyping a refused name takes a while each time
        time.sleep(0.7)
        peer.say("alice")
        assert peer.next_line().startswith('*** Sorry, the name "alice" is taken')
        assert peer.next_line() == "*** What is your name?"
    assert time.monotonic() - started > 2.0  # longer than one handshake timeout in all
    peer.say("late")
    assert peer.expect("^\\*\\*\\* Welcome, late!")
    peer.close()
    honest.back_to_baseline()
