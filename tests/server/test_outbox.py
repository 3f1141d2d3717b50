"""The outbox over a real socket pair: order, backlog, bound, and that put() never blocks."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from groupchat.server.outbox import Outbox

from conftest import wait_for


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    sock.settimeout(10)
    while got < size:
        chunk = sock.recv(size - got)
        assert chunk, "closed early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_a_keeping_up_peer_gets_bytes_directly_with_no_writer_thread(pair):
    ours, theirs = pair
    outbox = Outbox(ours, limit=1 << 20, name="direct-test")
    for n in range(100):
        outbox.put(b"%d\n" % n)
    assert not writer_running("direct-test")
    assert read_exactly(theirs, len(b"".join(b"%d\n" % n for n in range(100)))).startswith(b"0\n1\n")


def test_a_backlog_is_kept_in_order_and_drained_when_the_peer_reads(pair):
    ours, theirs = pair
    outbox = Outbox(ours, limit=64 << 20)
    chunks = [b"%08d" % n * 128 for n in range(20000)]  # 20 MB: far past the kernel's buffers
    for chunk in chunks:
        outbox.put(chunk)  # must return at once although nobody reads yet
    assert outbox.queued > 0
    assert read_exactly(theirs, sum(map(len, chunks))) == b"".join(chunks)
    assert outbox.flush(10)
    assert not outbox.overflowed


def test_overflow_closes_the_outbox_and_shuts_the_socket_down(pair):
    ours, theirs = pair
    outbox = Outbox(ours, limit=100_000)
    while not outbox.closed:
        outbox.put(b"x" * 10_000)
    assert outbox.overflowed
    theirs.settimeout(10)
    while theirs.recv(1 << 20):  # what got through, then EOF from the shutdown
        pass
    outbox.put(b"ignored after close")


def writer_running(name: str) -> bool:
    return any(thread.name == f"writer-{name}" for thread in threading.enumerate())


def test_a_writer_that_goes_idle_ends_its_thread(pair, monkeypatch):
    monkeypatch.setattr("groupchat.server.outbox.WRITER_IDLE_SECONDS", 0.05)
    ours, theirs = pair
    outbox = Outbox(ours, limit=64 << 20, name="idle-test")
    data = b"z" * (8 << 20)
    outbox.put(data)
    assert writer_running("idle-test")
    read_exactly(theirs, len(data))
    wait_for(lambda: not writer_running("idle-test"), what="the idle writer to end")
    outbox.put(b"direct again\n")
    assert read_exactly(theirs, 13) == b"direct again\n"


def test_the_missed_notice_never_lands_inside_a_half_sent_line(pair, monkeypatch):
    """The writer thread is made to start late, as on a busy machine, so that lines are shed
    while the rest of a half-sent line still heads the queue."""
    gate = threading.Event()

    class LateThread(threading.Thread):
        def run(self) -> None:
            gate.wait(10)
            super().run()

    monkeypatch.setattr("groupchat.server.outbox.threading.Thread", LateThread)
    ours, theirs = pair
    outbox = Outbox(ours, limit=1_500_000, missed=lambda n: b"*** missed %d\n" % n)
    big = b"B" * 1_000_000 + b"\n"  # far more than the socket takes: its rest waits half-sent
    line = b" " + b"x" * 90 + b"\n"
    outbox.put(big)
    for n in range(20_000):  # 2 MB of room messages, past the limit: the oldest are shed
        outbox.put(b"m %d" % n + line, droppable=True)
    assert outbox.missed_total > 0 and not outbox.overflowed
    gate.set()
    theirs.settimeout(10)
    received = b""
    while not received.endswith(b"m 19999" + line):
        received += theirs.recv(1 << 20)
    lines = received.split(b"\n")[:-1]
    assert lines[0] == big[:-1], "the half-sent line was cut"
    assert lines[1] == b"*** missed %d" % outbox.missed_total
    assert all(re.fullmatch(rb"m \d+ x{90}", other) for other in lines[2:])


def test_the_last_line_given_to_end_is_the_last_the_peer_gets(pair):
    ours, theirs = pair
    outbox = Outbox(ours, limit=1 << 20, name="end-test")
    outbox.put(b"before\n")
    outbox.end(b"You were kicked.\n")
    outbox.put(b"from another thread, too late\n")  # e.g. someone else's leave notice
    assert outbox.flush(5)
    theirs.settimeout(5)
    received = b""
    while chunk := theirs.recv(4096):
        received += chunk
        if received.endswith(b"kicked.\n"):
            break
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(4096)  # nothing after it
    assert received == b"before\nYou were kicked.\n"
