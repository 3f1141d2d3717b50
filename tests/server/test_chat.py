"""The chat logic with no sockets: members whose link records what it is sent (see conftest)."""

from __future__ import annotations

from groupchat.protocol import NAME_PROMPT, LineTooLong
from groupchat.server.chat import Clock

from conftest import fixed_clock, make_chat, named, newcomer


def test_the_first_line_is_the_name_and_the_welcome_comes_before_any_chat():
    chat = make_chat()
    alice = named(chat, "alice")
    bob = newcomer(chat)
    assert bob.link.lines == [NAME_PROMPT]
    chat.receive(bob, ["bob"])
    assert bob.link.lines[1] == "*** Welcome, bob! Here now: alice."
    stamp = fixed_clock().stamp()
    assert alice.link.lines == [f"[{stamp}] *** bob joined"]


def test_messages_go_to_everyone_but_the_sender():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    for member in (alice, bob, carol):
        member.link.lines.clear()
    chat.receive(alice, ["hi"])
    stamp = fixed_clock().stamp()
    assert alice.link.lines == []
    assert bob.link.lines == carol.link.lines == [f"[{stamp}] <alice> hi"]


def test_unnamed_connections_hear_no_chat_and_empty_lines_are_not_relayed():
    chat = make_chat()
    alice = named(chat, "alice")
    lurker = newcomer(chat)
    bob = named(chat, "bob")
    alice.link.lines.clear()
    chat.receive(bob, [""])
    chat.receive(bob, ["hello"])
    assert lurker.link.lines == [NAME_PROMPT]
    assert alice.link.lines == [f"[{fixed_clock().stamp()}] <bob> hello"]


def test_taken_name_is_refused_ignoring_case_and_asked_again():
    chat = make_chat()
    named(chat, "alice")
    bob = newcomer(chat)
    chat.receive(bob, ["Alice"])
    assert bob.link.lines[1:] == ['*** Sorry, the name "Alice" is taken; "Alice2" is free.', NAME_PROMPT]
    assert bob.name is None


def test_leaving_is_announced_once_with_its_reason_and_frees_the_name():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.link.lines.clear()
    chat.leave(bob, "not reading: too far behind")
    chat.leave(bob, "not reading: too far behind")
    assert alice.link.lines == [f"[{fixed_clock().stamp()}] *** bob left (not reading: too far behind)"]
    assert named(chat, "BOB").name == "BOB"


def test_a_plain_disconnect_is_told_without_its_socket_error():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.link.lines.clear()
    chat.leave(bob, "connection lost: Connection reset by peer")
    assert alice.link.lines == [f"[{fixed_clock().stamp()}] *** bob left"]


def test_a_crowd_arriving_costs_one_notice_line_per_interval():
    now = [100.0]
    chat = make_chat(notice_interval=1.0)
    chat.notices._now = lambda: now[0]
    alice = named(chat, "alice")
    bob = named(chat, "bob")
    stamp = fixed_clock().stamp()
    assert alice.link.lines == [f"[{stamp}] *** bob joined"]  # the first at once
    alice.link.lines.clear()
    crowd = [named(chat, f"p{n}") for n in range(40)]
    assert alice.link.lines == []  # the crowd waits
    chat.tell_due_notices()
    assert alice.link.lines == []  # not due yet
    now[0] += 1.0
    crowd[0].link.lines.clear()
    chat.tell_due_notices()
    notice = f"[{stamp}] *** p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 30 others joined"
    assert alice.link.lines == bob.link.lines == [notice]
    assert crowd[0].link.lines == []  # not told of its own arrival: it had its welcome
    chat.tell_due_notices()
    assert alice.link.lines == [notice]  # told once


def test_a_newcomer_who_speaks_at_once_is_told_to_have_arrived_first_and_to_have_left_after():
    now = [100.0]
    chat = make_chat(notice_interval=1.0)
    chat.notices._now = lambda: now[0]
    alice = named(chat, "alice")
    named(chat, "ci-bot")  # told at once: the next arrival waits for the room's next notice line
    alice.link.lines.clear()
    bot = named(chat, "ci-bot2")
    chat.receive(bot, ["build 1235 failed"])
    chat.leave(bot)
    now[0] += 1.0
    chat.tell_due_notices()
    assert [line.split("] ", 1)[1] for line in alice.link.lines] == [
        "*** ci-bot2 joined", "<ci-bot2> build 1235 failed", "*** ci-bot2 left"]

def test_unnamed_connection_leaving_is_not_announced():
    chat = make_chat()
    alice = named(chat, "alice")
    chat.leave(newcomer(chat))
    assert alice.link.lines == []
    assert len(chat.registry) == 1


def test_overlong_line_is_answered_to_its_sender_only():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.link.lines.clear()
    chat.receive(alice, [LineTooLong(4096)])
    assert alice.link.lines == [f"[{fixed_clock().stamp()}] *** Line not sent: longer than 4096 bytes."]
    assert bob.link.lines == []


def test_clock_stamps_hours_and_minutes_and_follows_the_time():
    now = [0.0]
    clock = Clock(now=lambda: now[0])
    first = clock.stamp()
    now[0] = 60.0
    assert clock.stamp() != first
    assert len(first) == 5 and first[2] == ":"


def test_a_taken_name_comes_with_a_free_one_to_try():
    chat = make_chat()
    named(chat, "alice")
    named(chat, "alice2")
    member = newcomer(chat)
    chat.receive(member, ["ALICE"])
    assert member.link.lines[-2] == '*** Sorry, the name "ALICE" is taken; "ALICE3" is free.'
    chat.receive(member, ["ALICE3"])
    assert member.name == "ALICE3"
