"""The chat logic with no sockets: members whose outbox records what it is sent."""

from __future__ import annotations

from groupchat.server.chat import Chat, Clock
from groupchat.protocol import NAME_PROMPT, LineTooLong
from groupchat.server.registry import Member, Registry


class RecordingOutbox:
    """Keeps the lines sent to one member, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._held: list[str] | None = None

    def put(self, data: bytes, droppable: bool = False) -> None:
        (self.lines if self._held is None else self._held).extend(data.decode().splitlines())

    def hold(self) -> None:
        self._held = []

    def release(self, first: bytes) -> None:
        held, self._held = self._held or [], None
        self.lines.extend(first.decode().splitlines() + held)


def fixed_clock() -> Clock:
    return Clock(now=lambda: 0.0)


def make_chat() -> Chat:
    return Chat(Registry(), fixed_clock())


def newcomer(chat: Chat, address: str = "10.0.0.1:1") -> Member:
    member = Member(address, RecordingOutbox())
    chat.registry.connect(member)
    chat.greet(member)
    return member


def named(chat: Chat, name: str) -> Member:
    member = newcomer(chat)
    chat.receive(member, [name])
    member.outbox.lines.clear()
    return member


def test_the_first_line_is_the_name_and_the_welcome_comes_before_any_chat():
    chat = make_chat()
    alice = named(chat, "alice")
    bob = newcomer(chat)
    assert bob.outbox.lines == [NAME_PROMPT]
    chat.receive(bob, ["bob"])
    assert bob.outbox.lines[1] == "*** Welcome, bob! Here now: alice."
    stamp = fixed_clock().stamp()
    assert alice.outbox.lines == [f"[{stamp}] *** bob joined"]


def test_messages_go_to_everyone_but_the_sender():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    for member in (alice, bob, carol):
        member.outbox.lines.clear()
    chat.receive(alice, ["hi"])
    stamp = fixed_clock().stamp()
    assert alice.outbox.lines == []
    assert bob.outbox.lines == carol.outbox.lines == [f"[{stamp}] <alice> hi"]


def test_unnamed_connections_hear_no_chat_and_empty_lines_are_not_relayed():
    chat = make_chat()
    alice = named(chat, "alice")
    lurker = newcomer(chat)
    bob = named(chat, "bob")
    alice.outbox.lines.clear()
    chat.receive(bob, [""])
    chat.receive(bob, ["hello"])
    assert lurker.outbox.lines == [NAME_PROMPT]
    assert alice.outbox.lines == [f"[{fixed_clock().stamp()}] <bob> hello"]


def test_taken_name_is_refused_ignoring_case_and_asked_again():
    chat = make_chat()
    named(chat, "alice")
    bob = newcomer(chat)
    chat.receive(bob, ["Alice"])
    assert bob.outbox.lines[1:] == ['*** Sorry, the name "Alice" is taken.', NAME_PROMPT]
    assert bob.name is None


def test_leaving_is_announced_once_with_its_reason_and_frees_the_name():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.outbox.lines.clear()
    chat.leave(bob, "not reading: too far behind")
    chat.leave(bob, "not reading: too far behind")
    assert alice.outbox.lines == [f"[{fixed_clock().stamp()}] *** bob left (not reading: too far behind)"]
    assert named(chat, "BOB").name == "BOB"


def test_a_plain_disconnect_is_told_without_its_socket_error():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.outbox.lines.clear()
    chat.leave(bob, "connection lost: Connection reset by peer")
    assert alice.outbox.lines == [f"[{fixed_clock().stamp()}] *** bob left"]


def test_a_crowd_arriving_costs_one_notice_line_per_interval():
    now = [100.0]
    chat = Chat(Registry(), fixed_clock(), notice_interval=1.0)
    chat.notices._now = lambda: now[0]
    alice = named(chat, "alice")
    bob = named(chat, "bob")
    stamp = fixed_clock().stamp()
    assert alice.outbox.lines == [f"[{stamp}] *** bob joined"]  # the first at once
    alice.outbox.lines.clear()
    crowd = [named(chat, f"p{n}") for n in range(40)]
    assert alice.outbox.lines == []  # the crowd waits
    chat.tell_due_notices()
    assert alice.outbox.lines == []  # not due yet
    now[0] += 1.0
    crowd[0].outbox.lines.clear()
    chat.tell_due_notices()
    notice = f"[{stamp}] *** p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 30 others joined"
    assert alice.outbox.lines == bob.outbox.lines == crowd[0].outbox.lines == [notice]
    chat.tell_due_notices()
    assert alice.outbox.lines == [notice]  # told once

def test_unnamed_connection_leaving_is_not_announced():
    chat = make_chat()
    alice = named(chat, "alice")
    chat.leave(newcomer(chat))
    assert alice.outbox.lines == []
    assert len(chat.registry) == 1


def test_overlong_line_is_answered_to_its_sender_only():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.outbox.lines.clear()
    chat.receive(alice, [LineTooLong(4096)])
    assert alice.outbox.lines == [f"[{fixed_clock().stamp()}] *** Line not sent: longer than 4096 bytes."]
    assert bob.outbox.lines == []


def test_clock_stamps_hours_and_minutes_and_follows_the_time():
    now = [0.0]
    clock = Clock(now=lambda: now[0])
    first = clock.stamp()
    now[0] = 60.0
    assert clock.stamp() != first
    assert len(first) == 5 and first[2] == ":"
