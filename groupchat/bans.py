"""Addresses the server refuses, each until a time or for good."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from typing import Callable, NamedTuple, Union

from groupchat.errors import CommandError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Ban(NamedTuple):
    network: Network
    until: float  # math.inf for a ban with no end


def parse_network(text: str) -> Network:
    """An address or CIDR block; IPv4-mapped IPv6 addresses count as IPv4.

    >>> parse_network("10.0.0.7")
    IPv4Network('10.0.0.7/32')
    >>> parse_network("::ffff:10.0.0.7")
    IPv4Network('10.0.0.7/32')
    """
    try:
        network = ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        raise CommandError(f'"{text}" is neither a connected name nor an address') from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(mapped)
    return network


class BanList:
    """Banned addresses and blocks; thread-safe; expired bans drop out when looked at."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._bans: dict[Network, float] = {}

    def add(self, target: str, minutes: float = 0) -> Ban:
        """Ban an address or block, for ``minutes`` or (0) for good."""
        network = parse_network(target)
        until = self._now() + minutes * 60 if minutes > 0 else math.inf
        with self._lock:
            self._bans[network] = until
        return Ban(network, until)

    def remove(self, target: str) -> bool:
        """Lift a ban; return whether there was one."""
        network = parse_network(target)
        with self._lock:
            return self._bans.pop(network, None) is not None

    def is_banned(self, host: str) -> bool:
        """Whether connections from ``host`` are refused now."""
        if not self._bans:  # the common case takes no lock
            return False
        address = parse_network(host).network_address
        return any(address in ban.network for ban in self.active()
                   if ban.network.version == address.version)

    def active(self) -> list[Ban]:
        """The bans in force, oldest first."""
        now = self._now()
        with self._lock:
            for network in [n for n, until in self._bans.items() if until <= now]:
                del self._bans[network]
            return [Ban(n, until) for n, until in self._bans.items()]
