"""``groupchat bench``: put a chat server under load and measure it against a naive relay.

A round starts a target server in its own process (``groupchat serve``, the naive relay
of :mod:`groupchat.bench.relay`, or ``ncat --chat``) or uses one given by address, connects the
scenario's clients from :class:`~groupchat.bench.loadgen.LoadGenerator` worker processes, starts
every sender at once and waits until every line has reached every other client.  Nothing
is measured inside the server's process: its CPU, threads and peak memory are read from
``/proc``.

Scenarios:

- ``fanout``: C clients, S of them send M lines each as fast as the server takes them;
- ``latency``: the same at a fixed rate per sender, for send-to-receive latency;
- ``scale``: N idle clients and one sender: connect time, memory, delivery at size.

In every scenario groupchat's clients speak its text lines, or with ``mode="json"`` its JSON
Lines mode (what programs use); the relay and ncat, which have no such mode, speak text.

A target ``groupchat:N`` is N ``groupchat serve`` nodes sharing one Redis (``--redis URL``,
which the bench never starts itself): the clients are dealt to the nodes round-robin, and the
latency of the lines that crossed from one node to another is reported apart.  Its server CPU is
that of all its nodes together, and the Redis server's own is read from its ``INFO cpu``.

With several targets the rounds are interleaved (A, B, C, A, B, C, ...) so a noisy
machine affects them alike, and the summary gives per-target medians and their ratios to
the naive relay.  Every line is checked: a round in which any line is lost, duplicated or
out of order, or a client is dropped, fails, and :func:`run_bench` returns 1.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence, TextIO

from groupchat.bench.loadgen import (
    MODE_HANDSHAKE,
    MODE_JSON,
    MODE_NCAT,
    ConnectResult,
    LoadGenerator,
    WorkerReport,
)
from groupchat.errors import BenchError
from groupchat.net import raise_file_limit
from groupchat.protocol import MAX_LINE_BYTES

__all__ = ["BenchError", "run_bench", "SCENARIOS", "TARGETS"]

SCENARIOS = ("fanout", "latency", "scale")
TARGETS = ("groupchat", "relay", "ncat")  # and "groupchat:N", N nodes through Redis
CLIENT_MODES = ("text", MODE_JSON)  # how groupchat's clients speak: see the module docstring
REFERENCE = "relay"  # what ratios are taken against

# Per scenario: clients, senders, lines per sender, bytes per line, lines/s per sender
# (0: as fast as the server takes them).  In ``scale``, clients are the idle ones and the
# senders come on top: 10,000 take groupchat about 8 s to connect and 1.2 GB.
SCENARIO_DEFAULTS = {
    "fanout": dict(clients=50, senders=5, messages=2000, size=64, rate=0.0),
    "latency": dict(clients=50, senders=10, messages=1000, size=64, rate=100.0),
    "scale": dict(clients=10_000, senders=1, messages=100, size=64, rate=0.0),
}
# A worker this busy (cores), or the server and the generator together this close to every
# core of the machine, may be what limits the figures rather than the server.
BUSY_WORKER = 0.9
BUSY_MACHINE = 0.85
# The machine is shared: a round says when the host took this share of the CPUs' time (a
# virtual machine's steal), or when other processes than the ones measured used this many
# cores, since either makes every figure of the round worse than the server's own.  (The
# kernel counts CPU time in ticks, per thread: over a 3 s round the others' figure is off
# by up to 0.3 cores with nothing else running; a busy loop elsewhere shows as 0.7 or more.)
NOTABLE_STOLEN = 0.02
NOTABLE_OTHERS = 0.4
CPUS = os.cpu_count() or 1
DEFAULT_WORKERS = min(4, CPUS)
# Seconds without any progress (a connection, a line) after which a round gives up: how
# long the bench waits for lines that will never come before it counts them lost.
DEFAULT_TIMEOUT = 10.0
# Options given to every ``groupchat serve`` the bench starts, before the caller's own:
# what protects a public server (flood control, connection caps) would throttle the load,
# and the load generator, sharing the machine's cores with the server, can read slower
# than the server sends: a 32 MiB backlog lets a client that keeps reading lose nothing.
DEFAULT_SERVER_ARGS = ("--rate", "0", "--max-clients", "0", "--max-per-address", "0",
                       "--max-queue", str(32 << 20))
# ncat --chat waits with select(): it cannot hold more descriptors than FD_SETSIZE (1024);
# 1,016 clients work, 1,023 do not.
NCAT_MAX_CLIENTS = 1016
# ncat listens with a backlog of 10: connect to it a few at a time.
NCAT_CONNECT_WINDOW = 4
SERVER_START_SECONDS = 20.0
SERVER_STOP_SECONDS = 3.0
# Before "go", wait (up to SETTLE_SECONDS) for the server to finish what connecting cost it
# (join notices, history replay): idle means under SETTLE_CPU of a core.
SETTLE_SECONDS = 60.0
SETTLE_CPU = 0.05
SAMPLE_SECONDS = 0.05
LISTENING = re.compile(r"(?:serving|Listening) on (\S+):(\d+)")
# What to say when nodes are asked for without a Redis: the bench never starts one by itself.
REDIS_NEEDED = ("needs --redis URL, a Redis for the bench alone (the bench's lines go into its chat): "
                "start one, e.g. redis-server --port 6390 --save '' --appendonly no, and give "
                "--redis redis://127.0.0.1:6390/0")
REDIS_EXTRA_NEEDED = "--redis needs the redis extra: pip install 'groupchat[redis]'"
REDIS_SECONDS = 5.0
# Every key a node keeps in Redis starts so (the cluster's KEY_PREFIX).  The bench takes only a
# Redis holding none of them, and removes them after each round, so that a round's nodes never
# read what an earlier round left (its lines would count as duplicated or unexpected).
CHAT_KEYS = "groupchat:*"
HOST = "127.0.0.1"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class LoadPlan:
    """One scenario's load, resolved: who connects and what the senders send."""

    scenario: str
    connections: int  # clients in all, senders included
    senders: int
    messages: int  # lines per sender
    size: int  # bytes per line, newline included
    rate: float  # lines/s per sender; 0: as fast as the server takes them
    mode: str = "text"  # groupchat's clients: "text" or "json" (JSON Lines)

    @property
    def expected(self) -> int:
        """Lines that must arrive: each sender's, at every other client."""
        return self.senders * self.messages * (self.connections - 1)

    def describe(self) -> str:
        pace = f"at {self.rate:g}/s each" if self.rate else "flat out"
        idle = self.connections - self.senders
        return (f"{self.scenario}: {self.connections:,} clients ({idle:,} only reading), "
                f"{self.senders:,} sending {self.messages:,} lines of {self.size} bytes {pace}"
                + ("; groupchat's in JSON mode" if self.mode == MODE_JSON else ""))


def make_plan(scenario: str, clients: Optional[int] = None, senders: Optional[int] = None,
              messages: Optional[int] = None, size: Optional[int] = None,
              rate: Optional[float] = None, mode: str = "text") -> LoadPlan:
    """The scenario's defaults with any of them overridden; :class:`BenchError` if they make no sense.

    >>> make_plan("scale", clients=50).connections
    51
    >>> make_plan("fanout", clients=3, senders=4)
    Traceback (most recent call last):
    ...
    groupchat.errors.BenchError: --senders (4) cannot be more than --clients (3)
    """
    if scenario not in SCENARIO_DEFAULTS:
        raise BenchError(f'unknown scenario "{scenario}": choose from {", ".join(SCENARIOS)}')
    if mode not in CLIENT_MODES:
        raise BenchError(f'unknown mode "{mode}": choose from {", ".join(CLIENT_MODES)}')
    given = dict(clients=clients, senders=senders, messages=messages, size=size, rate=rate)
    knobs = {**SCENARIO_DEFAULTS[scenario], **{k: v for k, v in given.items() if v is not None}}
    if knobs["senders"] < 1 or knobs["messages"] < 1:
        raise BenchError("--senders and --messages must be at least 1")
    if knobs["rate"] < 0:
        raise BenchError("--rate cannot be negative")
    if not 1 <= knobs["size"] <= MAX_LINE_BYTES:
        raise BenchError(f"--size must be 1 to {MAX_LINE_BYTES} bytes (the server's longest line)")
    connections = knobs["clients"]
    if scenario == "scale":
        connections += knobs["senders"]
    elif knobs["senders"] > connections:
        raise BenchError(f"--senders ({knobs['senders']}) cannot be more than --clients ({connections})")
    if connections < 2:
        raise BenchError("a benchmark needs at least two clients")
    return LoadPlan(scenario, connections, knobs["senders"], knobs["messages"], knobs["size"],
                    float(knobs["rate"]), mode)


# -- the servers under test -----------------------------------------------------------------

def parse_target(target: str) -> tuple[str, int]:
    """A target's server, and how many nodes of it share a Redis (0: one server on its own).

    >>> parse_target("groupchat:3"), parse_target("relay")
    (('groupchat', 3), ('relay', 0))
    >>> parse_target("relay:2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    groupchat.errors.BenchError: unknown target "relay:2": choose from groupchat, groupchat:N (...), relay, ncat
    """
    name, colon, count = target.partition(":")
    if name in TARGETS and not colon:
        return name, 0
    if name == "groupchat" and count.isdigit() and int(count) >= 1:
        return name, int(count)
    raise BenchError(f'unknown target "{target}": choose from groupchat, groupchat:N (N nodes '
                     f'through --redis), relay, ncat')


def resolve_targets(targets: Sequence[str], nodes: Optional[int], redis: Optional[str]) -> list[str]:
    """The targets with ``--nodes`` and ``--redis`` applied: ``nodes`` turns each plain ``groupchat``
    into ``groupchat:N``, and a Redis given with no node count anywhere means one node through it.

    >>> resolve_targets(["groupchat", "relay"], 3, "redis://127.0.0.1:6390/0")
    ['groupchat:3', 'relay']
    >>> resolve_targets(["groupchat"], None, "redis://127.0.0.1:6390/0")
    ['groupchat:1']
    >>> resolve_targets(["groupchat:3", "groupchat"], None, "redis://127.0.0.1:6390/0")
    ['groupchat:3', 'groupchat']
    """
    parsed = [parse_target(target) for target in targets]
    if nodes is not None and nodes < 1:
        raise BenchError("--nodes must be at least 1")
    if redis is None:
        if nodes is not None:
            raise BenchError("--nodes " + REDIS_NEEDED)
        if counted := [target for target, (_, count) in zip(targets, parsed) if count]:
            raise BenchError(f"{counted[0]} " + REDIS_NEEDED)
        return list(targets)
    if nodes is None and not any(count for _, count in parsed):
        nodes = 1
    return [f"{name}:{nodes}" if name == "groupchat" and not count and nodes else target
            for target, (name, count) in zip(targets, parsed)]


def server_command(target: str, server_args: Sequence[str] = (), max_clients: int = 0,
                   scratch: str = ".") -> list[str]:
    """How to start ``target`` listening on 127.0.0.1 (port 0 where the server can say which it got).

    groupchat keeps its history in a new database in ``scratch`` (never the user's own),
    unless ``server_args`` say where.
    """
    if target == "groupchat":
        history = [] if {"--history", "--no-history"} & {a.partition("=")[0] for a in server_args} \
            else ["--history", os.path.join(scratch, "history.db")]
        return [sys.executable, "-m", "groupchat", "serve", "--host", HOST, "--port", "0",
                *DEFAULT_SERVER_ARGS, *history, *server_args]
    if target == "relay":
        return [sys.executable, "-m", "groupchat.bench.relay", "--host", HOST, "--port", "0"]
    if target == "ncat":
        ncat = shutil.which("ncat")
        if ncat is None:
            raise BenchError("ncat is not installed (it is in nmap's ncat package)")
        # ncat prints the port it was given, not the one it got: choose a free one for it.
        return [ncat, "-v", "-l", "--chat", "--max-conns", str(max_clients + 16), HOST,
                str(free_port())]
    raise BenchError(f'unknown target "{target}": choose from {", ".join(TARGETS)}')


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def output_file() -> IO[str]:
    """A scratch file for a child's output that this process reads as it grows.  The child
    writes through the same open file, whose offset this process's reading moves: without
    O_APPEND a line written after a seek back to the start lands there, over the first line
    (the one that says where the server listens), and the bench waited for it in vain."""
    output = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    fcntl.fcntl(output.fileno(), fcntl.F_SETFL, fcntl.fcntl(output.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    return output


class ServerProcess:
    """A target server in its own process, for one round; :meth:`stop` it (also on errors).

    Its output goes to files, never pipes: a server that logs every join must not block
    on a pipe nobody reads.  Whatever it writes (its history) goes in a scratch directory
    removed when it stops.  ``target`` is a server's name: see :func:`parse_target`.
    """

    def __init__(self, target: str, server_args: Sequence[str] = (), max_clients: int = 0) -> None:
        self.target = target
        self.scratch = tempfile.TemporaryDirectory(prefix="groupchat-bench-")
        command = server_command(target, server_args, max_clients, self.scratch.name)
        self.stdout, self.stderr = output_file(), output_file()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        env.pop("GROUPCHAT_REDIS", None)  # a node only through --redis: never a Redis by chance
        self.proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=self.stdout,
                                     stderr=self.stderr, env=env)
        self.pid = self.proc.pid
        self.terminated = False
        try:
            self.address = self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> tuple[str, int]:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            for output in (self.stdout, self.stderr):
                output.seek(0)
                if match := LISTENING.search(output.read()):
                    return match.group(1).strip("[]"), int(match.group(2))
            if self.proc.poll() is not None:
                raise BenchError(self._start_failure())
            time.sleep(0.02)
        self.stderr.seek(0)
        said = [line.strip() for line in self.stderr.read().splitlines() if line.strip()]
        raise BenchError(f"the {self.target} server did not start listening within {SERVER_START_SECONDS:g}s"
                         + (f"; its last words: {said[-1]}" if said else " and said nothing"))

    def _start_failure(self) -> str:
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().splitlines() if line.strip()]
        said = lines[-1].removeprefix("Error: ") if lines else f"exit code {self.proc.returncode}"
        if any("No such option" in line or "no such option" in line for line in lines):
            return f"the {self.target} server refused its options ({said}): check --server-arg"
        return f"the {self.target} server did not start: {said}"

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM, once), without waiting."""
        if not self.terminated and self.proc.poll() is None:
            self.proc.terminate()
        self.terminated = True

    def stop(self) -> None:
        """Terminate the server (killing it if it takes too long) and close its output files."""
        self.terminate()
        try:
            self.proc.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.stdout.closed:
            self.stdout.close()
            self.stderr.close()
            self.scratch.cleanup()


def start_servers(target: str, server_args: Sequence[str], max_clients: int,
                  redis: Optional["RedisMonitor"]) -> list[ServerProcess]:
    """The server of ``target``, or each of its nodes, started with ``--redis``; all stopped on errors."""
    name, nodes = parse_target(target)
    if nodes:
        if redis is None:
            raise BenchError(f"{target} " + REDIS_NEEDED)
        server_args = [*server_args, "--redis", redis.url]
    servers: list[ServerProcess] = []
    try:
        for _ in range(max(1, nodes)):
            servers.append(ServerProcess(name, server_args, max_clients))
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: Sequence[ServerProcess]) -> None:
    """Stop them all, told at once so that they stop together."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


class RedisMonitor:
    """The Redis that a target's nodes share, as the bench sees it: reachable and holding no chat,
    emptied of the chat after each round by :meth:`clear`, and the CPU its server has used, as
    ``INFO cpu`` tells (its own getrusage: the whole redis-server process, local or not, where
    reading ``/proc`` would need its pid on this machine)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            import redis
        except ImportError:
            raise BenchError(REDIS_EXTRA_NEEDED) from None
        self._errors = (redis.RedisError, OSError)
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=REDIS_SECONDS,
                                               socket_connect_timeout=REDIS_SECONDS)
            self.client.ping()
            holds_chat = next(self.client.scan_iter(match=CHAT_KEYS, count=1000), None) is not None
        except (*self._errors, ValueError) as exc:
            raise BenchError(f"the Redis given by --redis cannot be used: {one_line(exc)}") from None
        if holds_chat:
            self.close()
            raise BenchError("the Redis given by --redis holds a chat already (keys groupchat:*): give the "
                             "bench a Redis of its own, or empty this one (redis-cli -u URL flushdb)")

    def clear(self) -> None:
        """Remove whatever a round's nodes left in Redis (they have stopped)."""
        try:
            keys = list(self.client.scan_iter(match=CHAT_KEYS, count=1000))
            for start in range(0, len(keys), 1000):
                self.client.unlink(*keys[start:start + 1000])
        except self._errors as exc:
            raise BenchError(f"the Redis given by --redis could not be emptied after a round: "
                             f"{one_line(exc)}") from None

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the redis-server so far (NaN if it cannot be asked)."""
        try:
            info = self.client.info("cpu")
        except self._errors:
            return math.nan
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def close(self) -> None:
        self.client.close()


def one_line(exc: BaseException) -> str:
    """What an exception says, on one line (redis-py's messages never hold the password).

    >>> one_line(OSError("Error 111 connecting to 127.0.0.1:1.\\n Connection refused."))
    'Error 111 connecting to 127.0.0.1:1. Connection refused.'
    """
    return " ".join(str(exc).split())


class ServerMonitor:
    """What ``/proc`` says of a server's processes (a cluster's nodes) together: CPU used, peak
    memory, and (sampled) peak threads."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = tuple(pids)
        self.peak_threads = 0
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._stopping = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="bench-monitor", daemon=True)
        self._sampler.start()

    @staticmethod
    def status(pid: int) -> dict[str, str]:
        """A process's ``/proc/PID/status`` fields (empty if it has gone)."""
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                return parse_status(status.read())
        except OSError:
            return {}

    def cpu_seconds(self) -> float:
        """User plus system CPU time of all their threads so far."""
        try:
            return sum(stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text("ascii", "replace"))
                       for pid in self.pids) / self._ticks
        except OSError:
            return math.nan

    def peak_rss_bytes(self) -> int:
        """Their resident sets' high-water marks (VmHWM), added up."""
        return sum(status_kib(self.status(pid), "VmHWM") for pid in self.pids) * 1024

    def settle(self, timeout: float) -> float:
        """Wait until the servers use under :data:`SETTLE_CPU` of a core each; return the seconds waited."""
        start = time.monotonic()
        window = 0.2
        before = self.cpu_seconds()
        while time.monotonic() - start < timeout:
            time.sleep(window)
            now = self.cpu_seconds()
            if not (now - before) / window > SETTLE_CPU * len(self.pids):  # a vanished one is idle
                break
            before = now
        return time.monotonic() - start

    def sample(self) -> int:
        """Count the threads now; return the most seen so far."""
        threads = [self.status(pid).get("Threads", "0") for pid in self.pids]
        self.peak_threads = max(self.peak_threads, sum(int(t) for t in threads if t.isdigit()))
        return self.peak_threads

    def close(self) -> None:
        self._stopping.set()
        self._sampler.join()

    def _sample(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            self.sample()


def parse_status(text: str) -> dict[str, str]:
    """``/proc/PID/status`` as a dict of its fields.

    >>> parse_status("Name:\\tpython3\\nVmHWM:\\t   10240 kB\\nThreads:\\t7\\n")["Threads"]
    '7'
    """
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def status_kib(status: dict[str, str], key: str) -> int:
    """A ``kB`` field of :func:`parse_status`'s dict as a number of KiB (0 if absent).

    >>> status_kib({"VmHWM": "10240 kB"}, "VmHWM")
    10240
    """
    value = status.get(key, "0 kB").split()[0]
    return int(value) if value.isdigit() else 0


def machine_ticks(text: str) -> tuple[int, int, int]:
    """Clock ticks of all the CPUs together, from ``/proc/stat``: (busy, taken by the host, all).

    >>> machine_ticks("cpu  100 5 50 800 10 1 2 30 0 0\\ncpu0 50 2 25 400 5 0 1 15 0 0\\n")
    (158, 30, 998)
    """
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in text.split()[1:9])
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal


def read_machine_ticks() -> Optional[tuple[int, int, int]]:
    """:func:`machine_ticks` now; None where there is no ``/proc/stat``."""
    try:
        return machine_ticks(Path("/proc/stat").read_text("ascii", "replace"))
    except (OSError, ValueError):
        return None


def stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from ``/proc/PID/stat``; the name in brackets may hold spaces.

    >>> stat_cpu_ticks("42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3")
    300
    """
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line


# -- one round ------------------------------------------------------------------------------

@dataclass
class RoundResult:
    """One target's run of a scenario: what arrived and what it cost."""

    target: str
    round: int
    ok: bool
    expected: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    unexpected: int
    dropped_clients: int
    shed: int  # of the lost, how many the server said it dropped for readers too slow
    timed_out: bool
    seconds: float  # from "go" to the last line's arrival
    deliveries_per_second: float
    latency_ms: dict[str, Optional[float]]  # p50, p90, p99, max from send to receive
    connect_seconds: float  # from the first connect() to the last welcome
    settle_seconds: float
    server_cpu: Optional[float]  # cores (1.0 = one core busy all the time), None if not ours
    server_peak_rss_mb: Optional[float]
    server_peak_threads: Optional[int]
    loadgen_cpu: float  # cores, all workers together
    loadgen_busiest_worker: float  # cores: near 1.0 means the generator may be the bottleneck
    workers: int
    errors: list[str] = field(default_factory=list)
    nodes: int = 0  # groupchat nodes sharing a Redis; 0: a server on its own
    # p50, p90, p99, max of the lines from a sender on another node than the receiver
    cross_node_latency_ms: dict[str, Optional[float]] = field(default_factory=dict)
    redis_cpu: Optional[float] = None  # cores the redis-server used, for a target with nodes
    # CPU-microseconds the server spent per line delivered: what a line costs it, whoever sets
    # the rate (in a flood, the load generator does on a small machine)
    server_us_per_line: Optional[float] = None
    host_stolen_percent: Optional[float] = None  # of the CPUs' time, taken by the host (steal)
    others_cpu: Optional[float] = None  # cores used by processes other than those measured


def run_round(plan: LoadPlan, target: str, number: int = 1, *,
              address: Optional[tuple[str, int]] = None, server_args: Sequence[str] = (),
              workers: int = DEFAULT_WORKERS, timeout: float = DEFAULT_TIMEOUT,
              progress: Optional["ProgressLine"] = None,
              redis: Optional[RedisMonitor] = None) -> RoundResult:
    """Run ``plan`` once against ``target``: new servers of ours (for ``groupchat:N``, nodes
    sharing the Redis of ``redis``), or the one at ``address``."""
    check_target(target, plan)
    progress = progress or ProgressLine(None)
    servers = start_servers(target, server_args, plan.connections, redis) if address is None else []
    nodes = parse_target(target)[1]
    try:
        measured = _measure(plan, target, f"{target} round {number}", servers,
                            [address] if address else [server.address for server in servers], workers,
                            timeout, progress, redis if nodes else None)
    finally:
        stop_servers(servers)
        if nodes and redis:
            redis.clear()
        progress.clear()
    return _round_result(plan, target, number, measured, nodes)


def check_target(target: str, plan: LoadPlan) -> None:
    """Refuse a target that does not exist or cannot take the plan's load, before anything starts."""
    if parse_target(target)[0] == "ncat" and plan.connections > NCAT_MAX_CLIENTS:
        raise BenchError(f"ncat --chat cannot serve more than {NCAT_MAX_CLIENTS:,} clients "
                         f"(it waits with select()): use fewer --clients")


@dataclass
class _Measurement:
    connected: ConnectResult
    settle_seconds: float
    go_ns: int
    reports: list[WorkerReport]
    workers: int
    server_cpu_seconds: Optional[float] = None  # None: not a server of ours
    server_peak_rss: int = 0
    server_peak_threads: int = 0
    redis_cpu_seconds: Optional[float] = None  # None: no Redis, or it could not say
    machine_busy_seconds: Optional[float] = None  # every process's but the bench's own, while the lines went
    machine_stolen: Optional[float] = None  # the share of the CPUs' time the host took meanwhile


def _measure(plan: LoadPlan, target: str, label: str, servers: Sequence[ServerProcess],
             addresses: Sequence[tuple[str, int]], workers: int, timeout: float,
             progress: "ProgressLine", redis: Optional[RedisMonitor]) -> _Measurement:
    """Connect the clients, let the servers settle, start the senders, collect the reports."""
    name = parse_target(target)[0]
    mode = (MODE_NCAT if name == "ncat" else MODE_JSON if plan.mode == MODE_JSON and name == "groupchat"
            else MODE_HANDSHAKE)
    # Names in a Redis are held cluster-wide, for a while after a node that did not stop in
    # time was killed: a round of nodes takes names of its own, as against a running server.
    specs = LoadGenerator.plan(
        addresses, mode, plan.connections, range(plan.senders), workers, messages=plan.messages,
        size=plan.size, rate=plan.rate, timeout=timeout,
        name_prefix="c" if servers and not redis else f"bench{secrets.token_hex(2)}-",
        **({"connect_window": max(1, NCAT_CONNECT_WINDOW // workers)} if mode == MODE_NCAT else {}))
    monitor = ServerMonitor([server.pid for server in servers]) if servers else None
    try:
        with LoadGenerator(specs) as load:
            connected = load.wait_ready(lambda: progress.show(
                f"{label}: connecting {load.connected:,}/{plan.connections:,}"))
            if connected.failed:
                raise BenchError(f"{connected.failed:,} of {plan.connections:,} clients could not "
                                 f"join the {target} server: " + "; ".join(connected.errors[:3]))
            progress.show(f"{label}: waiting for the server to settle")
            settle = monitor.settle(SETTLE_SECONDS) if monitor else 0.0
            cpu_at_go = monitor.cpu_seconds() if monitor else 0.0
            redis_at_go = redis.cpu_seconds() if redis else math.nan
            machine_at_go, own_at_go = read_machine_ticks(), time.process_time()
            go_ns = load.go()
            reports = load.wait_done(lambda: progress.show(
                f"{label}: {load.delivered:,}/{plan.expected:,} lines "
                f"({load.delivered / plan.expected:.0%})"))
            measured = _Measurement(connected, settle, go_ns, reports, len(specs))
            machine_done = read_machine_ticks()
            if machine_at_go and machine_done:  # (less this process's own: it measures)
                busy, stolen, every = (done - at_go for done, at_go in zip(machine_done, machine_at_go))
                measured.machine_busy_seconds = busy / os.sysconf("SC_CLK_TCK") - (time.process_time() - own_at_go)
                measured.machine_stolen = stolen / every if every else 0.0  # (no tick went by)
            if monitor:
                measured.server_cpu_seconds = monitor.cpu_seconds() - cpu_at_go
                measured.server_peak_rss = monitor.peak_rss_bytes()
                measured.server_peak_threads = monitor.sample()
            if redis and not math.isnan(used := redis.cpu_seconds() - redis_at_go):
                measured.redis_cpu_seconds = used
            stop_servers(servers)  # before the workers disconnect, so that nobody hears them leave
            return measured
    finally:
        if monitor:
            monitor.close()


def _round_result(plan: LoadPlan, target: str, number: int, measured: _Measurement,
                  nodes: int = 0) -> RoundResult:
    reports = measured.reports
    last_ns = max([r.last_delivery_ns for r in reports] + [measured.go_ns])
    seconds = max(1e-9, (last_ns - measured.go_ns) / 1e9)
    cross_node = array("q")
    for report in reports:
        cross_node.extend(report.cross_node_latencies_ns)
    latencies = array("q", cross_node)
    for report in reports:
        latencies.extend(report.latencies_ns)
    totals = {key: sum(getattr(r, key) for r in reports)
              for key in ("received", "duplicated", "out_of_order", "unexpected", "dropped", "shed")}
    timed_out = any(r.timed_out for r in reports)
    ok = (totals["received"] == plan.expected and not timed_out
          and not any(totals[k] for k in ("duplicated", "out_of_order", "unexpected", "dropped")))
    ours = measured.server_cpu_seconds is not None
    measured_cpu = sum(r.cpu_seconds for r in reports) + (measured.server_cpu_seconds or 0) + (
        measured.redis_cpu_seconds or 0)
    return RoundResult(
        target=target, round=number, ok=ok, expected=plan.expected,
        delivered=totals["received"], lost=plan.expected - totals["received"],
        duplicated=totals["duplicated"], out_of_order=totals["out_of_order"],
        unexpected=totals["unexpected"], dropped_clients=totals["dropped"], shed=totals["shed"],
        timed_out=timed_out,
        seconds=round(seconds, 4), deliveries_per_second=round(totals["received"] / seconds, 1),
        latency_ms=latency_summary(latencies),
        connect_seconds=round(measured.connected.seconds, 4),
        settle_seconds=round(measured.settle_seconds, 3),
        server_cpu=round(measured.server_cpu_seconds / seconds, 3) if ours else None,
        server_peak_rss_mb=round(measured.server_peak_rss / 2**20, 1) if ours else None,
        server_peak_threads=measured.server_peak_threads if ours else None,
        loadgen_cpu=round(sum(r.cpu_seconds for r in reports) / seconds, 3),
        loadgen_busiest_worker=round(max(
            r.cpu_seconds / max(1e-9, (r.done_ns - r.go_ns) / 1e9) for r in reports), 3),
        workers=measured.workers, errors=[e for r in reports for e in r.errors][:10], nodes=nodes,
        cross_node_latency_ms=latency_summary(cross_node) if nodes > 1 else {},
        redis_cpu=None if measured.redis_cpu_seconds is None
        else round(measured.redis_cpu_seconds / seconds, 3),
        server_us_per_line=round(measured.server_cpu_seconds * 1e6 / totals["received"], 3)
        if ours and totals["received"] else None,
        host_stolen_percent=None if measured.machine_stolen is None else round(measured.machine_stolen * 100, 1),
        others_cpu=round(max(0.0, measured.machine_busy_seconds - measured_cpu) / seconds, 3)
        if ours and measured.machine_busy_seconds is not None else None)


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, Optional[float]]:
    """p50, p90, p99 and max in milliseconds (None where there were no lines).

    >>> latency_summary([2_000_000, 1_000_000, 3_000_000])
    {'p50': 2.0, 'p90': 3.0, 'p99': 3.0, 'max': 3.0}
    """
    ordered = sorted(latencies_ns)
    return ({f"p{q}": _ms(percentile(ordered, q)) for q in (50, 90, 99)}
            | {"max": _ms(ordered[-1] if ordered else math.nan)})


def _ms(nanoseconds: float) -> Optional[float]:
    return None if math.isnan(nanoseconds) else round(nanoseconds / 1e6, 3)


# -- statistics -------------------------------------------------------------------------------

def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted values by nearest rank (NaN for no values).

    >>> values = list(range(1, 101))
    >>> percentile(values, 50), percentile(values, 99), percentile(values, 100)
    (50, 99, 100)
    >>> percentile([7], 90)
    7
    """
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))  # no float noise over a rank
    return ordered[min(rank, len(ordered)) - 1]


# What the summary shows: (RoundResult field or latency key, label, how to show it).
METRICS = (
    ("deliveries_per_second", "lines delivered/s", "{:,.0f}"),
    ("p50", "latency p50 (ms)", "{:.2f}"),
    ("p90", "latency p90 (ms)", "{:.2f}"),
    ("p99", "latency p99 (ms)", "{:.2f}"),
    ("max", "latency max (ms)", "{:.2f}"),
    ("cross_p50", "across nodes p50 (ms)", "{:.2f}"),
    ("cross_p99", "across nodes p99 (ms)", "{:.2f}"),
    ("connect_seconds", "connect all (s)", "{:.2f}"),
    ("server_cpu", "server CPU (cores)", "{:.2f}"),
    ("server_us_per_line", "server CPU per line (us)", "{:.3f}"),
    ("redis_cpu", "redis-server CPU (cores)", "{:.2f}"),
    ("server_peak_rss_mb", "server peak RSS (MB)", "{:.1f}"),
    ("server_peak_threads", "server peak threads", "{:.0f}"),
    ("loadgen_cpu", "load generator CPU (cores)", "{:.2f}"),
    ("others_cpu", "other processes' CPU (cores)", "{:.2f}"),
    ("host_stolen_percent", "CPU taken by the host (%)", "{:.1f}"),
)


# What the rest of the machine did: context for a round, not the target's to compare.
MACHINE = ("others_cpu", "host_stolen_percent")
LATENCY_KEYS = ("p50", "p90", "p99", "max")
CROSS_NODE = "cross_"  # a METRICS key for a latency of the lines that crossed nodes


def metric(result: RoundResult, key: str) -> Optional[float]:
    if key.startswith(CROSS_NODE):
        value = result.cross_node_latency_ms.get(key[len(CROSS_NODE):])
    else:
        value = result.latency_ms.get(key) if key in LATENCY_KEYS else getattr(result, key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summarize(results: Sequence[RoundResult], reference: Optional[str] = REFERENCE) -> dict:
    """Per target, the median of each metric over its rounds and its ratio to ``reference``'s.

    >>> from dataclasses import replace
    >>> one = RoundResult("relay", 1, True, 10, 10, 0, 0, 0, 0, 0, 0, False, 1.0, 100.0,
    ...                   {"p50": 2.0}, 0.1, 0.0, 1.0, 20.0, 3, 0.5, 0.5, 1)
    >>> runs = [one, replace(one, target="groupchat", deliveries_per_second=300.0),
    ...         replace(one, target="groupchat", deliveries_per_second=500.0)]
    >>> summary = summarize(runs)
    >>> summary["medians"]["groupchat"]["deliveries_per_second"], summary["ratios"]["groupchat"]["p50"]
    (400.0, 1.0)
    """
    targets = list(dict.fromkeys(r.target for r in results))
    medians: dict[str, dict[str, Optional[float]]] = {}
    for target in targets:
        mine = [r for r in results if r.target == target]
        medians[target] = {}
        for key, _, _ in METRICS:
            values = [v for r in mine if (v := metric(r, key)) is not None]
            medians[target][key] = statistics.median(values) if values else None
    ratios: dict[str, dict[str, Optional[float]]] = {}
    if reference in medians:
        base = medians[reference]
        for target in targets:
            ratios[target] = {
                key: (round(value / base[key], 3) if value is not None and base[key] and key not in MACHINE
                      else None)
                for key, value in medians[target].items()}
    return {"medians": medians, "ratios": ratios, "reference": reference if ratios else None}


# -- reporting --------------------------------------------------------------------------------

def describe_round(result: RoundResult, rounds: int) -> str:
    """One line for a finished round."""
    lat = {key: "-" if value is None else f"{value:.2f}" for key, value in result.latency_ms.items()}
    parts = [f"{result.target:<9} round {result.round}/{rounds}: {result.delivered:,} lines in "
             f"{result.seconds:.2f}s = {result.deliveries_per_second:,.0f}/s",
             f"latency p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms"]
    if result.cross_node_latency_ms:
        cross = {key: "-" if value is None else f"{value:.2f}"
                 for key, value in result.cross_node_latency_ms.items()}
        parts.append(f"across nodes p50 {cross['p50']} p99 {cross['p99']} max {cross['max']} ms")
    parts.append(f"connect {result.connect_seconds:.2f}s")
    if result.server_cpu is not None:
        nodes = f"{result.nodes} nodes " if result.nodes > 1 else ""
        parts.append(f"server {nodes}{result.server_cpu:.2f} cores"
                     + (f" ({result.server_us_per_line:.3f} us a line)" if result.server_us_per_line else "")
                     + f" {result.server_peak_rss_mb:.1f} MB {result.server_peak_threads} threads")
    if result.redis_cpu is not None:
        parts.append(f"redis-server {result.redis_cpu:.2f} cores")
    parts.append(f"load generator {result.loadgen_cpu:.2f} cores")
    if result.loadgen_busiest_worker >= BUSY_WORKER:
        parts.append(f"a generator worker used {result.loadgen_busiest_worker:.2f} of a core, "
                     f"so it may be the limit")
    elif result.loadgen_cpu + (result.server_cpu or 0) + (result.redis_cpu or 0) >= BUSY_MACHINE * CPUS:
        parts.append(f"all {CPUS} cores busy, so a floor, not the server's ceiling")
    if result.host_stolen_percent is not None and result.host_stolen_percent >= NOTABLE_STOLEN * 100:
        parts.append(f"the host took {result.host_stolen_percent:.0f}% of the CPUs' time")
    if result.others_cpu is not None and result.others_cpu >= NOTABLE_OTHERS:
        parts.append(f"other processes used {result.others_cpu:.2f} cores")
    parts.append("ok" if result.ok else "FAILED: " + describe_losses(result))
    return "; ".join(parts)


def describe_losses(result: RoundResult) -> str:
    what = [f"{getattr(result, key):,} {label}" for key, label in (
        ("lost", "lost"), ("duplicated", "duplicated"), ("out_of_order", "out of order"),
        ("unexpected", "unexpected"), ("dropped_clients", "clients dropped")) if getattr(result, key)]
    if result.shed:
        what.append(f"the server said it dropped {result.shed:,} for readers it found too slow")
    if result.timed_out:
        what.append("timed out")
    return ", ".join(what) + (f" ({'; '.join(result.errors[:3])})" if result.errors else "")


def format_table(summary: dict) -> str:
    """The medians, a column per target, with each one's ratio to the reference."""
    medians, ratios = summary["medians"], summary["ratios"]
    targets = list(medians)
    rows = [["", *targets]]
    for key, label, shape in METRICS:
        if all(medians[t][key] is None for t in targets):
            continue
        row = [label]
        for target in targets:
            value = medians[target][key]
            cell = "-" if value is None else shape.format(value)
            ratio = ratios.get(target, {}).get(key)
            if ratio is not None and target != summary["reference"]:
                cell += f" (x{ratio:.2f})"
            row.append(cell)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in rows]
    if summary["reference"]:
        lines.append(f"(xN: median over rounds as a multiple of the naive {summary['reference']}'s)")
    return "\n".join(lines)


class ProgressLine:
    """One line on a terminal, rewritten in place; nothing at all when ``stream`` is not a terminal."""

    def __init__(self, stream: Optional[TextIO]) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self._shown = 0
        self._last = 0.0
        self._text = ""

    def show(self, text: str) -> None:
        if self.stream is None or time.monotonic() - self._last < 0.1 or text == self._text:
            return
        self._text = text
        self._last = time.monotonic()
        self.stream.write("\r" + text.ljust(self._shown))
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        if self.stream is not None and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0
            self._text = ""


# -- the command ----------------------------------------------------------------------------

def run_bench(scenario: str, *, targets: Sequence[str] = ("groupchat",),
              host: Optional[str] = None, port: Optional[int] = None,
              clients: Optional[int] = None, senders: Optional[int] = None,
              messages: Optional[int] = None, size: Optional[int] = None,
              rate: Optional[float] = None, mode: str = "text", rounds: int = 1,
              workers: int = DEFAULT_WORKERS, server_args: Sequence[str] = (),
              timeout: float = DEFAULT_TIMEOUT, json_output: bool = False,
              nodes: Optional[int] = None, redis: Optional[str] = None,
              out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Run ``scenario`` ``rounds`` times against each of ``targets``, interleaved; report on ``out``.

    Servers are started for each round unless ``host`` and ``port`` name a running one
    (then only one target, which says how to talk to it).  A target ``groupchat:N`` is N nodes
    sharing the Redis at the URL ``redis``; ``nodes`` makes each plain ``groupchat`` one of those
    (see :func:`resolve_targets`).  ``server_args`` go to each ``groupchat serve`` started;
    ``mode`` is how groupchat's clients speak ("text" or "json", its JSON Lines mode).  The
    report is text, or with ``json_output`` one JSON object; a progress line goes to ``err`` if
    it is a terminal.  Returns 0 if every line arrived once and in order in every round, else 1;
    raises :class:`BenchError` when a round cannot run at all.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    plan = make_plan(scenario, clients, senders, messages, size, rate, mode)
    targets = list(dict.fromkeys(resolve_targets(targets, nodes, redis)))
    for target in targets:
        check_target(target, plan)
    if plan.mode == MODE_JSON and all(parse_target(t)[0] != "groupchat" for t in targets):
        raise BenchError("JSON mode is groupchat's: the relay and ncat speak only text")
    if (host is None) != (port is None):
        raise BenchError("give both --host and --port to use a running server, or neither")
    address = (host, port) if host is not None else None
    if address and len(targets) > 1:
        raise BenchError("a running server is one target: --compare needs servers the bench starts")
    if address and redis:
        raise BenchError("--nodes and --redis are for the servers the bench starts, not one at --host")
    if rounds < 1 or workers < 1:
        raise BenchError("--rounds and --workers must be at least 1")
    watch = RedisMonitor(redis) if any(parse_target(t)[1] for t in targets) else None
    raise_file_limit()  # servers we start inherit it: 10,000 clients need 10,000 descriptors
    try:
        with _terminate_as_exit():
            return _run_rounds(plan, targets, rounds, address=address, server_args=server_args,
                               workers=workers, timeout=timeout, json_output=json_output, out=out,
                               err=err, redis=watch)
    finally:
        if watch:
            watch.close()


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers and workers we started are stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_rounds(plan: LoadPlan, targets: list[str], rounds: int, *,
                address: Optional[tuple[str, int]], server_args: Sequence[str], workers: int,
                timeout: float, json_output: bool, out: TextIO, err: TextIO,
                redis: Optional[RedisMonitor]) -> int:
    scenario = plan.scenario
    progress = ProgressLine(err)
    if not json_output:
        print(f"{plan.describe()}; {rounds} round{'s' * (rounds > 1)} of "
              f"{', '.join(targets)}; load generator: {workers} worker process"
              f"{'es' * (workers > 1)} on {CPUS} cores", file=out, flush=True)
    results: list[RoundResult] = []
    for number in range(1, rounds + 1):
        for target in targets:
            result = run_round(plan, target, number, address=address, server_args=server_args,
                               workers=workers, timeout=timeout, progress=progress, redis=redis)
            results.append(result)
            if not json_output:
                print(describe_round(result, rounds), file=out, flush=True)
    summary = summarize(results)
    ok = all(r.ok for r in results)
    if json_output:
        json.dump({"scenario": scenario, "plan": asdict(plan) | {"expected": plan.expected},
                   "targets": targets, "cpus": CPUS, "rounds": [asdict(r) for r in results], **summary,
                   "ok": ok}, out, indent=None, allow_nan=False, default=str)
        out.write("\n")
    else:
        print(file=out)
        print(format_table(summary), file=out)
        if not ok:
            failed = [r for r in results if not r.ok]
            print(f"FAILED: {len(failed)} of {len(results)} rounds lost, duplicated or reordered "
                  f"lines", file=out)
    out.flush()
    return 0 if ok else 1
