"""Who is in which room, across nodes: sorted sets scored by the deadline of each entry's lease.

A node adds its people to their rooms' sets and its heartbeat moves their deadlines on; anyone
whose deadline has passed is not listed, even if the node that added them died before removing
them (no zombies).  Deadlines come from Redis's own clock, so nodes whose clocks differ agree.
Topics and bans, which outlive any node, are hashes.  Each node also keeps what /whois says of
its people, their sessions (for a resume on another node) and its own liveness, a lease whose
running out makes one other node, and only one, say its people are reconnecting and then that
they left (scripts that take each such thing for one node, atomically).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from groupchat.server.cluster.link import Link

STALE_DEPARTURE_MS = 60_000  # a departure due longer ago than this is not told (see DEPARTED)

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: the set of rooms.  ARGV: lease ms, members' key prefix, then room, name, room, name ...
ENTER = _NOW + """
local deadline = now + tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', ARGV[2] .. ARGV[i], deadline, ARGV[i + 1])
  redis.call('ZADD', KEYS[1], 'GT', deadline, ARGV[i])
end
return #ARGV / 2 - 1
"""

# KEYS: members of rooms.  Answers each room's live names, dropping the expired.
WHO = _NOW + """
local rooms = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  rooms[i] = redis.call('ZRANGE', key, 0, -1)
end
return rooms
"""

# How many others are in a room (its members' key) but ``besides``, and the first ``count`` of
# their names, dropping the expired.
_GLIMPSE = """
local function glimpse(key, count, besides)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local total = redis.call('ZCARD', key)
  if redis.call('ZSCORE', key, besides) then total = total - 1 end
  local names = {}
  for _, name in ipairs(redis.call('ZRANGE', key, 0, count)) do
    if name ~= besides and #names < count then names[#names + 1] = name end
  end
  return {total, names}
end
"""

# KEYS: a room's members.  ARGV: how many names, a name not to count.
GLIMPSE = _NOW + _GLIMPSE + "return glimpse(KEYS[1], tonumber(ARGV[1]), ARGV[2])\n"

# A person arriving in a room, in one round trip.  KEYS: the room's members, the set of rooms, the
# node's people, the topics, the room left ('' for none), the session ('' for none).  ARGV: the
# room, the name, the lease in ms, the name's key, what /whois says, the session, its window in ms,
# how many names.  Answers the room's topic (or nil), how many others are there, the first of
# their names, and when (Redis's clock, in microseconds: two arrivals under a millisecond apart
# must not look simultaneous).
ARRIVE = _NOW + _GLIMPSE + """
local deadline = now + tonumber(ARGV[3])
if KEYS[5] ~= '' then redis.call('ZREM', KEYS[5], ARGV[2]) end
redis.call('ZADD', KEYS[1], deadline, ARGV[2])
redis.call('ZADD', KEYS[2], 'GT', deadline, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[6], 'PX', ARGV[7]) end
local seen = glimpse(KEYS[1], tonumber(ARGV[8]), ARGV[2])
return {redis.call('HGET', KEYS[4], ARGV[1]), seen[1], seen[2], tonumber(t[1]) * 1000000 + tonumber(t[2])}
"""

# KEYS: the set of rooms.  ARGV: members' key prefix.  Answers room, count, room, count ...
ROOMS = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local counts = {}
for _, room in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. room
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local count = redis.call('ZCARD', key)
  if count > 0 then
    counts[#counts + 1] = room
    counts[#counts + 1] = count
  end
end
return counts
"""

# KEYS: a name's lease.  ARGV: the people hashes' key prefix, the name's key.  Answers what the
# node holding the name says of that person (nil if no node holds it).
PERSON = """
local node = redis.call('GET', KEYS[1])
if not node then return false end
return redis.call('HGET', ARGV[1] .. node, ARGV[2])
"""

# KEYS: the set of nodes.  ARGV: this node, its liveness in ms, the liveness keys' prefix, the
# people hashes' prefix, whether to look for dead nodes ('1') or not.  Renews this node's
# liveness; takes each node whose liveness ran out off the set (so that exactly one node takes
# it) and answers it with what /whois said of its people: node, {key, details, ...}, node, ...
BEAT = """
redis.call('SET', ARGV[3] .. ARGV[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
local dead = {}
if ARGV[5] ~= '1' then return dead end
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[3] .. node) == 0 then
    redis.call('SREM', KEYS[1], node)
    dead[#dead + 1] = node
    dead[#dead + 1] = redis.call('HGETALL', ARGV[4] .. node)
    redis.call('DEL', ARGV[4] .. node)
  end
end
return dead
"""

# KEYS: the people of gone nodes.  ARGV: how long from now they leave (ms), then node, details ...
DEPART = _NOW + """
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), cjson.encode({ARGV[i], ARGV[i + 1]}))
end
return #ARGV
"""

# KEYS: the people of gone nodes.  ARGV: how long ago is too long (ms).  Takes those whose time
# to leave has come (each by one node), answering those whose time is not long past: after a
# whole cluster was stopped and started again, what was due then is not news.
DEPARTED = _NOW + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
local fresh = {}
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  if tonumber(due[i + 1]) >= now - tonumber(ARGV[1]) then fresh[#fresh + 1] = due[i] end
end
return fresh
"""

# A node stopping: KEYS: the set of nodes, its liveness, its people, the people of gone nodes.
# ARGV: the node, how long from now its people leave (ms).  It is gone at once (no other node
# need find it so), and its people leave as those of a node that died would, marked as stopped.
STEP_DOWN = _NOW + """
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
local people = redis.call('HVALS', KEYS[3])
for _, details in ipairs(people) do
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), cjson.encode({ARGV[1], details, 'stopped'}))
end
redis.call('DEL', KEYS[3])
return #people
"""


class Presence:
    """Rooms and their people across the cluster, topics and bans.  Each call is one round trip;
    ClusterError when Redis is away."""

    def __init__(self, link: Link, lease_ms: int) -> None:
        self._link = link
        self._lease_ms = lease_ms
        self._enter = link.redis.register_script(ENTER)
        self._who = link.redis.register_script(WHO)
        self._glimpse = link.redis.register_script(GLIMPSE)
        self._arrive = link.redis.register_script(ARRIVE)
        self._rooms = link.redis.register_script(ROOMS)
        self._person = link.redis.register_script(PERSON)
        self._beat = link.redis.register_script(BEAT)
        self._depart = link.redis.register_script(DEPART)
        self._departed = link.redis.register_script(DEPARTED)
        self._step_down = link.redis.register_script(STEP_DOWN)

    def enter(self, places: list[tuple[str, str]]) -> None:
        """Put each (room, name) in its room until a lease from now; the heartbeat calls it again."""
        if places:
            args: list[Any] = [self._lease_ms, self._link.keys.members("")]
            args.extend(part for place in places for part in place)
            self._link.call(lambda: self._enter(keys=[self._link.keys.rooms], args=args))

    def leave(self, room: str, name: str) -> None:
        self._link.call(lambda: self._link.redis.zrem(self._link.keys.members(room), name))

    def who(self, *rooms: str) -> dict[str, list[str]]:
        """The names in each room, on any node, sorted ignoring case."""
        keys = [self._link.keys.members(room) for room in rooms]
        found = self._link.call(lambda: self._who(keys=keys)) if keys else []
        return {room: sorted(names, key=str.casefold) for room, names in zip(rooms, found)}

    def glimpse(self, room: str, besides: str, count: int) -> tuple[list[str], int]:
        """The first ``count`` names in a room but ``besides``, and how many are there but it:
        a welcome's, which must not fetch a crowd's every name."""
        total, names = self._link.call(lambda: self._glimpse(keys=[self._link.keys.members(room)],
                                                             args=[count, besides]))
        return sorted(names, key=str.casefold), int(total)

    def arrive(self, node: str, room: str, name: str, key: str, details: dict[str, Any], count: int,
               before: Optional[str] = None, session: Optional[tuple[str, dict[str, Any], int]] = None,
               ) -> tuple[Optional[str], list[str], int, int]:
        """In one round trip: ``name`` (whose key is ``key``) is in ``room`` (and no longer in
        ``before``), with what /whois says of it (see :meth:`describe`) and its session (digest,
        details, window ms: see :meth:`keep_session`); answers the room's topic, a glimpse of it
        (see :meth:`glimpse`) and when, by Redis's clock in microseconds (it orders arrivals on
        every node)."""
        keys = self._link.keys
        digest, kept, window_ms = session or ("", {}, 0)
        found = self._link.call(lambda: self._arrive(
            keys=[keys.members(room), keys.rooms, keys.people(node), keys.topics(),
                  keys.members(before) if before is not None else "", keys.session(digest) if session else ""],
            args=[room, name, self._lease_ms, key, _json(details), _json(kept), window_ms, count]))
        topic, total, names, now = found
        return topic, sorted(names, key=str.casefold), int(total), int(now)

    def rooms(self) -> dict[str, int]:
        """Every room someone is in, on any node, with how many are in it."""
        flat = self._link.call(lambda: self._rooms(keys=[self._link.keys.rooms], args=[self._link.keys.members("")]))
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def describe(self, node: str, name: str, details: dict[str, Any]) -> None:
        """Keep what /whois says of ``name``, one of ``node``'s people (``details``: JSON fields)."""
        self._link.call(lambda: self._link.redis.hset(self._link.keys.people(node), name, _json(details)))

    def forget(self, node: str, name: str) -> None:
        self._link.call(lambda: self._link.redis.hdel(self._link.keys.people(node), name))

    def person(self, name: str) -> Optional[dict[str, Any]]:
        """What the node holding ``name`` says of its person; None if no node holds it."""
        keys = self._link.keys
        found = self._link.call(lambda: self._person(keys=[keys.name(name)], args=[keys.people(""), name]))
        return json.loads(found) if found else None

    def beat(self, node: str, alive_ms: int, judge: bool) -> dict[str, list[dict[str, Any]]]:
        """Say ``node`` is alive for ``alive_ms``; with ``judge``, take the nodes whose liveness
        ran out (each is taken by one node only) and answer what /whois said of their people."""
        keys = self._link.keys
        flat = self._link.call(lambda: self._beat(keys=[keys.nodes], args=[
            node, alive_ms, keys.alive(""), keys.people(""), "1" if judge else "0"]))
        return {flat[i]: [json.loads(details) for details in flat[i + 1][1::2]] for i in range(0, len(flat), 2)}

    def depart_later(self, node: str, people: list[dict[str, Any]], delay_ms: int) -> None:
        """Have ``node``'s ``people`` (gone with it) leave ``delay_ms`` from now: see :meth:`departed`."""
        if people:
            args: list[Any] = [delay_ms]
            for details in people:
                args += [node, _json(details)]
            self._link.call(lambda: self._depart(keys=[self._link.keys.departing], args=args))

    def departed(self) -> list[tuple[str, dict[str, Any], bool]]:
        """The people of gone nodes whose time to leave has come, each given to one node only:
        (their node, what /whois said of them, whether their node stopped rather than died);
        but not those whose time passed more than STALE_DEPARTURE_MS ago."""
        due = self._link.call(lambda: self._departed(keys=[self._link.keys.departing], args=[STALE_DEPARTURE_MS]))
        return [(entry[0], json.loads(entry[1]), len(entry) > 2) for entry in map(json.loads, due)]

    def known(self, node: str) -> bool:
        """Whether ``node`` is still among the nodes: neither stopped nor found gone.  Until then
        no node has told its rooms that its people are reconnecting, even once its liveness ran
        out (the next judging heartbeat finds that)."""
        return bool(self._link.call(lambda: self._link.redis.sismember(self._link.keys.nodes, node)))

    def step_down(self, node: str, leave_ms: int) -> None:
        """``node`` stops: it is gone at once, and its people leave ``leave_ms`` from now, told
        by another node (see :meth:`departed`) unless they resumed meanwhile."""
        keys = self._link.keys
        self._link.call(lambda: self._step_down(keys=[keys.nodes, keys.alive(node), keys.people(node), keys.departing],
                                                args=[node, leave_ms]))

    def keep_session(self, digest: str, details: dict[str, Any], window_ms: int) -> None:
        """Keep a session (``details``: its name, room and node) for ``window_ms`` from now."""
        self._link.call(lambda: self._link.redis.set(self._link.keys.session(digest), _json(details), px=window_ms))

    def renew_sessions(self, digests: list[str], window_ms: int) -> None:
        if digests:
            pipe = self._link.redis.pipeline(transaction=False)
            for digest in digests:
                pipe.pexpire(self._link.keys.session(digest), window_ms)
            self._link.call(pipe.execute)

    def end_session(self, digest: str) -> None:
        self._link.call(lambda: self._link.redis.delete(self._link.keys.session(digest)))

    def take_session(self, digest: str) -> Optional[dict[str, Any]]:
        """The session kept under ``digest``, which is kept no longer (a token works once); None
        if there is none (never given, used, or its window passed)."""
        key = self._link.keys.session(digest)
        found, _ = self._link.call(lambda: self._link.redis.pipeline().get(key).delete(key).execute())
        return json.loads(found) if found else None

    def set_topic(self, room: str, topic: str) -> None:
        """Keep a room's topic for every node."""
        self._link.call(lambda: self._link.redis.hset(self._link.keys.topics(), room, topic))

    def ban(self, target: str, details: dict[str, Any]) -> None:
        """Keep a ban (of an address or a name; ``details`` as the chat core keeps them)."""
        self._link.call(lambda: self._link.redis.hset(self._link.keys.bans(), target, _json(details)))

    def unban(self, target: str) -> bool:
        return bool(self._link.call(lambda: self._link.redis.hdel(self._link.keys.bans(), target)))

    def bans(self) -> dict[str, dict[str, Any]]:
        found = self._link.call(lambda: self._link.redis.hgetall(self._link.keys.bans()))
        return {target: json.loads(details) for target, details in found.items()}


def _json(details: dict[str, Any]) -> str:
    return json.dumps(details, separators=(",", ":"))
