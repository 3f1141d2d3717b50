"""The outbox over a real socket pair: order, backlog, bound, that put() never blocks, and the
pump that writes backlogs and cuts off sockets that take nothing."""

from __future__ import annotations

import re
import socket
import time

import pytest

from groupchat.server.outbox import CUTOFF_TICK_SECONDS, CUTOFFS_PER_TICK, Outbox, Pump

from conftest import wait_for


@pytest.fixture
def pump():
    pump = Pump(stall_timeout=30)
    yield pump
    pump.stop()


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


def test_a_keeping_up_peer_gets_bytes_directly_without_the_pump(pair, pump):
    ours, theirs = pair
    outbox = Outbox(ours, limit=1 << 20, pump=pump, name="direct-test")
    for n in range(100):
        outbox.put(b"%d\n" % n)
    assert outbox.stalled_since() is None, "the pump was asked to help"
    assert read_exactly(theirs, len(b"".join(b"%d\n" % n for n in range(100)))).startswith(b"0\n1\n")


def test_a_backlog_is_kept_in_order_and_drained_when_the_peer_reads(pair, pump):
    ours, theirs = pair
    outbox = Outbox(ours, limit=64 << 20, pump=pump)
    chunks = [b"%08d" % n * 128 for n in range(20000)]  # 20 MB: far past the kernel's buffers
    for chunk in chunks:
        outbox.put(chunk)  # must return at once although nobody reads yet
    assert outbox.queued > 0
    assert read_exactly(theirs, sum(map(len, chunks))) == b"".join(chunks)
    assert outbox.flush(10)
    assert not outbox.overflowed


def test_overflow_closes_the_outbox_and_shuts_the_socket_down(pair, pump):
    ours, theirs = pair
    outbox = Outbox(ours, limit=100_000, pump=pump)
    while not outbox.closed:
        outbox.put(b"x" * 10_000)
    assert outbox.overflowed
    theirs.settimeout(10)
    while theirs.recv(1 << 20):  # what got through, then EOF from the shutdown
        pass
    outbox.put(b"ignored after close")


def test_a_drained_backlog_leaves_the_pump_and_the_next_line_goes_directly(pair, pump):
    ours, theirs = pair
    outbox = Outbox(ours, limit=64 << 20, pump=pump)
    data = b"z" * (8 << 20)
    outbox.put(data)
    assert outbox.stalled_since() is not None
    read_exactly(theirs, len(data))
    assert outbox.flush(10)
    assert outbox.stalled_since() is None
    outbox.put(b"direct again\n")
    assert outbox.stalled_since() is None
    assert read_exactly(theirs, 13) == b"direct again\n"


def test_a_socket_that_takes_nothing_for_the_stall_timeout_is_cut_off(pair):
    ours, theirs = pair
    pump = Pump(stall_timeout=0.3)
    try:
        outbox = Outbox(ours, limit=64 << 20, pump=pump)
        outbox.put(b"s" * (4 << 20))  # past the kernel's buffers; nobody reads
        wait_for(lambda: outbox.closed, what="the stalled outbox to be cut off")
        assert outbox.stalled and not outbox.overflowed
        theirs.settimeout(10)
        while theirs.recv(1 << 20):  # what got through, then EOF from the shutdown
            pass
    finally:
        pump.stop()


def test_a_slow_reader_that_keeps_taking_is_not_cut_off(pair):
    ours, theirs = pair
    pump = Pump(stall_timeout=0.5)
    try:
        outbox = Outbox(ours, limit=64 << 20, pump=pump)
        data = b"w" * (4 << 20)
        outbox.put(data)
        theirs.settimeout(10)
        got = 0
        while got < len(data):  # a little at a time, each well within the stall timeout
            got += len(theirs.recv(64 << 10))
            time.sleep(0.01)
        assert outbox.flush(10) and not outbox.stalled and not outbox.closed
    finally:
        pump.stop()


def test_a_mass_stall_is_cut_off_a_few_at_a_time():
    """Sockets that stop taking at the same instant are cut off in ticks, not all at once, so
    the threads that clean up after them never all wake together."""
    times: list[float] = []

    class Timed(Outbox):
        def cut_off(self) -> None:
            times.append(time.monotonic())
            super().cut_off()

    pairs = [socket.socketpair() for _ in range(3 * CUTOFFS_PER_TICK)]
    pump = Pump(stall_timeout=0.3)
    try:
        outboxes = [Timed(ours, limit=64 << 20, pump=pump) for ours, _ in pairs]
        for outbox in outboxes:
            outbox.put(b"m" * (1 << 20))
        wait_for(lambda: all(outbox.closed for outbox in outboxes), what="every stalled outbox to be cut off")
        assert all(outbox.stalled for outbox in outboxes)
        assert times[-1] - times[0] >= CUTOFF_TICK_SECONDS  # three ticks' worth: at least two gaps
    finally:
        pump.stop()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_the_missed_notice_never_lands_inside_a_half_sent_line(pair, pump):
    """Lines are shed while the rest of a half-sent line still heads the queue."""
    ours, theirs = pair
    outbox = Outbox(ours, limit=1_500_000, pump=pump, missed=lambda n: b"*** missed %d\n" % n)
    big = b"B" * 1_000_000 + b"\n"  # far more than the socket takes: its rest waits half-sent
    line = b" " + b"x" * 90 + b"\n"
    outbox.put(big)
    for n in range(20_000):  # 2 MB of room messages, past the limit: the oldest are shed
        outbox.put(b"m %d" % n + line, droppable=True)
    assert outbox.missed_total > 0 and not outbox.overflowed
    theirs.settimeout(10)
    received = b""
    while not received.endswith(b"m 19999" + line):
        received += theirs.recv(1 << 20)
    lines = received.split(b"\n")[:-1]
    assert lines[0] == big[:-1], "the half-sent line was cut"
    assert lines[1] == b"*** missed %d" % outbox.missed_total
    assert all(re.fullmatch(rb"m \d+ x{90}", other) for other in lines[2:])


def test_the_last_line_given_to_end_is_the_last_the_peer_gets(pair, pump):
    ours, theirs = pair
    outbox = Outbox(ours, limit=1 << 20, pump=pump, name="end-test")
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


def test_a_failure_writing_one_backlog_costs_that_connection_only(pump):
    """The pump is every connection's writer: a bug met writing one backlog ends that one."""

    class Broken(Outbox):
        def pump(self) -> None:
            raise RuntimeError("a bug")

    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    try:
        broken = Broken(first, limit=64 << 20, pump=pump)
        healthy = Outbox(second, limit=64 << 20, pump=pump)
        data = b"h" * (4 << 20)
        broken.put(data)
        healthy.put(data)  # both past the kernel's buffers: the pump writes the rest
        first_peer.setblocking(False)

        def read_some_then_closed() -> bool:  # room in its socket is what gives the pump its turn
            try:
                first_peer.recv(1 << 20)
            except BlockingIOError:
                pass
            return broken.closed

        wait_for(read_some_then_closed, what="the broken outbox to be disconnected")
        assert read_exactly(second_peer, len(data)) == data
        assert healthy.flush(10) and not healthy.closed
    finally:
        for sock in (first, first_peer, second, second_peer):
            sock.close()
