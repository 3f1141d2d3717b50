"""A connection's outgoing bytes: written at once when the socket takes them, else queued
for the server's one :class:`Pump`.

This is what keeps one slow reader from slowing anyone else: a sender never blocks on a
peer's socket.  While a peer keeps up, :meth:`Outbox.put` writes straight to its socket
without blocking, so no other thread is involved; when the socket would block, the rest
waits in a bounded queue that the pump writes out as the socket drains.

One pump thread for all the backlogs, rather than a writer thread each, is what lets a
server cut off two thousand readers that stall at the same instant without making anyone
else wait: only the pump notices (by the clock, not by two thousand send timeouts firing),
and it cuts them off a few at a time (see :data:`CUTOFFS_PER_TICK`), so the handler threads
that clean up after them wake a few at a time too.

When the queue passes its limit, the oldest room messages in it are dropped (they are in
the history) and the peer is told how many it missed; only if what cannot be dropped
(notices, private messages) passes the limit is the peer cut off.  A peer whose socket takes
nothing for the stall timeout is cut off by the pump.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from typing import Callable, Optional, Union

from groupchat.net import DONTWAIT
from groupchat.tls import TLSConnection

log = logging.getLogger(__name__)

# The pump hands the kernel at most this much of one backlog per turn: more than a socket's
# send buffer takes, so a turn is rarely short, without copying a whole queue every time.
PUMP_TURN_BYTES = 256 * 1024
# A mass stall is cut off this many connections per tick, so the threads that clean up after
# them never crowd out the chat's own; 2,000 take about half a second.
CUTOFFS_PER_TICK = 100
CUTOFF_TICK_SECONDS = 0.025

Transport = Union[socket.socket, TLSConnection]


def send_nowait(sock: Transport, data: bytes) -> int:
    """Hand ``data`` to the kernel without blocking; how much of it was taken.

    Over TLS all of it is taken once earlier records are out (see
    :meth:`~groupchat.tls.TLSConnection.send_nowait`), and :func:`unsent` says what waits.
    """
    if isinstance(sock, TLSConnection):
        return sock.send_nowait(data)
    try:
        return sock.send(data, DONTWAIT) if data else 0
    except BlockingIOError:
        return 0


def unsent(sock: Transport) -> int:
    """Bytes a transport took but has not yet handed to the kernel (only TLS holds any)."""
    return sock.unsent if isinstance(sock, TLSConnection) else 0


class Outbox:
    """Ordered, bounded, non-blocking delivery of lines to one socket.

    Any thread may call :meth:`put`; bytes go out in the order of the calls.  Lines put
    with ``droppable=True`` may be shed, oldest first, when more than ``limit`` bytes wait;
    the next batch then starts with ``missed(count)``.  If the queue still holds more than
    ``limit``, the outbox closes, shuts the socket down (so its reader sees EOF) and sets
    :attr:`overflowed`.
    """

    def __init__(self, sock: Transport, limit: int, pump: Pump, name: str = "peer",
                 missed: Optional[Callable[[int], bytes]] = None) -> None:
        self.limit = limit
        self.overflowed = False  # cut off: what could not be dropped passed the limit
        self.stalled = False  # cut off: took nothing for the stall timeout
        self.closed = False
        self.missed_total = 0
        self.name = name
        self._sock = sock
        self._fd = sock.fileno()
        self._pump = pump
        self._missed_line = missed
        self._lock = threading.Lock()
        # What flush() waits on, made by the first flush: a Condition is a kilobyte, and ten
        # thousand idle connections need none.
        self._changed: Optional[threading.Condition] = None
        self._queue: list[tuple[bytes, bool]] = []  # (data, droppable), oldest first
        self._queued = 0
        self._missed = 0  # lines shed since the last batch went out
        self._pumping = False  # the pump is writing this backlog
        self._progress = 0.0  # when the socket last took something, while pumping
        self._ending = False
        self._held = False  # queue everything until release(): see hold()
        self._partial_head = False  # the queue starts with the rest of a half-sent line
        self._held_at = 0
        self._plain = type(sock) is socket.socket  # (a TLS connection encrypts first)
        self._send_now = sock.send if self._plain else None  # the direct path's, looked up once
        # Whether put() may send at once: a plain socket, nothing pumped or held, not ending.
        self._direct = self._plain

    def put(self, data: bytes, droppable: bool = False) -> None:
        """Send ``data`` after everything put before it, without ever blocking on the peer."""
        # acquire() and release() rather than ``with``: half the cost (80 ns against 170 per
        # call, measured), and this is paid per line per member.
        lock = self._lock
        lock.acquire()
        try:
            if self._direct:  # the usual case, kept to one send
                try:
                    sent = self._send_now(data, DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._close_locked()
                    return
                if sent == len(data):
                    return
                self._backlog_locked(data, sent, droppable)
            elif self.closed or self._ending:
                return
            elif self._held:
                self._queue_locked(data, droppable)
            else:
                self._send_locked(data, droppable)
        finally:
            lock.release()
        if self.overflowed:
            self._shutdown_socket()

    def hold(self) -> None:
        """Queue what is put from now on, until :meth:`release` sends something ahead of it."""
        with self._lock:
            self._held = True
            self._direct = False
            self._held_at = len(self._queue)  # what was queued before still goes first

    def release(self, first: bytes) -> None:
        """Send ``first``, then what was put while held: a greeting arrives before the chat it greets."""
        with self._lock:
            if self.closed or self._ending:
                return
            self._held = False
            at = min(self._held_at, len(self._queue))
            self._queue.insert(at, (first, False))
            self._queued += len(first)
            if not self._pumping:
                self._start_pumping()
        if self.overflowed:
            self._shutdown_socket()

    def _send_locked(self, data: bytes, droppable: bool) -> None:
        """Write at once if nothing waits and the socket takes it; queue what it does not."""
        sent = 0
        if not self._pumping:  # (nor is anything queued: that is pumped, or held)
            try:
                sent = send_nowait(self._sock, data)
            except OSError:
                self._close_locked()
                return
            if sent == len(data) and not unsent(self._sock):
                return
        self._backlog_locked(data, sent, droppable)

    def _backlog_locked(self, data: bytes, sent: int, droppable: bool) -> None:
        """Queue what the socket did not take of ``data`` (all but ``sent`` bytes) for the pump."""
        if sent < len(data):
            if sent:  # the rest of a line already half on the wire must follow it
                droppable = False
                self._partial_head = True  # (nothing was queued, or it would not have been sent: the head)
            self._queue_locked(data[sent:], droppable)
        if not (self.closed or self._pumping):
            self._start_pumping()

    def _start_pumping(self) -> None:
        self._pumping = True
        self._direct = False
        self._progress = time.monotonic()
        self._pump.want(self, self._fd)

    def _queue_locked(self, data: bytes, droppable: bool) -> None:
        self._queue.append((data, droppable))
        self._queued += len(data)
        if self._queued > self.limit:
            self._shed()
        if self._queued > self.limit:
            self.overflowed = True
            self._close_locked()

    def _shed(self) -> None:
        """Drop the oldest droppable lines until half the limit is free, so shedding is rare."""
        if self._missed_line is None:
            return
        target = self.limit // 2
        kept: list[tuple[bytes, bool]] = []
        for data, droppable in self._queue:
            if droppable and self._queued > target:
                self._queued -= len(data)
                lines = data.count(b"\n")  # a batch of messages is one entry
                self._missed += lines
                self.missed_total += lines
            else:
                kept.append((data, droppable))
        self._queue = kept

    def flush(self, timeout: float) -> bool:
        """Wait until everything put so far has been handed to the kernel; False on timeout."""
        with self._lock:
            if self._changed is None:
                self._changed = threading.Condition(self._lock)
            return self._changed.wait_for(lambda: self.closed or not self._pumping, timeout)

    def end(self, last: bytes = b"") -> None:
        """Send ``last`` after what was put before, then take no more bytes and make the
        connection's reader see EOF, so it finishes.

        In one step, so no line another thread puts meanwhile can follow ``last`` (a kicked
        member's "You were kicked" is the last line it gets).  What is queued still goes
        out: the reader flushes the outbox as it finishes.
        """
        with self._lock:
            if last and not (self.closed or self._ending):
                if self._held:
                    self._queue_locked(last, False)
                else:
                    self._send_locked(last, False)
            self._ending = True
            self._direct = False
        self._shutdown_socket(socket.SHUT_RDWR if self.overflowed else socket.SHUT_RD)

    def close(self) -> None:
        """Drop what is queued and leave the pump; later puts are ignored."""
        with self._lock:
            self._close_locked()

    def disconnect(self) -> None:
        """Close, and shut the socket down so the connection's reader sees EOF and cleans up."""
        self.close()
        self._shutdown_socket()

    @property
    def queued(self) -> int:
        """Bytes waiting for the pump."""
        return self._queued

    def _close_locked(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued = 0
        self._stop_pumping()

    def _stop_pumping(self) -> None:
        if self._pumping:
            self._pumping = False
            self._pump.forget(self._fd)
        self._direct = self._plain and not (self.closed or self._ending or self._held)
        if self._changed is not None:
            self._changed.notify_all()

    def _shutdown_socket(self, how: int = socket.SHUT_RDWR) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass

    def pump(self) -> None:
        """The pump's turn (the socket can take more): send what it takes, oldest first."""
        with self._lock:
            if not self._pumping:
                return
            if self._held:  # nothing goes until release(), which starts pumping again
                self._stop_pumping()
                return
            if self._missed:  # in place of what was shed, but never inside a line
                line = self._missed_line(self._missed)
                self._queue.insert(1 if self._partial_head else 0, (line, False))
                self._queued += len(line)
                self._missed = 0
            pending = unsent(self._sock)
            try:
                sent = send_nowait(self._sock, self._turn())
            except OSError as exc:  # gone
                log.debug("sending to %s failed: %s", self.name, exc)
                self._close_locked()
                return
            if sent or unsent(self._sock) < pending:
                self._progress = time.monotonic()
            self._consume(sent)
            if not (self._queue or unsent(self._sock)):
                self._stop_pumping()

    def _turn(self) -> bytes:
        """The front of the queue, as much as one send may take."""
        turn, size = [], 0
        for data, _ in self._queue:
            if size >= PUMP_TURN_BYTES:
                break
            turn.append(data)
            size += len(data)
        return b"".join(turn)

    def _consume(self, sent: int) -> None:
        """Take ``sent`` bytes off the front of the queue; a line cut in two keeps its rest first."""
        self._queued -= sent
        whole = 0
        for data, _ in self._queue:
            if sent < len(data):
                break
            sent -= len(data)
            whole += 1
        del self._queue[:whole]
        if whole:
            self._partial_head = False
        if sent:
            self._queue[0] = (self._queue[0][0][sent:], False)
            self._partial_head = True

    def stalled_since(self) -> Optional[float]:
        """When the socket last took something, if the pump is still waiting for it to; else None."""
        with self._lock:
            return self._progress if self._pumping else None

    def cut_off(self) -> None:
        """The socket took nothing for the stall timeout: end the connection."""
        log.debug("%s took nothing for the stall timeout", self.name)
        self.stalled = True
        self.disconnect()


class Pump:
    """The one thread that writes every backlog out as its socket drains, and cuts off the
    connections whose socket takes nothing for ``stall_timeout`` seconds.

    An outbox with a backlog is registered by :meth:`want` (the socket is watched for room
    to write) and leaves by :meth:`forget` when its queue is empty or it closes; both may be
    called from any thread, holding that outbox's lock, and take only the pump's own lock.
    """

    def __init__(self, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, Outbox]] = []  # the earliest a backlog may stall
        self._watched: set[Outbox] = set()  # outboxes with an entry in _deadlines
        self._order = itertools.count()  # ties in the heap never compare outboxes
        self._waker, self._wake = socket.socketpair()
        self._selector.register(self._waker, selectors.EVENT_READ)
        self._stopping = False
        self._next_tick = 0.0  # no cut-offs before this: see CUTOFFS_PER_TICK
        self._thread = threading.Thread(target=self._run, name="outbox-pump", daemon=True)
        self._thread.start()

    def want(self, outbox: Outbox, fd: int) -> None:
        """Write ``outbox``'s backlog as the socket ``fd`` takes it."""
        with self._lock:
            try:
                self._selector.register(fd, selectors.EVENT_WRITE, outbox)
            except KeyError:  # a socket of that number left without forget(): it is closed
                self._selector.modify(fd, selectors.EVENT_WRITE, outbox)
            if outbox in self._watched:
                return
            self._watched.add(outbox)
            wake = not self._deadlines  # the pump may be sleeping with no deadline at all
            heapq.heappush(self._deadlines, (time.monotonic() + self.stall_timeout, next(self._order), outbox))
        if wake:
            self._wake.send(b"x")

    def forget(self, fd: int) -> None:
        """Stop watching the socket ``fd`` (its outbox is empty or closed)."""
        with self._lock:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass

    def stop(self) -> None:
        if self._stopping:  # stopped already (a server may be stopped twice)
            return
        self._stopping = True
        self._wake.send(b"x")
        self._thread.join(5)
        self._selector.close()
        self._waker.close()
        self._wake.close()

    def _run(self) -> None:
        timeout: Optional[float] = None
        while not self._stopping:
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._waker.recv(4096)
                    continue
                try:
                    key.data.pump()
                except Exception:  # noqa: BLE001 - a bug must cost one connection, not every backlog
                    log.exception("writing to %s failed; disconnecting it", key.data.name)
                    key.data.disconnect()
            timeout = self._cut_off_stalled()

    def _cut_off_stalled(self) -> Optional[float]:
        """Cut off (a few at a time) the backlogs that took nothing for the stall timeout;
        how long until the next one may be due."""
        now = time.monotonic()
        if now < self._next_tick:  # the last tick cut off all it may
            return self._next_tick - now
        due: list[Outbox] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now and len(due) < CUTOFFS_PER_TICK:
                due.append(heapq.heappop(self._deadlines)[2])
        for outbox in due:
            since = outbox.stalled_since()
            if since is not None and now - since >= self.stall_timeout:
                outbox.cut_off()
                since = None
            with self._lock:
                if since is None:
                    self._watched.discard(outbox)
                else:
                    heapq.heappush(self._deadlines, (since + self.stall_timeout, next(self._order), outbox))
        if len(due) == CUTOFFS_PER_TICK:
            self._next_tick = now + CUTOFF_TICK_SECONDS
        with self._lock:
            if not self._deadlines:
                return None
            return max(self._deadlines[0][0], self._next_tick) - now
