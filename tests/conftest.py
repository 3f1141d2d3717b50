"""Shared fixtures: a real server on 127.0.0.1 port 0, and raw-socket peers that talk to it like nc."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from groupchat.protocol import NAME_PROMPT, LineBuffer, is_welcome, parse_session
from groupchat.server.chat import Chat, Clock
from groupchat.server.history import HistoryStore
from groupchat.server.registry import Member, Registry
from groupchat.server.settings import ServerSettings
from groupchat.server.tcp import ChatServer

WAIT_SECONDS = 10.0
REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = WAIT_SECONDS, what: str = "condition"):
    """Poll ``predicate`` until it is true; fail the test if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return result


def documented_events() -> dict[str, tuple[set[str], set[str]]]:
    """The README's table of JSON events: type -> (fields always there, fields only sometimes)."""
    section = (REPO / "README.md").read_text().split("## JSON Lines mode")[1].split("\n## ")[0]
    table = {}
    for kind, cell in re.findall(r"^\| `(\w+)` \| (.*?) \|", section, re.MULTILINE):
        fields = re.findall(r"`(\w+)(\?)?`", cell)
        table[kind] = ({f for f, optional in fields if not optional}, {f for f, optional in fields if optional})
    return table


DOCUMENTED_EVENTS = documented_events()


def checked_event(event: dict) -> dict:
    """``event``, failing the test if the README does not document its type and fields."""
    assert event.get("v") == 1 and event.get("type") in DOCUMENTED_EVENTS, f"undocumented event {event}"
    always, sometimes = DOCUMENTED_EVENTS[event["type"]]
    keys = set(event) - {"v", "type"}
    assert always <= keys, f"{event} lacks {always - keys}"
    assert keys <= always | sometimes, f"{event} has undocumented {keys - always - sometimes}"
    return event


def stored_messages(path: Path) -> list[tuple[str, str]]:
    """(sender, text) of every message in a history file, in order, read with plain sqlite3
    as anyone could: a row holds one message per line of its text."""
    with contextlib.closing(sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT sender, text FROM messages ORDER BY id").fetchall()
    return [(sender, line) for sender, text in rows for line in text.split("\n")]


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Run ``server`` in a thread of its own, polling often so that stopping it is quick."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    return thread


class Peer:
    """A plain TCP client, as nc would be: send raw bytes or lines, expect lines by pattern."""

    def __init__(self, address: tuple, timeout: float = WAIT_SECONDS,
                 sock: socket.socket | None = None, source: str | None = None) -> None:
        """``source``: another loopback address to come from (127.0.0.2 ...), for limits per address."""
        self.sock = sock or socket.create_connection(address[:2], timeout=timeout,
                                                     source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.name: str | None = None
        self.token: str | None = None  # the session's, if the server gave one
        self._lines = LineBuffer(max_line=1 << 20)
        self._pending: list[str] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def next_line(self, timeout: float | None = None) -> str:
        """The next line from the server; fails the test on timeout or EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.name or 'peer'}: no line within {timeout or self.timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise EOFError(f"{self.name or 'peer'}: server closed the connection")
            self._pending.extend(self._lines.feed(data))
        return self._pending.pop(0)

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match:
        """Read lines until one matches ``pattern`` (re.search); fail if none does in time."""
        skipped = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if match := re.search(pattern, line):
                return match
            skipped.append(line)
            if time.monotonic() > deadline:
                pytest.fail(f"no line matched {pattern!r}; got {skipped!r}")

    def expect_eof(self, timeout: float | None = None) -> list[str]:
        """Read until the server closes the connection; return the lines that came before."""
        lines = []
        try:
            while True:
                lines.append(self.next_line(timeout))
        except EOFError:
            return lines

    def event(self, timeout: float | None = None) -> dict:
        """The next line, as the JSON event it must be (after ``/mode json``), checked against
        the README's table of events: every event a real server sends a test is documented."""
        return checked_event(json.loads(self.next_line(timeout)))

    def expect_event(self, kind: str, timeout: float | None = None, **fields) -> dict:
        """Read events until one of type ``kind`` with ``fields``; fail if none does in time."""
        skipped = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self.event(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind and all(event.get(key) == value for key, value in fields.items()):
                return event
            skipped.append(event)
            if time.monotonic() > deadline:
                pytest.fail(f"no {kind} event with {fields}; got {skipped!r}")

    def join_json(self, name: str) -> dict:
        """Switch to JSON and do the handshake as ``name``; return the welcome event."""
        assert self.next_line() == NAME_PROMPT
        self.say("/mode json")
        assert self.event() == {"v": 1, "type": "mode", "mode": "json"}
        assert self.event() == {"v": 1, "type": "prompt", "for": "name"}
        self.say(name)
        welcome = self.event()
        if welcome["type"] == "session":
            self.token, welcome = welcome["token"], self.event()
        assert welcome["type"] == "welcome", welcome
        self.name = name
        return welcome

    def join(self, name: str) -> str:
        """Do the handshake as ``name``; return the welcome line."""
        assert self.next_line() == NAME_PROMPT
        self.say(name)
        line = self.next_line()
        if (token := parse_session(line)) is not None:
            self.token, line = token, self.next_line()
        assert is_welcome(line), line
        self.name = name
        return line

    def close(self) -> None:
        self.sock.close()


# -- the chat with no sockets -------------------------------------------------------------

class RecordingOutbox:
    """Keeps the lines sent to one member, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = False  # the chat closed the connection (/quit, a kick, a wrong password)
        self._held: list[str] | None = None

    def put(self, data: bytes, droppable: bool = False) -> None:
        (self.lines if self._held is None else self._held).extend(data.decode().splitlines())

    def hold(self) -> None:
        self._held = []

    def release(self, first: bytes) -> None:
        held, self._held = self._held or [], None
        self.lines.extend(first.decode().splitlines() + held)

    def end(self, last: bytes = b"") -> None:
        self.put(last)
        self.ended = True


def fixed_clock() -> Clock:
    return Clock(now=lambda: 0.0)


def make_chat(**settings) -> Chat:
    """A chat with no sockets: joins and leaves told at once, no delay after a wrong password,
    and a connection that ends leaves at once (no session held for it to resume)."""
    settings = {"notice_interval": 0, "resume_window": 0, **settings}
    return Chat(Registry(), ServerSettings(**settings), clock=fixed_clock(), sleep=lambda seconds: None)


def newcomer(chat: Chat, address: str = "10.0.0.1:1") -> Member:
    member = Member(address, RecordingOutbox())
    chat.registry.connect(member)
    chat.greet(member)
    return member


@pytest.fixture
def history() -> Iterator[HistoryStore]:
    """A history in memory, for a chat with no sockets (``chat.history = history``)."""
    store = HistoryStore.in_memory()
    yield store
    store.close()


def named(chat: Chat, name: str) -> Member:
    member = newcomer(chat)
    chat.receive(member, [name])
    member.link.lines.clear()
    return member


@pytest.fixture(autouse=True, scope="session")
def private_data_home(tmp_path_factory) -> Iterator[None]:
    """No test writes to the real user's data directory, whatever it starts."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if saved is None:
        del os.environ["XDG_DATA_HOME"]
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture
def start_server() -> Iterator[Callable[..., ChatServer]]:
    """Start real servers on 127.0.0.1 (or ``host``) port 0 (settings as keyword arguments);
    stop them after."""
    servers: list[tuple[ChatServer, threading.Thread]] = []

    def start(host: str = "127.0.0.1", **settings) -> ChatServer:
        server = ChatServer((host, 0), ServerSettings(**settings))
        servers.append((server, serve_in_thread(server)))
        return server

    yield start
    for server, thread in servers:
        server.stop()
        thread.join(WAIT_SECONDS)


# The functional tests send faster than a person and open many connections from one
# address, so they turn those two limits off, and they read every join and leave as its
# own line, as it happens, so they turn coalescing and held sessions off;
# tests/server/test_hostile.py tests the defaults.
UNLIMITED = {"rate": 0, "max_per_address": 0, "notice_interval": 0, "resume_window": 0}


@pytest.fixture
def server(start_server) -> ChatServer:
    return start_server(**UNLIMITED)


@pytest.fixture
def connect(server) -> Iterator[Callable[[str | None], Peer]]:
    """Open peers to ``server``; with a name, already through the handshake. Closed after the test."""
    peers: list[Peer] = []

    def open_peer(name: str | None = None, target: ChatServer | None = None) -> Peer:
        peer = Peer((target or server).server_address)
        peers.append(peer)
        if name is not None:
            peer.join(name)
        return peer

    yield open_peer
    for peer in peers:
        peer.close()


GROUPCHAT = [sys.executable, "-m", "groupchat"]
LISTENING = re.compile(r"serving on (\S+):(\d+)$")


class ServerProcess:
    """``groupchat serve`` as a real subprocess on a free port; stdin is a pipe unless given."""

    def __init__(self, *args: str, stdin=subprocess.DEVNULL) -> None:
        if "--history" not in args:
            args = ("--no-history", *args)  # several servers at once may not share one file
        self.proc = subprocess.Popen(GROUPCHAT + ["serve", "--host", "127.0.0.1", "--port", "0", *args],
                                     stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO)
        first = self.proc.stdout.readline()
        match = LISTENING.search(first.strip())
        assert match, f"no address in {first!r}; stderr: {self.proc.stderr.read()}"
        self.port = int(match.group(2))
        self.address = ("127.0.0.1", self.port)
        assert self.proc.stdout.readline().strip() == "Waiting for clients..."
        self._output: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_output, daemon=True).start()
        # Its log is read as it comes: a full pipe would stop the server at its next log line.
        self._errors: list[str] = []
        self._error_reader = threading.Thread(target=self._read_errors, daemon=True)
        self._error_reader.start()

    def _read_output(self) -> None:
        for line in self.proc.stdout:
            self._output.put(line.rstrip("\n"))

    def _read_errors(self) -> None:
        for line in self.proc.stderr:
            self._errors.append(line)

    def expect_output(self, pattern: str, timeout: float = WAIT_SECONDS) -> re.Match:
        """Read the server's stdout until a line matches ``pattern``."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self._output.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
            seen.append(line)
        pytest.fail(f"server printed no line matching {pattern!r}; it printed {seen!r}")

    def finish(self, timeout: float = WAIT_SECONDS) -> tuple[int, str]:
        """Wait for the server to exit; return its exit code and stderr."""
        code = self.proc.wait(timeout=timeout)
        self._error_reader.join(timeout)
        return code, "".join(self._errors)

    def kill(self) -> None:
        """Kill it if it still runs; its last log lines are printed, which pytest shows if the test failed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._error_reader.join(WAIT_SECONDS)
        print(f"--- the last of the log of groupchat serve on port {self.port}:\n{''.join(self._errors[-40:])}")


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``groupchat serve`` subprocesses; any still running after the test are killed."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        started.append(ServerProcess(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.kill()


class RedisServer:
    """A real ``redis-server`` (Debian package redis-server) on a free loopback port, with its files
    in a throwaway directory; stopped by its pid.  ``extra`` are more of redis-server's options."""

    def __init__(self, directory: Path, *extra: str) -> None:
        import shutil

        if not shutil.which("redis-server"):
            message = "redis-server is not installed (Debian package redis-server)"
            if os.environ.get("CI"):
                pytest.fail(message + ": .ci/run installs it")
            pytest.skip(message)
        pytest.importorskip("redis", reason="redis-py is not installed: pip install 'groupchat[redis]'")
        self.directory = directory
        self.extra = extra
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start it (again, on the same port and directory), and wait until it answers."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--logfile", str(self.directory / "redis.log"), *self.extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
            except OSError:
                assert self.proc.poll() is None, (self.directory / "redis.log").read_text()
                return False

        wait_for(answers, what=f"redis-server on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        """Stop it by its pid: SIGTERM (it saves what it is told to keep) or SIGKILL."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(WAIT_SECONDS)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[Callable[..., RedisServer]]:
    """Start real redis-servers for a test (skipped, naming the package, where it is missing
    outside CI); every one is stopped after it."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        started.append(RedisServer(directory, *extra))
        return started[-1]

    yield start
    for server in started:
        server.stop(kill=True)


class Received:
    """What a cluster node handed its ``on_event``, in order (it is called on the node's reader thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict] = []

    def __call__(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)

    def events(self, **fields) -> list[dict]:
        """The events so far that have all of ``fields``."""
        with self._lock:
            return [e for e in self._events if all(e.get(key) == value for key, value in fields.items())]

    def texts(self, **fields) -> list[str]:
        return [event["text"] for event in self.events(**fields)]


def say(node, room: str, sender: str, count: int) -> list:
    """Publish ``count`` messages "SENDER i" from ``sender`` to ``room`` through a cluster node;
    answers their Futures."""
    return [node.publish(room, {"type": "msg", "room": room, "from": sender, "text": f"{sender} {i}"})
            for i in range(count)]


@pytest.fixture
def cluster_node() -> Iterator[Callable[..., tuple]]:
    """Start cluster nodes (groupchat.server.cluster.Node, class attributes as keywords, e.g.
    ``lease_seconds=1``); answers (node, Received); every node is closed after the test."""
    from groupchat.server.cluster import Node

    started = []

    def start(url: str, on_name_lost=lambda name: None, **attributes) -> tuple:
        received = Received()
        node = type("TestNode", (Node,), attributes)(url, received, on_name_lost)
        node.start()
        started.append(node)
        return node, received

    yield start
    for node in started:
        node.close()
