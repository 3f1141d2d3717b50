"""Several servers, one chat: the Redis side of a cluster of nodes (``serve --redis URL``).

Modules: ``link`` (the URL, clients, keys, errors and backoff), ``publisher`` (ids from the
cluster's one sequence and streams, by a Lua script), ``reader`` (``XREAD BLOCK`` from the last
id), ``names`` (leases), ``presence`` (who is in which room, what /whois says, topics, bans), ``node`` (all of
them for one server, with its heartbeat) and ``bridge`` (the chat core's side: what the
chat publishes, and delivering what the node reads).  redis-py is imported only when a node
is made.
"""

from groupchat.server.cluster.node import Node

__all__ = ["Node"]
