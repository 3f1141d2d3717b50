"""Presence's scripts against a real redis-server: what several nodes ask at the same instant is
given to one of them only (a gone node, its people's leaving, a session), and a glimpse of a room."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from conftest import wait_for
from groupchat.server.cluster.link import Link
from groupchat.server.cluster.presence import Presence

pytestmark = pytest.mark.timeout(60)

LEASE_MS = 20_000


@pytest.fixture
def links(redis_server):
    """Three nodes' links to one real Redis (each a client of its own), closed after."""
    redis = redis_server()
    links = [Link(redis.url) for _ in range(3)]
    yield links
    for link in links:
        link.redis.close()


@pytest.fixture
def presences(links):
    return [Presence(link, LEASE_MS) for link in links]


def due(link: Link, key: str) -> bool:
    """Whether a sorted set scored by Redis's clock in ms has an entry whose time has come."""
    seconds, micros = link.redis.time()
    return bool(link.redis.zcount(key, "-inf", seconds * 1000 + micros // 1000))


def at_once(presences: list[Presence], ask: Callable[[int, Presence], object]) -> list:
    """What ``ask(i, presence)`` answers for each node, all asking at the same instant."""
    answers: list = [None] * len(presences)
    barrier = threading.Barrier(len(presences))

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = ask(i, presences[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(presences))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_a_gone_node_and_then_its_peoples_leaving_are_each_given_to_one_node(links, presences):
    first, keys = presences[0], links[0].keys
    cy = {"name": "cy", "room": "lobby"}
    first.beat("dead", 50, judge=False)  # a node that beats once, then dies
    first.describe("dead", "cy", cy)
    wait_for(lambda: not links[0].redis.exists(keys.alive("dead")), what="the dead node's liveness to run out")
    gone = at_once(presences, lambda i, p: p.beat(f"n{i}", LEASE_MS, judge=True))
    assert sorted(gone, key=len) == [{}, {}, {"dead": [cy]}]
    assert at_once(presences, lambda i, p: p.beat(f"n{i}", LEASE_MS, judge=True)) == [{}, {}, {}]  # once
    first.depart_later("dead", [cy], 50)
    wait_for(lambda: due(links[0], keys.departing), what="cy's time to leave")
    departed = at_once(presences, lambda i, p: p.departed())
    assert sorted(departed, key=len) == [[], [], [("dead", cy, False)]]


def test_nodes_judging_none_take_no_node_and_a_node_that_stops_is_gone_without_a_word(links, presences):
    first, second, _ = presences
    first.beat("n0", 50, judge=False)
    wait_for(lambda: not links[0].redis.exists(links[0].keys.alive("n0")), what="n0's liveness to run out")
    assert second.beat("n1", LEASE_MS, judge=False) == {}  # back from losing Redis: not judging yet
    first.step_down("n0", LEASE_MS)  # n0 stopped and said so
    assert second.beat("n1", LEASE_MS, judge=True) == {}


def test_the_people_of_a_node_that_stops_leave_once_later_marked_as_stopped(links, presences):
    first, second, _ = presences
    ann, bob = {"name": "ann", "room": "lobby"}, {"name": "bob", "room": "dev"}
    first.beat("n0", LEASE_MS, judge=False)
    first.describe("n0", "ann", ann)
    first.describe("n0", "bob", bob)
    first.step_down("n0", 100)
    assert second.beat("n1", LEASE_MS, judge=True) == {}  # not taken for dead: it said it stopped
    wait_for(lambda: due(links[0], links[0].keys.departing), what="their time to leave")
    departed = at_once(presences, lambda i, p: p.departed())
    told = [sorted(answer, key=lambda entry: entry[1]["name"]) for answer in departed]
    assert sorted(told, key=len) == [[], [], [("n0", ann, True), ("n0", bob, True)]]


def test_a_departure_long_past_is_not_told(links, presences, monkeypatch):
    """A whole cluster stopped, and started again later: who left then is not news now."""
    from groupchat.server.cluster import presence

    first = presences[0]
    first.beat("n0", LEASE_MS, judge=False)
    first.describe("n0", "ann", {"name": "ann", "room": "lobby"})
    first.step_down("n0", 0)
    monkeypatch.setattr(presence, "STALE_DEPARTURE_MS", 0)
    wait_for(lambda: due(links[0], links[0].keys.departing), what="ann's time to leave")
    time.sleep(0.01)  # (Redis's clock counts milliseconds)
    assert first.departed() == []
    assert not links[0].redis.zcard(links[0].keys.departing)  # and not told later either


def test_a_node_whose_liveness_ran_out_is_known_until_a_node_finds_it_gone(links, presences):
    """Until then no room heard its people are reconnecting (so none may hear they are back)."""
    first, second, _ = presences
    first.beat("dead", 50, judge=False)
    wait_for(lambda: not links[0].redis.exists(links[0].keys.alive("dead")), what="the dead node's liveness to run out")
    assert second.known("dead")
    assert second.beat("n1", LEASE_MS, judge=True) == {"dead": []}
    assert not second.known("dead")
    first.beat("n0", LEASE_MS, judge=False)
    assert second.known("n0")
    first.step_down("n0", LEASE_MS)  # a node that stops is gone at once
    assert not second.known("n0")


def test_a_session_is_taken_once_by_one_node(presences):
    presences[0].keep_session("d1", {"name": "ann", "room": "lobby", "op": False, "node": "n0"}, 60_000)
    taken = at_once(presences, lambda i, p: p.take_session("d1"))
    assert sorted(taken, key=bool) == [None, None, {"name": "ann", "room": "lobby", "op": False, "node": "n0"}]


def test_a_glimpse_names_the_first_few_others_and_counts_them_all(presences):
    first = presences[0]
    first.enter([("lobby", f"p{i:02}") for i in range(12)])
    names, count = first.glimpse("lobby", "p03", 5)
    assert count == 11 and len(names) == 5 and "p03" not in names
    topic, names, count, ann_came = first.arrive("n0", "dev", "ann", "ann", {"name": "ann"}, 5, before="lobby")
    assert (topic, names, count) == (None, [], 0)
    first.set_topic("dev", "release friday")
    topic, names, count, bob_came = first.arrive("n0", "dev", "bob", "bob", {"name": "bob"}, 5)
    assert (topic, names, count) == ("release friday", ["ann"], 1)
    assert bob_came > ann_came > 0  # (Redis's clock, in microseconds: it orders arrivals on every node)
    assert first.who("dev", "lobby") == {"dev": ["ann", "bob"], "lobby": [f"p{i:02}" for i in range(12)]}
