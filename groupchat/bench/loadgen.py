"""The benchmark's load generator: worker processes that play many chat clients each.

A worker owns some of the benchmark's clients and drives them all from one thread with
non-blocking sockets and one selector (epoll on Linux), so a thousand clients cost one
process, not a thousand threads.  Clients can be spread over several workers
(:class:`LoadGenerator`) so that the generator is never the bottleneck: the server is what
is measured, and each worker reports the CPU it used.

Every line a sender sends says who sent it, its sequence number and when it was sent
(``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process on a Linux host)::

    ~SENDER:SEQ:SENT_NS:xxxxxxxx...

so each receiver can check, per sender, that every line came exactly once and in order
(:class:`SequenceChecker`), and how long it took.  Given several addresses (the nodes of a
cluster), client ``i`` connects to address ``i mod N``, so a receiver knows which senders are
on another node and keeps their latencies apart: the cross-node figures.  In groupchat's JSON Lines mode
(:data:`MODE_JSON`) the clients send the same plain lines and find them in the ``text`` of
the ``msg`` events they receive, every event parsed as a program would.

A worker's life, driven by its parent over a pipe: connect and do the handshake for each
client (a bounded number at a time), report ``ready``; on ``go`` send (flat out, or at a
fixed rate) and receive until every expected line is in or nothing happens for
``timeout`` seconds, report ``done``; keep reading until ``stop``.
"""

from __future__ import annotations

import errno
import heapq
import json
import multiprocessing
import os
import re
import resource
import selectors
import socket
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable, Optional, Sequence

from groupchat.errors import BenchError
from groupchat.jsonl import parse_event
from groupchat.net import raise_file_limit
from groupchat.protocol import MISSED_START, NAME_PROMPT, WELCOME_PREFIX, is_refusal, parse_line, parse_missed

# How a target greets a client: groupchat and the naive relay ask a name and welcome it;
# ncat --chat asks nothing and prefixes each chunk it relays with "<userN> "; in JSON mode
# the client asks groupchat for JSON Lines first, and the handshake comes as events.
MODE_HANDSHAKE = "handshake"
MODE_NCAT = "ncat"
MODE_JSON = "json"
NCAT_WELCOME = b"<announce> already connected: "
JSON_SWITCH = b"/mode json\n"
# What a line of the handshake asks of a client (see handshake_step).
WAIT, ANSWER_NAME, WELCOMED, REFUSED = "wait", "answer name", "welcomed", "refused"

RECV_BYTES = 256 * 1024
SEND_BATCH_BYTES = 16 * 1024
# Sends a flat-out sender makes per wake-up, so that no sender starves the readers.
BATCHES_PER_WAKE = 4
# Connections a worker has between connect() and welcome at once: enough to keep the
# server's accept loop busy, few enough not to overflow its listen backlog (a SYN dropped
# there is retried after 1, 3, 7, 15 s...).
CONNECT_WINDOW = 64
PROGRESS_SECONDS = 0.25
# File descriptors a worker keeps for itself beyond its clients'.
SPARE_FDS = 32
# How long a worker may take to start, and to close its sockets once told to stop.
WORKER_START_SECONDS = 30.0
WORKER_STOP_SECONDS = 10.0
# A worker silent this long (it reports progress several times a second) is stuck.
HANG_SECONDS = 30.0

_BENCH_LINE = re.compile(rb"~(\d+):(\d+):(\d+):")
_BENCH_TEXT = re.compile(r"~(\d+):(\d+):(\d+):")  # a msg event's text, decoded
# groupchat drops room messages a reader is too slow for, and says how many in their place.
_MISSED_START = MISSED_START.encode()


def count_missed(data: bytes) -> int:
    """How many lines the server said it dropped for this reader, in the notices in ``data``.

    >>> count_missed(b"[12:00] *** You missed 3 messages while you were not reading; /history 3 "
    ...              b"shows them.\\n[12:00] <c1> ~1:1:1:\\n")
    3
    """
    return sum(parse_missed(parse_line(line).text) or 0
               for line in data.decode(errors="replace").split("\n") if MISSED_START in line)


def make_line(sender: int, seq: int, sent_ns: int, size: int) -> bytes:
    """One bench line, padded to ``size`` bytes with its newline (never shorter than its header).

    >>> make_line(3, 7, 1000, 16)
    b'~3:7:1000:xxxxx\\n'
    >>> scan_lines(b"[12:00] <c3> " + make_line(3, 7, 1000, 16) + b"[12:00] *** c4 joined\\n")
    [(3, 7, 1000)]
    """
    head = b"~%d:%d:%d:" % (sender, seq, sent_ns)
    return head + b"x" * (size - len(head) - 1) + b"\n"


def scan_lines(data: bytes) -> list[tuple[int, int, int]]:
    """``(sender, seq, sent_ns)`` of every bench line in ``data`` (whole lines; others skipped)."""
    return [(int(s), int(n), int(t)) for s, n, t in _BENCH_LINE.findall(data)]


def scan_events(data: bytes) -> tuple[list[tuple[str, str, str]], int, int]:
    """What whole JSON Lines hold for the bench: the ``(sender, seq, sent_ns)`` of each bench
    line in a ``msg`` event's text, how many messages ``missed`` events say were dropped, and
    how many lines were no event at all.

    >>> scan_events(b'{"v":1,"type":"msg","from":"c3","text":"~3:7:1000:xx"}\\n'
    ...             b'{"v":1,"type":"missed","count":4}\\n{"v":1,"type":"join","names":["c5"]}\\n'
    ...             b'[12:00] <c3> ~3:8:1000:xx\\n')
    ([('3', '7', '1000')], 4, 1)
    """
    try:  # every line in one call: a JSON array of the lines
        events = json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]")
    except ValueError:  # some line is not JSON: take them one by one
        events = [_json_or_none(line) for line in data.splitlines()]
    found = []
    missed = bad = 0
    for event in events:
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "msg":
            if match := _BENCH_TEXT.match(event["text"]):
                found.append(match.groups())
        elif kind == "missed":
            missed += event["count"]
        elif kind is None:
            bad += 1
    return found, missed, bad


def _json_or_none(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None


def handshake_step(mode: str, line: bytes) -> tuple[str, str]:
    """What one line a target sends before its welcome asks of a client: :data:`WAIT`,
    :data:`ANSWER_NAME`, :data:`WELCOMED`, or :data:`REFUSED` with why.

    >>> handshake_step(MODE_HANDSHAKE, NAME_PROMPT.encode())
    ('answer name', '')
    >>> handshake_step(MODE_JSON, NAME_PROMPT.encode())  # the prompt before the switch: asked again
    ('wait', '')
    >>> handshake_step(MODE_JSON, b'{"v":1,"type":"error","code":"NAME_TAKEN","message":"taken"}')
    ('refused', 'NAME_TAKEN: taken')
    """
    if mode == MODE_NCAT:
        return (WELCOMED if line.startswith(NCAT_WELCOME) else WAIT), ""
    text = line.decode("utf-8", "replace")
    if mode != MODE_JSON:
        if text == NAME_PROMPT:
            return ANSWER_NAME, ""
        if is_refusal(text):
            return REFUSED, text
        return (WELCOMED if text.startswith(WELCOME_PREFIX) else WAIT), ""
    if not text.startswith("{"):
        return WAIT, ""
    try:
        event = parse_event(text)
    except ValueError:
        return REFUSED, f"not a JSON event: {text[:80]}"
    kind = event["type"]
    if kind == "prompt" and event.get("for") == "name":
        return ANSWER_NAME, ""
    if kind in ("error", "bye"):
        return REFUSED, f"{event.get('code')}: {event.get('message')}"
    return (WELCOMED if kind == "welcome" else WAIT), ""


class SequenceChecker:
    """What one receiver got: from each expected sender, lines ``0..count-1``, each once, in order.

    :meth:`record` takes the deliveries as they come; a line that comes after a later one
    from the same sender is out of order, one that comes twice is duplicated, and whatever
    never came is lost.  Senders in ``remote`` are on another node than the receiver: their
    lines' latencies are kept apart by :meth:`record_all`.

    >>> check = SequenceChecker(senders=[1, 2], count=3)
    >>> [check.record(1, n) for n in (0, 2, 1, 1)]
    [True, True, True, False]
    >>> check.received, check.out_of_order, check.duplicated, check.lost
    (3, 1, 1, 3)
    """

    def __init__(self, senders: Iterable[int], count: int, remote: Iterable[int] = ()) -> None:
        self.count = count
        self._remote = frozenset(remote)
        self._next = {sender: 0 for sender in senders}
        self._missing: dict[int, set[int]] = {}
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.unexpected = 0  # from a sender not expected, a sequence number out of range, or no event

    def record(self, sender: int, seq: int) -> bool:
        """Take one delivery; return whether it was a line not received before."""
        if self._next.get(sender) == seq < self.count:  # the usual case
            self._next[sender] = seq + 1
        elif not self._irregular(sender, seq):
            return False
        self.received += 1
        return True

    def record_all(self, deliveries: Iterable[tuple[bytes, bytes, bytes]], now_ns: int,
                   latencies: array, cross_node: array) -> int:
        """Take many deliveries as :data:`_BENCH_LINE` finds them, ``(sender, seq, sent_ns)``.

        Appends the latency of each new line to ``latencies``, or to ``cross_node`` if its
        sender is remote; returns how many were new.  This is the load generator's inner loop,
        so :meth:`record` is inlined.

        >>> check, latencies, cross = SequenceChecker([4, 5], 3, remote=[5]), array("q"), array("q")
        >>> check.record_all([(b"4", b"0", b"10"), (b"4", b"1", b"10"), (b"4", b"1", b"12"),
        ...                   (b"5", b"0", b"13")], 15, latencies, cross)
        3
        >>> list(latencies), list(cross), check.duplicated
        ([5, 5], [2], 1)
        """
        expected = self._next
        count = self.count
        remote = self._remote
        new = 0
        last_sent = latency = None
        for sender_field, seq_field, sent_field in deliveries:
            sender = int(sender_field)
            seq = int(seq_field)
            if expected.get(sender) == seq < count:
                expected[sender] = seq + 1
            elif not self._irregular(sender, seq):
                continue
            new += 1
            if sent_field != last_sent:  # lines sent together share their time: convert it once
                last_sent = sent_field
                latency = now_ns - int(sent_field)
            (cross_node if sender in remote else latencies).append(latency)
        self.received += new
        return new

    def _irregular(self, sender: int, seq: int) -> bool:
        """Any delivery but the next expected one; return whether it was new."""
        expected = self._next.get(sender)
        if expected is None or not 0 <= seq < self.count:
            self.unexpected += 1
            return False
        if seq > expected:
            self._missing.setdefault(sender, set()).update(range(expected, seq))
            self._next[sender] = seq + 1
            return True
        if seq in self._missing.get(sender, ()):
            self._missing[sender].discard(seq)
            self.out_of_order += 1
            return True
        self.duplicated += 1
        return False

    @property
    def expected(self) -> int:
        return self.count * len(self._next)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def complete(self) -> bool:
        return self.received == self.expected

    @property
    def finished(self) -> bool:
        """Whether every sender's last line is in: whatever is missing now is not coming."""
        return all(expected >= self.count for expected in self._next.values())


_NCAT_MARK = re.compile(rb"<(user\d+|announce)> ")


class NcatDemux:
    """Takes apart the stream ``ncat --chat`` sends one client back into whole lines.

    ncat relays each chunk it reads, not each line, prefixed with ``<userN> `` once: so a
    line can be cut in two with another user's chunk in between.  The demux keeps an
    unfinished line per source and gives back only complete ones (bench lines never hold
    a "<", so every "<" starts a prefix).

    >>> demux = NcatDemux()
    >>> demux.feed(b"<user4> a1\\na")
    b'a1\\n'
    >>> demux.feed(b"2\\n<user5> b1\\n<us")
    b'a2\\nb1\\n'
    >>> demux.feed(b"er4> a3\\n")
    b'a3\\n'
    """

    def __init__(self) -> None:
        self._source = b""
        self._tails: dict[bytes, bytes] = {}
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        """Return the lines completed by ``data``, their prefixes removed."""
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if not self._tails and data.endswith(b"\n") and data.count(b"<") == 1:
            mark = _NCAT_MARK.match(data)  # the usual case: one whole chunk of whole lines
            if mark:
                self._source = mark.group(1)
                return data[mark.end():]
        last = data.rfind(b"<")
        if last >= 0 and not _NCAT_MARK.match(data, last) and b"\n" not in data[last:] \
                and len(data) - last < 24:  # may be a prefix cut short: wait for the rest
            data, self._carry = data[:last], data[last:]
        lines: list[bytes] = []
        start = 0
        for mark in _NCAT_MARK.finditer(data):
            self._take(data[start:mark.start()], lines)
            self._source = mark.group(1)
            start = mark.end()
        self._take(data[start:], lines)
        return b"".join(lines)

    def _take(self, piece: bytes, lines: list[bytes]) -> None:
        if not piece:
            return
        text = self._tails.pop(self._source, b"") + piece
        cut = text.rfind(b"\n") + 1
        if cut:
            lines.append(text[:cut])
        if cut < len(text):
            self._tails[self._source] = text[cut:]


def cpu_seconds() -> float:
    """User plus system CPU this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one worker process ---------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerSpec:
    """What one worker is to do; sent to it when it starts."""

    addresses: tuple[tuple[str, int], ...]  # client i connects to addresses[i % len(addresses)]
    mode: str  # MODE_HANDSHAKE, MODE_NCAT or MODE_JSON
    client_ids: tuple[int, ...]  # the clients this worker plays
    sender_ids: tuple[int, ...]  # every sender of the benchmark, in any worker
    messages: int  # lines per sender
    size: int  # bytes per line
    rate: float  # lines per second per sender; 0: as fast as the server takes them
    timeout: float  # seconds without progress before giving up
    name_prefix: str = "c"
    connect_window: int = CONNECT_WINDOW


@dataclass
class WorkerReport:
    """What a worker tells its parent when its clients are done (or it gave up)."""

    expected: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    dropped: int = 0  # clients whose connection closed before they were done
    shed: int = 0  # lines the server said it dropped because a reader was too slow
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)
    latencies_ns: array = field(default_factory=lambda: array("q"))  # senders on the receiver's node
    cross_node_latencies_ns: array = field(default_factory=lambda: array("q"))
    cpu_seconds: float = 0.0  # from go to done
    go_ns: int = 0
    last_delivery_ns: int = 0
    done_ns: int = 0


_CONNECTING, _GREETING, _READY, _CLOSED = range(4)


class _Client:
    __slots__ = ("id", "name", "sock", "state", "tail", "out", "next_seq", "checker", "demux",
                 "is_sender", "writing")

    def __init__(self, client_id: int, name: str, checker: SequenceChecker, is_sender: bool,
                 demux: Optional[NcatDemux]) -> None:
        self.id = client_id
        self.name = name
        self.sock: Optional[socket.socket] = None
        self.state = _CONNECTING
        self.tail = b""
        self.out = b""
        self.next_seq = 0
        self.checker = checker
        self.demux = demux
        self.is_sender = is_sender
        self.writing = False


class Worker:
    """Plays the clients of one :class:`WorkerSpec`, talking to its parent over ``conn``."""

    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.selector = selectors.DefaultSelector()
        senders = set(spec.sender_ids)
        nodes = len(spec.addresses)
        self.clients = [
            _Client(cid, f"{spec.name_prefix}{cid}",
                    SequenceChecker((s for s in spec.sender_ids if s != cid), spec.messages,
                                    remote=(s for s in spec.sender_ids if s % nodes != cid % nodes)),
                    cid in senders, NcatDemux() if spec.mode == MODE_NCAT else None)
            for cid in spec.client_ids]
        self.senders = [c for c in self.clients if c.is_sender]
        self.remaining = sum(c.checker.expected for c in self.clients)
        self.report = WorkerReport()
        self.phase = "connect"
        self.to_open = list(reversed(self.clients))
        self.opening = 0
        self.greeted = 0
        self.failed = 0
        self.delivered = 0
        self.connect_start_ns = 0
        self.progress_at = time.monotonic()
        self.progressed_at = 0.0
        self.finish_checked_at = 0.0
        self.due: list[tuple[int, int, _Client]] = []
        self.interval_ns = int(1e9 / spec.rate) if spec.rate > 0 else 0
        self.json_events = spec.mode == MODE_JSON
        self.cpu_at_go = 0.0
        self.stopping = False

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        limit = raise_file_limit()
        if len(self.clients) + SPARE_FDS > limit:
            self.conn.send(("ready", 0, 0, len(self.clients),
                            [f"a worker can open only {limit} files: use more workers"]))
            return
        self.selector.register(self.conn, selectors.EVENT_READ, None)
        self.connect_start_ns = time.monotonic_ns()
        self._open_more()
        self._check_connected()
        while not self.stopping:
            for key, mask in self.selector.select(self._wait_seconds()):
                client = key.data
                if client is None:
                    self._command(self.conn.recv())
                    continue
                if mask & selectors.EVENT_WRITE:
                    self._writable(client)
                if mask & selectors.EVENT_READ and client.state != _CLOSED:
                    self._readable(client)
            if self.due:
                self._send_due()
            self._check_phase()
        self._close_all()

    def _wait_seconds(self) -> float:
        wait_for = PROGRESS_SECONDS
        if self.due:
            wait_for = min(wait_for, max(0.0, (self.due[0][0] - time.monotonic_ns()) / 1e9))
        return wait_for

    def _command(self, message: tuple) -> None:
        if message[0] == "go":
            self._go()
        elif message[0] == "stop":
            self.stopping = True

    def _check_phase(self) -> None:
        now = time.monotonic()
        if now - self.progressed_at >= PROGRESS_SECONDS:
            self.progressed_at = now
            self.conn.send(("progress", self.greeted, self.delivered))
        if self.phase == "connect":
            if now - self.progress_at > self.spec.timeout:
                self.failed += len(self.to_open)
                self.to_open = []
                for client in self.clients:
                    if client.state in (_CONNECTING, _GREETING):
                        self._fail(client, f"no welcome within {self.spec.timeout:g}s")
        elif self.phase == "run":
            if self.remaining <= 0 and all(self._sender_done(c) for c in self.senders):
                self._done(timed_out=False)
            elif now - self.progress_at > self.spec.timeout:
                self._done(timed_out=True)
            elif now - self.finish_checked_at >= PROGRESS_SECONDS:
                # A server keeps each sender's lines in order: once every sender's last line
                # is in, a line still missing is lost, and there is no need to wait for it.
                self.finish_checked_at = now
                if all(self._sender_done(c) for c in self.senders) and all(
                        c.checker.finished for c in self.clients if c.state == _READY):
                    self._done(timed_out=False)

    # -- connecting ----------------------------------------------------------------------

    def _open_more(self) -> None:
        while self.to_open and self.opening < self.spec.connect_window:
            client = self.to_open.pop()
            self.opening += 1
            address = self.spec.addresses[client.id % len(self.spec.addresses)]
            try:
                sock = socket.socket(_family(address[0]), socket.SOCK_STREAM)
            except OSError as exc:
                self._fail(client, f"cannot open a socket: {exc.strerror or exc}")
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.sock = sock
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                self._fail(client, f"cannot connect: {os.strerror(err)}")
                continue
            self.selector.register(sock, selectors.EVENT_WRITE, client)
            client.writing = True

    def _connected(self, client: _Client) -> None:
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(client, f"cannot connect: {os.strerror(err)}")
            return
        client.state = _GREETING
        if self.json_events:
            client.sock.send(JSON_SWITCH)  # a few bytes: always fits
        self._want_write(client, False)

    def _greeting(self, client: _Client, data: bytes) -> None:
        """Handshake lines until the welcome; what follows it goes to :meth:`_deliver`."""
        data = client.tail + data
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            step, why = handshake_step(self.spec.mode, data[start:end].rstrip(b"\r"))
            start = end + 1
            if step == ANSWER_NAME:
                client.sock.send(client.name.encode() + b"\n")  # a few bytes: always fits
            elif step == REFUSED:
                self._fail(client, f"name {client.name} refused: {why}")
                return
            elif step == WELCOMED:
                client.state = _READY
                client.tail = b""
                self.opening -= 1
                self.greeted += 1
                self.progress_at = time.monotonic()
                if start < len(data):
                    self._deliver(client, data[start:], time.monotonic_ns())
                self._open_more()
                self._check_connected()
                return
        client.tail = data[start:]

    def _fail(self, client: _Client, reason: str) -> None:
        if len(self.report.errors) < 5:
            self.report.errors.append(f"{client.name}: {reason}")
        if client.state in (_CONNECTING, _GREETING):
            self.opening -= 1
            self.failed += 1
        self._close(client)
        if self.phase == "connect":
            self._open_more()
            self._check_connected()

    def _check_connected(self) -> None:
        if self.phase == "connect" and self.greeted + self.failed == len(self.clients):
            self.phase = "ready"
            self.conn.send(("ready", self.connect_start_ns, time.monotonic_ns(), self.failed,
                            list(self.report.errors)))

    # -- sending -------------------------------------------------------------------------

    def _go(self) -> None:
        self.phase = "run"
        self.report.errors.clear()
        self.report.go_ns = time.monotonic_ns()
        self.cpu_at_go = cpu_seconds()
        self.progress_at = time.monotonic()
        if self.interval_ns:
            # Stagger the senders over one interval so their lines do not come in bursts.
            count = max(1, len(self.spec.sender_ids))
            for client in self.senders:
                offset = self.interval_ns * self.spec.sender_ids.index(client.id) // count
                heapq.heappush(self.due, (self.report.go_ns + offset, client.id, client))
        else:
            for client in self.senders:
                self._pump(client)

    def _send_due(self) -> None:
        now = time.monotonic_ns()
        while self.due and self.due[0][0] <= now:
            due, _, client = heapq.heappop(self.due)
            if client.state != _READY:
                continue
            client.out += make_line(client.id, client.next_seq, now, self.spec.size)
            client.next_seq += 1
            if client.next_seq < self.spec.messages:
                heapq.heappush(self.due, (due + self.interval_ns, client.id, client))
            self._pump(client)

    def _next_batch(self, client: _Client) -> bytes:
        now = time.monotonic_ns()
        spec = self.spec
        lines = []
        size = 0
        while client.next_seq < spec.messages and size < SEND_BATCH_BYTES:
            line = make_line(client.id, client.next_seq, now, spec.size)
            lines.append(line)
            size += len(line)
            client.next_seq += 1
        return b"".join(lines)

    def _pump(self, client: _Client) -> None:
        """Send what is waiting; flat out, make more while the socket takes it."""
        flat_out = not self.interval_ns
        for _ in range(BATCHES_PER_WAKE):
            if not client.out:
                if not flat_out or client.next_seq >= self.spec.messages:
                    break
                client.out = self._next_batch(client)
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(client, exc)
                return
            if sent:
                self.progress_at = time.monotonic()
            client.out = client.out[sent:]
            if client.out:
                break
        self._want_write(client, bool(client.out) or (flat_out and client.next_seq < self.spec.messages))

    def _sender_done(self, client: _Client) -> bool:
        return client.state == _CLOSED or (client.next_seq >= self.spec.messages and not client.out)

    def _want_write(self, client: _Client, writing: bool) -> None:
        if writing != client.writing:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self.selector.modify(client.sock, events, client)
            client.writing = writing

    def _writable(self, client: _Client) -> None:
        if client.state == _CONNECTING:
            self._connected(client)
        elif client.state == _READY:
            self._pump(client)

    # -- receiving -----------------------------------------------------------------------

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(client, exc)
            return
        if not data:
            self._lost(client, None)
        elif client.state == _GREETING:
            self._greeting(client, data)
        elif self.phase != "done":  # lines may come before "go" reaches this worker
            self._deliver(client, data, time.monotonic_ns())

    def _deliver(self, client: _Client, data: bytes, now_ns: int) -> None:
        if client.demux is not None:
            data = client.demux.feed(data)
        else:
            data = client.tail + data
            cut = data.rfind(b"\n") + 1
            client.tail = data[cut:]
            data = data[:cut]
        if self.json_events:
            deliveries, missed, not_events = scan_events(data)
            self.report.shed += missed
            client.checker.unexpected += not_events
        else:
            if _MISSED_START in data:
                self.report.shed += count_missed(data)
            if b"~" not in data:
                return
            deliveries = _BENCH_LINE.findall(data)
        new = client.checker.record_all(deliveries, now_ns, self.report.latencies_ns,
                                        self.report.cross_node_latencies_ns)
        if new:
            self.remaining -= new
            self.delivered += new
            self.report.last_delivery_ns = now_ns
            self.progress_at = time.monotonic()

    def _lost(self, client: _Client, exc: Optional[OSError]) -> None:
        if client.state in (_CONNECTING, _GREETING):
            self._fail(client, f"connection lost: {exc.strerror if exc else 'closed by the server'}")
            return
        if self.phase != "done":
            self.report.dropped += 1
            if len(self.report.errors) < 5:
                reason = exc.strerror if exc else "closed by the server"
                self.report.errors.append(f"{client.name}: connection lost: {reason}")
        self._close(client)

    def _close(self, client: _Client) -> None:
        if client.sock is not None:
            try:
                self.selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
            client.sock.close()
        client.state = _CLOSED

    def _done(self, timed_out: bool) -> None:
        self.phase = "done"
        self.due.clear()
        report = self.report
        report.timed_out = timed_out
        report.done_ns = time.monotonic_ns()
        report.cpu_seconds = cpu_seconds() - self.cpu_at_go
        for client in self.clients:
            check = client.checker
            report.expected += check.expected
            report.received += check.received
            report.lost += check.lost
            report.duplicated += check.duplicated
            report.out_of_order += check.out_of_order
            report.unexpected += check.unexpected
        if timed_out and len(report.errors) < 5:
            report.errors.append(f"nothing happened for {self.spec.timeout:g}s")
        self.conn.send(("done", report))

    def _close_all(self) -> None:
        for client in self.clients:
            if client.state != _CLOSED:
                self._close(client)
        self.conn.send(("stopped",))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """A worker process's entry point."""
    try:
        Worker(spec, conn).run()
    except (BrokenPipeError, EOFError, KeyboardInterrupt):  # the parent is gone or interrupted
        pass
    finally:
        conn.close()


# -- the parent's side ----------------------------------------------------------------------

@dataclass
class ConnectResult:
    """How the connect phase went, over all workers."""

    seconds: float
    failed: int
    errors: list[str]


class LoadGenerator:
    """Worker processes sharing a benchmark's clients: connect them all, start them at once, collect.

    Clients are dealt round-robin, so senders spread over the workers.  Use as a context
    manager: leaving it stops the workers (and kills any that do not stop).
    """

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.processes = []
        self.conns: list[Connection] = []
        self.progress: dict[Connection, tuple[int, int]] = {}
        for number, spec in enumerate(specs):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=run_worker, args=(spec, child_end),
                                      name=f"bench-worker-{number}", daemon=True)
            process.start()
            child_end.close()
            self.processes.append(process)
            self.conns.append(parent_end)
            self.progress[parent_end] = (0, 0)
        started = time.monotonic() + WORKER_START_SECONDS
        self.last_heard = {conn: started for conn in self.conns}

    @staticmethod
    def plan(addresses: Sequence[tuple[str, int]], mode: str, clients: int, sender_ids: Sequence[int],
             workers: int, **load) -> list[WorkerSpec]:
        """Deal ``clients`` (ids ``0..clients-1``) over ``workers`` specs, round-robin; each
        connects to the ``addresses`` round-robin too (see :class:`WorkerSpec`)."""
        workers = max(1, min(workers, clients))
        return [WorkerSpec(addresses=tuple(addresses), mode=mode,
                           client_ids=tuple(range(w, clients, workers)), sender_ids=tuple(sender_ids),
                           **load) for w in range(workers)]

    def __enter__(self) -> "LoadGenerator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def connected(self) -> int:
        return sum(p[0] for p in self.progress.values())

    @property
    def delivered(self) -> int:
        return sum(p[1] for p in self.progress.values())

    def wait_ready(self, on_progress: Callable[[], None] = lambda: None) -> ConnectResult:
        """Wait until every worker has connected its clients (or failed to)."""
        ready = self._collect("ready", on_progress).values()
        starts = [message[1] for message in ready if message[1]]
        seconds = (max(message[2] for message in ready) - min(starts)) / 1e9 if starts else 0.0
        return ConnectResult(seconds=seconds, failed=sum(message[3] for message in ready),
                             errors=[error for message in ready for error in message[4]])

    def go(self) -> int:
        """Start every worker's senders; return the time (``monotonic_ns``) they were told to."""
        go_ns = time.monotonic_ns()
        for conn in self.conns:
            conn.send(("go",))
        return go_ns

    def wait_done(self, on_progress: Callable[[], None] = lambda: None) -> list[WorkerReport]:
        """Wait for every worker's report."""
        return [message[1] for message in self._collect("done", on_progress).values()]

    def stop(self) -> None:
        """Tell the workers to close their sockets and exit; kill those that do not."""
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()
        self.conns = []

    def _collect(self, kind: str, on_progress: Callable[[], None]) -> dict:
        """Read the workers' messages until each has sent one of ``kind``; fail if one dies or hangs."""
        got: dict[Connection, tuple] = {}
        while len(got) < len(self.conns):
            waiting = [conn for conn in self.conns if conn not in got]
            for conn in wait(waiting, PROGRESS_SECONDS):
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    number = self.conns.index(conn)
                    self.processes[number].join(1.0)
                    raise BenchError(
                        f"load generator worker {number} died "
                        f"(exit code {self.processes[number].exitcode})") from None
                self.last_heard[conn] = max(self.last_heard[conn], time.monotonic())
                if message[0] == "progress":
                    self.progress[conn] = (message[1], message[2])
                elif message[0] == kind:
                    got[conn] = message
            on_progress()
            # A worker reports progress several times a second, whatever happens on the wire.
            now = time.monotonic()
            for conn in waiting:
                if now - self.last_heard[conn] > HANG_SECONDS:
                    raise BenchError(
                        f"load generator worker {self.conns.index(conn)} stopped answering")
        return got
