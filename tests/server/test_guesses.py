"""Password guessing, with no sockets: the per-address limiter, the gate, and the chat's use of them."""

from __future__ import annotations

import logging

from groupchat.server.guesses import GuessLimiter, PasswordGate
from groupchat.server.registry import Member

from conftest import RecordingOutbox, make_chat, named, newcomer

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
