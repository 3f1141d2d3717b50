"""Password guessing made slow: per-address counts of wrong guesses, a growing delay, a lockout.

A connection costs a guesser one round trip, so without this a password falls to a script
that reconnects (about 1,300 guesses a second on loopback).  A :class:`PasswordGate` puts one
:class:`GuessLimiter` in front of each password (the server's, the operators'), so a success
on one never forgives misses on the other.  The gate counts an IPv6 guesser's misses with its
whole /64's (:func:`~groupchat.net.address_group`): a new address from that block guesses no faster.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from groupchat.net import address_group

log = logging.getLogger(__name__)

GUESSES_BEFORE_BACKOFF = 5  # misses that wait only the base delay; each one after waits twice as long
MAX_GUESS_DELAY_SECONDS = 30.0
FORGET_MISSES_SECONDS = 15 * 60.0  # an address's misses are forgotten this long after its last one
MAX_GUESSING_ADDRESSES = 10_000  # past this many, the address quiet longest is forgotten
_MAX_DOUBLINGS = 64  # 2.0 ** this is far past any max_delay, and no float overflows


class Miss(NamedTuple):
    """What one wrong guess costs its address."""

    delay: float  # seconds to wait before answering it
    count: int  # the address's misses so far, this one included
    locked: bool  # this miss locked the address out

    @property
    def worth_logging(self) -> bool:
        """The 1st, 2nd, 4th, 8th... miss and the lockout: a guesser costs a few log lines, not
        one a guess.

        >>> [n for n in range(1, 20) if Miss(0, n, False).worth_logging]
        [1, 2, 4, 8, 16]
        """
        return self.locked or self.count & (self.count - 1) == 0


@dataclass
class _Misses:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class GuessLimiter:
    """Wrong guesses per address: thread-safe, and bounded in memory.

    The first ``free`` misses from an address each wait ``base_delay`` seconds; each one
    after waits twice as long as the one before, up to ``max_delay``.  The
    ``lockout_after``-th miss locks the address out for ``lockout_seconds`` (either 0: no
    lockout); its count then starts again.  An address's misses are forgotten
    ``forget_after`` seconds after its last one, or when it guesses right (:meth:`forgive`).
    At most ``max_addresses`` are remembered.

    >>> now = [0.0]
    >>> limiter = GuessLimiter(1.0, lockout_after=8, lockout_seconds=60, now=lambda: now[0])
    >>> [limiter.miss("10.0.0.9").delay for _ in range(7)]
    [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0]
    >>> limiter.miss("10.0.0.9"), limiter.locked_for("10.0.0.9"), limiter.locked_for("10.0.0.8")
    (Miss(delay=0.0, count=8, locked=True), 60.0, 0.0)
    """

    def __init__(self, base_delay: float, lockout_after: int, lockout_seconds: float, *,
                 free: int = GUESSES_BEFORE_BACKOFF, max_delay: float = MAX_GUESS_DELAY_SECONDS,
                 forget_after: float = FORGET_MISSES_SECONDS, max_addresses: int = MAX_GUESSING_ADDRESSES,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.base_delay = base_delay
        self.lockout_after = lockout_after if lockout_seconds > 0 else 0
        self.lockout_seconds = lockout_seconds
        self.free = free
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._now = now
        self._lock = threading.Lock()
        self._misses: OrderedDict[str, _Misses] = OrderedDict()  # the address missed longest ago first

    def locked_for(self, host: str) -> float:
        """Seconds before ``host`` may guess again; 0 if it may now."""
        now = self._now()
        with self._lock:
            self._forget_old(now)
            misses = self._misses.get(host)
            return max(0.0, misses.locked_until - now) if misses else 0.0

    def miss(self, host: str) -> Miss:
        """Count a wrong guess from ``host``; say how long to wait before answering it."""
        now = self._now()
        with self._lock:
            self._forget_old(now)
            misses = self._misses.pop(host, None) or _Misses()
            self._misses[host] = misses
            if len(self._misses) > self.max_addresses:
                self._misses.popitem(last=False)
            misses.count += 1
            misses.last = now
            count = misses.count
            if self.lockout_after and count >= self.lockout_after:
                misses.count = 0
                misses.locked_until = now + self.lockout_seconds
                return Miss(0.0, count, True)  # it is answered with the lockout: no reason to wait
        doublings = min(max(0, count - self.free), _MAX_DOUBLINGS)
        return Miss(min(self.max_delay, self.base_delay * 2.0 ** doublings), count, False)

    def forgive(self, host: str) -> None:
        """Forget ``host``'s misses: it gave the right password."""
        with self._lock:
            self._misses.pop(host, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._misses)

    def _forget_old(self, now: float) -> None:
        """Drop the addresses quiet long enough, oldest first (the lock is held)."""
        while self._misses:
            oldest = next(iter(self._misses.values()))
            if now < max(oldest.last + self.forget_after, oldest.locked_until):
                return
            self._misses.popitem(last=False)


def lockout_notice(what: str, seconds: float) -> str:
    """What an address locked out of a password is told.

    >>> lockout_notice("password", 61)
    'too many wrong passwords from your address; try again in 2 minutes'
    """
    minutes = math.ceil(seconds / 60)
    return (f"too many wrong {what}s from your address; "
            f"try again in {minutes} minute{'s' if minutes != 1 else ''}")


class PasswordGate:
    """One password behind a :class:`GuessLimiter`: what a guess is answered, when, and what is logged.

    ``what`` names the password in answers and logs ("password", "operator password").
    ``sleep`` is called in the guessing connection's own thread, so only it waits.
    """

    def __init__(self, password: str, what: str, limiter: GuessLimiter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.password = password
        self.what = what
        self.limiter = limiter
        self.sleep = sleep

    def lockout(self, host: str) -> Optional[str]:
        """The line for ``host`` if it (or its /64) is locked out of this password, else None."""
        seconds = self.limiter.locked_for(address_group(host))
        return lockout_notice(self.what, seconds) if seconds else None

    def check(self, host: str, who: str, given: str) -> Optional[str]:
        """None if ``given`` is the password, else why not in one line, after the miss's delay.

        A locked-out address is answered at once, and what it gave is not even compared.
        ``who`` names the guesser in the log, where ``host`` shows with its /64 if IPv6.
        """
        locked = self.lockout(host)
        if locked is not None:
            return locked
        group = address_group(host)
        if hmac.compare_digest(given.encode(), self.password.encode()):
            self.limiter.forgive(group)
            return None
        miss = self.limiter.miss(group)
        shown = host if group == host else f"{host} ({group})"
        if miss.locked:
            log.warning("%s locked out of the %s for %g minutes after %d wrong guesses", shown,
                        self.what, self.limiter.lockout_seconds / 60, miss.count)
            return lockout_notice(self.what, self.limiter.lockout_seconds)
        if miss.worth_logging:
            log.warning("wrong %s from %s (miss %d from %s; only misses 1, 2, 4, 8... are logged)",
                        self.what, who, miss.count, shown)
        self.sleep(miss.delay)
        return f"wrong {self.what}"
