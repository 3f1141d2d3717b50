"""Reaching Redis against a real redis-server: a bad URL, an unreachable, refusing or full Redis
is one line that never shows the password; rediss:// works; losing Redis is logged once each way."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest

from conftest import wait_for
from groupchat.errors import ClusterError
from groupchat.server.cluster import Node

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cr3t-Pa55"


def start_error(url: str) -> str:
    """The one line a node that cannot start gives."""
    node = Node(url, lambda event: None)
    with pytest.raises(ClusterError) as raised:
        node.start()
    message = str(raised.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_url_that_is_not_redis_is_one_line_without_its_password():
    for url in (f"http://:{PASSWORD}@example.org", f"redis://:{PASSWORD}@host:port/0", "redis:///0"):
        with pytest.raises(ClusterError, match="is not a Redis URL") as raised:
            Node(url, lambda event: None)
        assert PASSWORD not in str(raised.value)


def test_an_unreachable_redis_is_one_line_without_its_password():
    pytest.importorskip("redis")
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    assert start_error(url).startswith("Redis at redis://:***@127.0.0.1:")
    assert "is unreachable: Error 111 connecting to" in start_error(url)


def test_a_wrong_or_missing_password_is_one_line_without_it(redis_server, cluster_node):
    redis = redis_server("--requirepass", PASSWORD)
    address = redis.url.partition("//")[2]
    assert "refused the password" in start_error(f"redis://:wrong-{PASSWORD}@{address}")
    assert "refused the password" in start_error(redis.url)
    node, received = cluster_node(f"redis://:{PASSWORD}@{address}")
    node.watch("lobby")
    node.publish("lobby", {"type": "msg", "room": "lobby", "text": "in"}).result(10)
    wait_for(lambda: received.texts() == ["in"])


def test_a_full_redis_is_one_line(redis_server):
    redis = redis_server("--maxmemory", "1")
    assert start_error(redis.url) == f"Redis at {redis.url} is full (maxmemory reached): free memory or raise maxmemory"


def test_losing_redis_and_reaching_it_again_is_one_line_each_way_without_the_password(
        redis_server, cluster_node, caplog):
    redis = redis_server("--requirepass", PASSWORD)
    node, received = cluster_node(redis.url.replace("//", f"//:{PASSWORD}@"))
    node.watch("lobby")
    with caplog.at_level(logging.INFO):
        redis.stop(kill=True)
        node.publish("lobby", {"type": "msg", "room": "lobby", "text": "meanwhile"})
        wait_for(lambda: "is unreachable" in caplog.text, what="the node to notice")
        redis.start()
        node.publish("lobby", {"type": "msg", "room": "lobby", "text": "back"}).result(10)
        wait_for(lambda: received.texts() == ["meanwhile", "back"])
        wait_for(lambda: "is back after" in caplog.text)
    assert PASSWORD not in caplog.text and ":***@127.0.0.1" in caplog.text
    lost = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "is back after" in r.getMessage()]
    assert len(lost) == len(back) == 1, caplog.text


def test_rediss_speaks_tls(redis_server, cluster_node, tmp_path):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    redis_server("--tls-port", str(port), "--tls-cert-file", str(tmp_path / "server.pem"),
                 "--tls-key-file", str(tmp_path / "server.pem"), "--tls-auth-clients", "no")
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    node, received = cluster_node(url)
    node.watch("lobby")
    node.publish("lobby", {"type": "msg", "room": "lobby", "text": "over TLS"}).result(10)
    wait_for(lambda: received.texts() == ["over TLS"])
    assert "certificate verify failed" in start_error(f"rediss://127.0.0.1:{port}/0")


def test_without_the_redis_extra_a_node_says_how_to_install_it():
    blocked = ("import sys; sys.modules['redis'] = None\n"  # as if redis-py were not installed
               "from groupchat.errors import ClusterError\n"
               "from groupchat.server.cluster import Node\n"
               "try:\n    Node('redis://127.0.0.1:6379/0', print)\n"
               "except ClusterError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=30)
    assert done.stdout == "--redis needs the redis extra: pip install 'groupchat[redis]'\n", done.stderr


def test_a_wire_answers_in_order_with_errors_in_place_and_fails_connecting_once_redis_is_gone(redis_server):
    import redis as redis_py

    from groupchat.server.cluster.link import Link, Wire

    server = redis_server()
    wire = Wire(Link(server.url).redis)
    try:
        replies = wire.pipeline([("SET", "k", "v"), ("INCR", "k"), ("GET", "k")])
        assert replies[0] == "OK" and isinstance(replies[1], redis_py.ResponseError) and replies[2] == "v"
        assert wire.call("PING") == "PONG"  # raw replies: no callbacks
        server.stop()  # the wire's connection is closed under it: the next command must not be
        with pytest.raises(redis_py.ConnectionError) as raised:  # written to it and then lost
            wire.call("INCR", "n")
        assert Link.unsent(raised.value)  # failed connecting: surely not taken
        server.start()
        assert wire.call("INCR", "n") == 1
    finally:
        wire.close()


@pytest.mark.parametrize("fresh", [True, False], ids=["publisher's", "reader's"])
def test_a_wire_gives_up_on_a_redis_that_stops_answering_within_its_read_bound(redis_server, fresh):
    import signal
    import time

    import redis as redis_py

    from groupchat.server.cluster.link import Link, Wire

    server = redis_server()
    wire = Wire(Link(server.url).client(read_seconds=0.5), fresh=fresh)
    try:
        assert wire.call("PING") == "PONG"  # connected, and the socket's bounds set
        server.proc.send_signal(signal.SIGSTOP)  # takes the command, never answers it
        started = time.monotonic()
        try:
            with pytest.raises(redis_py.RedisError) as raised:
                wire.call("PING")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert time.monotonic() - started < 5, "the wait was not bounded"
        assert Link(server.url).is_gone(raised.value)  # worth waiting for: the callers retry
        assert wire.call("PING") == "PONG"  # on a new connection
    finally:
        wire.close()
