"""Who may connect: allow and deny lists, bans, and how many connections there may be.

All of it is decided in the accept thread, before a handler thread is started or a byte is
read, so a crowd of refused connections costs one line each and nothing more.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import Counter
from typing import Callable, Iterable, NamedTuple, Optional, Union

from groupchat.errors import InvalidAddressError
from groupchat.net import address_group
from groupchat.protocol import name_key

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Ban(NamedTuple):
    """One ban: of an address block, or of a name (as it was given; it holds ignoring case)."""

    target: Union[Network, str]
    until: float  # math.inf for a ban with no end


def parse_network(text: str) -> Network:
    """An address or CIDR block; IPv4-mapped IPv6 addresses count as IPv4.

    >>> parse_network("10.0.0.7")
    IPv4Network('10.0.0.7/32')
    >>> parse_network("::ffff:10.0.0.7")
    IPv4Network('10.0.0.7/32')
    >>> parse_network("2001:db8::/32")
    IPv6Network('2001:db8::/32')
    """
    try:
        network = ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        raise InvalidAddressError(f'"{text}" is not an address or CIDR block') from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(mapped)
    return network


class BanList:
    """Banned addresses and blocks, and banned names; thread-safe; expired bans drop out when looked at.

    An address ban is checked when a connection is accepted and again when it names itself;
    a name ban when a name is taken (see :class:`~groupchat.server.moderation.Moderation`).
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._addresses: dict[Network, Ban] = {}
        self._names: dict[str, Ban] = {}  # by name_key

    def add(self, target: str, minutes: float = 0) -> Ban:
        """Ban an address or block, for ``minutes`` or (0) for good."""
        network = parse_network(target)
        return self._put(self._addresses, network, Ban(network, self._until(minutes)))

    def add_name(self, name: str, minutes: float = 0) -> Ban:
        """Ban a name, ignoring case, for ``minutes`` or (0) for good."""
        return self._put(self._names, name_key(name), Ban(name, self._until(minutes)))

    def remove(self, target: str) -> bool:
        """Lift an address ban; return whether there was one."""
        network = parse_network(target)
        with self._lock:
            return self._addresses.pop(network, None) is not None

    def remove_name(self, name: str) -> bool:
        """Lift a name ban; return whether there was one."""
        with self._lock:
            return self._names.pop(name_key(name), None) is not None

    def is_banned(self, host: str) -> bool:
        """Whether connections from ``host`` are refused now."""
        if not self._addresses:  # the common case takes no lock
            return False
        return contains((ban.target for ban in self._live(self._addresses)), host)

    def is_name_banned(self, name: str) -> bool:
        """Whether ``name`` may not be taken now."""
        return bool(self._names) and any(name_key(ban.target) == name_key(name)
                                         for ban in self._live(self._names))

    def active(self) -> list[Ban]:
        """The bans in force, addresses then names, oldest first."""
        return self._live(self._addresses) + self._live(self._names)

    def _until(self, minutes: float) -> float:
        return self._now() + minutes * 60 if minutes > 0 else math.inf

    def _put(self, bans: dict, key: object, ban: Ban) -> Ban:
        with self._lock:
            bans[key] = ban
        return ban

    def _live(self, bans: dict) -> list[Ban]:
        """The unexpired bans of one kind; the expired ones are dropped."""
        now = self._now()
        with self._lock:
            for key in [key for key, ban in bans.items() if ban.until <= now]:
                del bans[key]
            return list(bans.values())


def contains(networks: Iterable[Network], host: str) -> bool:
    """Whether ``host`` (an address as the socket gives it) is in any of ``networks``."""
    address = parse_network(host).network_address
    return any(address in network for network in networks if network.version == address.version)


class Admission:
    """The gate every new connection passes: allow/deny lists, bans, total and per-address caps.

    :meth:`admit` is called from the accept thread only, and counts what it admits, so the
    caps hold exactly even under a burst of connects; :meth:`release` (any thread) uncounts.
    A cap of 0 means no cap.  The cap per address counts an IPv6 address with its whole /64
    (:func:`~groupchat.net.address_group`); allow and deny lists and bans take addresses as they are.
    """

    def __init__(self, bans: BanList, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 max_clients: int = 0, max_per_address: int = 0) -> None:
        self.bans = bans
        self.allow = [parse_network(a) for a in allow]
        self.deny = [parse_network(d) for d in deny]
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self._lock = threading.Lock()
        self._per_address: Counter[str] = Counter()
        self._total = 0

    @property
    def full(self) -> bool:
        """Whether the next connection would pass ``max_clients``."""
        return bool(self.max_clients) and self._total >= self.max_clients

    def admit(self, host: str, over_cap: bool = False) -> Optional[str]:
        """Count the connection in and return None, or return why it is refused.

        ``over_cap`` admits past ``max_clients`` (the caller has just made room, and the
        connection it hung up is uncounted only once its thread finishes)."""
        if self.allow and not contains(self.allow, host) or contains(self.deny, host):
            return "this address is not allowed here"
        if self.bans.is_banned(host):
            return "this address is banned"
        group = address_group(host)
        with self._lock:
            if self.max_clients and self._total >= self.max_clients and not over_cap:
                return f"the server is full ({self.max_clients} connections); try again later"
            if self.max_per_address and self._per_address[group] >= self.max_per_address:
                where = f"your network ({group})" if "/" in group else "your address"
                return f"too many connections from {where} (at most {self.max_per_address})"
            self._total += 1
            self._per_address[group] += 1
        return None

    def release(self, host: str) -> None:
        """Uncount a connection that :meth:`admit` let in."""
        group = address_group(host)
        with self._lock:
            self._total -= 1
            self._per_address[group] -= 1
            if not self._per_address[group]:
                del self._per_address[group]
