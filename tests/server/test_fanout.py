"""A room's fan-out with no sockets: members that record each send they are given."""

from __future__ import annotations

import threading
import time

import pytest

from groupchat.server.events import Out
from groupchat.server.fanout import Delivery, Fanout


class Recorder:
    """A member as the fan-out sees it: something with ``send``, and the format it takes."""

    def __init__(self, name: str, json: bool = False) -> None:
        self.name = name
        self.json = json
        self.ignoring: set[str] = set()
        self.sends: list[tuple[bytes, bool]] = []

    def send(self, data: bytes, droppable: bool = False) -> None:
        self.sends.append((data, droppable))

    @property
    def lines(self) -> list[bytes]:
        return b"".join(data for data, _ in self.sends).splitlines()


def out(text: bytes) -> Out:
    """Text, and its upper case standing for its JSON form."""
    return Out(lambda: text, lambda: text.upper())


@pytest.fixture
def room() -> tuple[Recorder, ...]:
    return tuple(Recorder(name) for name in ("alice", "bob", "carol"))


def test_one_delivery_reaches_everyone_but_its_sender(room):
    alice, bob, carol = room
    fanout = Fanout()
    fanout.add(Delivery(room, out(b"hi\n"), True, besides=alice))
    fanout.flush()
    assert alice.sends == []
    assert bob.sends == carol.sends == [(b"hi\n", True)]


def test_what_queued_meanwhile_goes_out_merged_one_send_per_member_without_its_own_lines(room):
    alice, bob, carol = room
    fanout = Fanout()
    fanout.add(Delivery(room, out(b"a1\na2\n"), True, besides=alice))
    fanout.add(Delivery(room, out(b"b1\n"), True, besides=bob))
    fanout.add(Delivery(room, out(b"a3\n"), True, besides=alice))
    fanout.flush()
    assert alice.sends == [(b"b1\n", True)]
    assert bob.sends == [(b"a1\na2\na3\n", True)]
    assert carol.sends == [(b"a1\na2\nb1\na3\n", True)]


def test_each_member_gets_its_format_and_each_format_is_rendered_once_per_turn():
    rendered = []
    alice, bob, carol, dave = Recorder("alice"), Recorder("bob", json=True), Recorder("carol"), Recorder("dave", json=True)
    room = (alice, bob, carol, dave)

    def counted(text: bytes) -> Out:
        return Out(lambda: rendered.append("text") or text, lambda: rendered.append("json") or text.upper())

    fanout = Fanout()
    fanout.add(Delivery(room, counted(b"a1\n"), True, besides=alice))
    fanout.flush()
    assert sorted(rendered) == ["json", "text"]
    assert (bob.lines, carol.lines, dave.lines) == ([b"A1"], [b"a1"], [b"A1"])
    rendered.clear()
    fanout.add(Delivery(room, counted(b"a2\n"), True, besides=alice))
    fanout.add(Delivery(room, counted(b"b1\n"), True, besides=bob))
    fanout.flush()
    assert sorted(rendered) == ["json", "json", "text", "text"]  # once per delivery and format
    assert (alice.lines, bob.lines[1:], carol.lines[1:], dave.lines[1:]) == (
        [b"b1"], [b"A2"], [b"a2", b"b1"], [b"A2", b"B1"])
    text_only = (Recorder("erin"), Recorder("frank"))
    rendered.clear()
    fanout.add(Delivery(text_only, counted(b"c1\n"), True, besides=None))
    fanout.flush()
    assert rendered == ["text"]  # no JSON member: no JSON made


def test_a_join_between_two_lines_keeps_the_earlier_line_from_the_newcomer(room):
    alice, bob, carol = room
    fanout = Fanout()
    fanout.add(Delivery(room[:2], out(b"before\n"), True, besides=alice))
    fanout.add(Delivery(room, out(b"after\n"), True, besides=alice))
    fanout.flush()
    assert bob.lines == [b"before", b"after"]
    assert carol.lines == [b"after"]


def test_notices_and_droppable_messages_are_never_merged_into_one_send(room):
    alice, bob, _ = room
    fanout = Fanout()
    fanout.add(Delivery(room, out(b"msg\n"), True, besides=alice))
    fanout.add(Delivery(room, out(b"*** notice\n"), False, besides=None))
    fanout.flush()
    assert bob.sends == [(b"msg\n", True), (b"*** notice\n", False)]
    assert alice.sends == [(b"*** notice\n", False)]


class SlowRecorder(Recorder):
    """A send that lets other threads run, as a real socket send does."""

    def send(self, data: bytes, droppable: bool = False) -> None:
        time.sleep(0.0001)
        super().send(data, droppable)


@pytest.mark.timeout(30)
def test_under_concurrent_senders_everyone_sees_one_order_and_a_flush_returns_its_lines_sent():
    listeners = tuple(SlowRecorder(f"listener{n}") for n in range(3))
    senders = tuple(SlowRecorder(f"sender{n}") for n in range(4))
    members = listeners + senders
    fanout = Fanout()
    order_lock = threading.Lock()  # the registry's lock: it fixes the queue's order
    lines_each = 200
    unsent: list[str] = []

    def speak(me: Recorder) -> None:
        for n in range(lines_each):
            line = f"{me.name}:{n}\n".encode()
            with order_lock:
                fanout.add(Delivery(members, out(line), True, besides=me))
            fanout.flush()
            if not any(line in data for data, _ in reversed(listeners[0].sends)):
                unsent.append(line.decode())

    threads = [threading.Thread(target=speak, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert unsent == []
    heard = listeners[0].lines
    assert len(heard) == lines_each * len(senders)
    assert all(listener.lines == heard for listener in listeners)
    for sender in senders:
        assert [line for line in heard if not line.startswith(sender.name.encode() + b":")] == \
            sender.lines
        mine = [line for line in heard if line.startswith(sender.name.encode() + b":")]
        assert mine == [f"{sender.name}:{n}".encode() for n in range(lines_each)]
