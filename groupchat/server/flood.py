"""Flood control as backpressure: a token bucket that says how long to wait before the next line.

The handler sleeps that long before it reads on, so a flooder's own TCP window fills and it
slows down; nothing it sent is dropped, and nobody else waits.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

Line = TypeVar("Line")

DEFAULT_RATE = 5.0  # lines per second, on average
DEFAULT_BURST = 20  # lines at once, after a quiet spell


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

    def take(self) -> float:
        """Spend a token for one line; return how many seconds to wait before handling it."""
        if not self.rate:
            return 0.0
        now = self._now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def paced(lines: Iterable[Line], bucket: TokenBucket,
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
