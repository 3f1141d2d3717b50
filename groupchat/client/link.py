"""The client's connection to the server, kept across drops: connect, handshake, read, reconnect.

:class:`Link` connects to the first of its :class:`Servers` that answers (the addresses given,
every address of each name), runs the handshake, then a reader thread that hands each
event to an :class:`Output` (the person's transcript, or a program's event log).  When the
connection drops, or the server stops for a restart, it reconnects by itself, to the next
address in turn, waiting a :class:`Backoff` between attempts: it resumes the session with its
token and the last id seen in the room or, when the server there does not know it (restarted,
or another node of the chat), joins again under the same name and asks for what was said
meanwhile.  Either way a :class:`~groupchat.client.session.CatchUp` shows the
lines missed, each once, in order, before anything live; so does a ``missed`` event, which the
server sends a reader too slow for the room.  Lines sent while the connection is down wait for
the next one.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections import deque
from typing import Callable, NamedTuple, Optional, Sequence, Union

from groupchat import jsonl
from groupchat.client.session import CatchUp, Handshake, Heard, Sent, Session, Step
from groupchat.errors import ConnectError, ConnectionLostError, GroupchatError, NameRefusedError, NoNewlineError
from groupchat.net import format_address
from groupchat.passwords import PASSWORD_ENV
from groupchat.protocol import MAX_LINE_BYTES, LineBuffer, LineTooLong, encode_line
from groupchat.tls import TLSConnection, describe_tls_error

# For connecting, and then for each answer during the handshake: a port that is not a
# groupchat server (it never asks for a name) fails instead of hanging.
CONNECT_TIMEOUT_SECONDS = 10.0
# A groupchat server greets a plain connection at once; a TLS server says nothing until it
# hears TLS.  After this long without a greeting the client speaks first, and a TLS server
# closes the connection at once.
GREETING_SECONDS = 0.5
# How long to wait for the reader thread once its socket is shut down (it ends at once).
STOP_TIMEOUT_SECONDS = 1.0
READ_BYTES = 64 * 1024
# Longest line taken from the server: a relayed message (MAX_LINE_BYTES, or what a server's
# --max-line allows) as a JSON event, or the answer to /who, which names everyone in the room.
MAX_SERVER_LINE_BYTES = 256 * MAX_LINE_BYTES
SWITCH_TO_JSON = encode_line(f"/mode {jsonl.MODE_JSON}")
QUIT = encode_line("/quit")
ASK_NAME = "Name: "
ASK_PASSWORD = "Password: "
FIRST_DELAY_SECONDS = 0.5
MOST_DELAY_SECONDS = 15.0
# The longest wait between attempts while a server refuses the name as taken, within the
# session's window: the taker is likely the client's own dropped session, held by a node
# that died until its lease runs out (seconds), so the name comes free without warning.
HELD_NAME_DELAY_SECONDS = 2.0

Line = Union[str, LineTooLong]
Connection = Union[socket.socket, TLSConnection]


def parsed(line: Line) -> Heard:
    """What a line from the server is: an event, or text (sent before it read the switch to JSON).

    >>> parsed('{"v":1,"type":"mode","mode":"json"}')["type"], parsed("*** What is your name?")
    ('mode', '*** What is your name?')
    """
    if isinstance(line, LineTooLong):
        return line
    try:
        return jsonl.parse_event(line)
    except ValueError:
        return line


class Output:
    """Takes what the server sends: the session follows it, then :meth:`present` shows it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def present(self, line: Heard, answered: Optional[Sent]) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        """A line from the client itself (reconnected, not sent)."""
        raise NotImplementedError


# -- bytes and sockets --------------------------------------------------------------------

class LineReader:
    """Whole lines from a byte source such as a socket's ``recv`` or a pipe's ``read1``.

    Framing, decoding and cleaning are ``buffer``'s (a :class:`~groupchat.protocol.LineBuffer`);
    this keeps the lines one read produced until they are asked for.

    >>> chunks = iter([b"hi\\nthe", b"re\\nlast"])
    >>> lines = LineReader(lambda size: next(chunks, b""))
    >>> [lines.read_line() for _ in range(4)]
    ['hi', 'there', 'last', None]
    """

    def __init__(self, read: Callable[[int], bytes], buffer: Optional[LineBuffer] = None) -> None:
        self._read = read
        self._buffer = buffer or LineBuffer()
        self._lines: deque[Line] = deque()

    def read_line(self) -> Optional[Line]:
        """The next line, or None once the source has ended; raises what ``read`` and ``feed`` raise."""
        while not self._lines:
            data = self._read(READ_BYTES)
            if not data:
                if not self._buffer.pending:
                    return None
                data = b"\n"  # the source ended mid-line: that last line still counts
            self._lines.extend(self._buffer.feed(data))
        return self._lines.popleft()


class Endpoint(NamedTuple):
    """One address to connect to: ``host`` and ``port`` as given (the name TLS verifies), and
    one of the socket addresses the host has."""

    host: str
    port: int
    family: socket.AddressFamily
    sockaddr: tuple
    shared: bool = False  # the name has other addresses too: say which one this is

    def __str__(self) -> str:
        """How the person is told where the client is.

        >>> str(Endpoint("chat.example.org", 7111, socket.AF_INET6, ("2001:db8::7", 7111, 0, 0), shared=True))
        'chat.example.org:7111 (2001:db8::7)'
        """
        given = format_address((self.host, self.port))
        return f"{given} ({self.sockaddr[0]})" if self.shared else given


def resolve(host: str, port: int) -> list[Endpoint]:
    """Every address of ``host`` (its A and AAAA records, in the resolver's order), or a
    :class:`ConnectError` saying it has none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"unknown host {host} ({exc.strerror})") from exc
    shared = len({info[4][0] for info in infos}) > 1
    return [Endpoint(host, port, family, sockaddr, shared) for family, _, _, _, sockaddr in infos]


def connect(endpoint: Endpoint, tls: Optional[ssl.SSLContext] = None) -> Connection:
    """A connection to the server (IPv4 or IPv6; TLS with ``tls``), or a :class:`ConnectError` saying why.

    It keeps :data:`CONNECT_TIMEOUT_SECONDS` as its timeout, for the TLS and name handshakes.
    """
    address = format_address((endpoint.host, endpoint.port))
    sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_SECONDS)
    try:
        sock.connect(endpoint.sockaddr)
    except OSError as exc:
        sock.close()
        if isinstance(exc, ConnectionRefusedError):
            raise ConnectError(f"connection refused: is a server running on {address}?") from exc
        raise ConnectError(f"cannot reach {address}: {_why(exc)}") from exc  # unreachable, timed out, ...
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        return TLSConnection(sock, tls, server_hostname=endpoint.host)
    except OSError as exc:  # ssl.SSLError is one
        sock.close()
        raise ConnectError(f"TLS with {address} failed: {_tls_failure(exc)}") from exc


class Servers:
    """The addresses given, taken in turn: every address of the first name (its A and AAAA
    records), then of the next, and round again.  A name is resolved when its turn comes, so
    each round sees its records as they are then.

    >>> records = {"chat": ["10.0.0.1", "10.0.0.2"], "spare": ["10.0.0.3"]}
    >>> def fake_resolve(host, port):
    ...     return [Endpoint(host, port, socket.AF_INET, (ip, port)) for ip in records[host]]
    >>> servers = Servers([("chat", 7111), ("spare", 7112)], resolve=fake_resolve)
    >>> [(servers.next().sockaddr[0], servers.round_done) for _ in range(4)]
    [('10.0.0.1', False), ('10.0.0.2', False), ('10.0.0.3', True), ('10.0.0.1', False)]
    """

    def __init__(self, addresses: Sequence[tuple[str, int]],
                 resolve: Callable[[str, int], list[Endpoint]] = resolve) -> None:
        self.addresses = list(addresses)
        self._resolve = resolve
        self._next_name = 0  # the index of the name whose turn comes next
        self._endpoints: deque[Endpoint] = deque()  # the addresses of this name not tried yet

    def next(self) -> Endpoint:
        """The next address in turn; ConnectError for a name that has none (its turn is over)."""
        if not self._endpoints:
            host, port = self.addresses[self._next_name]
            self._next_name = (self._next_name + 1) % len(self.addresses)
            self._endpoints.extend(self._resolve(host, port))
        return self._endpoints.popleft()

    @property
    def round_done(self) -> bool:
        """Whether the address :meth:`next` gave last ended a round: each was tried once."""
        return not self._endpoints and self._next_name == 0


def _tls_failure(exc: OSError) -> str:
    """Why the TLS handshake failed, and what to try."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"certificate verify failed: {describe_tls_error(exc)} "
                "(use --cafile FILE to trust its CA, or --insecure)")
    if isinstance(exc, socket.timeout):
        why = f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    else:
        why = describe_tls_error(exc)
    if "alert" in why:  # the server's own TLS complained (a version or cipher it will not use)
        return why
    return f"{why}: is it serving TLS?"


class Backoff:
    """How long to wait before each attempt to reconnect: 0.5 s doubling up to 15 s, each wait
    drawn between half of that and all of it (jitter), so the thousand clients a restart threw
    out do not all knock in the same instant, and again in the next.

    >>> [Backoff(random=lambda: 1.0).delay(attempt) for attempt in range(1, 8)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    >>> Backoff(random=lambda: 0.0).delay(3), Backoff(random=lambda: 1.0).delay(7, most=2.0)
    (1.0, 2.0)
    """

    def __init__(self, first: float = FIRST_DELAY_SECONDS, most: float = MOST_DELAY_SECONDS,
                 jitter: bool = True, random: Callable[[], float] = random.random) -> None:
        self.first = first
        self.most = most
        self.jitter = jitter
        self._random = random

    def delay(self, attempt: int, most: Optional[float] = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 for the first), at most ``most``
        if that is shorter than the backoff's own limit."""
        delay = min(self.most if most is None else min(most, self.most), self.first * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._random()) if self.jitter else delay


class Link:
    """The chat's connection to the server, across reconnects.

    :meth:`open` connects to the first of ``addresses`` (host, port) that answers and runs the
    handshake in the caller's thread (raising what :func:`connect` and the handshake raise),
    :meth:`start` starts the reader thread, and :meth:`send` sends a line typed by the person;
    :meth:`close` leaves.  With ``reconnect`` the reader reconnects after a drop or a server's
    SHUTDOWN, to the next address in turn, telling ``status`` how it goes (None once back);
    without it, or after a final goodbye (:attr:`Session.final`), a refused name or a
    ban, the link ends: ``end`` is then why (a :class:`~groupchat.errors.GroupchatError`), and
    ``on_end`` is called with it once.  A name refused as taken is tried again while the
    session's window lasts (see :meth:`Session.may_be_held`): a node that died holds it a while.
    """

    def __init__(self, *, addresses: Sequence[tuple[str, int]], output: Output, tls: Optional[ssl.SSLContext] = None,
                 password: Optional[str] = None, reconnect: bool = True, backoff: Optional[Backoff] = None,
                 status: Callable[[Optional[str]], None] = lambda text: None) -> None:
        self.servers = Servers(addresses)
        self.tls = tls
        self.output = output
        self.session: Session = output.session
        self.password = password
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.status = status
        self.end: Optional[GroupchatError] = None
        self.attempts = 0  # reconnect attempts in all, for whoever measures them
        self._lock = threading.Lock()  # the socket, whether it takes lines, the lines waiting
        self._sock: Optional[Connection] = None
        self._lines: Optional[LineReader] = None
        self._live = False  # connected and caught up: typed lines go out at once
        self._waiting: list[str] = []  # typed while not live, in order
        self._unconfirmed: list[Sent] = []  # sent before a drop, never answered
        self._catch_up: Optional[CatchUp] = None
        self._rejoined = False  # the catch-up follows a reconnect (not a slow reader's gap)
        self._connected: Callable[[str], None] = lambda text: None  # told where, on each new server
        self._at: Optional[Endpoint] = None  # the address connected to last
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- the caller's side -------------------------------------------------------------------

    def open(self, handshake: Handshake, ask: Optional[Callable[[str, bool], str]] = None,
             connected: Optional[Callable[[str], None]] = None) -> None:
        """Connect and run ``handshake`` (``ask`` asks the person for a password or another name);
        ``connected`` is told where, once connected, and again whenever a reconnect lands on
        another address."""
        if connected is not None:
            self._connected = connected
        sock = self._first_answer()
        self._use(sock)
        try:
            self.password = _run_handshake(sock, self._lines, handshake, self.take, ask, self.password,
                                           tls=self.tls is not None)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self._live = True

    def start(self, on_end: Callable[[GroupchatError], None]) -> None:
        """Read (and reconnect) in a thread of its own until the link ends."""
        self._thread = threading.Thread(target=self._run, args=(on_end,), name="server-link", daemon=True)
        self._thread.start()

    def send(self, line: str) -> None:
        """Send a line the person typed, or keep it for the next connection while there is none."""
        with self._lock:
            if not self._live:
                self._waiting.append(line)
                return
            try:
                self._sock.sendall(self.session.op_line(line))
            except OSError:
                pass  # the reader sees the drop: the line, unanswered, is sent again after it

    def send_data(self, data: bytes) -> None:
        """Send bytes as they are on the connection there is; ConnectionLostError if there is none."""
        with self._lock:
            sock = self._sock
        if sock is None:
            raise _lost()
        _send(sock, data)

    def close(self, quit: bool = True) -> None:
        """Leave: say ``/quit`` (with ``quit``, so the server ends the session rather than hold
        it), stop reconnecting, and end the reader."""
        self._stopping.set()
        with self._lock:
            sock, live = self._sock, self._live
            self._live = False
        if sock is not None:
            try:
                if quit and live:
                    sock.sendall(QUIT)
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv
            except OSError:
                pass  # the connection is already gone
        self.wait(STOP_TIMEOUT_SECONDS)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait (at most ``timeout``) for the reader to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def live(self) -> bool:
        """Connected, let in and caught up."""
        return self._live

    # -- the reader's side ---------------------------------------------------------------------

    def take(self, line: Heard) -> None:
        """One thing the server sent: followed by the session, kept back by a catch-up or shown."""
        if not isinstance(line, dict):
            self.output.present(line, None)
            return
        answered = self.session.heard(line)
        if line.get("type") == "missed" and self._catch_up is None and self.session.room is not None:
            room = self.session.room
            self._catch_up, ask = CatchUp.after_missed(room, self.session.last_ids.get(room, 0))
            self._rejoined = False
            self._ask([ask])
            return
        if self._catch_up is None:
            self.output.present(line, answered)
            return
        caught = self._catch_up.feed(line, answered)
        for event, sent in caught.show if caught.missed is None else ():
            self.output.present(event, sent)
        self._ask(caught.ask)
        if caught.missed is not None:
            self._caught_up(caught.show, caught.missed)

    def _ask(self, lines: list[str]) -> None:
        with self._lock:
            for line in lines:
                try:
                    self._sock.sendall(self.session.own_line(line))
                except OSError:
                    return  # the reader sees the drop

    def _caught_up(self, shown: list[tuple[dict, Optional[Sent]]], missed: int) -> None:
        """The last missed line is in: say how many, show them, then send what waited."""
        if self._rejoined:
            self.output.note(f"Reconnected: {_count(missed)} follow" if missed else
                             "Reconnected; no messages were missed.")
        else:
            self.output.note(f"You missed {_count(missed)} while you were not reading: here they are.")
        said = [sent.text for event, sent in shown if sent is not None] + [
            event.get("text") for event, _ in shown if event.get("from") == self.session.name]
        for event, sent in shown:
            self.output.present(event, sent)
        self._catch_up = None
        with self._lock:
            resend = []
            for sent in self._unconfirmed:
                if sent.text in said:
                    said.remove(sent.text)  # it reached the server before the drop
                elif sent.op == jsonl.OP_SEND:
                    resend.append(sent.text if not sent.text.startswith("/") else "/" + sent.text)
                else:
                    self.output.note(f"not sent again (it may or may not have run before the drop): {sent.text}")
            lines, self._waiting, self._unconfirmed = resend + self._waiting, [], []
            self._live = True
        for line in lines:
            self.send(line)

    def _run(self, on_end: Callable[[GroupchatError], None]) -> None:
        while True:
            dropped = self._read()
            if self._stopping.is_set() or self.session.quitting:
                self.end = dropped
                break
            bye = self.session.bye
            ended = dropped if bye is None else ConnectionLostError(str(bye.get("message") or dropped))
            if not self.reconnect or self.session.final:
                self.end = ended  # the server's goodbye says why (a kick, a ban, a shutdown)
                break
            self.end = self._reconnect()
            if self.end is not None or self._stopping.is_set():
                break
        self.status(None)
        self.session.labels.close()  # no answer comes now: stop waiting for one
        on_end(self.end or _lost())

    def _read(self) -> ConnectionLostError:
        """Hand what the server sends to :meth:`take` until the connection ends; return why it did."""
        try:
            while (line := self._lines.read_line()) is not None:
                self.take(parsed(line))
            return _lost()
        except OSError as exc:
            return _lost(exc)
        except NoNewlineError as exc:
            return ConnectionLostError(f"the server {exc}")
        finally:
            with self._lock:
                self._live = False
                self._sock.close()

    def _first_answer(self) -> Connection:
        """A connection to the first address that answers, trying each in turn; if none does, a
        ConnectError saying what each said."""
        failures: list[str] = []
        while True:
            try:
                return self._reach(self.servers.next())
            except ConnectError as exc:
                if str(exc) not in failures:  # every address of one name refused: say it once
                    failures.append(str(exc))
                if self.servers.round_done:
                    raise ConnectError(failures[0] if len(failures) == 1 else
                                       "no server answered: " + "; ".join(failures)) from exc

    def _reach(self, endpoint: Endpoint) -> Connection:
        """:func:`connect` to ``endpoint``; the person is told where when it is not where the
        client was last."""
        sock = connect(endpoint, self.tls)
        if endpoint != self._at:
            self._at = endpoint
            self._connected(f"Connected to {endpoint}{_tls_said(self.tls, endpoint.host)}")
        return sock

    def _reconnect(self) -> Optional[GroupchatError]:
        """Connect again, to the next address in turn and with growing waits, until let in
        (None) or refused for good (why)."""
        room = self._catch_up.room if self._catch_up is not None else self.session.room
        since = self._catch_up.since if self._catch_up is not None else self.session.last_ids.get(room, 0)
        self._unconfirmed += self.session.labels.take_unanswered()
        dropped = time.monotonic()
        held: Optional[str] = None  # a server's reason for refusing the name, while it may be ours
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            delay = self.backoff.delay(attempt, most=HELD_NAME_DELAY_SECONDS if held else None)
            why = f"; {held}, perhaps by your own session" if held else ""
            self.status(f"Connection lost{why}; reconnecting in {delay:.1f} s (attempt {attempt})...")
            if self._stopping.wait(delay):
                return None
            try:
                sock = self._reach(self.servers.next())
            except ConnectError:
                continue  # the server is not back yet: the next in turn may be
            self._use(sock)
            self.session.bye = None
            self._catch_up, self._rejoined = CatchUp(room, since), True
            handshake = Handshake(self.session.name, resume=self.session.resume_line(since))
            try:
                _run_handshake(sock, self._lines, handshake, self.take, None, self.password, tls=self.tls is not None)
            except NameRefusedError as exc:
                sock.close()
                if not (handshake.name_taken and self.session.may_be_held(time.monotonic() - dropped)):
                    return exc
                held = handshake.refusal
                continue
            except (ConnectError, ConnectionLostError) as exc:
                sock.close()
                if self.session.final:
                    return exc
                continue  # refused for now (a full server), or it did not answer in time
            except OSError:
                sock.close()
                continue
            self.status(None)
            return None

    def _use(self, sock: Connection) -> None:
        with self._lock:
            self._sock = sock
            self._lines = LineReader(sock.recv, LineBuffer(MAX_SERVER_LINE_BYTES, collapse_blanks=False))


def _tls_said(tls: Optional[ssl.SSLContext], host: str) -> str:
    """What the line saying where the client connected adds about TLS.

    >>> _tls_said(None, "localhost"), _tls_said(ssl.create_default_context(), "chat.example.org")
    ('', ' with TLS, certificate verified for chat.example.org')
    """
    if tls is None:
        return ""
    if tls.verify_mode == ssl.CERT_NONE:
        return " with TLS, certificate not verified (--insecure)"
    return f" with TLS, certificate verified for {host}"


def _count(messages: int) -> str:
    """How many messages were missed, in words.

    >>> _count(1), _count(12)
    ('1 missed message', '12 missed messages')
    """
    return f"{messages:,} missed message{'s' if messages != 1 else ''}"


def _run_handshake(sock: Connection, lines: LineReader, handshake: Handshake, take: Callable[[Heard], None],
                   ask: Optional[Callable[[str, bool], str]], password: Optional[str], tls: bool) -> Optional[str]:
    """Run the handshake until the server lets you in.

    ``ask(question, secret)`` asks the person at the terminal.  Without it (no terminal) a
    refused name raises :class:`NameRefusedError`, and a password asked for and not given
    :class:`ConnectError`.  A refused password is a :class:`ConnectError` either way.
    Returns the password given, if one was asked for, for the next connection.
    """
    given = password is not None  # by the caller, not typed at the terminal
    if not tls:
        sock.settimeout(GREETING_SECONDS)
    while True:
        try:
            line = parsed(_handshake_line(lines, handshake, tls))
        except _Silent:  # a plain client at a TLS server waits for a greeting that never comes
            _send(sock, SWITCH_TO_JSON)
            handshake.probe()
            sock.settimeout(CONNECT_TIMEOUT_SECONDS)
            continue
        sock.settimeout(CONNECT_TIMEOUT_SECONDS)  # for each answer from now on
        step = handshake.feed(line)
        if step is not Step.SWITCH:  # the greeting in text is asked again as an event
            take(line)
        if step is Step.SWITCH:
            _send(sock, SWITCH_TO_JSON)
        elif step is Step.NO_JSON:
            raise ConnectError("the server has no JSON mode, which this client needs: "
                               "is it an older groupchat server?")
        elif step is Step.SEND_PASSWORD:
            if password is None:
                if ask is None:
                    raise ConnectError("the server wants a password, and stdin is not a terminal "
                                       "to ask for it")
                password = ask(ASK_PASSWORD, True)
            _send(sock, encode_line(password))
        elif step is Step.PASSWORD_REFUSED:
            raise ConnectError("the server refused the password" +
                               (f" (from --password-file or {PASSWORD_ENV})" if given else ""))
        elif step is Step.SEND_RESUME:
            _send(sock, encode_line(handshake.resume))
        elif step is Step.SEND_NAME:
            _send(sock, encode_line(handshake.name))
        elif step is Step.ASK_ANOTHER_NAME:
            if ask is None:
                raise NameRefusedError(f'the server refused the name "{handshake.name}": '
                                       f"{handshake.refusal}; choose another with --name")
            handshake.rename(ask(ASK_NAME, False))
            _send(sock, encode_line(handshake.name))
        elif step is Step.JOINED:
            sock.settimeout(None)
            return password


class _Silent(Exception):
    """The server has not greeted a plain connection in :data:`GREETING_SECONDS`."""


def _handshake_line(lines: LineReader, handshake: Handshake, tls: bool) -> Line:
    try:
        line = lines.read_line()
    except socket.timeout as exc:
        if not tls and not handshake.greeted and not handshake.probed:
            raise _Silent() from exc
        # A TLS server says nothing until it hears TLS: a plain client just waits.
        hint = "" if tls else " (one that serves TLS needs --tls)"
        raise ConnectError(f"the server sent no answer within {CONNECT_TIMEOUT_SECONDS:g} s: "
                           f"is it a groupchat server{hint}?") from exc
    except OSError as exc:
        raise _lost(exc) from exc
    except NoNewlineError as exc:
        raise ConnectError(f"the server {exc}: is it a groupchat server?") from exc
    if line is None and handshake.probed and not handshake.greeted:
        raise ConnectError("the server closed the connection as soon as it heard plain text, "
                           "before any greeting: it serves TLS; use --tls")
    if line is None:
        why = f": {handshake.refusal}" if handshake.refusal else ""
        raise ConnectionLostError(f"the server closed the connection before letting you in{why}")
    return line


def _send(sock: Connection, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise _lost(exc) from exc


def _lost(exc: Optional[OSError] = None) -> ConnectionLostError:
    """The error for a connection that ended: closed by the server (no ``exc``), or broken."""
    if exc is None:
        return ConnectionLostError("the server closed the connection")
    return ConnectionLostError(f"lost the connection to the server: {_why(exc)}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
