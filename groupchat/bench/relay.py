"""The naive relay: the simplest chat server that works, kept as the benchmark's reference.

``groupchat bench`` reports groupchat's figures as ratios to this relay's, measured in the
same sitting, so the figures hold on a noisy machine.  The relay speaks groupchat's
handshake (the name prompt, then a line starting ``*** Welcome, ``) so the same load
generator drives both, and then does the obvious thing: a thread per connection reads
lines, and for each line, under one global lock, ``sendall()``\\ s ``<name> line`` to every
other peer.  No notices, no commands, no limits, no timestamps; one slow reader stalls
everyone (that is what makes it naive).  Not for real use.

Run it with ``python -m groupchat.bench.relay --port 0``; it prints ``... serving on HOST:PORT``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Optional

import click

from groupchat.net import address_family, format_address
from groupchat.protocol import NAME_PROMPT, WELCOME_PREFIX, encode_line


class RelayHandler(socketserver.StreamRequestHandler):
    """One connection: ask a name, welcome it, then relay each of its lines to every other peer."""

    server: "NaiveRelay"

    def handle(self) -> None:
        try:
            self._relay()
        except OSError:  # the peer reset or broke the connection: it is over
            pass

    def _relay(self) -> None:
        prefix = self.welcome()
        if prefix is None:
            return
        for raw in self.rfile:
            self.server.broadcast(self.request, prefix + raw.rstrip(b"\r\n") + b"\n")

    def welcome(self) -> Optional[bytes]:
        """Ask the name and welcome it; return the prefix its lines are relayed with (None: no name)."""
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(encode_line(NAME_PROMPT))
        name = self.rfile.readline().decode("utf-8", "replace").strip()
        if not name:
            return None
        with self.server.lock:  # in the room before it hears it is, and nothing before the welcome
            sock.sendall(encode_line(f"{WELCOME_PREFIX}{name}!"))
            self.server.peers.add(sock)
        return f"<{name}> ".encode()

    def finish(self) -> None:
        with self.server.lock:
            self.server.peers.discard(self.request)
        super().finish()


class NaiveRelay(socketserver.ThreadingTCPServer):
    """The relay; :attr:`peers` (the welcomed connections) is guarded by :attr:`lock`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # as groupchat's, so connect times compare
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        self.lock = threading.Lock()
        self.peers: set[socket.socket] = set()
        self.address_family = address_family(address[0])
        super().__init__(address, RelayHandler)

    def broadcast(self, sender: socket.socket, data: bytes) -> None:
        """``sendall`` ``data`` to every peer but ``sender``, all under the one lock."""
        with self.lock:
            for peer in self.peers:
                if peer is not sender:
                    try:
                        peer.sendall(data)
                    except OSError:
                        pass  # its own handler sees the error and removes it


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on; 0 picks a free one.")
def main(host: str, port: int) -> None:
    """Run the naive relay (the benchmark's reference) until interrupted."""
    try:
        relay = NaiveRelay((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    print(f"groupchat naive relay serving on {format_address(relay.server_address)}", flush=True)
    print("Waiting for clients...", flush=True)
    try:
        relay.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        relay.server_close()


if __name__ == "__main__":
    main(prog_name="python -m groupchat.bench.relay")
