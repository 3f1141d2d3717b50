"""The chat server: a ThreadingTCPServer whose handlers move bytes between sockets and the chat.

One thread per connection reads and hands lines to :class:`~groupchat.chat.Chat`; what the
chat sends goes through each connection's :class:`~groupchat.outbox.Outbox`, so no reader
ever waits on somebody else's socket.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import socketserver
import threading
import time
from typing import Optional, TextIO

from groupchat import __version__
from groupchat.chat import Chat
from groupchat.console import Console
from groupchat.errors import ServerStartError
from groupchat.outbox import Outbox
from groupchat.protocol import DEFAULT_PORT, LineBuffer, encode_line, render_refusal
from groupchat.registry import Member, Registry
from groupchat.settings import ServerSettings

log = logging.getLogger(__name__)

RECV_BYTES = 64 * 1024
# How often serve_forever looks for a stop request: shutdown takes at most this long.
POLL_SECONDS = 0.1


class ChatHandler(socketserver.BaseRequestHandler):
    """One connection: register it, ask its name, relay its lines, and always unregister it."""

    server: "ChatServer"

    def setup(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        address = format_address(self.client_address)
        self.outbox = Outbox(sock, self.server.settings.max_queued_bytes, name=address)
        self.member = Member(address, self.outbox)
        self.reason = "connection closed"
        self.server.registry.connect(self.member)

    def handle(self) -> None:
        sock: socket.socket = self.request
        chat = self.server.chat
        lines = LineBuffer(self.server.settings.max_line)
        sock.settimeout(self.server.settings.handshake_timeout)
        chat.greet(self.member)
        try:
            while data := sock.recv(RECV_BYTES):
                for line in lines.feed(data):
                    chat.receive(self.member, line)
                if self.member.name is not None and sock.gettimeout() is not None:
                    sock.settimeout(None)
        except socket.timeout:
            self.reason = "gave no name in time"
            log.info("%s %s", self.member.address, self.reason)
            chat.expire(self.member, self.server.settings.handshake_timeout)
            self.outbox.flush(self.server.settings.shutdown_flush)
        except OSError as exc:
            self.reason = f"connection lost: {exc.strerror or exc}"
        if self.outbox.overflowed:
            self.reason = "not reading: dropped"
            log.warning("%s (%s) was not reading and was disconnected", self.member.name,
                        self.member.address)

    def finish(self) -> None:
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
        self.chat = Chat(self.registry, op_password=settings.op_password)
        self.address_family = address_family(address[0])
        try:
            super().__init__(address, ChatHandler)
        except OSError as exc:
            raise ServerStartError(describe_bind_error(exc, *address)) from exc

    def verify_request(self, request: socket.socket, client_address: tuple) -> bool:
        """Refuse a banned address with one line, before a thread is spent on it."""
        if not self.chat.bans.is_banned(client_address[0]):
            return True
        log.info("refused %s: banned", format_address(client_address))
        try:
            request.send(encode_line(render_refusal("this address is banned")), socket.MSG_DONTWAIT)
        except OSError:
            pass
        return False

    def stop(self) -> None:
        """Stop accepting, tell everyone the server is going down, and close every connection."""
        self.shutdown()
        self.chat.announce("Server is shutting down.")
        deadline = time.monotonic() + self.settings.shutdown_flush
        connections = self.registry.connections()
        for member in connections:
            member.outbox.flush(max(0.0, deadline - time.monotonic()))
        for member in connections:
            member.outbox.disconnect()
        self.server_close()


def serve(host: str, port: int, settings: ServerSettings = ServerSettings(),
          console: Optional[TextIO] = None) -> None:
    """Run a server until SIGINT, SIGTERM or end of input on ``console`` (a terminal), then stop it."""
    server = ChatServer((host, port), settings)
    print(f"groupchat {__version__} serving on {format_address(server.server_address)}", flush=True)
    print("Waiting for clients...", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS},
                     name="accept", daemon=True).start()
    if console is not None:
        threading.Thread(target=Console(server.chat, stopping.set).run, args=(console,),
                         name="console", daemon=True).start()
    stopping.wait()
    log.info("shutting down")
    server.stop()


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address or a name that only has one, else IPv4."""
    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {host}: unknown host") from exc
    return infos[0][0]


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


def format_address(address: tuple) -> str:
    """``host:port``, with brackets around an IPv6 host.

    >>> format_address(("::1", 7111, 0, 0))
    '[::1]:7111'
    """
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
