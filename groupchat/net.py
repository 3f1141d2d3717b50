"""Small network helpers every wing uses: how an address is written, which family a host needs,
which addresses are one party's, how many sockets a process may open, and a socket's kernel
timeouts (``timeval``)."""

from __future__ import annotations

import ipaddress
import resource
import socket
import struct
from typing import Optional

from groupchat.errors import ServerStartError

# socket.MSG_DONTWAIT as a plain int: socket's own is an enum member, slower to pass, and
# the server passes it once per line per member.
DONTWAIT = int(socket.MSG_DONTWAIT)
# What an idle connection's blocked recv asks for: a blocked recv holds a buffer as big as it
# asked for, so ten thousand idle people hold 20 MB with this, where 16 KiB each held 160.
IDLE_RECV_BYTES = 2 * 1024
# When the hard open-file limit is unlimited, the kernel still caps it here (else this guess).
NR_OPEN_PATH = "/proc/sys/fs/nr_open"
NR_OPEN_GUESS = 1 << 20


def format_address(address: tuple) -> str:
    """``host:port``, with brackets around an IPv6 host.

    >>> format_address(("::1", 7111, 0, 0))
    '[::1]:7111'
    """
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_target(target: str, default_port: int) -> tuple[str, int]:
    """Host and port as a person types them: ``host``, ``host:port``, ``[v6]``, ``[v6]:port``,
    or a bare IPv6 address; ValueError if what follows the host is not a port.

    >>> split_target("localhost", 7111), split_target("chat.example.org:7400", 7111)
    (('localhost', 7111), ('chat.example.org', 7400))
    >>> split_target("[::1]:7400", 7111), split_target("[::1]", 7111), split_target("::1", 7111)
    (('::1', 7400), ('::1', 7111), ('::1', 7111))
    """
    host, port = target, ""
    if target.startswith("["):
        host, bracket, port = target[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"{target}: an IPv6 address goes in brackets, e.g. [::1]:7111")
        port = port[1:]
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{target}: {port!r} is not a port (1-65535)")
    return host, int(port)


def split_targets(targets: str, port: Optional[int], default_port: int) -> list[tuple[str, int]]:
    """The servers a person names: one address as :func:`split_target` takes it, or several
    separated by commas (every node of one chat).  One without a port of its own takes ``port``,
    else ``default_port``; ValueError if an address is malformed, missing, or gives a port
    other than ``port``.

    >>> split_targets("localhost", None, 7111), split_targets("localhost", 111, 7111)
    ([('localhost', 7111)], [('localhost', 111)])
    >>> split_targets("[::1]:7111,localhost:7112", None, 7111)
    [('::1', 7111), ('localhost', 7112)]
    >>> split_targets("one, two:7400", 7500, 7111)
    Traceback (most recent call last):
    ValueError: two ports given: 7400 in HOST, and 7500
    >>> split_targets("one,,two", None, 7111)
    Traceback (most recent call last):
    ValueError: 'one,,two' has an empty address
    """
    addresses = []
    for target in targets.split(","):
        if not target.strip():
            raise ValueError(f"{targets!r} has an empty address")
        host, own = split_target(target.strip(), 0)
        if port and own and own != port:
            raise ValueError(f"two ports given: {own} in HOST, and {port}")
        addresses.append((host, own or port or default_port))
    return addresses


# The block an IPv6 subscriber gets at the least: a /64 is one customer, one LAN (RFC 6177).
IPV6_GROUP_PREFIX = 64


def address_group(host: str) -> str:
    """The key a limit per address counts ``host`` (a peer's address as the socket gives it)
    under: an IPv4 address is its own, an IPv4-mapped IPv6 address is its IPv4 address, and an
    IPv6 address counts with its whole /64, which any one customer has, so changing the last
    64 bits makes no fresh guesser.  Anything else (a Unix socket's path) is its own.

    >>> address_group("192.0.2.7"), address_group("::ffff:192.0.2.7")
    ('192.0.2.7', '192.0.2.7')
    >>> address_group("2001:db8:1:2::7") == address_group("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    True
    >>> address_group("2001:db8:1:3::7"), address_group("::1"), address_group("fe80::1%eth0")
    ('2001:db8:1:3::/64', '::/64', 'fe80::/64')
    """
    if ":" not in host:  # IPv4, as the socket writes it: the common case costs nothing
        return host
    try:
        address = ipaddress.IPv6Address(host.strip("[]"))
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    low_bits = 128 - IPV6_GROUP_PREFIX
    return f"{ipaddress.IPv6Address(int(address) >> low_bits << low_bits)}/{IPV6_GROUP_PREFIX}"


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address or a name that only has one, else IPv4 (for listening)."""
    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {host}: unknown host") from exc
    return infos[0][0]


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard maximum; return the limit now in force.

    A server with thousands of clients needs a descriptor each, and so does a load generator
    playing them; the processes a bench starts inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # setrlimit refuses an infinite soft limit: take the kernel's cap
        try:
            with open(NR_OPEN_PATH) as nr_open:
                hard = int(nr_open.read())
        except (OSError, ValueError):
            hard = NR_OPEN_GUESS
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


class Reads:
    """One connection's ``recv``: it asks for IDLE_RECV_BYTES while the peer sends little, and
    for up to ``most`` once a read comes back full (the peer is sending a lot), so an idle
    connection waits holding a small buffer and a busy one reads in large ones."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._idle = min(IDLE_RECV_BYTES, most)
        self._size = self._idle

    def recv(self, sock: socket.socket) -> bytes:
        data = sock.recv(self._size)
        self._size = self.most if len(data) == self._size else self._idle
        return data


def timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO and SO_SNDTIMEO; 0 means no timeout.

    >>> import struct; struct.unpack("ll", timeval(2.5))
    (2, 500000)
    """
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
