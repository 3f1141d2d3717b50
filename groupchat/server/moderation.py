"""Operators, kicks and bans: what the chat's operators and the server console may do to others.

A ban is of a name unless it says ``--address``: a name is one person, while one address
may be a whole school behind a NAT, so banning an address is asked for in so many words and
the answer names everyone it put out.  After ``--address``, text that parses as an address
or block is one, whoever is called that.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Callable, NamedTuple, Optional, Protocol

from groupchat.errors import CommandError, InvalidAddressError, InvalidNameError, UsageError
from groupchat.jsonl import BYE_BANNED, BYE_KICKED, NAME_REFUSED, NO_SUCH_NAME
from groupchat.protocol import check_name, list_names
from groupchat.server.access import Ban, BanList, contains
from groupchat.server.guesses import PasswordGate
from groupchat.server.registry import Member, Registry
from groupchat.server.settings import MAX_LISTED_NAMES

log = logging.getLogger(__name__)

ADDRESS_FLAG = "--address"
BANNED = "banned"  # the reason a kick for a ban gives
KICK, BAN, UNBAN = "kick", "ban", "unban"  # what other nodes of a cluster are told to do ...
SAY = "say"  # ... and a notice from a server's console to everyone
# ASCII digits only: str.isdigit() and float() take "²" or "١٢", which a person did not mean.
_MINUTES = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


class BanOrder(NamedTuple):
    """What /ban or /unban was asked: a name, or (``by_address``) an address, a block or a
    connected name's address; ``minutes`` 0 is for good."""

    target: str
    by_address: bool
    minutes: float = 0.0


def parse_ban(rest: str, with_minutes: bool = True) -> BanOrder:
    """The arguments of /ban (``[--address] TARGET [MINUTES]``) or, without minutes, of /unban.

    >>> parse_ban("bob 5")
    BanOrder(target='bob', by_address=False, minutes=5.0)
    >>> parse_ban("--address 10.0.0.0/24")
    BanOrder(target='10.0.0.0/24', by_address=True, minutes=0.0)
    >>> parse_ban("bob 5", with_minutes=False)
    Traceback (most recent call last):
    ...
    groupchat.errors.UsageError
    """
    words = rest.split()
    by_address = words[:1] == [ADDRESS_FLAG]
    words = words[by_address:]
    if not 1 <= len(words) <= 1 + with_minutes:
        raise UsageError()
    return BanOrder(words[0], by_address, parse_minutes(words[1]) if len(words) == 2 else 0.0)


def parse_minutes(text: str) -> float:
    """A number of minutes, in ASCII digits, or a :class:`CommandError`.

    >>> parse_minutes("1.5")
    1.5
    >>> parse_minutes("²")
    Traceback (most recent call last):
    ...
    groupchat.errors.CommandError: "²" is not a number of minutes
    """
    if not _MINUTES.fullmatch(text):
        raise CommandError(f'"{text}" is not a number of minutes')
    return float(text)


def count_minutes(minutes: float, more: str = "") -> str:
    """``N minutes``, with one minute singular.

    >>> count_minutes(1), count_minutes(2.5, "more ")
    ('1 minute', '2.5 more minutes')
    """
    return f"{minutes:g} {more}minute{'' if minutes == 1 else 's'}"


def describe_ban(ban: Ban, now: float) -> str:
    """A ban as /bans lists it.

    >>> describe_ban(Ban("bob", math.inf), 0)
    'the name "bob" until lifted'
    """
    if ban.until == math.inf:
        return f"{describe_target(ban)} until lifted"
    return f"{describe_target(ban)} for {count_minutes(math.ceil((ban.until - now) / 60), 'more ')}"


def describe_target(ban: Ban) -> str:
    return f'the name "{ban.target}"' if isinstance(ban.target, str) else str(ban.target)


def ban_fields(ban: Ban) -> dict[str, Any]:
    """A ban as other nodes are told it and Redis keeps it: its target, whether that is an
    address, and its end in seconds since the epoch (None: until lifted).

    >>> ban_fields(Ban("bob", math.inf))
    {'target': 'bob', 'address': False, 'until': None}
    """
    address = not isinstance(ban.target, str)
    return {"target": str(ban.target), "address": address, "until": None if ban.until == math.inf else ban.until}


def no_such_name(name: str) -> CommandError:
    return CommandError(f'no one called "{name}" is here', code=NO_SUCH_NAME)


class OtherNodes(Protocol):
    """The rest of a cluster (``serve --redis``) as moderation sees it: what an operator or the
    console does here is done there too (see :meth:`Moderation.apply`)."""

    def tell_others(self, kind: str, fields: dict[str, Any]) -> None: ...
    def person(self, name: str) -> Optional[dict[str, Any]]: ...
    def note(self, member: Member) -> None: ...


class Moderation:
    """Who is an operator, and kicking and banning; ``tell(member, text, last)`` sends a member
    a notice (``last``, a JSON bye code: and ends its connection after it).

    Without an operator password (``op_gate`` None) nobody can become an operator; the
    console still kicks and bans.

    A ban is added before its targets are looked for, and a new name is checked after it is
    taken (:meth:`refusal`), so a connection naming itself while a ban is made is either found
    by the ban or finds it.
    """

    def __init__(self, registry: Registry, bans: BanList, op_gate: Optional[PasswordGate],
                 tell: Callable[[Member, str, Optional[str]], None]) -> None:
        self.registry = registry
        self.bans = bans
        self.op_gate = op_gate
        self.tell = tell
        self.cluster: Optional[OtherNodes] = None  # the other nodes, in a cluster (set by the chat)

    def make_op(self, member: Member, password: str) -> None:
        """Make a member an operator if ``password`` is the operators' one.

        A miss waits in the member's own thread (see :class:`PasswordGate`); an address locked
        out is told so at once.
        """
        if self.op_gate is None:
            raise CommandError("there are no operators on this server")
        refusal = self.op_gate.check(member.host, f"{member.name} ({member.address})", password)
        if refusal is not None:
            raise CommandError(refusal)
        member.is_op = True
        if self.cluster is not None:
            self.cluster.note(member)
        log.info("%s is now an operator", member.name)
        self.tell(member, "You are now an operator.", None)

    def kick(self, target: Member, by: str, reason: str = "") -> None:
        """Disconnect a member; its room hears why."""
        why = f"kicked by {by}" + (f": {reason}" if reason else "")
        log.warning("%s (%s) %s", target.name, target.address, why)
        target.leave_reason = why
        # Its last line: the connection ends.
        self.tell(target, f"You were {why}.", BYE_BANNED if reason == BANNED else BYE_KICKED)

    def kick_name(self, name: str, by: str, reason: str = "") -> str:
        """Kick the person called ``name``: here, or (in a cluster) on the node that holds the
        name, which disconnects them.  Return their name; CommandError if no one is called so."""
        target = self.registry.find(name)
        if target is not None and target.room is not None:
            self.kick(target, by, reason)
            return target.name
        person = self.cluster.person(name) if self.cluster is not None else None
        if person is None:
            raise no_such_name(name)
        self.cluster.tell_others(KICK, {"name": person["name"], "by": by, "reason": reason})
        return person["name"]

    def ban(self, order: BanOrder, by: str) -> str:
        """Ban what ``order`` says and kick whoever it covers, on every node of a cluster; return
        what was done, in one line."""
        ban, said = self._ban_address(order, by) if order.by_address else self._ban_name(order, by)
        if self.cluster is not None:
            self.cluster.tell_others(BAN, {**ban_fields(ban), "by": by})
        return said

    def _ban_name(self, order: BanOrder, by: str) -> tuple[Ban, str]:
        """Ban a name, held now or not (someone just kicked), and kick whoever holds it."""
        try:
            name = check_name(order.target)
        except InvalidNameError as exc:
            raise CommandError(f"{exc}; /ban {ADDRESS_FLAG} bans an address") from None
        ban = self.bans.add_name(name, order.minutes)
        log.warning("%s banned %s %s", by, describe_target(ban), self._span(order))
        kicked = [victim.name for victim in self._kick_covered(ban, by)]
        if not kicked and self.cluster is not None and (person := self.cluster.person(name)) is not None:
            kicked = [f"{person['name']} (on another server)"]
        said = f"Banned {describe_target(ban)} {self._span(order)}"
        return ban, said + (f"; kicked {kicked[0]}." if kicked else ".")

    def _ban_address(self, order: BanOrder, by: str) -> tuple[Ban, str]:
        """Ban an address or block, or a connected person's address (on any node); kick everyone
        in it, by name (here; the other nodes kick their own)."""
        member = person = None
        try:
            ban = self.bans.add(order.target, order.minutes)
        except InvalidAddressError:
            member = self.registry.find(order.target)
            person = self.cluster.person(order.target) if member is None and self.cluster is not None else None
            if member is None and person is None:
                raise CommandError(f'"{order.target}" is neither an address nor a connected name') from None
            ban = self.bans.add(member.host if member is not None else person["host"], order.minutes)
        victims = self._kick_covered(ban, by)
        log.warning("%s banned %s %s, kicking %d", by, ban.target, self._span(order), len(victims))
        others = [v.name for v in victims if v is not member]
        said = f"Banned {ban.target}"
        if member is not None:
            said += f" ({member.name}'s address) {self._span(order)}; kicked {member.name}"
        elif person is not None:
            said += f" ({person['name']}'s address, on another server) {self._span(order)}"
        else:
            said += f" {self._span(order)}"
        if others:
            said += (f"; also kicked {list_names(others, MAX_LISTED_NAMES)} (same address)" if member
                     else f"; kicked {list_names(others, MAX_LISTED_NAMES)}")
        return ban, said + "."

    def _kick_covered(self, ban: Ban, by: str) -> list[Member]:
        """Kick the people here that ``ban`` covers; return them."""
        if isinstance(ban.target, str):
            holder = self.registry.find(ban.target)
            victims = [holder] if holder is not None else []
        else:
            victims = [v for v in self.registry.connections() if v.name is not None and contains([ban.target], v.host)]
        for victim in victims:
            self.kick(victim, by, BANNED)
        return victims

    @staticmethod
    def _span(order: BanOrder) -> str:
        return f"for {count_minutes(order.minutes)}" if order.minutes else "until lifted"

    def unban(self, order: BanOrder) -> str:
        """Lift a name ban, or (``by_address``) an address ban; return what was done."""
        lifted = self._lift(order.target, order.by_address)
        what = order.target if order.by_address else f'the name "{order.target}"'
        if not lifted:
            raise CommandError(f"{what} is not banned")
        if self.cluster is not None:
            self.cluster.tell_others(UNBAN, {"target": order.target, "address": order.by_address})
        return f"Lifted the ban on {what}."

    def _lift(self, target: str, address: bool) -> bool:
        return self.bans.remove(target) if address else self.bans.remove_name(target)

    def apply(self, kind: str, fields: dict[str, Any]) -> None:
        """Do here what another node of the cluster did (or, at start, what Redis keeps): a kick
        of one of this node's people, a ban (kicking whoever it covers here) or an unban."""
        if kind == KICK:
            target = self.registry.find(fields["name"])
            if target is not None and target.room is not None:
                self.kick(target, fields["by"], fields["reason"])
        elif kind == BAN:
            until = fields["until"]
            minutes = 0.0 if until is None else (until - time.time()) / 60
            if until is not None and minutes <= 0:
                return  # over already
            add = self.bans.add if fields["address"] else self.bans.add_name
            self._kick_covered(add(fields["target"], minutes), fields["by"])
        elif kind == UNBAN:
            self._lift(fields["target"], fields["address"])

    def describe_bans(self) -> list[str]:
        now = time.time()
        return [describe_ban(ban, now) for ban in self.bans.active()] or ["No bans."]

    def check_name(self, name: str) -> str:
        """``name``, or an :class:`InvalidNameError` if it is banned (asked before a name is taken)."""
        if self.bans.is_name_banned(name):
            raise InvalidNameError(f'the name "{name}" is banned', code=NAME_REFUSED)
        return name

    def refusal(self, member: Member) -> Optional[str]:
        """Why a member that has just taken its name may not stay (a ban made since it connected,
        or while it was naming itself), or None."""
        if self.bans.is_banned(member.host):
            return "this address is banned"
        try:
            self.check_name(member.name)
        except InvalidNameError as exc:
            return str(exc)
        return None
