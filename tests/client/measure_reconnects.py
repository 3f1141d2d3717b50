"""Measure: N join clients (the client's Link, in-process, in threads) reconnecting at once
after a real server subprocess restarts on the same port with the same history file.

    python tests/client/measure_reconnects.py [N] [--no-jitter] [--kill]

Prints how long after the restart the clients were back (first, median, 95th percentile,
all), the attempts they made, and how many have every line once, in order: 10 said before
the stop, 10 said just after the restart (while most are still away) and 5 once all are back.
Not collected by pytest: it takes a minute and most of both cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from groupchat.client.link import Backoff, Link, Output
from groupchat.client.session import Handshake, Sent, Session

SENDER = "sender"


class Lines(Output):
    """Keeps the sender's lines, as shown."""

    def __init__(self, name: str) -> None:
        super().__init__(Session(name))
        self.texts: list[str] = []

    def present(self, line, answered: Optional[Sent]) -> None:
        if isinstance(line, dict) and line.get("type") in ("msg", "history") and line.get("from") == SENDER:
            self.texts.append(line["text"])

    def note(self, text: str) -> None:
        pass


def start_server(port: int, history: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "groupchat", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--history", history, "--max-per-address", "0", "--rate", "0", "--max-clients", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    proc.stdout.readline()
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, port


def say(port: int, texts: list[str]) -> None:
    """Say ``texts`` as the sender through a plain connection, then /quit."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, sock.makefile("rwb") as wire:
        wire.readline()
        wire.write(f"{SENDER}\n".encode() + b"".join(f"{text}\n".encode() for text in texts) + b"/quit\n")
        wire.flush()
        while wire.readline():
            pass


def wait_until(predicate, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clients", type=int, nargs="?", default=1000)
    parser.add_argument("--no-jitter", action="store_true")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the server rather than SIGTERM")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    threading.stack_size(256 * 1024)
    folder = tempfile.mkdtemp()
    history = os.path.join(folder, "history.db")
    proc, port = start_server(0, history)
    links, outputs = [], []
    for number in range(args.clients):
        outputs.append(Lines(f"c{number}"))
        links.append(Link(addresses=[("127.0.0.1", port)], output=outputs[-1], backoff=Backoff(jitter=not args.no_jitter)))
        links[-1].open(Handshake(f"c{number}"))
        links[-1].start(lambda end: None)
    say(port, [f"before {n}" for n in range(10)])
    wait_until(lambda: all(len(out.texts) == 10 for out in outputs), 60)
    time.sleep(0.1)  # history's commit window: a SIGKILL loses what is not committed
    proc.send_signal(signal.SIGKILL if args.kill else signal.SIGTERM)
    proc.wait()
    wait_until(lambda: not any(link.live for link in links), 30)
    proc, _ = start_server(port, history)
    restarted = time.monotonic()
    threading.Thread(target=say, args=(port, [f"meanwhile {n}" for n in range(10)])).start()
    back: dict[int, float] = {}
    while len(back) < len(links) and time.monotonic() < restarted + 120:
        back.update((index, time.monotonic() - restarted) for index, link in enumerate(links)
                    if index not in back and link.live)
        time.sleep(0.01)
    times = sorted(back.values())
    say(port, [f"after {n}" for n in range(5)])
    want = [f"before {n}" for n in range(10)] + [f"meanwhile {n}" for n in range(10)] + [f"after {n}" for n in range(5)]
    wait_until(lambda: all(out.texts == want for out in outputs), 60)
    print(f"{args.clients} clients, jitter {'off' if args.no_jitter else 'on'}, server {'killed' if args.kill else 'stopped'}: "
          f"back {len(times)}/{args.clients}; after the restart: first {times[0]:.2f} s, median "
          f"{times[len(times) // 2]:.2f} s, 95% {times[int(len(times) * 0.95) - 1]:.2f} s, all {times[-1]:.2f} s; "
          f"{sum(link.attempts for link in links)} attempts; every line once, in order: "
          f"{sum(out.texts == want for out in outputs)}/{args.clients}")
    for link in links:
        link.close(quit=False)
    proc.kill()


if __name__ == "__main__":
    main()
