"""Measure: the Python a line costs the server at chat rates, without the kernel's part.

    python tests/server/measure_line_cost.py [--no-history]

A room of 50 members, 10 of them talking in turn, one line per read, as ``bench latency``
sends them.  Their sockets' ``send`` is a C function that takes the bytes and does nothing
(no system call), so what is timed is groupchat's own work: per line, the telnet filter,
the line buffer, the chat (checks, ids, rendering, history's queue) and the fan-out through
the real members' outboxes; and, on its own, per delivery, the room's fan-out against the
naive relay's loop over the same sockets.  The history writer's thread is counted too (process
CPU time).  Compare two versions in one sitting (``PYTHONPATH=/path/to/other/checkout``): the
figures are the fastest of several repeats, steadier than the bench's, but they leave out
the kernel, three quarters of a line's cost, and the threads' hand-overs.  Not collected by
pytest.
"""

from __future__ import annotations

import argparse
import operator
import os
import socket
import tempfile
import time
import timeit

from groupchat.protocol import LineBuffer
from groupchat.server.chat import Chat
from groupchat.server.events import Out
from groupchat.server.fanout import Delivery, Fanout
from groupchat.server.history import HistoryStore
from groupchat.server.outbox import Outbox, Pump
from groupchat.server.registry import Member, Registry
from groupchat.server.settings import ServerSettings
from groupchat.server.telnet import TelnetFilter

MEMBERS = 50
TALKING = 10
LINE = b"x" * 55 + b"\r\n"


class FreeSocket:
    """Stands in for a member's socket once it is in the room: its send takes every byte at once."""

    send = staticmethod(operator.length_hint)  # (data, flags) -> len(data), in C
    sendall = staticmethod(len)  # (data), as the relay sends


def room(history: HistoryStore | None, pump: Pump) -> tuple[Chat, list[Member], list[socket.socket]]:
    """A chat with MEMBERS named members in the lobby, their outboxes then sending to FreeSockets."""
    chat = Chat(Registry(), ServerSettings(rate=0, notice_interval=0), history=history)
    members, ends = [], []
    for n in range(MEMBERS):
        ours, theirs = socket.socketpair()  # real ones for the greetings, which the pump writes
        ends += [ours, theirs]
        member = Member(f"127.0.0.1:{1000 + n}", Outbox(ours, 1 << 25, pump))
        chat.registry.connect(member)
        chat.greet(member)
        chat.receive(member, [f"user{n}"])
        members.append(member)
    for member in members:
        outbox = member.link
        assert outbox.flush(5), "a greeting did not go out"
        outbox._sock = FreeSocket()  # noqa: SLF001 - the measurement swaps the socket, nothing else
        outbox._send_now = FreeSocket.send  # noqa: SLF001
        outbox._direct = True  # noqa: SLF001
    return chat, members, ends


def per_line(chat: Chat, members: list[Member], lines: int) -> float:
    """Microseconds of process CPU per line, each its own read, talkers in turn."""
    readers = [(TelnetFilter(), LineBuffer()) for _ in range(TALKING)]
    started = time.process_time()
    for n in range(lines):
        telnet, buffer = readers[n % TALKING]
        text, _ = telnet.feed(LINE)
        chat.receive(members[n % TALKING], buffer.feed(text))
        if n % 50 == 49:
            time.sleep(0.001)  # the writer commits between lines, as at chat rates
    return (time.process_time() - started) / lines * 1e6


def per_delivery(members: list[Member]) -> tuple[float, float]:
    """Nanoseconds per member reached: the room's fan-out, and the naive relay's loop."""
    fanout, data, snapshot = Fanout(), LINE, tuple(members)
    out = Out(lambda: data, lambda: data)
    sockets, sender = [FreeSocket() for _ in members], FreeSocket()

    def ours() -> None:
        fanout.add(Delivery(snapshot, out, True, None, "x"))
        fanout.flush()

    def relay() -> None:  # groupchat.bench.relay's broadcast, less its lock
        for peer in sockets:
            if peer is not sender:
                try:
                    peer.sendall(data)
                except OSError:
                    pass

    return tuple(min(timeit.repeat(run, number=2000, repeat=25)) / 2000 / len(members) * 1e9
                 for run in (ours, relay))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-history", action="store_true", help="no history, as serve --no-history")
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    pump = Pump(60)
    with tempfile.TemporaryDirectory() as scratch:
        history = None if args.no_history else HistoryStore.open(os.path.join(scratch, "history.db"))
        chat, members, ends = room(history, pump)
        line = min(per_line(chat, members, args.lines) for _ in range(3))
        ours, relay = per_delivery(members)
        print(f"a line, read to fan-out, {'without' if args.no_history else 'with'} history: {line:.1f} us of CPU")
        print(f"a delivery: {ours:.0f} ns in the room's fan-out, {relay:.0f} ns in the relay's loop")
        if history is not None:
            history.close()
        for end in ends:
            end.close()
    pump.stop()


if __name__ == "__main__":
    main()
