"""Names across nodes: a name is a lease in Redis held by one node, renewed by its heartbeat.

``SET NX PX`` gives a free name to exactly one of the nodes that ask for it at the same instant.
The holder renews it; a node that dies stops renewing and its names come free when their leases
run out.  Releasing and renewing compare the holder first (a Lua script), so a node never frees
or extends a name that came free and went to another node while it was not looking.

Each name has a second lease, on its :func:`~groupchat.lookalikes.name_skeleton`, taken and
freed with it in the same script, so that two nodes cannot admit two names that look alike
("аре" on one, "ape" on another) either.  Its value is the node and the name, so a refusal can
say which name it looks like.
"""

from __future__ import annotations

from typing import Optional

from groupchat.errors import NameTakenError
from groupchat.lookalikes import name_skeleton, render_lookalike
from groupchat.protocol import name_key
from groupchat.server.cluster.link import Link

LEASE_SECONDS = 20.0  # a dead node's names come free this long after its last heartbeat

# KEYS: a name's lease, its skeleton's.  ARGV: the node, the lease in ms, the node it may be taken
# from ('' for none), the name, the name it replaces on this node ('' for none: a /nick's old
# name).  Takes both if the name is free, this node's already, or held by the node it may be
# taken from, and the skeleton is free or held for this same name or the one it replaces (by
# key, as the values hold them); 0 if the name is held elsewhere; the name whose skeleton it
# is, if another (even on this node).
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder ~= false and holder ~= ARGV[1] and holder ~= ARGV[3] then return 0 end
local look = redis.call('GET', KEYS[2])
if look ~= false and look ~= ARGV[1] .. ' ' .. ARGV[4] and look ~= ARGV[3] .. ' ' .. ARGV[4]
    and (ARGV[5] == '' or look ~= ARGV[1] .. ' ' .. ARGV[5]) then
  return string.match(look, ' (.*)$') or ''
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[4], 'PX', ARGV[2])
return 1
"""

# KEYS: a name's lease, its skeleton's.  ARGV: the node, the name.  Deletes each only if the
# node holds it (the skeleton's for this name).
RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[1] .. ' ' .. ARGV[2] then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: leases in pairs, a name's then its skeleton's.  ARGV: the node, the lease in ms, then the
# names.  Extends the node's leases, takes back any that Redis lost (restarted without its data),
# and answers 0 for each name another node holds now (or holds its skeleton).
RENEW = """
local held = {}
local mine = ARGV[1] .. ' '
for n = 1, #KEYS / 2 do
  local name, look = KEYS[2 * n - 1], KEYS[2 * n]
  held[n] = 1
  local holder = redis.call('GET', name)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', name, ARGV[2])
  elseif holder == false then
    redis.call('SET', name, ARGV[1], 'PX', ARGV[2])
  else
    held[n] = 0
  end
  if held[n] == 1 then
    local alike = redis.call('GET', look)
    if alike == false then
      redis.call('SET', look, mine .. ARGV[n + 2], 'PX', ARGV[2])
    elseif string.sub(alike, 1, #mine) == mine then
      redis.call('PEXPIRE', look, ARGV[2])
    else
      held[n] = 0
    end
  end
end
return held
"""


class Names:
    """The leases of one node's names.  Each call is one round trip; ClusterError when Redis is
    away (the caller decides: refuse a new name, keep the ones held)."""

    def __init__(self, link: Link, node: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self._link = link
        self._node = node
        self.lease_ms = int(lease_seconds * 1000)
        self._claim = link.redis.register_script(CLAIM)
        self._release = link.redis.register_script(RELEASE)
        self._renew = link.redis.register_script(RENEW)

    def leases(self, name: str) -> list[str]:
        """The keys of the lease of ``name`` and of its skeleton's."""
        return [self._link.keys.name(name), f"{self._link.keys.prefix}look:{name_skeleton(name)}"]

    def claim(self, name: str, replacing: Optional[str] = None, renaming: Optional[str] = None) -> bool:
        """Whether this node holds ``name`` now: it was free (ignoring case), this node's already,
        or held by the node ``replacing`` (where a person resuming here was before).
        NameTakenError if a name that looks like it is held, on any node, but ``renaming``, the
        name this node's person taking it had (a /nick to a lookalike of one's own name)."""
        args = [self._node, self.lease_ms, replacing or "", name_key(name), name_key(renaming) if renaming else ""]
        answer = self._link.call(lambda: self._claim(keys=self.leases(name), args=args))
        if isinstance(answer, str):
            raise NameTakenError(render_lookalike(name, answer))
        return bool(answer)

    def release(self, name: str) -> bool:
        """Free ``name`` if this node holds it; False if it does not (any more)."""
        return bool(self._link.call(lambda: self._release(keys=self.leases(name), args=[self._node, name_key(name)])))

    def holder(self, name: str) -> Optional[str]:
        """The id of the node holding ``name``, None if it is free."""
        return self._link.call(lambda: self._link.redis.get(self._link.keys.name(name)))

    def renew(self, names: list[str]) -> list[str]:
        """Extend the leases of ``names``; the ones another node holds now, which this one lost."""
        if not names:
            return []
        keys = [key for name in names for key in self.leases(name)]
        held = self._link.call(lambda: self._renew(keys=keys, args=[self._node, self.lease_ms, *map(name_key, names)]))
        return [name for name, ok in zip(names, held) if not ok]
