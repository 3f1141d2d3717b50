"""Password guessing, with no sockets: the per-address limiter, the gate, and the chat's use of
them; and every limit per address counting an IPv6 address with its whole /64, with no sockets
and then over real ones on ::1 (the kernel's loopback has one IPv6 address, so the sharing of a
/64 by several is tested without sockets)."""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest

from groupchat.protocol import NAME_PROMPT
from groupchat.server.access import Admission, BanList
from groupchat.server.flood import PRIVATE_BURST, PRIVATE_RATE, BucketTable, FloodControl, TokenBucket
from groupchat.server.guesses import GuessLimiter, PasswordGate
from groupchat.server.registry import Member
from groupchat.server.tcp import ChatServer

from conftest import Peer, RecordingOutbox, make_chat, named, newcomer, wait_for

GUESSER = "10.0.0.9"
LOCKOUT_LINE = "too many wrong passwords from your address; try again in 1 minute"


class FakeTime:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeTime, **options) -> GuessLimiter:
    settings = {"base_delay": 1.0, "lockout_after": 10, "lockout_seconds": 60.0, "free": 3,
                "max_delay": 5.0, "forget_after": 100.0, **options}
    return GuessLimiter(now=clock, **settings)


def test_delays_double_after_the_free_misses_up_to_the_cap():
    guesses = limiter(FakeTime())
    assert [guesses.miss(GUESSER).delay for _ in range(8)] == [1.0, 1.0, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_lockout_comes_at_the_nth_miss_lasts_its_time_and_then_counting_starts_again():
    clock = FakeTime()
    guesses = limiter(clock)
    misses = [guesses.miss(GUESSER) for _ in range(10)]
    assert [miss.locked for miss in misses] == [False] * 9 + [True]
    assert misses[-1].count == 10 and misses[-1].delay == 0
    assert guesses.locked_for(GUESSER) == 60.0
    assert guesses.locked_for("10.0.0.8") == 0, "another address is not locked out"
    clock.now += 59
    assert guesses.locked_for(GUESSER) == 1.0
    clock.now += 1
    assert guesses.locked_for(GUESSER) == 0
    assert guesses.miss(GUESSER) == (1.0, 1, False)


def test_a_right_guess_forgives_that_address_only():
    guesses = limiter(FakeTime())
    for _ in range(5):
        guesses.miss(GUESSER)
        guesses.miss("10.0.0.8")
    guesses.forgive(GUESSER)
    assert guesses.miss(GUESSER).count == 1
    assert guesses.miss("10.0.0.8").count == 6


def test_misses_are_forgotten_after_a_quiet_while():
    clock = FakeTime()
    guesses = limiter(clock)
    for _ in range(6):
        guesses.miss(GUESSER)
    clock.now += 99
    assert guesses.miss(GUESSER).count == 7, "still remembered just before forget_after"
    clock.now += 100
    assert guesses.locked_for("10.0.0.8") == 0 and len(guesses) == 0
    assert guesses.miss(GUESSER).delay == 1.0


def test_a_lockout_outlives_forget_after():
    clock = FakeTime()
    guesses = limiter(clock, lockout_seconds=500.0)
    for _ in range(10):
        guesses.miss(GUESSER)
    clock.now += 400
    assert guesses.locked_for(GUESSER) == 100.0


def test_the_table_is_capped_and_forgets_the_address_quiet_longest():
    clock = FakeTime()
    guesses = limiter(clock, max_addresses=3)
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        guesses.miss(host)
        clock.now += 1
    guesses.miss("10.0.0.1")  # busy again: now the quiet longest is 10.0.0.2
    guesses.miss("10.0.0.4")
    assert len(guesses) == 3
    assert guesses.miss("10.0.0.2").count == 1, "forgotten"
    assert guesses.miss("10.0.0.1").count == 3, "remembered"


def test_without_a_lockout_misses_only_wait_and_the_count_never_overflows():
    for off in ({"lockout_after": 0}, {"lockout_seconds": 0}):
        guesses = limiter(FakeTime(), **off)
        misses = [guesses.miss(GUESSER) for _ in range(5000)]
        assert not any(miss.locked for miss in misses)
        assert misses[-1].delay == 5.0 and guesses.locked_for(GUESSER) == 0


def test_the_gate_answers_waits_logs_a_few_lines_and_locks_out(caplog):
    waits: list[float] = []
    gate = PasswordGate("sesame", "password", limiter(FakeTime()), waits.append)
    with caplog.at_level(logging.WARNING, logger="groupchat.server.guesses"):
        answers = [gate.check(GUESSER, f"{GUESSER}:{port}", "guess") for port in range(12)]
    assert answers == ["wrong password"] * 9 + [LOCKOUT_LINE] * 3
    assert waits == [1.0, 1.0, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0], "no wait once locked out"
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 5, "misses 1, 2, 4, 8 and the lockout; nothing while locked out"
    assert logged[-1] == f"{GUESSER} locked out of the password for 1 minutes after 10 wrong guesses"
    assert gate.check(GUESSER, GUESSER, "sesame") == LOCKOUT_LINE, "not even compared"
    assert gate.check("10.0.0.8", "10.0.0.8", "sesame") is None


def test_a_locked_out_address_is_told_so_instead_of_the_password_prompt():
    chat = make_chat(password="sesame", password_lockout_after=2, password_lockout_minutes=1)
    for _ in range(2):
        guesser = newcomer(chat)
        chat.receive(guesser, ["guess", "sesame", "sneaky"])
        assert guesser.link.ended and guesser.name is None
    assert guesser.link.lines[-1] == f"*** Sorry, {LOCKOUT_LINE}; goodbye."
    again = newcomer(chat)
    assert again.link.lines == [f"*** Sorry, {LOCKOUT_LINE}; goodbye."] and again.link.ended
    elsewhere = Member("10.0.0.2:7", RecordingOutbox())
    chat.greet(elsewhere)
    chat.receive(elsewhere, ["sesame"])
    assert elsewhere.link.lines == ["*** Password?", "*** What is your name?"]


def test_op_misses_wait_then_lock_out_and_a_locked_out_op_is_not_even_compared():
    waits: list[float] = []
    chat = make_chat(op_password="root", wrong_password_delay=0.5, password_lockout_after=7,
                     password_lockout_minutes=1)
    chat.sleep = waits.append
    alice = named(chat, "alice")
    for _ in range(8):
        chat.receive(alice, ["/op guess"])
    chat.receive(alice, ["/op root"])
    notices = [line.split("*** ", 1)[1] for line in alice.link.lines]
    lockout = LOCKOUT_LINE.replace("passwords", "operator passwords")
    assert notices == ["wrong operator password"] * 6 + [lockout] * 3
    assert waits == [0.5] * 5 + [1.0] and not alice.is_op and not alice.link.ended


# -- IPv6 guessers count with their /64 (issue 11): any customer has 2**64 addresses -----------

SAME_64 = ["2001:db8:1:2::7", "2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2:abcd::1"]
OTHER_64 = "2001:db8:1:3::7"


def test_misses_from_one_ipv6_64_count_together_and_lock_out_all_of_it(caplog):
    gate = PasswordGate("sesame", "password", limiter(FakeTime()), lambda seconds: None)
    with caplog.at_level(logging.WARNING, logger="groupchat.server.guesses"):
        answers = [gate.check(SAME_64[n % 3], f"[{SAME_64[n % 3]}]:{n}", "guess") for n in range(10)]
    assert answers == ["wrong password"] * 9 + [LOCKOUT_LINE]
    assert gate.check("2001:db8:1:2::99", "a new address of the block", "sesame") == LOCKOUT_LINE
    assert gate.check(OTHER_64, "the next block", "sesame") is None
    assert gate.check("::ffff:10.0.0.9", "IPv4, mapped", "sesame") is None
    logged = [record.getMessage() for record in caplog.records]
    assert logged[-1] == (f"{SAME_64[0]} (2001:db8:1:2::/64) locked out of the password for 1 minutes "
                          "after 10 wrong guesses"), "the real address, with its block"


def test_an_ipv4_mapped_guesser_is_its_ipv4_address():
    gate = PasswordGate("sesame", "password", limiter(FakeTime(), lockout_after=2), lambda seconds: None)
    gate.check("::ffff:10.0.0.9", "mapped", "guess")
    gate.check(GUESSER, "plain", "guess")
    assert gate.check(GUESSER, "plain", "sesame") == LOCKOUT_LINE


def test_connections_per_address_count_an_ipv6_64_as_one_address():
    admission = Admission(BanList(), max_per_address=2)
    assert admission.admit(SAME_64[0]) is None and admission.admit(SAME_64[1]) is None
    assert admission.admit(SAME_64[2]) == "too many connections from your network (2001:db8:1:2::/64) (at most 2)"
    assert admission.admit(OTHER_64) is None
    admission.release(SAME_64[0])
    assert admission.admit(SAME_64[2]) is None
    assert admission.admit("10.0.0.9") is None and admission.admit("::ffff:10.0.0.9") is None
    assert admission.admit("10.0.0.9") == "too many connections from your address (at most 2)"


def test_flood_control_shares_one_budget_across_an_ipv6_64():
    by_address = BucketTable(rate=1, burst=2, now=lambda: 0.0)
    waits = [FloodControl(TokenBucket(100, 100), by_address, address).take() for address in SAME_64]
    assert waits == [0.0, 0.0, 1.0], "the third address of the block waits as a third line would"
    assert FloodControl(TokenBucket(100, 100), by_address, OTHER_64).take() == 0.0


def test_private_messages_from_one_ipv6_64_to_one_person_are_paced_together():
    chat = make_chat()
    chat.private_budget = BucketTable(PRIVATE_RATE, PRIVATE_BURST, now=lambda: 0.0)  # no token comes back
    bob = named(chat, "bob")
    senders = [newcomer(chat, f"[2001:db8:1:2::{n}]:4000") for n in range(1, 8)]
    for n, sender in enumerate(senders):
        chat.receive(sender, [f"sender{n}", "/msg bob hi"])
    got = [line for line in bob.link.lines if "(private)" in line]
    refused = [sender for sender in senders if any("not sent: at most" in line for line in sender.link.lines)]
    assert len(got) == PRIVATE_BURST and len(refused) == len(senders) - PRIVATE_BURST


# -- the same over real sockets: a server on ::1, and one on an IPv4-mapped address -------------

@pytest.fixture
def v6_server(start_server):
    """Start real servers on an IPv6 address, port 0 (skipped, saying why, where the kernel has no
    IPv6 loopback)."""
    def start(host: str = "::1", **settings) -> ChatServer:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind((host, 0))
        except OSError as exc:
            pytest.skip(f"cannot listen on {host}: {exc.strerror or exc} (no IPv6 here)")
        return start_server(host, notice_interval=0, **settings)

    return start


@pytest.mark.timeout(30)
def test_connections_over_ipv6_are_capped_by_their_64_and_uncounted_when_they_close(v6_server):
    server = v6_server(max_per_address=2)
    first, second = Peer(server.server_address), Peer(server.server_address)
    try:
        assert first.next_line() == second.next_line() == NAME_PROMPT
        with contextlib.closing(Peer(server.server_address)) as third:
            assert third.expect_eof() == ["*** Sorry, too many connections from your network (::/64) (at most 2)."]
        first.close()
        wait_for(lambda: len(server.registry) == 1, what="the closed connection to be gone")
        with contextlib.closing(Peer(server.server_address)) as again:
            again.join("again")  # its slot came back: admitting and uncounting agree on the key
    finally:
        first.close()
        second.close()


@pytest.mark.timeout(30)
def test_password_guesses_over_ipv6_lock_out_the_64_and_the_log_shows_the_address(v6_server, caplog):
    server = v6_server(password="sesame", wrong_password_delay=0.01, password_lockout_after=2,
                       password_lockout_minutes=1)
    with caplog.at_level(logging.WARNING, logger="groupchat.server.guesses"):
        for guess in ("guess1", "guess2", "sesame"):
            with contextlib.closing(Peer(server.server_address)) as guesser:
                first = guesser.next_line()
                if first == "*** Password?":
                    guesser.say(guess)
                    first = guesser.next_line()
                answers = [first, *guesser.expect_eof()]
            if guess == "guess1":
                assert answers == ["*** Sorry, wrong password; goodbye."]
    assert answers == [f"*** Sorry, {LOCKOUT_LINE}; goodbye."], "locked out, the right password too"
    assert any(record.getMessage().startswith("::1 (::/64) locked out of the password")
               for record in caplog.records)


@pytest.mark.timeout(30)
def test_ipv4_peers_of_a_dual_stack_server_are_capped_by_their_own_ipv4_address(v6_server):
    server = v6_server("::ffff:127.0.0.1", max_per_address=1)
    address = ("127.0.0.1", server.server_address[1])  # IPv4 peers: the server sees ::ffff:127.0.0.x
    peers = [Peer(address), Peer(address, source="127.0.0.2")]
    try:
        assert [peer.next_line() for peer in peers] == [NAME_PROMPT] * 2, "two addresses, two groups"
        assert {member.host for member in server.registry.connections()} == {"::ffff:127.0.0.1", "::ffff:127.0.0.2"}
        with contextlib.closing(Peer(address)) as another:
            assert another.expect_eof() == ["*** Sorry, too many connections from your address (at most 1)."]
    finally:
        for peer in peers:
            peer.close()
