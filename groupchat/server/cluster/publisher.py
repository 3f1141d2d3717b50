"""Publishing: each event gets its id from the cluster's one sequence and is stored in a stream, atomically.

A Lua script (after Centrifugo's Redis engine) raises the sequence and ``XADD``s the event with
that id to its stream with a bounded ``MAXLEN``, in one step no other node can come between:
every node reads the same ids in the same order.  Events are published in the order they were
submitted, by one thread at a time (the one holding the turn): a caller that waits for its id
anyway publishes what is queued itself (as a room's fan-out does, see
:mod:`groupchat.server.fanout`), so a line is not handed to another thread on its way out; the
node's publishing thread publishes the rest, and while Redis is away it holds them and tries
again.  Each caller's :class:`~concurrent.futures.Future` ends with the id, or with
:class:`NotSentError` when the event could not be published in time: an event is never dropped
in silence.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, NamedTuple, Optional

from groupchat.errors import NotSentError
from groupchat.server.cluster.link import Backoff, Link, Wire

log = logging.getLogger(__name__)

MAX_STREAM_LENGTH = 10_000  # events kept per stream (about): how far back a late node can catch up
HOLD_SECONDS = 10.0  # how long an event waits for Redis to come back before its sender is told
MAX_PENDING = 10_000  # events waiting at most; past it a new one is refused at once
BATCH = 64  # events sent in one round trip
REMEMBERED = 1000  # ids a node's last publishes are remembered by, to answer a retry (> BATCH)

RESTORE_GAP = 1000  # ids skipped when Redis has lost some: more than any node lags behind the others

# KEYS: the sequence, the stream, the node's "published" hash, and a name's lease (for a private
#   message: the stream is then the node stream of whoever holds the name).
# ARGV: n (this node's count of publishes), the event, how many ids it takes, the floor (the
#   highest id the node has seen), MAXLEN, the node streams' prefix ('' unless routed), node id,
#   ids remembered, RESTORE_GAP.
# Entries are added under Redis's own ids ('*': time-based, so they still grow after Redis lost
# its data and a reader reading from its last position misses none); the groupchat id is 'i'.
# A sequence below the floor (or gone while a node has seen ids) means Redis lost ids it gave:
# the next ones leap past anything a node may have seen, so that no id is given twice.
PUBLISH = """
local n = tonumber(ARGV[1])
if n <= tonumber(redis.call('HGET', KEYS[3], 'last') or '0') then
  return tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
end
local stream = KEYS[2]
if ARGV[6] ~= '' then
  local node = redis.call('GET', KEYS[4])
  if not node then return -1 end
  stream = ARGV[6] .. node
end
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local prev = 0
if top[1] then prev = tonumber(top[1][2][2]) end
local stored = redis.call('GET', KEYS[1])
local seq = tonumber(stored or '0')
local floor = tonumber(ARGV[4])
if (stored == false and floor > 0) or floor > seq then
  seq = math.max(seq, floor) + tonumber(ARGV[9])
end
seq = math.max(seq, prev)
local first = seq + 1
redis.call('SET', KEYS[1], string.format('%d', seq + tonumber(ARGV[3])))
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[5], '*', 'i', string.format('%d', first),
           'p', string.format('%d', prev), 'c', ARGV[3], 'o', ARGV[7], 'n', ARGV[1], 'e', ARGV[2])
redis.call('HSET', KEYS[3], 'last', ARGV[1], ARGV[1], string.format('%d', first))
redis.call('HDEL', KEYS[3], string.format('%d', n - tonumber(ARGV[8])))
redis.call('PEXPIRE', KEYS[3], 86400000)
return first
"""
NO_SUCH_NAME = -1  # the script's answer for a private message to a name no node holds


class _Pending(NamedTuple):
    n: int
    stream: str
    route: str  # a name's lease key, for a private message; else ""
    payload: str
    count: int
    since: float
    result: Future


class Publisher:
    """One node's publishing.  ``submit`` queues an event and returns a Future of its first id;
    ``floor`` gives the highest id the node has seen (its reader's)."""

    max_pending = MAX_PENDING
    hold_seconds = HOLD_SECONDS

    def __init__(self, link: Link, node: str, floor: Callable[[], int],
                 max_stream_length: int = MAX_STREAM_LENGTH) -> None:
        self._link = link
        self._node = node
        self._floor = floor
        self._max_length = max_stream_length
        self._sha = hashlib.sha1(PUBLISH.encode()).hexdigest()  # the script's name in Redis
        self._loaded = False  # whether this node has given Redis the script since it last failed
        self._wire = Wire(link.redis)  # the thread's own connection
        self._queue: collections.deque[_Pending] = collections.deque()
        queued = threading.Lock()  # guards the queue and the flags; two conditions wait on it:
        self._ready = threading.Condition(queued)  # work for the publishing thread
        self._drained = threading.Condition(queued)  # the queue emptied (close() waits for it)
        self._turn = threading.Lock()  # held by whoever is sending: one at a time, in order
        self._reaching = True  # Redis answered the last batch: callers may publish themselves
        self._uncertain = 0  # events up to this n may have reached Redis, unanswered
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publisher {node}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, stream: str, event: dict[str, Any], count: int = 1, route: str = "",
               here: bool = False) -> Future:
        """Queue ``event`` for ``stream`` (or, with ``route``, for the node holding that name);
        the Future gives its first id, or raises NotSentError.  ``here``: the caller will wait
        for it, so it publishes what is queued on its own thread, unless another is at it or
        Redis is away (then the publishing thread does)."""
        result: Future = Future()
        with self._ready:
            if self._stop.is_set():
                result.set_exception(NotSentError("not sent: the server is stopping"))
                return result
            if len(self._queue) >= self.max_pending:
                result.set_exception(NotSentError(f"not sent: {len(self._queue)} events are waiting for Redis"))
                return result
            self._count += 1
            payload = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
            self._queue.append(_Pending(self._count, stream, route, payload, count, time.monotonic(), result))
            here = here and self._reaching
            if not here:
                self._ready.notify()
        if here:
            self._publish_here()
        return result

    def _publish_here(self) -> None:
        """Send what is queued while Redis answers, unless another thread has the turn (it sends
        what was queued before it lets go: see the loop's test, after the release)."""
        while self._reaching and self._queue and self._turn.acquire(blocking=False):
            try:
                while self._queue:
                    if self._attempt(self._batch()) is not None:
                        with self._ready:  # Redis is away: the publishing thread takes over
                            self._reaching = False
                            self._ready.notify()
                        return
            finally:
                self._turn.release()

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued if Redis lets us within ``timeout``; whatever is left is not sent."""
        with self._ready:
            self._drained.wait_for(lambda: not self._queue or not self._thread.is_alive(), timeout)
            self._stop.set()
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._turn:
            self._fail(list(self._queue), "not sent: the server stopped before Redis took it")
            self._queue.clear()
        self._wire.close()

    def _run(self) -> None:
        """Publish what callers leave: events no one waits for, and everything while Redis is
        away (holding them, trying again with a growing pause, telling senders past the hold)."""
        backoff = Backoff(self._link)
        while True:
            with self._ready:  # (a caller that publishes itself wakes it only if that fails)
                self._ready.wait_for(lambda: self._queue or self._stop.is_set())
                if self._stop.is_set():
                    return
            with self._turn:
                batch = self._batch()
                error = self._attempt(batch) if batch else None  # (else a caller sent it meanwhile)
                with self._ready:  # (under the turn: no caller's own finding is overwritten)
                    self._reaching = error is None
            if error is None:
                backoff.succeeded()
            else:
                backoff.failed(error, self._stop)

    def _batch(self) -> list[_Pending]:
        with self._ready:
            return [self._queue[i] for i in range(min(BATCH, len(self._queue)))]

    def _attempt(self, batch: list[_Pending]) -> Optional[BaseException]:
        """Send ``batch`` (holding the turn) and answer its callers; if Redis is away, the error,
        the batch left queued but for what waited past the hold (its senders are told)."""
        try:
            ids = self._send(batch)
        except Exception as exc:  # noqa: BLE001 - every failure ends in a reply or a retry
            if not self._link.is_gone(exc):  # a full Redis, a script error: these will not go
                self._fail(self._take(len(batch)), f"not sent: {self._link.describe(exc)}")
                return None
            if not self._link.unsent(exc):
                self._uncertain = max(self._uncertain, batch[-1].n)
            self._expire(self._link.describe(exc), self._uncertain)
            return exc
        for pending, first in zip(self._take(len(batch)), ids):
            if first == NO_SUCH_NAME:
                pending.result.set_exception(NotSentError("no one of that name is here", code="NO_SUCH_NAME"))
            else:
                pending.result.set_result(first)
        return None

    def _send(self, batch: list[_Pending]) -> list[int]:
        """Run the script for each pending event in one round trip.  A batch that fails half-way
        is sent again whole: the events Redis already took are recognised by their ``n``.

        The script goes by its SHA alone: redis-py would ask Redis whether it knows it before
        every batch, a second round trip.  It is loaded first instead, at the start and after
        any failure (a Redis restarted has forgotten it), and again if a batch finds it gone."""
        from redis.exceptions import NoScriptError

        try:
            if not self._loaded:
                self._link.redis.script_load(PUBLISH)
                self._loaded = True
            replies = self._evaluate(batch)
            if all(isinstance(reply, NoScriptError) for reply in replies):  # flushed: none ran
                self._link.redis.script_load(PUBLISH)
                replies = self._evaluate(batch)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except Exception:
            self._loaded = False
            raise
        return [int(first) for first in replies]

    def _evaluate(self, batch: list[_Pending]) -> list[Any]:
        keys = self._link.keys
        floor = str(self._floor())
        prefix = keys.node("")
        return self._wire.pipeline([
            ("EVALSHA", self._sha, 4, keys.sequence, p.stream, keys.published(self._node), p.route or p.stream,
             p.n, p.payload, p.count, floor, self._max_length, prefix if p.route else "",
             self._node, REMEMBERED, RESTORE_GAP) for p in batch])

    def _take(self, count: int) -> list[_Pending]:
        with self._ready:
            taken = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
            self._drained.notify_all()  # close() waits for the queue to empty
            return taken

    def _expire(self, reason: str, uncertain: int) -> None:
        """Tell the senders of events that waited past ``hold_seconds``.  Events up to n =
        ``uncertain`` were on their way when Redis went: they are said not to be confirmed."""
        too_old = time.monotonic() - self.hold_seconds
        with self._ready:
            count = 0
            while count < len(self._queue) and self._queue[count].since < too_old:
                count += 1
        expired = self._take(count)
        self._fail([p for p in expired if p.n <= uncertain],
                   f"not confirmed (Redis went away while it was being sent; others may have it): {reason}")
        self._fail([p for p in expired if p.n > uncertain], f"not sent: {reason}")

    @staticmethod
    def _fail(pending: list[_Pending], reason: str) -> None:
        if pending:  # logged first: a sender told may look for the line at once
            log.warning("%d event(s) %s", len(pending), reason)
        for p in pending:
            if not p.result.done():
                p.result.set_exception(NotSentError(reason))
