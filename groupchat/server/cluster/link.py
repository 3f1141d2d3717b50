"""The connection to Redis: its URL shown without the password, clients, keys, and errors in one line.

Only this module imports redis-py, and only when a cluster is asked for: a server without
``--redis`` never needs the extra.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from groupchat.errors import ClusterError
from groupchat.net import timeval

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss")
CONNECT_SECONDS = 5.0  # to open a connection, and to wait for any reply but a blocking read's
RETRY_FIRST_SECONDS = 0.05  # the first pause after losing Redis; doubled on each failure ...
RETRY_MOST_SECONDS = 2.0  # ... up to this
KEY_PREFIX = "groupchat:"

_T = TypeVar("_T")


def shown_url(url: str) -> str:
    """The URL as logs and errors may show it: any password replaced by ``***``.

    >>> shown_url("redis://:s3cret@db.example:6380/2")
    'redis://:***@db.example:6380/2'
    >>> shown_url("rediss://chat:s3cret@db.example/0?ssl_ca_certs=/ca.pem")
    'rediss://chat:***@db.example/0?ssl_ca_certs=/ca.pem'
    >>> shown_url("redis://127.0.0.1:6379")
    'redis://127.0.0.1:6379'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: str) -> None:
    """ClusterError unless ``url`` is a redis:// or rediss:// URL with a host.

    >>> check_url("http://:pw@example.org")
    Traceback (most recent call last):
    ...
    groupchat.errors.ClusterError: http://:***@example.org is not a Redis URL: use redis://HOST:PORT/DB or rediss:// for TLS
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in SCHEMES or not parts.hostname:
        raise ClusterError(f"{shown_url(url)} is not a Redis URL: use redis://HOST:PORT/DB or rediss:// for TLS")


class Keys:
    """The names of everything groupchat keeps in Redis, under one prefix so that several chats
    may share one Redis.

    >>> Keys("gc:").room("lobby"), Keys("gc:").name("Alice")
    ('gc:room:lobby', 'gc:name:alice')
    """

    def __init__(self, prefix: str = KEY_PREFIX) -> None:
        self.prefix = prefix
        self.sequence = prefix + "sequence"  # the one id sequence of the whole cluster
        self.control = prefix + "control"  # kicks, bans: every node reads it
        self.rooms = prefix + "rooms"  # sorted set: room -> deadline of its latest member's lease
        self.nodes = prefix + "nodes"  # set: the nodes not yet known to be gone
        self.departing = prefix + "departing"  # sorted set: people of gone nodes, by when they are said to leave
        self.probe = prefix + "probe"

    def room(self, room: str) -> str:
        """The stream of a room's events."""
        return f"{self.prefix}room:{room}"

    def members(self, room: str) -> str:
        """Sorted set: a room's names, each scored with the deadline of its lease."""
        return f"{self.prefix}members:{room}"

    def name(self, name: str) -> str:
        """A name's lease; its value is the id of the node that holds it.  Names differ ignoring case."""
        return f"{self.prefix}name:{name.casefold()}"

    def node(self, node: str) -> str:
        """The stream of private messages for the people on one node."""
        return f"{self.prefix}node:{node}"

    def wake(self, node: str) -> str:
        """A stream that only wakes a node's reader so that it reads a room it was just given."""
        return f"{self.prefix}wake:{node}"

    def published(self, node: str) -> str:
        """Hash: what one node last published, so that a retried publish is not published twice."""
        return f"{self.prefix}published:{node}"

    def alive(self, node: str) -> str:
        """A node's liveness: a lease its heartbeat renews."""
        return f"{self.prefix}alive:{node}"

    def session(self, digest: str) -> str:
        """A resume token's session (JSON), under the token's SHA-256 in hex: it expires a resume
        window after its node last renewed it."""
        return f"{self.prefix}session:{digest}"

    def people(self, node: str) -> str:
        """Hash: what /whois says of each person on one node, by name key (JSON)."""
        return f"{self.prefix}people:{node}"

    def topics(self) -> str:
        return f"{self.prefix}topics"

    def bans(self) -> str:
        return f"{self.prefix}bans"


class Link:
    """A Redis URL and a client for it: ``call`` runs one use of Redis and turns what goes wrong
    into one :class:`ClusterError` line that never holds the password.

    Each thread that blocks on Redis (the reader) opens a client of its own with :meth:`client`.
    Losing Redis and reaching it again are one log line each, for all the threads of its ``who``.
    """

    def __init__(self, url: str, prefix: str = KEY_PREFIX, who: str = "groupchat") -> None:
        check_url(url)
        self.who = who
        self._outage = threading.Lock()
        self._lost_at: Optional[float] = None
        self.url = url
        self.shown = shown_url(url)
        self.keys = Keys(prefix)
        self._password = unquote(urlsplit(url).password or "")
        self.redis = self.client()

    def client(self, read_seconds: Optional[float] = CONNECT_SECONDS) -> Any:
        """A new redis-py client; ``read_seconds`` bounds the wait for a reply."""
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ClusterError("--redis needs the redis extra: pip install 'groupchat[redis]'") from None
        try:
            # No retries inside redis-py (its pool already replaces a connection Redis closed):
            # each user of Redis here decides what to do while it is away.
            return redis.Redis.from_url(self.url, socket_timeout=read_seconds, retry=Retry(NoBackoff(), 0),
                                        socket_connect_timeout=CONNECT_SECONDS, decode_responses=True)
        except (ValueError, TypeError) as exc:
            raise ClusterError(self.describe(exc)) from None

    def check(self) -> None:
        """One round trip and one write, so that a bad URL, password or a full Redis is found at
        start-up: ClusterError saying which."""
        self.call(lambda: self.redis.set(self.keys.probe, "1", px=1000))

    def call(self, use: Callable[[], _T]) -> _T:
        """``use()``, with Redis's errors as one ClusterError line."""
        import redis

        try:
            return use()
        except redis.RedisError as exc:
            raise ClusterError(self.describe(exc)) from None

    def describe(self, exc: BaseException) -> str:
        """One line for what went wrong talking to Redis, password removed."""
        import redis

        reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
        if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in reason or "WRONGPASS" in reason:
            what = "refused the password (give it as redis://:PASSWORD@HOST:PORT)"
        elif isinstance(exc, redis.exceptions.OutOfMemoryError):
            what = "is full (maxmemory reached): free memory or raise maxmemory"
        elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            what = f"is unreachable: {reason}"
        else:
            what = f"failed: {reason}"
        message = f"Redis at {self.shown} {what}"
        return message.replace(self._password, "***") if self._password else message

    def lost(self, exc: BaseException) -> None:
        """Log that Redis is away, once until it is reached again."""
        with self._outage:
            if self._lost_at is not None:
                return
            self._lost_at = time.monotonic()
        reason = str(exc) if isinstance(exc, ClusterError) else self.describe(exc)
        log.warning("%s: %s; retrying", self.who, reason)

    def reached(self) -> None:
        """Log that Redis is back, if it was lost."""
        with self._outage:
            if self._lost_at is None:
                return
            away, self._lost_at = time.monotonic() - self._lost_at, None
        log.warning("%s: Redis at %s is back after %.1f s", self.who, self.shown, away)

    @staticmethod
    def unsent(exc: BaseException) -> bool:
        """Whether ``exc`` came before anything reached Redis (connecting failed), so that what
        was being sent surely was not."""
        import redis

        return isinstance(exc, redis.ConnectionError) and "connecting to" in str(exc)

    def is_gone(self, exc: BaseException) -> bool:
        """Whether ``exc`` means Redis went away (worth waiting for), not a mistake of ours."""
        import redis

        busy = isinstance(exc, redis.ResponseError) and str(exc).startswith(("LOADING", "BUSY", "READONLY"))
        return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or busy


class Wire:
    """A connection of one thread's own, for its loop of commands (the reader's ``XREAD``, the
    publisher's scripts): they go out and their replies come back through redis-py's connection
    and parser, without the client's pool, retry wrapper and reply callbacks, which at chat rates
    cost as much CPU as the round trip itself.  After a failure the connection is dropped, so
    the next command starts on a new one and never reads a stale reply.

    ``fresh``: before each command, check that Redis did not close the connection meanwhile, so
    that a command sent as Redis went away fails connecting, surely unsent (the publisher's
    need); a reader, whose commands can simply be sent again, spares the system call."""

    def __init__(self, client: Any, fresh: bool = True) -> None:
        self._connection = client.connection_pool.make_connection()  # like the client's, not in its pool
        self._fresh = fresh
        self._tuned: Any = None  # the socket last given kernel timeouts

    def call(self, *args: Any) -> Any:
        """The reply to one command; an error reply is raised."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, sent in one write; an error reply (a ResponseError) is
        returned in its place.  A connection that fails raises, and is dropped."""
        import redis

        connection = self._connection
        try:
            self._make_ready()
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:  # read whole: the next reply follows it
                    replies.append(exc)
            return replies
        except BaseException:
            connection.disconnect()
            raise

    def _make_ready(self) -> None:
        """Connect, or connect again if Redis closed the connection meanwhile (it reads as
        ready), as redis-py's pool does: so when Redis is gone the command fails connecting,
        surely unsent, rather than after it was written."""
        import redis

        connection = self._connection
        connection.connect()  # (nothing to do when connected)
        if self._fresh:
            try:
                stale = connection.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()
                connection.connect()
        sock = getattr(connection, "_sock", None)
        if sock is not self._tuned:
            self._tuned = sock
            kernel_timeouts(sock, connection.socket_timeout)

    def close(self) -> None:
        self._connection.disconnect()


def kernel_timeouts(sock: Any, seconds: Optional[float]) -> None:
    """Bound a plain TCP socket's sends and receives by the kernel (``SO_SNDTIMEO``,
    ``SO_RCVTIMEO``) rather than by Python's timeout, which polls before every send and every
    receive: two system calls more per round trip, each a turn of the interpreter lock given up.
    A wait that runs out fails as an OSError, which redis-py reports as a ConnectionError.
    Over TLS, or with no bound, the socket is left as it is."""
    if type(sock) is not socket.socket or not seconds:
        return
    bound = timeval(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
    sock.settimeout(None)


class Backoff:
    """Pauses between one thread's attempts to reach Redis again, doubling up to a bound."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._pause = RETRY_FIRST_SECONDS
        self.lost = False

    def failed(self, exc: BaseException, stop: threading.Event) -> None:
        """Say Redis is lost (once for the node), then wait before the next attempt, or until ``stop``."""
        self.lost = True
        self._link.lost(exc)
        stop.wait(self._pause)
        self._pause = min(self._pause * 2, RETRY_MOST_SECONDS)

    def succeeded(self) -> None:
        if self.lost:
            self._link.reached()
        self.lost = False
        self._pause = RETRY_FIRST_SECONDS
