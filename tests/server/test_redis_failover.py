"""Redis restarted under load, with and without its data, against a real redis-server: every
event is published or its sender told it was not, and no node delivers one twice or out of order."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_for
from groupchat.errors import NotSentError

pytestmark = pytest.mark.timeout(90)

PER_NODE = 200


def run_under_load(redis, cluster_node, restart) -> tuple[list, list]:
    """Three nodes talk in one room while ``restart()`` stops and starts Redis; answers the
    nodes and what became of each event: (sender, text, id or None if not sent)."""
    nodes = [cluster_node(redis.url) for _ in range(3)]
    for node, _ in nodes:
        node.watch("lobby")
    sent: list = []
    halfway = threading.Barrier(len(nodes) + 1)

    def talk(index: int) -> None:
        node = nodes[index][0]
        for i in range(PER_NODE):
            if i == PER_NODE // 2:
                halfway.wait()
            text = f"n{index} {i}"
            sent.append((f"n{index}", text, node.publish("lobby", {"type": "msg", "room": "lobby",
                                                                   "from": f"n{index}", "text": text})))
            time.sleep(0.002)

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    halfway.wait()
    restart()
    for thread in threads:
        thread.join()
    outcomes = []
    for sender, text, future in sent:
        try:
            outcomes.append((sender, text, future.result(20)))
        except NotSentError:
            outcomes.append((sender, text, None))
    return nodes, outcomes


def assert_in_order_once(received) -> list:
    events = received.events(room="lobby")
    ids = [event["id"] for event in events]
    assert ids == sorted(set(ids)), "an id twice or out of order"
    texts = [event["text"] for event in events]
    assert len(texts) == len(set(texts)), "an event twice"
    for index in range(3):
        mine = [int(t.split()[1]) for t in texts if t.startswith(f"n{index} ")]
        assert mine == sorted(mine), "one sender's lines out of order"
    return events


def test_redis_restarted_with_its_data_under_load_loses_nothing(redis_server, cluster_node):
    redis = redis_server("--appendonly", "yes", "--appendfsync", "always")

    def restart() -> None:
        redis.stop()
        redis.start()

    nodes, outcomes = run_under_load(redis, cluster_node, restart)
    assert all(first is not None for _, _, first in outcomes), "every event was held and published"
    for _, received in nodes:
        wait_for(lambda: len(received.events(room="lobby")) == 3 * PER_NODE, what="every event on every node")
    orders = [[(e["id"], e["text"]) for e in assert_in_order_once(received)] for _, received in nodes]
    assert orders[0] == orders[1] == orders[2]
    assert sorted(first for _, _, first in outcomes) == [first for first, _ in orders[0]]


def test_redis_restarted_without_its_data_under_load_gives_no_id_twice_and_keeps_order(
        redis_server, cluster_node):
    redis = redis_server()

    def restart() -> None:
        redis.stop(kill=True)
        time.sleep(0.2)  # events pile up on every node meanwhile
        redis.start()

    nodes, outcomes = run_under_load(redis, cluster_node, restart)
    published = [(text, first) for _, text, first in outcomes if first is not None]
    assert len({first for _, first in published}) == len(published), "an id given twice"
    last = max(outcomes, key=lambda outcome: outcome[2] or 0)
    for _, received in nodes:  # the newest events reached every node, whatever Redis lost before them
        wait_for(lambda: last[1] in received.texts(room="lobby"), what="the newest event everywhere")
        events = assert_in_order_once(received)
        assert {(e["text"], e["id"]) for e in events} <= set(published)
    after_restart = [set(e["text"] for e in received.events(room="lobby") if e["id"] > last[2] - 50)
                     for _, received in nodes]
    assert after_restart[0] == after_restart[1] == after_restart[2]
