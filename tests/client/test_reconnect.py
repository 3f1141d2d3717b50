"""The join client coming back by itself: a connection reset mid-stream, a server restarted,
a reader too slow for the room.  Real servers on loopback; the client's Link in-process
with an Output that keeps what it was given, and ``groupchat join`` in a pty."""

from __future__ import annotations

import io
import signal
import socket
import struct
import threading
import time
from typing import Iterator, Optional

import pytest

from groupchat.client.link import Backoff, Link, Output
from groupchat.client.session import Handshake, Sent, Session
from groupchat.errors import NameRefusedError
from groupchat.server.console import Console

from conftest import UNLIMITED, WAIT_SECONDS, Peer, ServerProcess, stored_messages, wait_for

pytestmark = pytest.mark.timeout(60)

QUICK = Backoff(first=0.05, most=0.2)  # retries in tests: soon, and often


class Kept(Output):
    """Keeps what the client would show: the room's lines as (sender, text), and its own notes."""

    def __init__(self, name: str) -> None:
        super().__init__(Session(name))
        self.said: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.events: list[dict] = []
        self._lock = threading.Lock()

    def present(self, line, answered: Optional[Sent]) -> None:
        if not isinstance(line, dict):
            return
        with self._lock:
            self.events.append(line)
            if line["type"] in ("msg", "history") and line.get("kind", "msg") == "msg":
                self.said.append((line["from"], line["text"]))

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def lines_from(self, sender: str) -> list[str]:
        with self._lock:
            return [text for who, text in self.said if who == sender]


class Cutter:
    """A TCP relay between the client and the server that can cut every connection through it
    with a reset (SO_LINGER 0), as a broken network does, and, while ``down`` is set, close
    every new one at once, as a server not back yet does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket, list[threading.Thread]]] = []
        self._lock = threading.Lock()
        self._cutting = threading.Event()
        self.down = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=WAIT_SECONDS)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pumps = [threading.Thread(target=self._pump, args=pair, daemon=True)
                     for pair in ((client, server), (server, client))]
            with self._lock:
                self._pairs.append((client, server, pumps))
            for pump in pumps:
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            if not self._cutting.is_set():
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        """Reset both sides of every connection through it: the pumps stop reading first, so
        that closing with SO_LINGER 0 sends a reset and nothing else."""
        self._cutting.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server, pumps in pairs:
            for sock in (client, server):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                try:
                    sock.shutdown(socket.SHUT_RD)  # wakes its pump, sends nothing
                except OSError:
                    pass  # the other side closed it already
            for pump in pumps:
                pump.join(WAIT_SECONDS)
            client.close()
            server.close()
        self._cutting.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def links() -> Iterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        link.close()


def open_link(links: list[Link], port: int, name: str, backoff: Backoff = QUICK,
              also: tuple[int, ...] = ()) -> tuple[Link, Kept]:
    """A client on 127.0.0.1 ``port`` (then the ports ``also``, in turn), through the handshake and reading."""
    kept = Kept(name)
    link = Link(addresses=[("127.0.0.1", each) for each in (port, *also)], output=kept, backoff=backoff)
    links.append(link)
    link.open(Handshake(name))
    link.start(lambda end: None)
    return link, kept


def send_numbered(address: tuple[str, int], name: str, count: int, pause: float = 0.0, padding: str = "") -> None:
    """A sender: ``count`` lines ``NAME N`` (then ``padding``) through a plain connection, then /quit."""
    peer = Peer(address)
    peer.join(name)
    for number in range(count):
        peer.say(f"{name} {number}{padding}")
        if pause:
            time.sleep(pause)
    peer.say("/quit")
    peer.expect_eof()
    peer.close()


def test_a_reset_mid_stream_is_resumed_with_every_line_once_in_order(start_server, links):
    server = start_server(**{**UNLIMITED, "resume_window": 60})
    cutter = Cutter(server.server_address)
    try:
        link, kept = open_link(links, cutter.port, "reader")
        senders = [threading.Thread(target=send_numbered, args=(server.server_address, f"s{n}", 300, 0.001))
                   for n in range(4)]
        for sender in senders:
            sender.start()
        wait_for(lambda: len(kept.said) > 100, what="lines before the cut")
        cutter.cut()
        for sender in senders:
            sender.join(WAIT_SECONDS * 3)
        for n in range(4):
            wait_for(lambda: len(kept.lines_from(f"s{n}")) >= 300, what=f"all of s{n}'s lines")
        assert link.attempts >= 1
        assert any(note.startswith("Reconnected") for note in kept.notes), kept.notes
        for n in range(4):
            assert kept.lines_from(f"s{n}") == [f"s{n} {number}" for number in range(300)]
    finally:
        cutter.close()


def test_after_a_restart_it_joins_again_and_fetches_what_was_said_meanwhile(tmp_path, links):
    history = str(tmp_path / "history.db")
    options = ("--history", history, "--max-per-address", "0", "--rate", "0")
    first = ServerProcess(*options)
    cutter = Cutter(first.address)
    second = None
    try:
        link, kept = open_link(links, cutter.port, "reader")
        send_numbered(first.address, "early", 5)
        wait_for(lambda: len(kept.lines_from("early")) == 5, what="the early lines")
        # A crash loses what history had not committed yet (within 10 ms), and its ids: wait.
        wait_for(lambda: ("early", "early 4") in stored_messages(history), what="the early lines stored")
        cutter.down.set()  # the client cannot come back until the late lines are said
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        cutter.cut()
        wait_for(lambda: link.attempts >= 2, what="the client to try again")
        second = ServerProcess(*options, "--port", str(first.port))
        send_numbered(second.address, "late", 5)
        cutter.down.clear()
        wait_for(lambda: link.live, what="the client to come back")
        send_numbered(second.address, "after", 3)
        wait_for(lambda: len(kept.lines_from("after")) == 3, what="live lines after the return")
        assert kept.lines_from("early") == [f"early {n}" for n in range(5)]
        assert kept.lines_from("late") == [f"late {n}" for n in range(5)]
        assert kept.said.index(("late", "late 4")) < kept.said.index(("after", "after 0"))
        assert "Reconnected: 5 missed messages follow" in kept.notes
        assert link.session.name == "reader"
    finally:
        cutter.close()
        first.kill()
        if second is not None:
            second.kill()


def test_a_kick_is_not_retried(start_server, links):
    server = start_server(**{**UNLIMITED, "resume_window": 60})
    link, kept = open_link(links, server.server_address[1], "victim")
    Console(server.chat, lambda: None, output=io.StringIO()).cmd_kick(None, "victim flooding")
    link.wait(WAIT_SECONDS)
    assert link.end is not None and "kick" in str(link.end).lower()
    assert link.attempts == 0


def test_a_name_taken_meanwhile_is_reported_not_retried(start_server, links):
    server = start_server(**UNLIMITED)  # no sessions: the client comes back by its name
    cutter = Cutter(server.server_address)
    try:
        link, kept = open_link(links, cutter.port, "reader", backoff=Backoff(first=1.0, jitter=False))
        watcher = Peer(server.server_address)
        watcher.join_json("watcher")
        cutter.cut()
        watcher.expect_event("leave", names=["reader"])
        thief = Peer(server.server_address)
        thief.join("reader")  # before the client is back
        link.wait(WAIT_SECONDS)
        assert isinstance(link.end, NameRefusedError), link.end
        assert 'refused the name "reader"' in str(link.end)
        assert link.attempts == 1
        thief.close()
        watcher.close()
    finally:
        cutter.close()


def test_a_name_taken_on_the_next_server_is_tried_again_while_the_session_may_be_held(start_server, links):
    first = start_server(**{**UNLIMITED, "resume_window": 60})
    second = start_server(**UNLIMITED)
    cutter = Cutter(first.server_address)
    other = Peer(second.server_address)
    try:
        other.join("reader")  # a namesake on a server that does not know the session
        link, kept = open_link(links, cutter.port, "reader", also=(second.server_address[1],))
        cutter.cut()
        # Attempt 1 goes to the second server, which refuses the name; attempt 2 back to the first.
        wait_for(lambda: link.attempts == 2 and link.live, what="the client back on the first server")
        assert link.end is None
        welcomes = [event for event in kept.events if event["type"] == "welcome"]
        assert [event.get("resumed") for event in welcomes] == [None, True]
        assert not [event for event in kept.events if event.get("code") == "NAME_TAKEN"]  # the status said it
    finally:
        other.close()
        cutter.close()


class Slow(Kept):
    """Stops reading while ``gate`` is shut, as a laptop too busy to read the room would."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.gate.set()

    def present(self, line, answered: Optional[Sent]) -> None:
        self.gate.wait(WAIT_SECONDS)
        super().present(line, answered)


def test_lines_a_slow_reader_missed_are_fetched_and_shown_in_their_place(start_server, links):
    server = start_server(**{**UNLIMITED, "resume_window": 60, "max_queued_bytes": 65536})
    slow = Slow("slow")
    link = Link(addresses=[("127.0.0.1", server.server_address[1])], output=slow, backoff=QUICK)
    links.append(link)
    link.open(Handshake("slow"))
    link.start(lambda end: None)
    slow.gate.clear()
    padding = " " + "x" * 900
    # Far more than the kernel's buffers and the server.s 64 kB queue hold for a reader that stopped.
    send_numbered(server.server_address, "loud", 2000, padding=padding)
    slow.gate.set()
    wait_for(lambda: len(slow.lines_from("loud")) >= 2000, what="every line, missed or not")
    assert slow.lines_from("loud") == [f"loud {number}{padding}" for number in range(2000)]
    # Told of a gap at least once: the server dropped lines for it, or cut it off and it resumed.
    assert any(note.startswith(("You missed", "Reconnected")) for note in slow.notes), slow.notes
    assert not any(note.startswith("not sent") for note in slow.notes), slow.notes
