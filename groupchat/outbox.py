"""A connection's outgoing bytes: written at once when the socket takes them, else queued.

This is what keeps one slow reader from slowing anyone else: a sender never blocks on a
peer's socket.  While a peer keeps up, :meth:`Outbox.put` writes straight to its socket
without blocking, so no thread is woken per line; when the socket would block, the rest
waits in a bounded queue that a writer thread, started on demand, drains with one
``sendall`` per batch.  A peer whose queue passes its limit is cut off.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Optional

log = logging.getLogger(__name__)

# A writer thread idle this long exits; the next backlog starts a new one.
WRITER_IDLE_SECONDS = 2.0
# MSG_DONTWAIT makes one send() non-blocking while the handler's recv() stays blocking.
_DONTWAIT: Optional[int] = getattr(socket, "MSG_DONTWAIT", None)


class Outbox:
    """Ordered, bounded, non-blocking delivery of bytes to one socket.

    Any thread may call :meth:`put`; bytes go out in the order of the calls.  When more than
    ``limit`` bytes wait, the outbox closes, shuts the socket down (so its reader sees EOF)
    and sets :attr:`overflowed`; ``on_close`` is then called once, outside the lock.
    """

    def __init__(self, sock: socket.socket, limit: int, name: str = "peer") -> None:
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self._sock = sock
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: list[bytes] = []
        self._queued = 0
        self._writer: Optional[threading.Thread] = None
        self._sending = False
        self._ending = False
        # TLS sockets take no flags: everything goes through the writer there.
        self._direct = _DONTWAIT is not None and type(sock) is socket.socket

    def put(self, data: bytes) -> None:
        """Send ``data`` after everything put before it, without ever blocking on the peer."""
        with self._lock:
            if self.closed or self._ending:
                return
            if self._direct and self._writer is None:
                try:
                    sent = self._sock.send(data, _DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._close_locked()
                    return
                if sent == len(data):
                    return
                data = data[sent:]
            self._queue.append(data)
            self._queued += len(data)
            if self._queued > self.limit:
                self.overflowed = True
                self._close_locked()
            elif self._writer is None:
                self._writer = threading.Thread(
                    target=self._drain, name=f"writer-{self._name}", daemon=True)
                self._writer.start()
            else:
                self._changed.notify()
        if self.overflowed:
            self._shutdown_socket()

    def flush(self, timeout: float) -> bool:
        """Wait until everything put so far has been handed to the kernel; False on timeout."""
        with self._lock:
            return self._changed.wait_for(
                lambda: self.closed or not (self._queue or self._sending), timeout)

    def close(self) -> None:
        """Drop what is queued and stop the writer; later puts are ignored."""
        with self._lock:
            self._close_locked()

    def end(self) -> None:
        """Take no more bytes and make the connection's reader see EOF, so it finishes.

        What is queued still goes out: the reader flushes the outbox as it finishes.
        """
        with self._lock:
            self._ending = True
        self._shutdown_socket(socket.SHUT_RD)

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
            # socket.socket's own shutdown: SSLSocket's would drop TLS for the bytes after it.
            socket.socket.shutdown(self._sock, how)
        except OSError:
            pass

    def _drain(self) -> None:
        """The writer thread: send the whole backlog in one sendall, until idle or closed."""
        while True:
            with self._lock:
                if self.closed or not self._changed.wait_for(lambda: self._queue or self.closed,
                                                             WRITER_IDLE_SECONDS):
                    self._writer = None
                    self._changed.notify_all()
                    return
                data = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                self._sending = True
            try:
                self._sock.sendall(data)
            except OSError as exc:
                log.debug("writer for %s stopped: %s", self._name, exc)
                self.disconnect()
            finally:
                with self._lock:
                    self._sending = False
                    self._changed.notify_all()
