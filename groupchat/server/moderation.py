"""Operators, kicks and bans: what the chat's operators and the server console may do to others."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional

from groupchat.errors import CommandError, InvalidAddressError
from groupchat.server.access import BanList
from groupchat.server.guesses import PasswordGate
from groupchat.server.registry import Member, Registry

log = logging.getLogger(__name__)


class Moderation:
    """Who is an operator, and kicking and banning; ``tell`` sends a member a notice.

    Without an operator password (``op_gate`` None) nobody can become an operator; the
    console still kicks and bans.
    """

    def __init__(self, registry: Registry, bans: BanList, op_gate: Optional[PasswordGate],
                 tell: Callable[[Member, str], None]) -> None:
        self.registry = registry
        self.bans = bans
        self.op_gate = op_gate
        self.tell = tell

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
        log.info("%s is now an operator", member.name)
        self.tell(member, "You are now an operator.")

    def kick(self, target: Member, by: str, reason: str = "") -> None:
        """Disconnect a member; its room hears why."""
        why = f"kicked by {by}" + (f": {reason}" if reason else "")
        log.warning("%s (%s) %s", target.name, target.address, why)
        target.leave_reason = why
        self.tell(target, f"You were {why}.")
        target.end()

    def ban(self, target: str, minutes: str, by: str) -> str:
        """Ban a member's address (and kick them) or an address or block; return what was done."""
        try:
            length = float(minutes) if minutes else 0.0
        except ValueError:
            length = -1.0
        if not (0 <= length < math.inf):
            raise CommandError(f'"{minutes}" is not a number of minutes')
        member = self.registry.find(target)
        try:
            ban = self.bans.add(member.host if member else target, length)
        except InvalidAddressError:
            raise CommandError(f'"{target}" is neither a connected name nor an address') from None
        for victim in self.registry.connections():
            if victim.name is not None and self.bans.is_banned(victim.host):
                self.kick(victim, by, "banned")
        span = f"for {length:g} minutes" if length else "until lifted"
        log.warning("%s banned %s %s", by, ban.network, span)
        return f"Banned {ban.network} {span}."

    def unban(self, target: str) -> str:
        if not self.bans.remove(target):
            raise CommandError(f"{target} is not banned")
        return f"Lifted the ban on {target}."

    def describe_bans(self) -> list[str]:
        now = time.time()
        return [f"{ban.network} " + ("until lifted" if ban.until == math.inf
                                     else f"for {math.ceil((ban.until - now) / 60)} more minutes")
                for ban in self.bans.active()] or ["No bans."]
