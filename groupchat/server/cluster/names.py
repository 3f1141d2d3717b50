"""Names across nodes: a name is a lease in Redis held by one node, renewed by its heartbeat.

``SET NX PX`` gives a free name to exactly one of the nodes that ask for it at the same instant.
The holder renews it; a node that dies stops renewing and its names come free when their leases
run out.  Releasing and renewing compare the holder first (a Lua script), so a node never frees
or extends a name that came free and went to another node while it was not looking.
"""

from __future__ import annotations

from typing import Optional

from groupchat.server.cluster.link import Link

LEASE_SECONDS = 20.0  # a dead node's names come free this long after its last heartbeat

# KEYS: a lease.  ARGV: the node, the lease in ms, the node it may be taken from ('' for none).
# Takes the name if it is free, this node's already, or held by the node it may be taken from.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] or holder == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: a lease.  ARGV: the node.  Deletes the lease only if the node holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: leases.  ARGV: the node, the lease in ms.  Extends the node's leases, takes back any that
# Redis lost (restarted without its data), and answers 0 for each one another node holds now.
RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  elseif holder == false then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
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

    def claim(self, name: str, replacing: Optional[str] = None) -> bool:
        """Whether this node holds ``name`` now: it was free (ignoring case), this node's already,
        or held by the node ``replacing`` (where a person resuming here was before)."""
        key = self._link.keys.name(name)
        return bool(self._link.call(lambda: self._claim(keys=[key], args=[self._node, self.lease_ms, replacing or ""])))

    def release(self, name: str) -> bool:
        """Free ``name`` if this node holds it; False if it does not (any more)."""
        key = self._link.keys.name(name)
        return bool(self._link.call(lambda: self._release(keys=[key], args=[self._node])))

    def holder(self, name: str) -> Optional[str]:
        """The id of the node holding ``name``, None if it is free."""
        return self._link.call(lambda: self._link.redis.get(self._link.keys.name(name)))

    def renew(self, names: list[str]) -> list[str]:
        """Extend the leases of ``names``; the ones another node holds now, which this one lost."""
        if not names:
            return []
        keys = [self._link.keys.name(name) for name in names]
        held = self._link.call(lambda: self._renew(keys=keys, args=[self._node, self.lease_ms]))
        return [name for name, ok in zip(names, held) if not ok]
