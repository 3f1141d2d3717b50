"""One server as a node of a cluster: what the chat core calls, and its heartbeat.

A :class:`Node` puts the pieces together: a :class:`~.publisher.Publisher` for what this node's
people say, a :class:`~.reader.Reader` that hands every event of its rooms (its own included,
so that every node delivers in the same order), its private messages and the control stream
to ``on_event``, :class:`~.names.Names` and :class:`~.presence.Presence`; and a heartbeat
thread that renews the leases of the names and places it holds and the node's own liveness, and
finds the nodes whose liveness ran out.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

from groupchat.errors import ClusterError
from groupchat.server.cluster.link import KEY_PREFIX, Backoff, Link
from groupchat.server.cluster.names import LEASE_SECONDS, Names
from groupchat.server.cluster.presence import Presence
from groupchat.server.cluster.publisher import MAX_STREAM_LENGTH, Publisher
from groupchat.server.cluster.reader import Reader

log = logging.getLogger(__name__)

BEATS_PER_LEASE = 4  # a lease survives three missed heartbeats
ALIVE_BEATS = 2  # a node that missed two heartbeats running is gone: its people are reconnecting, ...
# ... and leave when their names come free, a lease after their node's last heartbeat.


class Node:
    """This server's link to the others through the Redis at ``url``.

    ``on_event(event)`` is called on the reader's thread, in id order per stream, once per event:
    room events (``event["room"]``) of the rooms watched, private messages for names this node
    holds (``event["to"]``) and control events (kicks, bans: ``event["control"]``); and
    ``on_read(count)`` after each read that handed ``count`` events on.
    ``on_name_lost(name)`` is called on the heartbeat's thread for a name whose lease another
    node took (this node was cut off from Redis for longer than a lease).  ``on_people_gone(node,
    people, left, stopped)`` is called on the heartbeat's thread, on one node of the cluster only,
    with what /whois said of the people of another node: for a node that stopped without saying
    so (killed, or cut off), once when its liveness runs out (``left`` False: they are
    reconnecting), and again (``left`` True) when their names have come free; for a node that
    stopped and said so (``stopped`` True), once, a lease after it stopped.
    Use: ``node = Node(url, on_event); node.start(); ...; node.close()``.
    """

    lease_seconds = LEASE_SECONDS
    max_stream_length = MAX_STREAM_LENGTH

    def __init__(self, url: str, on_event: Callable[[dict[str, Any]], None],
                 on_name_lost: Callable[[str], None] = lambda name: None, prefix: str = KEY_PREFIX,
                 node_id: Optional[str] = None,
                 on_people_gone: Callable[[str, list[dict[str, Any]], bool, bool], None] = lambda *gone: None,
                 on_read: Callable[[int], None] = lambda count: None) -> None:
        self.id = node_id or secrets.token_hex(6)
        self.link = Link(url, prefix, who=f"node {self.id}")
        self._on_name_lost = on_name_lost
        self._on_people_gone = on_people_gone
        self.reader = Reader(self.link, self.id, on_event, on_read)
        self.publisher = Publisher(self.link, self.id, lambda: self.reader.highest, self.max_stream_length)
        self.names = Names(self.link, self.id, self.lease_seconds)
        self.presence = Presence(self.link, self.names.lease_ms)
        self._beat_seconds = self.lease_seconds / BEATS_PER_LEASE
        self._alive_ms = int(self._beat_seconds * ALIVE_BEATS * 1000)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._places: set[tuple[str, str]] = set()
        self._sessions: set[str] = set()  # digests of the tokens of this node's sessions
        self.session_ms = 0  # how long a session is kept after the heartbeat last renewed it
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat {self.id}", daemon=True)

    def start(self) -> None:
        """Check Redis (ClusterError, one line, if it is unreachable, refuses the password or is
        full), then start reading, publishing and the heartbeat."""
        self.link.check()
        self.presence.beat(self.id, self._alive_ms, judge=False)
        self.reader.watch(self.link.keys.node(self.id), after=0)
        self.reader.watch(self.link.keys.control)
        for part in (self.reader, self.publisher, self._heartbeat):
            part.start()
        log.info("node %s: linked to the cluster through Redis at %s", self.id, self.link.shown)

    def close(self, hold: bool = True) -> None:
        """Publish what is queued if Redis allows, and stop.  With ``hold``, this node's people
        keep their names and places for a lease from now, to resume on another node, and then
        leave, told by another node (see :meth:`_part_with`); else they are free at once."""
        self.publisher.close()
        self._stop.set()
        self._heartbeat.join()
        with self._lock:
            held, places, self._held, self._places = sorted(self._held), sorted(self._places), set(), set()
            sessions = sorted(self._sessions)
        try:
            if hold:
                self.names.renew(held)
                self.presence.enter(places)
                self.presence.renew_sessions(sessions, self.session_ms)
            else:
                for room, name in places:
                    self.presence.leave(room, name)
                for name in held:
                    self.names.release(name)
                    self.presence.forget(self.id, name)
            self.presence.step_down(self.id, self.names.lease_ms)
        except ClusterError as exc:
            log.warning("node %s: could not say it stopped (its people leave when their leases run out): %s",
                        self.id, exc)
        self.reader.close()
        self.link.redis.close()

    # Publishing: each answers a Future of the event's first id (NotSentError if it is not sent).
    # ``here``: the caller waits for the id, and may publish on its own thread (see Publisher).
    def publish(self, room: str, event: dict[str, Any], count: int = 1, here: bool = False) -> Future:
        """A room event for every node reading the room; it takes ``count`` ids from the first."""
        return self.publisher.submit(self.link.keys.room(room), event, count, here=here)

    def send_private(self, name: str, event: dict[str, Any]) -> Future:
        """A private message to ``name`` on whichever node holds it (NotSentError, code
        NO_SUCH_NAME, if no node does); its sender waits for it."""
        return self.publisher.submit("", event, route=self.link.keys.name(name), here=True)

    def broadcast(self, event: dict[str, Any]) -> Future:
        """A control event (a kick, a ban) for every node; its sender waits for it."""
        return self.publisher.submit(self.link.keys.control, event, here=True)

    def ids_above(self, last_id: int) -> None:
        """Never give an id at or below ``last_id`` (the last id in this node's history, at start):
        should Redis have lost the sequence, ids still only grow."""
        self.reader.note(last_id)

    # Reading.
    def watch(self, room: str, after: Optional[int] = None) -> None:
        """Deliver ``room``'s events from after id ``after`` (to catch up from what this node's
        history has), or from now."""
        self.reader.watch(self.link.keys.room(room), after)

    def caught_up(self, room: str) -> bool:
        """Whether a room watched from after an id has been read up to where it was then."""
        return self.reader.caught_up(self.link.keys.room(room))

    def unwatch(self, room: str) -> None:
        self.reader.unwatch(self.link.keys.room(room))

    def rooms_read(self) -> list[str]:
        """The rooms watched now."""
        prefix = self.link.keys.room("")
        return [stream[len(prefix):] for stream in self.reader.streams() if stream.startswith(prefix)]

    # Names and presence: one round trip each; ClusterError when Redis is away.
    def claim(self, name: str, replacing: Optional[str] = None, renaming: Optional[str] = None) -> bool:
        """Take ``name`` for one of this node's people; False if another node holds it.  The chat
        core keeps names unique among its own people first: a name this node holds is True.
        ``replacing``: the node a person resuming here was on (it may have died holding the name);
        that node is told by its ``on_name_lost`` if it is alive.  ``renaming``: the person's
        name until now, which the new one may look like."""
        if not self.names.claim(name, replacing, renaming):
            return False
        with self._lock:
            self._held.add(name)
        return True

    def release(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)
        self.names.release(name)
        self.presence.forget(self.id, name)

    def enter(self, room: str, name: str) -> None:
        with self._lock:
            self._places.add((room, name))
        self.presence.enter([(room, name)])

    def arrive(self, room: str, name: str, key: str, details: dict[str, Any], count: int,
               before: Optional[str] = None, session: Optional[tuple[str, dict[str, Any]]] = None,
               ) -> tuple[Optional[str], list[str], int, int]:
        """One of this node's people entered ``room`` (see Presence.arrive); the heartbeat
        renews its place and its session (digest, details) from now on."""
        with self._lock:
            self._places.discard((before, name))
            self._places.add((room, name))
            if session is not None:
                self._sessions.add(session[0])
        kept = None if session is None else (session[0], {**session[1], "node": self.id}, self.session_ms)
        return self.presence.arrive(self.id, room, name, key, details, count, before, kept)

    def leave(self, room: str, name: str) -> None:
        with self._lock:
            self._places.discard((room, name))
        self.presence.leave(room, name)

    def let_go(self, name: str) -> None:
        """``name`` resumed its session on another node: this one no longer renews its lease or
        place, nor says what /whois should of it (ClusterError if Redis is away)."""
        with self._lock:
            self._held.discard(name)
            self._places = {place for place in self._places if place[1] != name}
        self.presence.forget(self.id, name)

    # Sessions, by the digest of their token (see presence.Presence.keep_session).
    def keep_session(self, digest: str, details: dict[str, Any]) -> None:
        with self._lock:
            self._sessions.add(digest)
        self.presence.keep_session(digest, {**details, "node": self.id}, self.session_ms)

    def end_session(self, digest: str) -> None:
        with self._lock:
            self._sessions.discard(digest)
        self.presence.end_session(digest)

    def take_session(self, digest: str) -> Optional[dict[str, Any]]:
        with self._lock:
            self._sessions.discard(digest)
        return self.presence.take_session(digest)

    def who(self, room: str) -> list[str]:
        return self.presence.who(room)[room]

    def rooms(self) -> dict[str, int]:
        return self.presence.rooms()

    def stop_heartbeat(self) -> None:
        """Stop renewing leases, as a node that died would (for tests and for an abrupt stop)."""
        self._stop.set()

    def _beat(self) -> None:
        backoff = Backoff(self.link)
        linked_since = time.monotonic()
        while not self._stop.wait(self._beat_seconds if not backoff.lost else 0):
            with self._lock:
                held, places, sessions = sorted(self._held), sorted(self._places), sorted(self._sessions)
            # Back from losing Redis, the other nodes get a liveness of time to renew theirs
            # (they lost it too) before any is taken for gone.
            judge = time.monotonic() - linked_since >= self._alive_ms / 1000
            try:
                lost = self.names.renew(held)
                self.presence.enter(places)
                self.presence.renew_sessions(sessions, self.session_ms)
                gone = self.presence.beat(self.id, self._alive_ms, judge)
            except ClusterError as exc:
                backoff.failed(exc, self._stop)
                linked_since = math.inf
                continue
            backoff.succeeded()
            linked_since = min(linked_since, time.monotonic())
            for name in lost:
                with self._lock:
                    self._held.discard(name)
                    self._places = {place for place in self._places if place[1] != name}
                log.warning("node %s: %s was taken by another node while this one was cut off", self.id, name)
                self._on_name_lost(name)
            try:
                self._part_with(gone, judge)
            except Exception:  # noqa: BLE001 - the heartbeat must go on, or this node's names lapse
                log.exception("node %s: telling of the people of gone nodes failed", self.id)

    def _part_with(self, gone: dict[str, list[dict[str, Any]]], judge: bool) -> None:
        """Say the people of nodes just found gone are reconnecting, and have them leave a lease
        after their node's last heartbeat; and (``judge``) say those whose time came have left."""
        for node, people in gone.items():
            log.warning("node %s: node %s stopped renewing its liveness: it is gone, with %s",
                        self.id, node, "1 person" if len(people) == 1 else f"{len(people)} people")
            self._on_people_gone(node, people, False, False)
            self.presence.depart_later(node, people, self.names.lease_ms - self._alive_ms)
        leaving: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        for node, details, stopped in self.presence.departed() if judge else []:
            leaving.setdefault((node, stopped), []).append(details)
        for (node, stopped), people in leaving.items():
            self._on_people_gone(node, people, True, stopped)
