"""Reading: one thread per node reads the streams it needs with ``XREAD BLOCK``, from its last entry.

Not pub/sub, which loses what is published while a node is reconnecting: a stream keeps its
events, so a node that loses Redis asks again from the last entry it read and gets each event
once, in order.  Entries are read by Redis's stream ids, which only grow, even across a Redis
that lost its data; the groupchat id of each is its ``i``.  Every entry names the id of the one
before it in its stream (``p``), so a reader knows when the stream no longer reaches back to
where it was (trimmed, or lost by a Redis restarted without its data) and says so in the log
instead of carrying on as if nothing was missed.  An entry also carries its publisher and that
publisher's count (``o``, ``n``): an event published again after Redis lost the first copy is
recognised and delivered once; one given an id again is left out, in one log line, rather than
delivered out of order.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Optional

from groupchat.server.cluster.link import Backoff, Link, Wire

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # how long one XREAD waits; a new stream to read wakes it earlier
READ_COUNT = 500  # entries per stream per XREAD
WAKE_LENGTH = 10


def newest(client: Any, stream: str) -> tuple[str, int]:
    """The stream id and groupchat id of a stream's newest entry; ("0-0", 0) if it has none."""
    top = client.xrevrange(stream, count=1)
    return (top[0][0], int(top[0][1]["i"])) if top else ("0-0", 0)


def _order(stream_id: str) -> tuple[int, ...]:
    """A stream id as something that sorts as Redis does.

    >>> _order("1700000000000-12") > _order("1700000000000-2")
    True
    """
    return tuple(int(part) for part in stream_id.split("-"))


class Reader:
    """Reads the streams it is given and hands each event, with its ``id``, to ``on_event`` in
    id order, on the reader's thread; then calls ``on_read(count)`` with how many it handed on
    from that read.  Neither may block for long: the reader waits."""

    def __init__(self, link: Link, node: str, on_event: Callable[[dict[str, Any]], None],
                 on_read: Callable[[int], None] = lambda count: None) -> None:
        self._link = link
        self._node = node
        self._on_event = on_event
        self._on_read = on_read
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}  # stream -> the last id delivered from it
        self._position: dict[str, str] = {}  # stream -> the stream id of the last entry read
        self._catching: set[str] = set()  # streams read from their start, not yet past what the node had
        self._targets: dict[str, str] = {}  # stream -> its newest entry when it was given to catch up
        self._handed: dict[str, str] = {}  # stream -> the stream id of the last entry handed on
        self._seen: dict[tuple[str, str], int] = {}  # (stream, publisher) -> its last n delivered
        self._highest = 0
        self._wake_key = link.keys.wake(node)
        self._wake_id = "0-0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader {node}", daemon=True)

    @property
    def highest(self) -> int:
        """The highest id this node has read: publishing never gives an id below it."""
        return self._highest

    def note(self, seen: int) -> None:
        """Count ``seen`` among the ids this node has (from its history, say)."""
        with self._lock:
            self._highest = max(self._highest, seen)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(BLOCK_MS / 1000 + 6)

    def watch(self, stream: str, after: Optional[int] = None) -> None:
        """Read ``stream`` from after id ``after`` (what this node already has, to catch up), or
        from its end when None.  Watching a stream already read changes nothing."""
        with self._lock:
            if stream in self._last:
                return
        position = "0-0"  # to catch up, read it all, passing over what this node has
        target = None
        try:
            if after is None:
                position, after = newest(self._link.redis, stream)
            else:
                target = newest(self._link.redis, stream)[0]
        except Exception:  # noqa: BLE001 - Redis away: read it all, from past what this node saw
            after = self._highest if after is None else after
        with self._lock:
            if target is not None:
                self._targets[stream] = target
            self._last.setdefault(stream, after)
            self._position.setdefault(stream, position)
            if position == "0-0":
                self._catching.add(stream)
        self._wake()

    def streams(self) -> list[str]:
        """The streams read now."""
        with self._lock:
            return list(self._last)

    def caught_up(self, stream: str) -> bool:
        """Whether every entry ``stream`` had when it was given to catch up with (see
        :meth:`watch`) has been handed on."""
        with self._lock:
            target = self._targets.get(stream)
            if target is not None and _order(self._handed.get(stream, "0-0")) < _order(target):
                return False
            self._targets.pop(stream, None)
            return True

    def unwatch(self, stream: str) -> None:
        with self._lock:
            self._last.pop(stream, None)
            self._position.pop(stream, None)
            self._catching.discard(stream)
            self._targets.pop(stream, None)
            self._handed.pop(stream, None)
            for key in [key for key in self._seen if key[0] == stream]:
                del self._seen[key]

    def _wake(self) -> None:
        try:
            self._link.redis.xadd(self._wake_key, {"w": "1"}, maxlen=WAKE_LENGTH, approximate=False)
        except Exception:  # noqa: BLE001 - the reader is reconnecting and will read it anyway
            pass

    def _run(self) -> None:
        client = self._link.client(read_seconds=BLOCK_MS / 1000 + 5)
        wire = Wire(client, fresh=False)
        backoff = Backoff(self._link)
        while not self._stop.is_set():
            try:
                if backoff.lost:
                    self._check_streams(client)
                with self._lock:
                    streams = dict(self._position)
                streams[self._wake_key] = self._wake_id
                reply = wire.call("XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS", *streams, *streams.values())
            except Exception as exc:  # noqa: BLE001
                if not self._link.is_gone(exc):
                    log.error("node %s: reading: %s", self._node, self._link.describe(exc))
                backoff.failed(exc, self._stop)
                continue
            backoff.succeeded()
            # {stream: [[entry id, [field, value, ...]], ...]} (RESP3), or [[stream, [...]], ...]
            read = list(reply.items() if isinstance(reply, dict) else reply or [])
            entries = []
            for stream, items in read:
                if stream == self._wake_key:
                    self._wake_id = items[-1][0]
                    continue
                with self._lock:
                    if stream in self._position:
                        self._position[stream] = items[-1][0]
                for _, flat in items:
                    fields = dict(zip(flat[::2], flat[1::2]))
                    entries.append((int(fields["i"]), stream, fields))
            handed = sum(self._take(stream, item_id, fields)
                         for item_id, stream, fields in sorted(entries, key=lambda entry: entry[0]))
            with self._lock:
                self._handed.update((stream, items[-1][0]) for stream, items in read if stream in self._last)
            if handed:
                try:
                    self._on_read(handed)
                except Exception:  # noqa: BLE001 - as a delivery's: the reading goes on
                    log.exception("node %s: after a read", self._node)
        wire.close()
        client.close()

    def _check_streams(self, client: Any) -> None:
        """After Redis was away: a stream whose last entry is older than what was delivered from
        it went back in time (Redis restarted without its data, or from an old snapshot)."""
        with self._lock:
            streams = list(self._last.items())
        pipe = client.pipeline(transaction=False)
        for stream, _ in streams:
            pipe.xrevrange(stream, count=1)
        for (stream, last), top in zip(streams, pipe.execute()):
            kept = int(top[0][1]["i"]) if top else 0
            if kept < last:
                log.warning("node %s: %s lost its events after id %d (Redis restarted without its data?); "
                            "this node had them up to id %d", self._node, stream, kept, last)

    def _take(self, stream: str, item_id: int, fields: dict[str, str]) -> bool:
        """Hand one entry's event on, if it is one to deliver: whether it was."""
        with self._lock:
            last = self._last.get(stream)
            if last is None or item_id <= last and stream in self._catching:
                return False  # no longer read, or one this node had before it caught up
            if item_id <= last:
                log.warning("node %s: %s: id %d came after id %d: Redis gave an id again after losing "
                            "its data; not delivered, out of order", self._node, stream, item_id, last)
                return False
            self._last[stream] = item_id
            self._catching.discard(stream)
            self._highest = max(self._highest, item_id + int(fields.get("c", 1)) - 1)
            previous = int(fields.get("p", 0))
            publisher = (stream, fields.get("o", ""))
            count = int(fields.get("n", 0))
            again = count <= self._seen.get(publisher, 0)
            self._seen[publisher] = max(count, self._seen.get(publisher, 0))
        if previous > last > 0:  # (a node that had nothing of the stream misses nothing it had)
            log.warning("node %s: %s no longer reaches back to id %d: the events after it up to id %d "
                        "were trimmed or lost by Redis", self._node, stream, last, previous)
        if again:
            log.info("node %s: %s: id %d is an event published again after Redis lost it; not delivered twice",
                     self._node, stream, item_id)
            return False
        event = json.loads(fields["e"])
        event["id"] = item_id
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - one bad delivery must not stop the node's reading
            log.exception("node %s: delivering id %d from %s failed", self._node, item_id, stream)
        return True
