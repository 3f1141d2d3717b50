"""What one person can make the chat send to others is bounded: pure tests, no sockets (see
tests/server/test_hostile.py for the same against a real server)."""

from __future__ import annotations

from groupchat.protocol import render_notice
from groupchat.server.flood import PRIVATE_BURST
from groupchat.server.settings import MAX_REASON_CHARS, MAX_TOPIC_CHARS

from conftest import fixed_clock, make_chat, named

STAMP = fixed_clock().stamp()


def test_private_messages_to_one_person_are_paced_and_droppable():
    chat = make_chat(rate=5)  # flood control on, as shipped
    alice, bob = named(chat, "alice"), named(chat, "bob")
    sends = []
    bob.send = lambda data, droppable=False: sends.append(droppable)
    for n in range(PRIVATE_BURST + 1):
        chat.receive(alice, [f"/msg bob {n}"])
    assert sends == [True] * PRIVATE_BURST  # droppable: counted as missed, never a cut-off
    assert alice.link.lines[-1] == render_notice(
        STAMP, f"not sent: at most 1 private message a second to one person, after {PRIVATE_BURST} "
               f"at once; wait a moment")
    carol = named(chat, "carol")
    chat.receive(alice, ["/msg carol hi"])  # the budget is per person
    assert carol.link.lines[-1].endswith("(private) <alice> hi")


def test_without_flood_control_private_messages_are_not_paced():
    chat = make_chat(rate=0)
    alice, bob = named(chat, "alice"), named(chat, "bob")
    chat.receive(alice, [f"/msg bob {n}" for n in range(3 * PRIVATE_BURST)])
    assert len(bob.link.lines) == 3 * PRIVATE_BURST


def test_a_quit_reason_is_cut_short_and_a_long_topic_refused():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    chat.receive(bob, ["/quit " + "r" * 4000])
    chat.leave(bob, "connection closed")
    assert alice.link.lines[-1] == render_notice(STAMP, f"bob left (quit: {'r' * MAX_REASON_CHARS})")
    chat.receive(alice, ["/topic " + "t" * (MAX_TOPIC_CHARS + 1)])
    assert alice.link.lines[-1] == render_notice(STAMP, f"a topic can have at most {MAX_TOPIC_CHARS} characters")


def test_leaves_with_reasons_are_coalesced_like_the_others():
    now = [100.0]
    chat = make_chat(notice_interval=1.0)
    chat.notices._now = lambda: now[0]
    alice = named(chat, "alice")
    quitters = [named(chat, f"q{n}") for n in range(30)]
    now[0] += 5
    chat.tell_due_notices()  # the crowd's joins
    now[0] += 5  # then a quiet spell
    alice.link.lines.clear()
    for quitter in quitters:
        chat.receive(quitter, ["/quit a long goodbye"])
        chat.leave(quitter, "connection closed")
    assert alice.link.lines == [render_notice(STAMP, "q0 left (quit: a long goodbye)")]  # told at once
    now[0] += 1
    chat.tell_due_notices()
    assert alice.link.lines[1:] == [render_notice(STAMP, "q1, q2, q3, q4, q5, q6, q7, q8, q9, q10 and 19 others left")]
