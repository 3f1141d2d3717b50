"""Cluster publishing and reading against a real redis-server: one order of ids on every node,
private messages and control events across nodes, catching up, and a trimmed stream said."""

from __future__ import annotations

import logging
import threading

import pytest

from conftest import say, wait_for
from groupchat.errors import NotSentError

pytestmark = pytest.mark.timeout(60)


def test_three_nodes_see_every_event_of_a_room_with_the_same_ids_in_the_same_order(redis_server, cluster_node):
    redis = redis_server()
    nodes = [cluster_node(redis.url) for _ in range(3)]
    for node, _ in nodes:
        node.watch("lobby")
        node.watch("kitchen")
    sent: list[list] = [[] for _ in nodes]
    go = threading.Barrier(len(nodes))

    def talk(index: int) -> None:
        go.wait()
        for _ in range(5):
            sent[index] += say(nodes[index][0], "lobby", f"n{index}", 10)
            sent[index] += say(nodes[index][0], "kitchen", f"n{index}", 2)

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = sorted(future.result(10) for futures in sent for future in futures)
    assert len(set(ids)) == 3 * 60  # one sequence for the cluster: no id given twice, in any room
    for _, received in nodes:
        wait_for(lambda: len(received.events()) == 180, what="every event on every node")
    orders = [[(e["room"], e["id"], e["from"], e["text"]) for e in received.events()] for _, received in nodes]
    assert orders[0] == orders[1] == orders[2]
    lobby = [e["id"] for e in nodes[0][1].events(room="lobby")]
    assert lobby == sorted(lobby) and len(lobby) == 150
    for index in range(3):  # each node's own lines in the order it said them
        assert nodes[0][1].texts(room="lobby", **{"from": f"n{index}"}) == [f"n{index} {i}" for i in range(10)] * 5


def test_an_event_taking_several_ids_keeps_them_all(redis_server, cluster_node):
    redis = redis_server()
    (a, received), (b, _) = cluster_node(redis.url), cluster_node(redis.url)
    a.watch("lobby")
    first = b.publish("lobby", {"type": "topic", "room": "lobby", "text": "two lines"}, count=2).result(10)
    after = b.publish("lobby", {"type": "msg", "room": "lobby", "text": "next"}).result(10)
    assert after == first + 2
    wait_for(lambda: received.texts(room="lobby") == ["two lines", "next"])


def test_a_node_gives_no_id_at_or_below_what_its_history_has(redis_server, cluster_node):
    redis = redis_server()
    node, _ = cluster_node(redis.url)
    node.ids_above(5000)  # its SQLite history had ids up to 5000; this Redis has none
    assert node.publish("lobby", {"type": "msg", "room": "lobby", "text": "hi"}).result(10) > 5000


def test_a_private_message_reaches_the_node_holding_the_name(redis_server, cluster_node):
    redis = redis_server()
    (a, _), (b, at_b), (c, at_c) = (cluster_node(redis.url) for _ in range(3))
    assert b.claim("Bob")
    a.send_private("bob", {"type": "private", "from": "alice", "to": "bob", "text": "psst"}).result(10)
    wait_for(lambda: at_b.texts(type="private") == ["psst"])
    with pytest.raises(NotSentError, match="no one") as raised:
        a.send_private("carol", {"type": "private", "from": "alice", "to": "carol", "text": "hello?"}).result(10)
    assert raised.value.code == "NO_SUCH_NAME"
    assert at_c.events(type="private") == []


def test_a_control_event_reaches_every_node(redis_server, cluster_node):
    redis = redis_server()
    nodes = [cluster_node(redis.url) for _ in range(3)]
    nodes[0][0].broadcast({"type": "kick", "name": "mallory", "by": "op", "reason": "spam"}).result(10)
    for _, received in nodes:
        wait_for(lambda: [e["name"] for e in received.events(type="kick")] == ["mallory"])


def test_a_late_node_catches_up_from_its_last_id_and_says_when_the_stream_was_trimmed(
        redis_server, cluster_node, caplog):
    redis = redis_server()
    early, _ = cluster_node(redis.url, max_stream_length=5)
    ids = [f.result(10) for f in say(early, "lobby", "alice", 3)]
    late, received = cluster_node(redis.url)
    late.watch("lobby", after=ids[0])
    wait_for(lambda: received.texts(room="lobby") == ["alice 1", "alice 2"], what="catching up")

    # MAXLEN ~ trims whole blocks: publish far past it so the oldest are surely gone.
    [f.result(10) for f in say(early, "lobby", "bob", 300)]
    with caplog.at_level(logging.WARNING):
        trailing, got = cluster_node(redis.url)
        trailing.watch("lobby", after=ids[-1])
        wait_for(lambda: got.texts(room="lobby")[-1:] == ["bob 299"], what="the newest event")
    assert "no longer reaches back to id %d" % ids[-1] in caplog.text
    assert len(got.texts(room="lobby")) < 300


def test_events_wait_for_redis_and_are_published_when_it_returns(redis_server, cluster_node):
    redis = redis_server("--appendonly", "yes")
    (a, _), (b, received) = cluster_node(redis.url), cluster_node(redis.url)
    b.watch("lobby")
    a.publish("lobby", {"type": "msg", "room": "lobby", "text": "before"}).result(10)
    redis.stop()
    waiting = say(a, "lobby", "alice", 3)
    assert not any(f.done() for f in waiting)
    redis.start()
    assert [f.result(10) for f in waiting] == sorted(f.result() for f in waiting)
    wait_for(lambda: received.texts(room="lobby") == ["before", "alice 0", "alice 1", "alice 2"])


def test_an_event_redis_does_not_take_in_time_is_reported_not_sent(redis_server, cluster_node, caplog):
    redis = redis_server()
    node, _ = cluster_node(redis.url)
    node.publisher.hold_seconds = 0.5
    redis.stop()
    with caplog.at_level(logging.WARNING):
        waiting = say(node, "lobby", "alice", 2)
        for future in waiting:
            with pytest.raises(NotSentError, match=r"^not (sent|confirmed).*: Redis at redis://127.0.0.1:\d+/0 is unreachable"):
                future.result(10)
    assert "2 event(s) not " in caplog.text or caplog.text.count("1 event(s) not ") == 2


def test_past_the_bound_of_waiting_events_a_new_one_is_refused_at_once(redis_server, cluster_node):
    redis = redis_server()
    node, _ = cluster_node(redis.url)
    node.publisher.max_pending = 3
    redis.stop()
    waiting = say(node, "lobby", "alice", 4)
    with pytest.raises(NotSentError, match="3 events are waiting for Redis"):
        waiting[3].result(0)
    assert not any(f.done() for f in waiting[:3])


def test_a_batch_takes_one_round_trip_and_a_redis_that_forgot_the_script_is_given_it_again(
        redis_server, cluster_node):
    redis = redis_server()
    (node, _), (reader, received) = cluster_node(redis.url), cluster_node(redis.url)
    reader.watch("lobby")
    first = [future.result(10) for future in say(node, "lobby", "alice", 3)]
    node.link.redis.script_flush()  # as a Redis restarted forgets it
    again = [future.result(10) for future in say(node, "lobby", "bob", 3)]
    assert first + again == list(range(first[0], first[0] + 6))
    wait_for(lambda: len(received.texts(room="lobby")) == 6, what="all six events")
    # never asked whether Redis knows the script (redis-py's way for a script in a pipeline)
    assert "cmdstat_script|exists" not in node.link.redis.info("commandstats")


def test_callers_publishing_on_their_own_threads_and_the_publishing_thread_keep_one_order(
        redis_server, cluster_node):
    """Callers that wait publish what is queued themselves, one at a time, and leave the rest
    to the node's thread: every event gets one id, each sender's in the order it said them."""
    redis = redis_server()
    (node, _), (reader, received) = cluster_node(redis.url), cluster_node(redis.url)
    reader.watch("lobby")
    futures: dict[str, list] = {}
    go = threading.Barrier(6)

    def talk(sender: str, here: bool) -> None:
        go.wait()
        futures[sender] = [node.publish("lobby", {"type": "msg", "room": "lobby", "from": sender,
                                                  "text": f"{sender} {i}"}, here=here) for i in range(100)]

    threads = [threading.Thread(target=talk, args=(f"s{n}", n % 2 == 0)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {sender: [future.result(10) for future in sent] for sender, sent in futures.items()}
    assert all(said == sorted(said) for said in ids.values())
    assert len({i for said in ids.values() for i in said}) == 600
    wait_for(lambda: len(received.events()) == 600, what="every event read")
    assert [e["id"] for e in received.events()] == sorted(i for said in ids.values() for i in said)
    for sender in ids:
        assert received.texts(**{"from": sender}) == [f"{sender} {i}" for i in range(100)]


def test_a_caller_that_would_publish_itself_while_redis_is_away_leaves_it_to_the_thread(redis_server, cluster_node):
    redis = redis_server("--appendonly", "yes")
    (a, _), (b, received) = cluster_node(redis.url), cluster_node(redis.url)
    b.watch("lobby")
    redis.stop()
    waiting = [a.publish("lobby", {"type": "msg", "room": "lobby", "text": f"m{i}"}, here=True) for i in range(3)]
    assert not any(f.done() for f in waiting)  # held, not refused, and the callers went on
    redis.start()
    assert [f.result(10) for f in waiting] == sorted(f.result() for f in waiting)
    wait_for(lambda: received.texts(room="lobby") == ["m0", "m1", "m2"])
    assert a.publish("lobby", {"type": "msg", "room": "lobby", "text": "m3"}, here=True).result(10)
    wait_for(lambda: received.texts(room="lobby")[-1:] == ["m3"])
