"""TLS settings for both ends: TLS 1.2 or newer, certificates verified by default."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Optional

from groupchat.errors import ConnectError, ServerStartError
from groupchat.net import DONTWAIT, Reads

READ_BYTES = 64 * 1024


def server_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """The server's context, or :class:`ServerStartError` saying which file is wrong and how."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise ServerStartError(f"cannot read {exc.filename or certfile}: no such file") from exc
    except PermissionError as exc:
        raise ServerStartError(f"cannot read {exc.filename or certfile}: permission denied") from exc
    except (ssl.SSLError, OSError) as exc:
        raise ServerStartError(f"cannot use certificate {certfile} with key {keyfile or certfile}: "
                               f"{describe_tls_error(exc)}") from exc
    return context


def client_context(cafile: Optional[str] = None, insecure: bool = False) -> ssl.SSLContext:
    """The client's context: verifies the server against the system's CAs or ``cafile``."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectError(f"cannot use CA file {cafile}: {describe_tls_error(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:  # the person asked for it by name: --insecure
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_tls_error(exc: BaseException) -> str:
    """The reason OpenSSL gave, without its library codes."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or str(exc)


class TLSConnection:
    """A TLS connection one thread reads while another sends: the part of a socket both ends use.

    An ``SSLSocket`` will not do.  OpenSSL forbids two threads in one connection at once
    (Python's ssl module takes no lock for it before 3.13), and it cannot half-close: its
    ``shutdown`` drops TLS from under the other thread, ``unwrap`` rejects what the server sends
    meanwhile, and a bare TCP half-close is an unexpected EOF after which the server can no
    longer answer.  So TLS runs on an :class:`ssl.SSLObject` over memory buffers, behind a lock
    held only while OpenSSL works; the socket's blocking reads and writes happen outside it.
    ``shutdown(SHUT_WR)`` sends close_notify, then the TCP FIN, and the server can still answer.
    The socket stays a plain blocking one, so its timeouts (SO_RCVTIMEO, SO_SNDTIMEO, or
    Python's) bound the handshake and every read and write.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext,
                 server_hostname: Optional[str] = None, server_side: bool = False) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._lock = threading.Lock()  # held for every call into OpenSSL, and only for that
        self._sending = threading.Lock()  # keeps records in order on the wire; taken before _lock
        self._plain = bytearray()  # decrypted, not yet asked for (only the reading thread uses it)
        self._unsent = bytearray()  # records send_nowait made, not yet taken by the kernel
        self._ended = False  # the server closed: close_notify, or the socket's end
        self._reads = Reads(READ_BYTES)  # (an idle connection's blocked read holds little)
        self._handshake()

    def __enter__(self) -> TLSConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes the peer sent, waiting for some; b"" once it has closed."""
        while not self._plain and not self._ended:
            self._take(self._reads.recv(self._sock))
        data = bytes(self._plain[:size])
        del self._plain[:size]
        return data

    def sendall(self, data: bytes) -> None:
        with self._sending:
            with self._lock:
                self._tls.write(data)
                records = self._records()
            self._sock.sendall(records)

    def send_nowait(self, data: bytes) -> int:
        """Encrypt ``data`` and hand the kernel what it takes without blocking; the rest of the
        records wait in :attr:`unsent` for the next call.  Takes all of ``data``, or none of it
        (0) while earlier records still wait or another thread is sending."""
        if not self._sending.acquire(blocking=False):
            return 0
        try:
            with self._lock:
                if data and not self._unsent:
                    self._tls.write(data)
                    self._unsent += self._outgoing.read()
                    taken = len(data)
                else:
                    taken = 0
            try:
                sent = self._sock.send(self._unsent, DONTWAIT) if self._unsent else 0
            except BlockingIOError:
                sent = 0
            del self._unsent[:sent]
            return taken
        finally:
            self._sending.release()

    @property
    def unsent(self) -> int:
        """Bytes of records :meth:`send_nowait` made that the kernel has not taken yet."""
        return len(self._unsent)

    def shutdown(self, how: int) -> None:
        """Shut down the socket; closing the sending side sends close_notify first."""
        if how == socket.SHUT_WR:
            with self._sending:
                with self._lock:
                    try:
                        self._tls.unwrap()
                    except ssl.SSLWantReadError:
                        pass  # close_notify is out; the server's own is not awaited
                    records = self._records()
                self._sock.sendall(records)
        self._sock.shutdown(how)

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, seconds: Optional[float]) -> None:
        self._sock.settimeout(seconds)

    def close(self) -> None:
        self._sock.close()

    def _handshake(self) -> None:
        """The TLS handshake, bounded by the socket's timeout; it raises what OpenSSL raises."""
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                    self._drain()  # what the server sent with its last handshake message
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(READ_BYTES)
                if not data:
                    raise ConnectionResetError("the peer closed the connection mid-handshake")
                with self._lock:
                    self._incoming.write(data)
            except ssl.SSLError:
                try:
                    self._flush()  # the alert tells the peer why
                except OSError:
                    pass  # the error to report is OpenSSL's
                raise

    def _take(self, data: bytes) -> None:
        """Feed what the socket read (b"": its end), then answer what TLS itself asks, if anything."""
        with self._lock:
            if data:
                self._incoming.write(data)
                self._drain()
            else:
                self._ended = True  # without close_notify, as a groupchat server closes
            # Rare (a TLS 1.3 key update): otherwise reading never waits for sending.
            answer = self._outgoing.pending
        if answer:
            self._flush()

    def _drain(self) -> None:
        """Decrypt every whole record waiting, so that ``shutdown`` finds none to choke on.

        Holding the lock.  (OpenSSL's shutdown rejects application data it reads.)
        """
        while not self._ended:
            try:
                data = self._tls.read(READ_BYTES)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                data = b""
            self._plain += data
            self._ended = not data

    def _flush(self) -> None:
        """Send whatever records OpenSSL has made."""
        with self._sending:
            with self._lock:
                records = self._records()
            if records:
                self._sock.sendall(records)

    def _records(self) -> bytes:
        """Records to send now, holding both locks: those still unsent go first."""
        records = bytes(self._unsent) + self._outgoing.read()
        self._unsent.clear()
        return records
