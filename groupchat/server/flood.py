"""Flood control as backpressure: a token bucket that says how long to wait before the next line.

The handler sleeps that long before it reads on, so a flooder's own TCP window fills and it
slows down; nothing it sent is dropped while it is connected, and nobody else waits.  Each
connection has its own bucket, and every connection from one address shares another
(:class:`BucketTable`), which outlives them, so reconnecting buys no fresh budget; an IPv6
address shares its /64's (:func:`~groupchat.net.address_group`), so new addresses buy none either.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Hashable, Iterable, Iterator, Optional, TypeVar, Union

from groupchat.net import address_group

Line = TypeVar("Line")

DEFAULT_RATE = 5.0  # lines per second, on average
DEFAULT_BURST = 20  # lines at once, after a quiet spell
# Every connection from one address together, however often it reconnects: a few people
# behind one NAT chat freely, one person with many connections does not multiply the rate.
DEFAULT_ADDRESS_RATE = 20.0
DEFAULT_ADDRESS_BURST = 60
# Private messages from one address to one person: a line a second, after a few at once.
PRIVATE_RATE = 1.0
PRIVATE_BURST = 5
MAX_TRACKED = 10_000  # keys a BucketTable remembers; the least recently used go first


class TokenBucket:
    """``rate`` lines per second on average, up to ``burst`` at once; a rate of 0 means no limit.

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=2, burst=3, now=lambda: now[0])
    >>> [bucket.take() for _ in range(5)]
    [0.0, 0.0, 0.0, 0.5, 1.0]
    >>> now[0] = 10.0
    >>> bucket.take()
    0.0
    """

    def __init__(self, rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._last = now()

    def take(self, only_if_free: bool = False) -> float:
        """Spend a token for one line; return how many seconds to wait before handling it.

        ``only_if_free`` spends nothing when a wait would be needed (the line is refused,
        not delayed), so refused attempts do not push the next one further off.
        """
        if not self.rate:
            return 0.0
        now = self._now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if only_if_free and self._tokens < 1:
            return (1 - self._tokens) / self.rate
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class BucketTable:
    """Token buckets by key (an address; an address and a person), shared by every thread, so
    the budget follows the key across connections.  Memory is bounded: past ``size`` keys the
    least recently used is forgotten (a forgotten key starts again with a full burst).

    >>> now = [0.0]
    >>> table = BucketTable(rate=1, burst=2, now=lambda: now[0])
    >>> [table.take("10.0.0.1") for _ in range(3)], table.take("10.0.0.2")
    ([0.0, 0.0, 1.0], 0.0)
    >>> [table.take("10.0.0.2", only_if_free=True) for _ in range(3)]  # refused tries cost nothing
    [0.0, 1.0, 1.0]
    """

    def __init__(self, rate: float, burst: int, size: int = MAX_TRACKED,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._size = size
        self._now = now
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[Hashable, TokenBucket] = collections.OrderedDict()

    def take(self, key: Hashable, only_if_free: bool = False) -> float:
        """Spend a token of ``key``'s bucket; return how long to wait (0 with a rate of 0)."""
        if not self.rate:
            return 0.0
        with self._lock:
            bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst, self._now)
            self._buckets[key] = bucket  # the most recently used last
            if len(self._buckets) > self._size:
                self._buckets.popitem(last=False)
            return bucket.take(only_if_free)


class FloodControl:
    """One connection's budget: its own bucket and its address's (its /64's, for IPv6), which outlives it.

    A rate of 0 for the connection turns flood control off altogether.
    """

    def __init__(self, own: TokenBucket, by_address: BucketTable, address: str) -> None:
        self.rate = own.rate
        self.burst = min(own.burst, by_address.burst) if by_address.rate else own.burst
        self._own = own
        self._by_address = by_address
        self._address = address_group(address)

    def take(self) -> float:
        if not self.rate:
            return 0.0
        return max(self._own.take(), self._by_address.take(self._address))


def paced(lines: Iterable[Line], bucket: Union[TokenBucket, FloodControl],
          sleep: Callable[[float], Optional[bool]] = time.sleep) -> Iterator[list[Line]]:
    """Group lines into runs the bucket allows at once, sleeping between runs.

    A ``sleep`` that returns true says the connection is over (its peer hung up): the lines
    still waiting are not yielded.

    >>> now = [0.0]
    >>> naps = []
    >>> def nap(seconds):
    ...     naps.append(seconds)
    ...     now[0] += seconds
    >>> bucket = TokenBucket(rate=1, burst=2, now=lambda: now[0])
    >>> list(paced("abcd", bucket, nap)), naps
    ([['a', 'b'], ['c'], ['d']], [1.0, 1.0])
    >>> list(paced("efgh", TokenBucket(rate=1, burst=2), lambda seconds: True))
    [['e', 'f']]
    """
    run: list[Line] = []
    for line in lines:
        delay = bucket.take()
        if delay:
            if run:
                yield run
                run = []
            if sleep(delay):  # not reading meanwhile: the flooder's TCP window fills
                return
        run.append(line)
    if run:
        yield run


def cut_after_lines(data: bytes, count: int) -> int:
    """How much of ``data`` holds its first ``count`` lines (all of it if it holds fewer), so a
    reader takes no more than flood control will let through soon.

    >>> cut_after_lines(b"a\\nb\\nc\\nd", 2), cut_after_lines(b"a\\nb", 5)
    (4, 3)
    """
    end = -1
    for _ in range(count):
        end = data.find(b"\n", end + 1)
        if end < 0:
            return len(data)
    return end + 1
