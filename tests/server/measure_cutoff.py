"""Measure: N named clients that stop reading at the same instant are cut off together (the
stall timeout, shortened to 4 s here, passes for all of them at once) while an honest sender
says a line every 10 ms and an honest reader takes every line.

    python tests/server/measure_cutoff.py [N] [--resume-window SECONDS]

Prints how many of the honest lines arrived and their delay (median, 99th percentile, most),
overall and for the lines sent while the sleepers were being cut off (from the first cut-off
to a second after the last, as the server logs them); issue 11's target is every
line, none later than 1 s.  The server runs with flood control and
the client limits off (--rate 0 and no caps), as a crowd arriving at once needs, and logs as
``groupchat serve`` does.  Not collected by pytest: it takes half a minute and both cores.
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import subprocess
import sys
import threading
import time

SERVER = """
import logging, sys, threading, time
from groupchat.net import raise_file_limit
from groupchat.server.logs import RepeatFilter
from groupchat.server.settings import ServerSettings
from groupchat.server.tcp import THREAD_STACK_BYTES, ChatServer
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
cut = []  # when each cut-off was logged (the clock is the system's: the measuring side reads it too)
class NoteCutoffs(logging.Filter):
    def filter(self, record):
        if "disconnected" in record.msg:
            cut.append(time.monotonic())
        return True
for handler in logging.getLogger().handlers:
    handler.addFilter(NoteCutoffs())
    handler.addFilter(RepeatFilter())
threading.stack_size(THREAD_STACK_BYTES)
raise_file_limit()
server = ChatServer(("127.0.0.1", 0), ServerSettings(rate=0, max_clients=0, max_per_address=0, stall_timeout=4,
                                                     resume_window=float(sys.argv[1])))
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
print(len(cut), min(cut, default=0), max(cut, default=0), flush=True)
server.stop()
"""
LINE = re.compile(rb"<sender> t (\d+) ([\d.]+)")


def named(address: tuple, name: str, receive_buffer: int = 0) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:  # a reader that stops reading: a small window, full at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(address)
    sock.sendall(name.encode() + b"\n")
    greeting = b""
    while b"Welcome" not in greeting:
        greeting += sock.recv(65536)
    return sock


def drain(sock: socket.socket, lines: list, seen: list) -> None:
    """Read everything; note the honest lines' numbers and delays."""
    buffer = b""
    while data := sock.recv(1 << 20):
        *whole, buffer = (buffer + data).split(b"\n")
        now = time.monotonic()
        for line in whole:
            if match := LINE.search(line):
                seen.append(int(match[1]))
                lines.append((float(match[2]), now - float(match[2])))


def summary(delays: list) -> str:
    ordered = sorted(delays)
    return (f"delay median {ordered[len(ordered) // 2] * 1000:.0f} ms, "
            f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.0f} ms, most {ordered[-1] * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clients", type=int, nargs="?", default=2000)
    parser.add_argument("--resume-window", type=float, default=120.0)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.resume_window)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    address = ("127.0.0.1", int(server.stdout.readline()))
    sleepers = [named(address, f"n{n}", receive_buffer=4096) for n in range(args.clients)]
    reader, sender, flooder = (named(address, name) for name in ("reader", "sender", "flooder"))
    delays: list[tuple[float, float]] = []  # (sent, delay)
    seen: list[int] = []
    threading.Thread(target=drain, args=(reader, delays, seen), daemon=True).start()
    for sock in (sender, flooder):  # they read too: only the sleepers stop
        threading.Thread(target=drain, args=(sock, [], []), daemon=True).start()
    sent = 0
    started = time.monotonic()
    flooded = False
    while time.monotonic() - started < 15:  # the sleepers stall 4 s after the flood fills them
        sender.sendall(f"t {sent} {time.monotonic()}\n".encode())
        sent += 1
        if not flooded and time.monotonic() - started > 1:
            flooder.sendall((b"x" * 4000 + b"\n") * 200)  # past every sleeper's queue and buffers
            flooded = True
        time.sleep(0.01)
    time.sleep(3)
    print(f"{args.clients} cut off together (resume window {args.resume_window:g} s): honest lines "
          f"{len(set(seen))} of {sent}; {summary([delay for _, delay in delays])}")
    server.stdin.close()
    count, first, last = server.stdout.readline().split()
    first, last = float(first), float(last)
    during = [delay for at, delay in delays if first <= at <= last + 1]
    print(f"  {count} cut off over {(last - first) * 1000:.0f} ms; the {len(during)} honest lines sent meanwhile "
          f"(and for a second after): {summary(during) if during else 'none'}")
    server.wait(30)
    for sock in sleepers + [reader, sender, flooder]:
        sock.close()


if __name__ == "__main__":
    main()
