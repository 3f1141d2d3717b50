"""Measure: how long a join client (the client's Link, in-process) given two nodes of one chat
takes to be back on the second after the first is stopped (SIGTERM) or killed (SIGKILL).

    python tests/client/measure_failover.py [RUNS]

Starts a throwaway redis-server (Debian package redis-server) on a free loopback port and, for
each run, two ``groupchat serve --redis`` nodes; prints, per run, the seconds from the signal to
the client's "Reconnected" and the attempts it made.  The other node resumes the session (the
nodes keep sessions in Redis); were it to refuse the session, the client would join afresh,
after SIGKILL once the dead node's lease on its name ran out (20 s).  Not collected by pytest.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time

from groupchat.client.link import Link, Output
from groupchat.client.session import Handshake, Session


class Notes(Output):
    """Keeps the client's own notes ("Reconnected: ..."); shows nothing."""

    def __init__(self, name: str) -> None:
        super().__init__(Session(name))
        self.notes: list[str] = []

    def present(self, line, answered) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)


def start_node(redis_url: str) -> tuple[subprocess.Popen, int]:
    """``groupchat serve --redis`` on a free port; its process and port."""
    proc = subprocess.Popen([sys.executable, "-m", "groupchat", "serve", "--host", "127.0.0.1", "--port", "0",
                             "--no-history", "--redis", redis_url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, int(proc.stdout.readline().rsplit(":", 1)[1])


def failover(redis_url: str, signum: signal.Signals, name: str) -> tuple[float, int]:
    """Seconds from ``signum`` to the first node until the client is back on the second, and its attempts."""
    (first, first_port), (second, second_port) = start_node(redis_url), start_node(redis_url)
    notes = Notes(name)
    link = Link(addresses=[("127.0.0.1", first_port), ("127.0.0.1", second_port)], output=notes)
    try:
        link.open(Handshake(name))
        link.start(lambda end: None)
        signalled = time.monotonic()
        first.send_signal(signum)
        first.wait()
        while not any(note.startswith("Reconnected") for note in notes.notes):
            if link.end is not None or time.monotonic() > signalled + 120:
                raise SystemExit(f"not back {time.monotonic() - signalled:.1f} s after {signum.name}: {link.end}")
            time.sleep(0.01)
        return time.monotonic() - signalled, link.attempts
    finally:
        link.close()
        for proc in (first, second):
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=int, nargs="?", default=3)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redis_port = probe.getsockname()[1]
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--dir", tempfile.mkdtemp()], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # redis-server answers within this on any machine this runs on
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for run in range(args.runs):
                seconds, attempts = failover(f"redis://127.0.0.1:{redis_port}/0", signum, f"c{signum}{run}")
                print(f"{signum.name}: back on the other node after {seconds:.2f} s, {attempts} attempts")
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    main()
