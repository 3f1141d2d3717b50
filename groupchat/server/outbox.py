"""A connection's outgoing bytes: written at once when the socket takes them, else queued.

This is what keeps one slow reader from slowing anyone else: a sender never blocks on a
peer's socket.  While a peer keeps up, :meth:`Outbox.put` writes straight to its socket
without blocking, so no thread is woken per line; when the socket would block, the rest
waits in a bounded queue that a writer thread, started on demand, drains with one
``sendall`` per batch.

When the queue passes its limit, the oldest room messages in it are dropped (they are in
the history) and the peer is told how many it missed; only if what cannot be dropped
(notices, private messages) passes the limit is the peer cut off.  A peer that takes
nothing at all for the stall timeout is cut off by the socket's send timeout.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Optional, Union

from groupchat.tls import TLSConnection

log = logging.getLogger(__name__)

# A writer thread idle this long exits; the next backlog starts a new one.
WRITER_IDLE_SECONDS = 2.0
# MSG_DONTWAIT makes one send() non-blocking while the handler's recv() stays blocking.
_DONTWAIT: Optional[int] = getattr(socket, "MSG_DONTWAIT", None)


class Outbox:
    """Ordered, bounded, non-blocking delivery of lines to one socket.

    Any thread may call :meth:`put`; bytes go out in the order of the calls.  Lines put
    with ``droppable=True`` may be shed, oldest first, when more than ``limit`` bytes wait;
    the next batch then starts with ``missed(count)``.  If the queue still holds more than
    ``limit``, the outbox closes, shuts the socket down (so its reader sees EOF) and sets
    :attr:`overflowed`.
    """

    def __init__(self, sock: Union[socket.socket, TLSConnection], limit: int, name: str = "peer",
                 missed: Optional[Callable[[int], bytes]] = None) -> None:
        self.limit = limit
        self.overflowed = False  # cut off: what could not be dropped passed the limit
        self.stalled = False  # cut off: took nothing for the socket's send timeout
        self.closed = False
        self.missed_total = 0
        self._sock = sock
        self._name = name
        self._missed_line = missed
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: list[tuple[bytes, bool]] = []  # (data, droppable), oldest first
        self._queued = 0
        self._missed = 0  # lines shed since the last batch went out
        self._writer: Optional[threading.Thread] = None
        self._sending = False
        self._ending = False
        self._held = False  # queue everything until release(): see hold()
        self._partial_head = False  # the queue starts with the rest of a half-sent line
        self._held_at = 0
        # A TLS connection takes no flags: everything goes through the writer there.
        self._direct = _DONTWAIT is not None and type(sock) is socket.socket

    def put(self, data: bytes, droppable: bool = False) -> None:
        """Send ``data`` after everything put before it, without ever blocking on the peer."""
        with self._lock:
            if self.closed or self._ending:
                return
            if self._held:
                self._queue_locked(data, droppable)
            else:
                self._send_locked(data, droppable)
        if self.overflowed:
            self._shutdown_socket()

    def hold(self) -> None:
        """Queue what is put from now on, until :meth:`release` sends something ahead of it."""
        with self._lock:
            self._held = True
            self._held_at = len(self._queue)  # what was queued before still goes first

    def release(self, first: bytes) -> None:
        """Send ``first``, then what was put while held: a greeting arrives before the chat it greets."""
        with self._lock:
            if self.closed or self._ending:
                return
            self._held = False
            at = min(self._held_at, len(self._queue))
            data = b"".join(data for data, _ in self._queue[:at]) + first + b"".join(
                data for data, _ in self._queue[at:])
            self._queue.clear()
            self._queued = 0
            self._send_locked(data, droppable=False)
        if self.overflowed:
            self._shutdown_socket()

    def _send_locked(self, data: bytes, droppable: bool) -> None:
        """Write at once if nothing waits and the socket takes it; queue what it does not."""
        if self._direct and self._writer is None and not self._queue:
            try:
                sent = self._sock.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close_locked()
                return
            if sent == len(data):
                return
            if sent:  # the rest of a line already half on the wire must follow it
                data, droppable = data[sent:], False
                self._partial_head = True  # (the queue was empty: this is its head)
        self._queue_locked(data, droppable)
        if self.closed or self._held:
            return
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._drain, name=f"writer-{self._name}", daemon=True)
            self._writer.start()
        else:
            self._changed.notify()

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
            return self._changed.wait_for(
                lambda: self.closed or not (self._queue or self._sending), timeout)

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
        self._shutdown_socket(socket.SHUT_RDWR if self.overflowed else socket.SHUT_RD)

    def close(self) -> None:
        """Drop what is queued and stop the writer; later puts are ignored."""
        with self._lock:
            self._close_locked()

    def disconnect(self) -> None:
        """Close, and shut the socket down so the connection's reader sees EOF and cleans up."""
        self.close()
        self._shutdown_socket()

    @property
    def queued(self) -> int:
        """Bytes waiting for the writer."""
        return self._queued

    def _close_locked(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued = 0
        self._changed.notify_all()

    def _shutdown_socket(self, how: int = socket.SHUT_RDWR) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass

    def _drain(self) -> None:
        """The writer thread: send the whole backlog in one sendall, until idle or closed."""
        while True:
            with self._lock:
                if self.closed or not self._changed.wait_for(
                        lambda: (self._queue and not self._held) or self.closed, WRITER_IDLE_SECONDS):
                    self._writer = None
                    self._changed.notify_all()
                    return
                chunks = [data for data, _ in self._queue]
                if self._missed:  # in place of what was shed, but never inside a line
                    chunks.insert(1 if self._partial_head else 0, self._missed_line(self._missed))
                    self._missed = 0
                self._partial_head = False
                data = b"".join(chunks)
                self._queue.clear()
                self._queued = 0
                self._sending = True
            try:
                self._sock.sendall(data)
            except OSError as exc:  # gone, or no progress for the send timeout
                log.debug("writer for %s stopped: %s", self._name, exc)
                self.stalled = isinstance(exc, (BlockingIOError, socket.timeout))
                self.disconnect()
            finally:
                with self._lock:
                    self._sending = False
                    self._changed.notify_all()
