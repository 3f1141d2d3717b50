"""The chat core as one node of a cluster: its room events go out through Redis and come back.

A :class:`Bridge` stands between a :class:`~groupchat.server.chat.Chat` and its
:class:`~.node.Node`.  A room event is not delivered when it is said: it is published, and every
node (this one too) delivers it when its reader hands it back, with the id Redis gave it, so all
nodes show one order.  Names are leases held in Redis, so one name is one person on any node.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Optional

from groupchat import jsonl
from groupchat.errors import ClusterError, CommandError, HistoryError, NameTakenError, NotSentError
from groupchat.jsonl import render_event
from groupchat.lookalikes import name_skeleton, render_lookalike
from groupchat.protocol import name_key
from groupchat.server.access import parse_network
from groupchat.server.chat_commands import profile
from groupchat.server.cluster.node import Node
from groupchat.server.cluster.publisher import HOLD_SECONDS
from groupchat.server.events import RoomEvent
from groupchat.server.moderation import BAN, SAY, UNBAN, no_such_name
from groupchat.server.notices import Comings
from groupchat.server.registry import LOBBY, Member, Room
from groupchat.server.sessions import digest

log = logging.getLogger(__name__)

ANSWER_SECONDS = HOLD_SECONDS + 5  # the publisher answers every event within its hold; a bound besides
SERVER_STOPPED = "their server stopped"
SERVER_GONE = "their server stopped responding"
MOVED = "moved"  # a session resumed on another node than its own
UNWATCH_SECONDS = 60.0
# A read of at most this many events is sent by the reader itself; after a bigger one, the
# fan-out thread sends (see Bridge.after_read). At chat rates a read brings one or a few, and
# sending them where they are read saves a hand-over a line; in a flood the fan-out thread sends
# each event as the reader hands it over, and the reader reads on: three nodes' `bench fanout`
# delivered 1.0M lines/s with every read sent by the reader, 1.5-1.6M with this.
SEND_HERE_MOST = 4
CATCH_UP_SECONDS = 2.0  # a resume into a room this node did not read waits this long for its past
_PLACE_FIELDS = ("v", "id", "room", "ts")  # set again by whichever node delivers the event


def to_wire(event: RoomEvent, room: str, when: float, origin: str, hide: frozenset[str]) -> dict[str, Any]:
    """What a node publishes for ``event``: enough for any node to render it as this one would.

    A notice's JSON events (a /nick, a topic, joins and leaves) travel as their types and fields.

    >>> wire = to_wire(RoomEvent.renamed("al", "alice"), "lobby", 0.0, "n1", frozenset())
    >>> wire["parts"]
    [['nick', {'old': 'al', 'new': 'alice'}]]
    >>> from_wire(wire).render_json(9, "lobby", 0.0) == RoomEvent.renamed("al", "alice").render_json(9, "lobby", 0.0)
    True
    """
    parts = None
    if event.json is not None:
        parts = []
        for line in event.json(0, room, "").splitlines():
            fields = json.loads(line)
            kind = fields.pop("type")
            for key in _PLACE_FIELDS:
                fields.pop(key, None)
            parts.append([kind, fields])
    return {"room": room, "kind": event.kind, "from": event.sender, "texts": event.texts, "echo": event.echo,
            "kept": event.kept, "ids": event.ids, "parts": parts, "ts": when, "node": origin,
            "hide": sorted(hide)}


def from_wire(wire: dict[str, Any]) -> RoomEvent:
    """The :class:`RoomEvent` a published one stands for (see :func:`to_wire`)."""
    parts = wire["parts"]
    return RoomEvent(wire["kind"], wire["from"], wire["texts"], echo=wire["echo"], kept=wire["kept"],
                     json=None if parts is None else _rendering(parts), ids=wire["ids"])


def _rendering(parts: list[list[Any]]) -> Callable[[int, str, str], bytes]:
    """A notice's JSON events from their types and fields, ids from the first given on."""
    def render(first: int, room: str, ts: str) -> bytes:
        return b"".join(render_event(kind, id=first + n, room=room, ts=ts, **fields)
                        for n, (kind, fields) in enumerate(parts))
    return render


def ban_key(fields: dict[str, Any]) -> str:
    """Where Redis keeps a ban (see moderation.ban_fields): by its block, or by its name's key.

    >>> ban_key({"target": "10.0.0.7", "address": True}), ban_key({"target": "Bob", "address": False})
    ('address:10.0.0.7/32', 'name:bob')
    """
    target = fields["target"]
    return f"address:{parse_network(target)}" if fields["address"] else f"name:{name_key(target)}"


def _by_room(places: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(room, name) pairs as each room's names.

    >>> _by_room([("lobby", "ann"), ("dev", "bob"), ("lobby", "cy")])
    {'lobby': ['ann', 'cy'], 'dev': ['bob']}
    """
    rooms: dict[str, list[str]] = {}
    for room, name in places:
        rooms.setdefault(room, []).append(name)
    return rooms


class Bridge:
    """The chat's side of a node: :meth:`publish` room events, :meth:`claim` and :meth:`release`
    names, :meth:`enter` and :meth:`leave` rooms; what the node reads is delivered to this
    server's members by :meth:`deliver`.  ``start`` raises ClusterError (one line) when Redis
    cannot be used.  A room no one on this server has been in for ``unwatch_seconds`` is no
    longer read (the lobby always is)."""

    node_class = Node
    unwatch_seconds = UNWATCH_SECONDS

    def __init__(self, chat: Any, url: str) -> None:  # a Chat, whose module imports this one
        self.chat = chat
        self.node = self.node_class(url, self.deliver, on_name_lost=self.name_lost, on_people_gone=self.people_gone,
                                    on_read=self.after_read)
        # Rooms with deliveries queued, sent once a read's events are all handed over, so events
        # read together go out merged into one send per member (see fanout.py): by the reader
        # itself after a read of a few (chat rates: no hand-over to another thread per line),
        # by the fan-out thread after a bigger one (a flood: the reader reads on meanwhile).
        self._due: set[Room] = set()
        self._ready = threading.Condition()  # guards _due, _stopping and _idle_since
        self._stopping = False
        self._flooded = False  # the last read brought many: the fan-out thread sends as they come
        self._idle_since: dict[str, float] = {}  # rooms read, by key: since when no one here is in them
        self._next_check = 0.0
        self._sender = threading.Thread(target=self._send_due, name="cluster fan-out", daemon=True)

    def start(self) -> None:
        if self.chat.sessions is not None:
            self.node.session_ms = int(self.chat.sessions.window * 1000)
        self.node.start()
        self._sender.start()
        history = self.chat.history
        if history is not None:
            self.node.ids_above(history.next_id - 1)
        self.watch(LOBBY)
        for key, fields in self.node.presence.bans().items():
            if fields["until"] is not None and fields["until"] <= self.chat.clock.now():
                self.node.presence.unban(key)  # over: Redis need keep it no longer
            else:
                self.chat.moderation.apply(BAN, fields)

    def close(self) -> None:
        """Tell the other nodes that this server's people are reconnecting (it is stopping: their
        clients may resume on another node), then unlink; they leave a lease later if they do not.
        Without sessions no one can resume: they left."""
        connected = set(self.chat.registry.connections())  # (those held already were told so)
        places = [(member.room.name, member.name) for member in self.chat.registry.named()
                  if member in connected and member.room is not None]
        resumable = self.chat.sessions is not None
        if resumable:
            self._say_reconnecting(places)
        else:
            self._say_left(places, SERVER_STOPPED)
        self.node.close(hold=resumable)  # publishes what is queued first
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._sender.is_alive():
            self._sender.join()

    # -- what the chat calls -------------------------------------------------------------------

    def publish(self, room: str, event: RoomEvent, hide: frozenset[str] = frozenset(), here: bool = False,
                since: int = 0) -> Future:
        """Publish a room event; the Future gives its first id, or raises NotSentError.
        ``here``: the caller waits for it (see Publisher.submit).  ``since``: told to none who
        entered the room after this time (Redis's clock, in microseconds); 0 for everyone."""
        wire = to_wire(event, room, self.chat.clock.now(), self.node.id, hide)
        if since:
            wire["since"] = since
        return self.node.publish(name_key(room), wire, count=event.ids, here=here)

    def _say_left(self, places: list[tuple[str, str]], reason: str) -> None:
        """Tell each room that these (room, name) left, for ``reason`` (not sent: logged)."""
        for room, names in _by_room(places).items():
            self.publish(room, RoomEvent.comings(Comings([], names, reason=reason)), frozenset(names))

    def _say_reconnecting(self, places: list[tuple[str, str]]) -> None:
        """Tell each room that these (room, name) are reconnecting (not sent: logged)."""
        for room, names in _by_room(places).items():
            self.publish(room, RoomEvent.comings(Comings([], [], held=names)), frozenset(names))

    @staticmethod
    def first_id(future: Future) -> int:
        """The id a published event got; NotSentError (with its reason) if it did not go."""
        try:
            return future.result(ANSWER_SECONDS)
        except FutureTimeout:  # (the built-in TimeoutError only from Python 3.11 on)
            raise NotSentError("not sent: Redis did not answer in time") from None

    def send_private(self, name: str, fields: dict[str, Any]) -> int:
        """A private message to ``name`` on whichever node holds it; its id, or CommandError
        when no node does, NotSentError when it could not go."""
        try:
            return self.first_id(self.node.send_private(name_key(name), fields))
        except NotSentError as exc:
            if exc.code == jsonl.NO_SUCH_NAME:
                raise no_such_name(name) from None
            raise

    def tell_others(self, kind: str, fields: dict[str, Any]) -> None:
        """Have every other node do what this one did (see Moderation.apply; ``say``: tell its
        people a notice); a ban is kept in Redis for nodes that start later.  NotSentError
        when Redis did not take it."""
        if kind == BAN:
            self.node.presence.ban(ban_key(fields), fields)
        elif kind == UNBAN:
            self.node.presence.unban(ban_key(fields))
        self.first_id(self.node.broadcast({"control": kind, "node": self.node.id, **fields}))

    def person(self, name: str) -> Optional[dict[str, Any]]:
        """What /whois says of ``name``, held by any node; None if no node holds it."""
        return self.node.presence.person(name_key(name))

    def note(self, member: Member) -> None:
        """Keep what /whois says of one of this node's people, and its session, for the other
        nodes (again: it changed)."""
        try:
            self.node.presence.describe(self.node.id, name_key(member.name), profile(member))
        except ClusterError as exc:
            log.warning("/whois of %s on other servers: %s", member.name, exc)
        self.keep_session(member)

    def keep_session(self, member: Member) -> None:
        """Keep ``member``'s session in Redis (again: it dropped, or has a new token), for a
        resume on another node."""
        session = self._session(member)
        try:
            if session is not None:
                self.node.keep_session(*session)
        except ClusterError as exc:
            log.warning("session of %s on other servers: %s", member.name, exc)

    # Sessions: kept in Redis by their token's digest, so that another node can resume them.
    def _session(self, member: Member) -> Optional[tuple[str, dict[str, Any]]]:
        """The digest of ``member``'s token and what resuming its session on another node needs;
        None if it has no session."""
        digest = self.chat.sessions.digest_of(member) if self.chat.sessions is not None else None
        if digest is None or member.room is None:
            return None
        dropped = not self.chat.registry.is_open(member)  # its room heard it is reconnecting
        return digest.hex(), {"name": member.name, "room": member.room.name, "op": member.is_op, "dropped": dropped}

    def told_away(self, session: dict[str, Any]) -> bool:
        """Whether the rooms were told that the person of ``session`` (held by another node) is
        reconnecting: their connection dropped there, or that node stopped or was found gone.
        A node killed a moment ago is not found gone yet, and the node that finds it passes
        over whoever resumed meanwhile (see people_gone): they are back before anyone heard
        they were away.  Asked once the name is this node's, so either that node tells the
        room they are reconnecting and this one that they are back, or neither does (but for
        a finding in the milliseconds between this node's claim and its asking)."""
        if session.get("dropped"):
            return True
        try:
            return not self.node.presence.known(session["node"])
        except ClusterError as exc:
            log.warning("whether node %s is gone: %s", session["node"], exc)
            return True

    def end_session(self, digest: bytes) -> None:
        try:
            self.node.end_session(digest.hex())
        except ClusterError as exc:  # it runs out after a resume window
            log.warning("a session kept in Redis: %s", exc)

    def take_session(self, token: str) -> Optional[dict[str, Any]]:
        """The session ``token`` opens on any node (which no longer has it), or None."""
        try:
            return self.node.take_session(digest(token).hex())
        except ClusterError as exc:
            log.warning("a session asked of Redis: %s", exc)
            return None

    def moved(self, name: str, node: str) -> None:
        """``name``, held by ``node``, resumed its session here: that node lets it go."""
        try:
            self.tell_others(MOVED, {"name": name, "from": node})
        except ClusterError as exc:  # (NotSentError too) that node, if alive, finds the name lost
            log.warning("%s resumed here; its node %s not told: %s", name, node, exc)

    def keep_topic(self, room: str, topic: str) -> None:
        self.node.presence.set_topic(name_key(room), topic)

    def arrive(self, member: Member, before: Optional[str],
               count: int) -> Optional[tuple[Optional[str], list[str], int]]:
        """``member`` entered its room (from ``before``): its place, what /whois says of it and
        its session are kept in Redis, in one round trip; answers the room's topic as set on
        any node, and its first ``count`` other names and how many are there (see glimpse).
        None while Redis is away (the heartbeat puts the place right once it is back)."""
        try:
            topic, names, total, member.entered_at = self.node.arrive(
                name_key(member.room.name), member.name, name_key(member.name), profile(member), count,
                name_key(before) if before is not None else None, self._session(member))
        except ClusterError as exc:
            log.warning("%s entering %s: %s", member.name, member.room.name, exc)
            member.entered_at = 0
            return None
        return topic, names, total

    def tell_comings(self, room: str, comings: Comings) -> None:
        """Publish a room's comings and goings (not sent: logged).  When all it tells is who
        came, it says when the last of them did, so that no node tells it to those who came
        after: their welcome counted them (see deliver)."""
        arrived = [self.chat.registry.find(name) for name in comings.newcomers()]
        known = not (comings.left or comings.held) and arrived and all(m is not None and m.entered_at for m in arrived)
        self.publish(room, RoomEvent.comings(comings), comings.newcomers(),
                     since=max(m.entered_at for m in arrived) if known else 0)

    def who(self, room: str) -> list[str]:
        """The names in ``room`` on every node."""
        return self.node.who(name_key(room))

    def glimpse(self, room: str, besides: str, count: int) -> tuple[list[str], int]:
        """The first ``count`` names in ``room`` on every node but ``besides``, and how many."""
        return self.node.presence.glimpse(name_key(room), besides, count)

    def _newest_kept(self, room: str) -> Optional[int]:
        """The id of the newest line of ``room`` in this node's history (0: none); None without
        a history to keep what is caught up."""
        history = self.chat.history
        if history is None:
            return None
        try:
            newest = history.recent(room, 1)
        except HistoryError as exc:
            log.error("history of %s, to catch up from: %s", room, exc)
            return None
        return newest[-1].id if newest else 0

    def rooms(self) -> dict[str, int]:
        """Each room someone is in on any node (by its key), with how many."""
        return self.node.rooms()

    def check_room(self, room: str) -> None:
        """CommandError if ``room`` is new to this node and looks like a room in use on another
        (as the registry refuses one like a room in use here).  One round trip, for a room this
        node does not read; nothing is checked while Redis is away."""
        key = name_key(room)
        if key in self.node.rooms_read():
            return
        try:
            rooms = self.node.rooms()
        except ClusterError as exc:
            log.warning("rooms on other servers, to compare %s with: %s", room, exc)
            return
        look = name_skeleton(key)
        for other in rooms:
            if other != key and name_skeleton(other) == look:
                raise CommandError(render_lookalike(room, other, f"a room in use: /join {other} goes there"))

    def watch(self, room: str, after: Optional[int] = None) -> None:
        """Read ``room``'s events from now on (once: a room is read until no one here has been
        in it for a while).  A room this node does not read yet is first read up to now, into
        history, before this returns (at most CATCH_UP_SECONDS): from after id ``after``, else
        from after the newest line of it this node keeps, so that what was said there while no
        one here was in it, or while this node was down, is in its history too."""
        key = name_key(room)
        with self._ready:
            self._idle_since[key] = time.monotonic()  # not idle: someone is on the way in
        if after is None and key not in self.node.rooms_read():
            after = self._newest_kept(room)
        self.node.watch(key, after)  # a room read already is not read twice (see Reader.watch)
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while not self.node.caught_up(key):
            if time.monotonic() > deadline:
                log.warning("node %s: %s not read up to now within %g s; the rest comes live",
                            self.node.id, room, CATCH_UP_SECONDS)
                break
            time.sleep(0.01)

    def claim(self, name: str, replacing: Optional[str] = None, renaming: Optional[str] = None) -> None:
        """Take ``name`` across the cluster (from the node ``replacing`` too: a session resumed
        here was there; in place of ``renaming``, the name of the person taking it until now, which
        it may look like), or raise NameTakenError (ClusterError: Redis is away)."""
        if not self.node.claim(name_key(name), replacing, renaming):  # held by its key: a change of case keeps it
            raise NameTakenError(f'the name "{name}" is taken (on another server of this chat)')

    def release(self, name: str) -> None:
        try:
            self.node.release(name_key(name))
        except ClusterError as exc:
            log.warning("%s not freed (its lease will run out): %s", name, exc)

    def enter(self, room: str, name: str) -> None:
        self._presence(self.node.enter, room, name)

    def leave(self, room: str, name: str) -> None:
        self._presence(self.node.leave, room, name)

    def _presence(self, change: Any, room: str, name: str) -> None:
        try:
            change(name_key(room), name)
        except ClusterError as exc:  # the heartbeat puts it right once Redis is back
            log.warning("presence of %s in %s: %s", name, room, exc)

    # -- what the node hands back, on its reader's thread -----------------------------------------

    def deliver(self, wire: dict[str, Any]) -> None:
        """A room event read from Redis: kept in history under its id and queued for this
        server's members of the room, in one instant with their comings and goings."""
        if "to" in wire:
            self._deliver_private(wire)
            return
        if "control" in wire:
            self._control(wire)
            return
        if "room" not in wire or "kind" not in wire:
            log.warning("ignored an event of a kind this server does not know: %s", wire.get("type"))
            return
        chat = self.chat
        event = from_wire(wire)
        first, when, room_name = wire["id"], wire["ts"], wire["room"]
        sender = event.sender
        besides = chat.registry.find(sender) if not event.echo and wire["node"] == self.node.id else None
        kept, text = chat.prepared(event)  # (a flood faster than the disk slows the reading here)
        hide = frozenset(wire["hide"])
        since = wire.get("since", 0)  # (arrivals only: see tell_comings)
        sender_key = name_key(sender) if sender else ""
        topic = next((fields["text"] for kind, fields in wire["parts"] or () if kind == "topic"), None)

        def post(room: Optional[Room]) -> None:  # under the registry's lock: quick, no I/O
            if chat.history is not None:
                if kept is not None:
                    chat.history.add(room_name, sender, kept, when, first=first)
                else:
                    chat.history.reserve(event.ids, first=first)
            if room is None:
                return
            if topic is not None:  # set on another node: /topic here says it too
                room.topic = topic
            came_after = frozenset(m.name for m in room.members if m.entered_at > since) if since else frozenset()
            chat.queue(room, event, text, first, when, besides, sender_key, hide | came_after)

        room = chat.registry.post_named(room_name, post)
        if room is not None:
            with self._ready:
                self._due.add(room)
                if self._flooded:  # sent while the rest of the read is handed over
                    self._ready.notify()

    def after_read(self, count: int) -> None:
        """A read handed over ``count`` events: send what they queued here, on the reader's
        thread, if they were few; else have the fan-out thread send them, and the events of the
        reads after it as each is handed over, until a read brings few again."""
        with self._ready:
            self._flooded = count > SEND_HERE_MOST
            if self._flooded:
                self._ready.notify()
                return
            rooms, self._due = self._due, set()
        for room in rooms:
            room.fanout.flush()

    def _send_due(self) -> None:
        """Send what is queued in the rooms delivered to, until closed (and then what is left)."""
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._due or self._stopping, self.unwatch_seconds / 4)
                self._unwatch_idle()
                rooms, self._due = self._due, set()
                stopping = self._stopping
            for room in rooms:
                room.fanout.flush()
            if stopping and not rooms:
                return

    def _unwatch_idle(self) -> None:
        """Stop reading the rooms no one here has been in for ``unwatch_seconds`` (under _ready;
        a few times per ``unwatch_seconds``)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.unwatch_seconds / 4
        occupied = {name_key(info.name) for info in self.chat.registry.rooms() if info.count} | {name_key(LOBBY)}
        for room in self.node.rooms_read():
            if room in occupied:
                self._idle_since.pop(room, None)
            elif now - self._idle_since.setdefault(room, now) >= self.unwatch_seconds:
                del self._idle_since[room]
                self.node.unwatch(room)
                log.info("node %s: no one here is in %s: no longer read", self.node.id, room)

    def _control(self, wire: dict[str, Any]) -> None:
        """What another node's operator or console did, done to this node's people."""
        if wire["node"] == self.node.id:
            return  # done here already
        if wire["control"] == SAY:
            self.chat.announce(wire["text"])
        elif wire["control"] == MOVED:
            if wire["from"] == self.node.id:
                try:
                    self.node.let_go(name_key(wire["name"]))
                except ClusterError as exc:  # its stale /whois goes when this node stops
                    log.warning("%s, resumed on another node: %s", wire["name"], exc)
                self.chat.moved_away(wire["name"])
        else:
            self.chat.moderation.apply(wire["control"], wire)

    def _deliver_private(self, wire: dict[str, Any]) -> None:
        target = self.chat.registry.find(wire["to"])
        if target is not None and target.room is not None:
            self.chat.tell_private(target, {key: wire[key] for key in ("id", "ts", "from", "to", "text")})
        else:  # gone between the sending and now: the sender was told it went
            log.info("a private message to %s came after they left", wire["to"])

    def people_gone(self, node: str, people: list[dict[str, Any]], left: bool, stopped: bool) -> None:
        """Another node stopped without a word (killed, cut off): its rooms hear its people are
        reconnecting, then (``left``) that they left, told by this node alone (see Node); not
        those who have resumed on another node since.  A node that ``stopped`` said they were
        reconnecting itself."""
        places = []
        for person in people:
            try:
                if self.node.names.holder(name_key(person["name"])) not in (None, node):
                    continue  # resumed on another node (or, once free, the name went to someone else)
                if left:
                    self.node.presence.leave(name_key(person["room"]), person["name"])
            except ClusterError as exc:
                log.warning("%s of the gone node %s: %s", person["name"], node, exc)
            places.append((person["room"], person["name"]))
        if left:
            self._say_left(places, SERVER_STOPPED if stopped else SERVER_GONE)
        else:
            self._say_reconnecting(places)

    def name_lost(self, name: str) -> None:
        """Another node took a name this one held (it was cut off from Redis for too long)."""
        member = self.chat.registry.find(name)
        if member is not None:
            self.chat.tell(member, f'Your name "{name}" was taken on another server while this one '
                                   "was cut off; connect again.", last=jsonl.BYE_REFUSED)
