"""The chat server: a ThreadingTCPServer whose handlers move bytes between sockets and the chat.

One thread per connection reads and hands lines to :class:`~groupchat.server.chat.Chat`; what the
chat sends goes through each connection's :class:`~groupchat.server.outbox.Outbox`, so no reader
ever waits on somebody else's socket.
"""

from __future__ import annotations

import errno
import logging
import resource
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Callable, Optional, TextIO, Union, cast

from groupchat import __version__
from groupchat.errors import NoNewlineError, ServerStartError
from groupchat.jsonl import BYE_CUT_OFF, BYE_FULL, BYE_REFUSED, BYE_SHUTDOWN, BYE_TIMEOUT, line_allowance
from groupchat.net import IDLE_RECV_BYTES, Reads, address_family, format_address, raise_file_limit, timeval
from groupchat.protocol import DEFAULT_PORT, LineBuffer, encode_line, render_refusal
from groupchat.server.access import Admission, BanList
from groupchat.server.chat import Chat
from groupchat.server.console import Console
from groupchat.server.deadlines import Deadlines
from groupchat.server.flood import BucketTable, FloodControl, TokenBucket, cut_after_lines, paced
from groupchat.server.history import HistoryStore
from groupchat.server.outbox import Outbox, Pump
from groupchat.server.registry import Member, Registry, Stage
from groupchat.server.settings import ServerSettings
from groupchat.server.telnet import TelnetFilter
from groupchat.tls import TLSConnection, describe_tls_error, server_context

log = logging.getLogger(__name__)

RECV_BYTES = 16 * 1024  # the most one read takes (a blocked one holds less: see net.Reads)
TLS_HANDSHAKE_RECORD = b"\x16\x03"  # how a TLS client's first bytes start: not a name
# Handler threads need little stack; small stacks let thousands of them fit.
THREAD_STACK_BYTES = 256 * 1024
SEND_BUFFER_BYTES = 256 * 1024  # plenty for a LAN's bandwidth times its delay
# What a peer can have sent that the server has not read: flood control leaves the rest with
# the peer, rather than megabytes of an autotuned buffer it would relay for hours.
RECEIVE_BUFFER_BYTES = 64 * 1024
FILES_IN_RESERVE = 64  # descriptors for the listener, the history database, logs
# How often serve_forever looks for a stop request: shutdown takes at most this long.
POLL_SECONDS = 0.1
# Once the server has closed every connection, it waits this long at most for their handlers
# to finish (each logs its leave), so that a process about to exit does not cut them short.
LEAVES_SECONDS = 2.0


class ChatHandler(socketserver.BaseRequestHandler):
    """One connection: TLS if served, the handshake, its lines relayed; always unregistered.

    Reads are bounded in time by SO_RCVTIMEO (the handshake, then the idle timeout) rather
    than by Python's socket timeout, which would make the outbox's non-blocking sends wait.
    Over TLS the reader and the outbox's sends (any thread's, or the pump's) share one :class:`TLSConnection`.
    """

    server: "ChatServer"

    def setup(self) -> None:
        self.sock: Union[socket.socket, TLSConnection] = self.request
        self.member: Optional[Member] = None
        self.reason = "connection closed"
        self._unread = 0  # lines the last read left in the kernel's buffer (as far as it looked)
        self._reads = Reads(RECV_BYTES)
        tune_socket(self.sock, self.server.settings.stall_timeout)
        # Absolute from accept, however the bytes arrive: see groupchat.server.deadlines.
        self._handshake = self.server.deadlines.add(self.server.settings.handshake_timeout,
                                                    self._handshake_expired)

    def handle(self) -> None:
        settings = self.server.settings
        set_receive_timeout(self.request, settings.handshake_timeout)
        if self.server.tls is not None and not self._start_tls():
            return
        address = format_address(self.client_address)
        self.outbox = Outbox(self.sock, settings.max_queued_bytes, self.server.pump, name=address,
                             missed=lambda count: self.server.chat.missed_notice(count, self.member.json))
        self.member = Member(address, self.outbox)
        self.server.registry.connect(self.member)
        self.server.chat.greet(self.member)
        try:
            self._relay()
        except BlockingIOError:  # the receive timeout (SO_RCVTIMEO) ran out
            if self.member.name is None:
                self._handshake_expired()
            else:
                self._hang_up(f"nothing came for {settings.idle_timeout:g} seconds", BYE_TIMEOUT)
        except NoNewlineError as exc:
            self._hang_up(str(exc), BYE_CUT_OFF)
        except OSError as exc:
            self.reason = f"connection lost: {exc.strerror or exc}"
        if self.outbox.overflowed or self.outbox.stalled:
            self.reason = (f"not reading: took nothing for {settings.stall_timeout:g} seconds"
                           if self.outbox.stalled else "not reading: too far behind")
            log.warning("%s (%s) disconnected: %s", self.member.name, self.member.address, self.reason)

    def _relay(self) -> None:
        """Read lines and hand them to the chat, no faster than flood control allows; telnet's
        commands are taken out and answered first (see groupchat.server.telnet)."""
        settings = self.server.settings
        receive = self.server.chat.receive
        lines = LineBuffer(settings.max_line)
        member = self.member
        bucket = FloodControl(TokenBucket(settings.rate, settings.burst), self.server.address_budget, member.host)
        hangup = HangupWatch(self.request, self._half_closed)
        telnet = TelnetFilter()
        named = throttled = False
        tries = 0  # names refused so far: each refusal starts the handshake's time again
        data = self._read(bucket)
        if self.server.tls is None and data.startswith(TLS_HANDSHAKE_RECORD):
            self._hang_up("this server does not speak TLS (connect without --tls)")
            return
        while data:
            text, reply = telnet.feed(data)
            if reply:
                self.outbox.put(reply)
            # A JSON operation wraps its text in JSON: the chat holds the text to max_line.
            lines.max_line = line_allowance(settings.max_line) if member.json else settings.max_line
            waiting = lines.feed(text)
            relayed = 0
            napped = False

            def nap(seconds: float) -> bool:
                """Flood control's naps end at once if the peer hangs up or the chat ends it; the
                first of a spell tells the sender why its lines are late."""
                nonlocal napped, throttled
                napped = True
                if not throttled and member.stage is Stage.CHATTING:
                    throttled = True
                    self.server.chat.tell_throttled(member, len(waiting) - relayed + self._unread, bucket.rate)
                return hangup.wait(seconds)

            for run in paced(waiting, bucket, nap):
                if member.stage is Stage.CLOSING:  # nothing more from it is read or acted on
                    return
                receive(member, run)
                relayed += len(run)
                if member.name is None and member.name_tries > tries:  # each name gets its own time
                    tries = member.name_tries
                    self._handshake.cancel()
                    self._handshake = self.server.deadlines.add(settings.handshake_timeout,
                                                                self._handshake_expired)
            if member.stage is Stage.CLOSING:
                return
            if relayed < len(waiting):  # a connection that is gone leaves now, not lines later
                log.info("%s: closed the connection; %d lines it sent were dropped",
                         member.address, len(waiting) - relayed)
                return
            throttled = throttled and napped  # a read that went through at once ends the spell
            if not named and member.name is not None:
                named = True
                self._handshake.cancel()
                set_receive_timeout(self.request, settings.idle_timeout)
            data = self._read(bucket)

    def _read(self, bucket: FloodControl) -> bytes:
        """The next bytes, holding at most a burst of lines when flood control is on, so the
        server never takes in more than it will relay soon (what is unread waits in a small
        kernel buffer, and then in the sender's)."""
        if self.sock is not self.request:  # over TLS, records come whole
            return self.sock.recv(RECV_BYTES)
        if not bucket.rate:
            return self._reads.recv(self.sock)
        peeked = self.sock.recv(IDLE_RECV_BYTES, socket.MSG_PEEK)  # (waiting, it holds little)
        if len(peeked) == IDLE_RECV_BYTES:  # more may wait: look at as much as a read takes
            peeked = self.sock.recv(RECV_BYTES, socket.MSG_PEEK)
        if not peeked:
            return peeked
        cut = cut_after_lines(peeked, bucket.burst)
        self._unread = peeked.count(b"\n", cut)  # lines seen waiting behind what is taken
        return self.sock.recv(cut)

    def _start_tls(self) -> bool:
        """The TLS handshake, in this connection's own thread, bounded by the handshake timeout."""
        try:
            self.sock = TLSConnection(self.request, self.server.tls, server_side=True)
            return True
        except (OSError, ValueError) as exc:
            log.info("%s: TLS handshake failed: %s", format_address(self.client_address),
                     "timed out" if isinstance(exc, BlockingIOError) else describe_tls_error(exc))
            return False

    def _half_closed(self) -> bool:
        """The peer sent FIN while flood control holds its lines: tell it (see HangupWatch);
        False if the connection is over anyway (the chat ended it, which shuts the socket)."""
        if self.member.stage is Stage.CLOSING:
            return False
        self.server.chat.tell(self.member, "You closed your side of the connection; the lines you "
                                           "sent still go out, at the flood-control rate.")
        return True

    def _handshake_expired(self) -> None:
        """No name within the handshake timeout: hang up, from the deadlines thread or this one."""
        why = f"no name came within {self.server.settings.handshake_timeout:g} seconds"
        member = self.member
        if member is None:  # still in the TLS handshake: plain text would be noise
            self.reason = why
            log.info("%s: %s", format_address(self.client_address), why)
            shut_down(self.request)
        elif member.name is None and member.stage is not Stage.CLOSING:
            self._hang_up(why, BYE_TIMEOUT)

    def _hang_up(self, why: str, code: str = BYE_REFUSED) -> None:
        self.reason = why
        log.info("%s: %s", self.member.address, why)
        self.server.chat.refuse(self.member, why, code)

    def finish(self) -> None:
        self._handshake.cancel()
        self.server.admission.release(self.client_address[0])
        if self.member is not None:
            self.outbox.flush(self.server.settings.shutdown_flush)
            self.outbox.close()
            self.server.chat.leave(self.member, self.reason)


class ChatServer(socketserver.ThreadingTCPServer):
    """A groupchat server; use :meth:`serve_forever` in one thread and :meth:`stop` from another."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN
    block_on_close = False

    def __init__(self, address: tuple[str, int], settings: ServerSettings = ServerSettings()) -> None:
        self.settings = settings
        self.registry = Registry()
        self.admission = Admission(BanList(), settings.allow, settings.deny,
                                   settings.max_clients, settings.max_per_address)
        self.tls = server_context(settings.certfile, settings.keyfile) if settings.certfile else None
        self.address_family = address_family(address[0])
        try:  # first, so a server that cannot listen leaves no history files behind
            super().__init__(address, ChatHandler)
        except OSError as exc:
            raise ServerStartError(describe_bind_error(exc, *address)) from exc
        retention = settings.retention_days * 86400 or None
        try:
            self.history = (HistoryStore.open(settings.history_path, retention,
                                              max_bytes=settings.max_history_mb << 20 or None)
                            if settings.history_path else HistoryStore.in_memory(retention))
        except BaseException:
            self.server_close()
            raise
        self.chat = Chat(self.registry, settings, history=self.history, bans=self.admission.bans)
        if settings.redis:
            self._link_cluster(settings.redis)
        self.deadlines = Deadlines()
        self.pump = Pump(settings.stall_timeout)  # every connection's backlog: see outbox.py
        self.address_budget = BucketTable(settings.address_rate, settings.address_burst)  # flood.py
        self._stopping = threading.Event()
        self._notices = threading.Thread(target=self._tell_notices, name="notices", daemon=True)
        self._notices.start()
        threading.Thread(target=self.deadlines.run, name="deadlines", daemon=True).start()

    def _link_cluster(self, url: str) -> None:
        """Make this server a node of the chat shared through the Redis at ``url``; ClusterError
        (one line) if Redis cannot be used, with nothing left open."""
        from groupchat.server.cluster.bridge import Bridge  # redis-py only for a cluster

        try:
            bridge = Bridge(self.chat, url)
            bridge.start()
        except BaseException:
            self.history.close()
            self.server_close()
            raise
        self.chat.cluster = bridge

    def verify_request(self, request: socket.socket, client_address: tuple) -> bool:
        """Admit a connection, or refuse it with one line before a thread is spent on it.

        A full server makes room by hanging up the oldest connection that has given no name
        yet, so connections that never name themselves cannot keep everyone else out.
        """
        refusal = self.admission.admit(client_address[0], over_cap=self.admission.full and self._make_room())
        if refusal is None:
            return True
        log.info("refused %s: %s", format_address(client_address), refusal)
        if self.tls is None:  # on a TLS port, plain text would only be noise to the peer
            try:
                request.send(encode_line(render_refusal(refusal)), socket.MSG_DONTWAIT)
            except OSError:
                pass
        return False

    def _make_room(self) -> bool:
        """Hang up the oldest unnamed connection; False if every connection is named."""
        unnamed = [m for m in self.registry.connections() if m.name is None and m.stage is not Stage.CLOSING]
        if not unnamed:
            return False
        oldest = min(unnamed, key=lambda member: member.since)
        log.info("%s: hung up unnamed to make room", oldest.address)
        oldest.leave_reason = "the server is full"
        self.chat.refuse(oldest, "the server is full and you gave no name", BYE_FULL)
        return True

    def handle_error(self, request: socket.socket, client_address: tuple) -> None:
        """A bug in a handler ends that one connection, logged in one line (traceback at debug)."""
        exc = sys.exc_info()[1]
        log.error("error serving %s: %s: %s", format_address(client_address), type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request(request, client_address)
        except RuntimeError as exc:  # "can't start new thread": refuse this one, keep serving
            log.error("refused %s: %s", format_address(client_address), exc)
            self.admission.release(client_address[0])
            self.shutdown_request(request)

    def _tell_notices(self) -> None:
        """The one thread that tells rooms the joins and leaves that waited (see notices.py),
        and ends the held sessions whose window has passed (see sessions.py)."""
        while not self._stopping.is_set():
            self.chat.notices.wait(POLL_SECONDS * 10)
            self.chat.tell_due_notices()
            self.chat.expire_sessions()

    def stop(self) -> None:
        """Stop accepting, tell everyone the server is going down (the last line each gets: no
        notice that waited follows it), and close every connection."""
        self._stopping.set()
        self.chat.closing = True
        self.chat.notices.wake()
        self._notices.join(POLL_SECONDS * 10)
        self.deadlines.stop()
        self.shutdown()
        if self.chat.cluster is not None:  # while its people are here, so the others hear they left
            self.chat.cluster.close()
        self.chat.announce("Server is shutting down.", bye=BYE_SHUTDOWN)
        deadline = time.monotonic() + self.settings.shutdown_flush
        outboxes = [cast(Outbox, member.link) for member in self.registry.connections()]
        for outbox in outboxes:
            outbox.flush(max(0.0, deadline - time.monotonic()))
        for outbox in outboxes:
            outbox.disconnect()
        leaving_until = time.monotonic() + LEAVES_SECONDS
        while self.registry.connections() and time.monotonic() < leaving_until:
            time.sleep(0.01)
        self.pump.stop()
        self.server_close()
        if not self.history.close():
            log.error("history: %d messages could not be saved", self.history.dropped)


def serve(host: str, port: int, settings: ServerSettings = ServerSettings(),
          console: Optional[TextIO] = None) -> None:
    """Run a server until SIGINT, SIGTERM or end of input on ``console`` (a terminal), then stop it."""
    threading.stack_size(THREAD_STACK_BYTES)
    warn_if_file_limit_low(raise_file_limit(), settings.max_clients)
    server = ChatServer((host, port), settings)
    print(f"groupchat {__version__} serving on {format_address(server.server_address)}", flush=True)
    print("Waiting for clients...", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS},
                     name="accept", daemon=True).start()
    if console is not None and console.isatty() and sys.stdout.isatty():
        Console(server.chat, stopping.set).run_terminal(stopping)  # returns once stopping
    elif console is not None:
        threading.Thread(target=Console(server.chat, stopping.set).run, args=(console,),
                         name="console", daemon=True).start()
    stopping.wait()
    log.info("shutting down")
    server.stop()


def warn_if_file_limit_low(limit: int, max_clients: int) -> None:
    """Warn when the open-file limit cannot hold ``max_clients`` connections."""
    needed = max_clients + FILES_IN_RESERVE
    if max_clients and limit != resource.RLIM_INFINITY and limit < needed:
        log.warning("the open-file limit is %d, too low for --max-clients %d: raise it to %d "
                    "(ulimit -n)", limit, max_clients, needed)


def tune_socket(sock: socket.socket, stall_timeout: float) -> None:
    """No Nagle delay on chat lines; keep-alive probes that find a dead peer in about two
    minutes; a blocking send (TLS's handshake) that makes no progress for ``stall_timeout`` fails;
    fixed kernel buffers, so a peer that stops reading is noticed by its outbox rather than
    hidden in megabytes of autotuned kernel memory, and one that floods is held back there."""
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
               (socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(stall_timeout)),
               (socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES),
               (socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)]
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:  # the peer may be gone already; the first recv will say so
            pass


class HangupWatch:
    """Flood control's waits, ended early when the connection is over.

    A peer that closes its socket first only sends FIN, as one that merely half-closes
    (``printf ... | nc -N``) does, and the two look alike until something is sent to it.  So on
    POLLRDHUP (where the system has it) ``on_half_close`` is called once, to send a line the
    peer should read: a live peer reads it and keeps its lines coming, a closed one answers
    with RST, and the next wait sees POLLERR and ends.  A reset ends a wait at once.
    """

    def __init__(self, sock: socket.socket, on_half_close: Callable[[], bool]) -> None:
        self._fd = sock.fileno()
        self._on_half_close = on_half_close
        self._poll = select.poll()
        self._poll.register(self._fd, _RDHUP)  # POLLHUP and POLLERR are always reported

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; True, early, if the connection is over."""
        events = self._poll.poll(seconds * 1000)
        if not events:
            return False
        if events[0][1] & (select.POLLHUP | select.POLLERR) or not self._on_half_close():
            return True
        self._poll.modify(self._fd, 0)  # told once: from now on only a reset or an error ends it
        return bool(self._poll.poll(seconds * 1000))  # the wait again, in full: it is short


_RDHUP = getattr(select, "POLLRDHUP", 0)


def shut_down(sock: socket.socket) -> None:
    """End both directions of a socket, so the thread reading it wakes; it may be gone already."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    """Make a blocking recv give up (EAGAIN) after ``seconds`` without data; 0 waits for ever.

    SO_RCVTIMEO rather than Python's socket timeout, which would make the outbox's
    non-blocking sends wait for the socket to be writable.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(seconds))


def describe_bind_error(exc: OSError, host: str, port: int) -> str:
    """One line that tells a person why the server could not listen and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host}: stop the other server or choose another --port"
    if exc.errno == errno.EACCES:
        return (f"permission denied to listen on port {port}: ports below 1024 need root; "
                f"use a port above 1023, e.g. --port {DEFAULT_PORT}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
