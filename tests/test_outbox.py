"""The outbox over a real socket pair: order, backlog, bound, and that put() never blocks."""

from __future__ import annotations

import socket
import threading

import pytest

from conftest import wait_for
from groupchat.outbox import Outbox


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
    monkeypatch.setattr("groupchat.outbox.WRITER_IDLE_SECONDS", 0.05)
    ours, theirs = pair
    outbox = Outbox(ours, limit=64 << 20, name="idle-test")
    data = b"z" * (8 << 20)
    outbox.put(data)
    assert writer_running("idle-test")
    read_exactly(theirs, len(data))
    wait_for(lambda: not writer_running("idle-test"), what="the idle writer to end")
    outbox.put(b"direct again\n")
    assert read_exactly(theirs, 13) == b"direct again\n"
