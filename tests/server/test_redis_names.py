"""Names and presence across nodes against a real redis-server: one holder per name even when
nodes claim at the same instant, no two names that look alike on any nodes, leases that run out
when a node dies, and /who and /rooms."""

from __future__ import annotations

import contextlib
import re
import threading
import time

import pytest

from groupchat.errors import NameTakenError
from groupchat.protocol import NAME_PROMPT, name_key

from conftest import Peer, wait_for

pytestmark = pytest.mark.timeout(60)


def test_nodes_claiming_one_name_at_the_same_instant_give_it_to_exactly_one(redis_server, cluster_node):
    redis = redis_server()
    nodes = [cluster_node(redis.url)[0] for _ in range(3)]
    names = [f"Name{i}" for i in range(30)]
    won: dict[str, list[str]] = {name: [] for name in names}
    go = threading.Barrier(len(nodes))

    def claim_all(node) -> None:
        go.wait()
        for name in names:
            spelled = name.upper() if node is nodes[1] else name  # names differ ignoring case
            if node.claim(spelled):
                won[name].append(node.id)

    threads = [threading.Thread(target=claim_all, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(winners) == 1 for winners in won.values()), won
    assert all(nodes[0].names.holder(name) == won[name][0] for name in names)


def test_a_released_name_is_free_and_a_node_never_frees_a_name_it_no_longer_holds(redis_server, cluster_node):
    redis = redis_server()
    (a, _), (b, _) = cluster_node(redis.url, lease_seconds=0.5), cluster_node(redis.url)
    assert a.claim("alice") and not b.claim("Alice")
    a.release("alice")
    assert b.claim("alice")
    assert not a.names.release("alice")  # b holds it now
    assert a.names.holder("alice") == b.id


def test_a_dead_nodes_names_and_places_come_free_when_their_leases_run_out(redis_server, cluster_node):
    redis = redis_server()
    (dying, _), (other, _) = cluster_node(redis.url, lease_seconds=1.0), cluster_node(redis.url)
    assert dying.claim("alice")
    dying.enter("lobby", "alice")
    time.sleep(1.5)  # heartbeats keep the lease past its first second
    assert not other.claim("alice") and other.who("lobby") == ["alice"]
    dying.stop_heartbeat()
    wait_for(lambda: other.claim("alice"), timeout=5, what="the dead node's lease to run out")
    assert other.who("lobby") == [] and other.rooms() == {}


def test_a_node_cut_off_past_its_lease_is_told_which_names_it_lost(redis_server, cluster_node):
    redis = redis_server()
    lost: list[str] = []
    (slow, _), (other, _) = cluster_node(redis.url, lost.append, lease_seconds=1.0), cluster_node(redis.url)
    assert slow.claim("alice") and slow.claim("bob")
    other.link.redis.delete(*other.names.leases("alice"))  # as if its leases ran out unrenewed
    assert other.claim("alice")
    wait_for(lambda: lost == ["alice"], timeout=5, what="the heartbeat to notice")
    assert other.names.holder("bob") == slow.id


def test_who_and_rooms_are_cluster_wide(redis_server, cluster_node):
    redis = redis_server()
    (a, _), (b, _) = cluster_node(redis.url), cluster_node(redis.url)
    a.enter("lobby", "alice")
    b.enter("lobby", "Bob")
    b.enter("kitchen", "carol")
    assert a.who("lobby") == b.who("lobby") == ["alice", "Bob"]
    assert a.rooms() == {"lobby": 2, "kitchen": 1}
    b.leave("kitchen", "carol")
    assert a.rooms() == {"lobby": 2}
    a.presence.set_topic("lobby", "welcome")
    assert b.presence.arrive(b.id, "lobby", "dee", "dee", {"name": "dee"}, 5)[0] == "welcome"  # told on arrival
    a.presence.ban("10.0.0.7", {"by": "op", "reason": "spam"})
    assert b.presence.bans() == {"10.0.0.7": {"by": "op", "reason": "spam"}}
    assert b.presence.unban("10.0.0.7") and a.presence.bans() == {}


def test_a_person_resuming_on_another_node_takes_the_name_over_from_the_node_they_were_on(
        redis_server, cluster_node):
    redis = redis_server()
    lost: list[str] = []
    (before, _), (after, _), (third, _) = (cluster_node(redis.url, lost.append, lease_seconds=1.0)
                                           for _ in range(3))
    assert before.claim("alice")
    assert not third.claim("alice", replacing=after.id)  # only from the node that holds it
    assert after.claim("alice", replacing=before.id)
    assert after.names.holder("alice") == after.id
    wait_for(lambda: lost == ["alice"], timeout=5, what="the old node to hear it lost the name")


def test_a_name_claimed_just_after_redis_restarted_is_claimed_at_the_first_try(redis_server, cluster_node):
    redis = redis_server()
    node, _ = cluster_node(redis.url, lease_seconds=2.0)
    assert node.claim("alice")
    redis.stop(kill=True)
    redis.start()
    assert node.claim("bob")  # the pooled connection Redis closed is replaced, unseen
    assert node.names.holder("bob") == node.id
    wait_for(lambda: node.names.holder("alice") == node.id, timeout=10,
             what="the heartbeat to take back a name Redis lost")


# Each a name and one written to look like it: Cyrillic, Greek, and letters that pass for others.
LOOKALIKE_PAIRS = [("ape", "\u0430\u0440\u0435"), ("cop", "\u0441\u043e\u0440"), ("ABO", "\u0391\u0392\u039f"),
                   ("mike", "rnike"), ("will", "vvill"), ("lan", "Ian"), ("oscar", "0scar"), ("dan", "clan")]


def test_nodes_claiming_lookalikes_at_the_same_instant_admit_exactly_one_of_each(redis_server, cluster_node):
    redis = redis_server()
    nodes = [cluster_node(redis.url)[0] for _ in range(2)]
    won: dict[str, list[str]] = {pair[0]: [] for pair in LOOKALIKE_PAIRS}
    refusals: list[str] = []
    go = threading.Barrier(len(nodes))

    def claim_all(side: int) -> None:
        go.wait()
        for pair in LOOKALIKE_PAIRS:
            try:
                if nodes[side].claim(pair[side]):
                    won[pair[0]].append(pair[side])
            except NameTakenError as exc:
                refusals.append(str(exc))

    threads = [threading.Thread(target=claim_all, args=(side,)) for side in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(winners) == 1 for winners in won.values()), won
    assert sorted(refusals) == sorted(
        f'"{b if winners == [a] else a}" looks too much like "{name_key(winners[0])}", who is here'
        for (a, b), winners in zip(LOOKALIKE_PAIRS, won.values()))


def test_a_lookalike_comes_free_with_the_name_and_a_change_of_case_keeps_it(redis_server, cluster_node):
    redis = redis_server()
    (a, _), (b, _) = cluster_node(redis.url), cluster_node(redis.url)
    assert a.claim("ape") and a.claim("APE"), "the same name in another case"
    with pytest.raises(NameTakenError, match='"\u0430\u0440\u0435" looks too much like "ape", who is here'):
        b.claim("\u0430\u0440\u0435")
    with pytest.raises(NameTakenError):
        a.claim("\u0430\u0440\u0435")  # on its own node too: the node's registry never sees it
    a.release("ape")
    assert b.claim("\u0430\u0440\u0435")
    assert not a.names.release("\u0430\u0440\u0435") and a.names.holder("\u0430\u0440\u0435") == b.id


def test_a_lookalike_lease_is_renewed_by_the_heartbeat_and_runs_out_with_a_dead_node(redis_server, cluster_node):
    redis = redis_server()
    (dying, _), (other, _) = cluster_node(redis.url, lease_seconds=1.0), cluster_node(redis.url)
    assert dying.claim("rnike")
    time.sleep(1.5)  # heartbeats keep both leases past their first second
    with pytest.raises(NameTakenError, match='"mike" looks too much like "rnike"'):
        other.claim("mike")
    dying.stop_heartbeat()

    def claimed() -> bool:
        try:
            return other.claim("mike")
        except NameTakenError:
            return False

    wait_for(claimed, timeout=5, what="the dead node's leases to run out")


def test_two_serve_processes_refuse_a_lookalike_of_a_name_on_the_other(redis_server, server_process):
    redis = redis_server()
    first, second = server_process("--redis", redis.url), server_process("--redis", redis.url)
    with contextlib.closing(Peer(first.address)) as ape, contextlib.closing(Peer(second.address)) as impostor:
        ape.join("ape")
        assert impostor.next_line() == NAME_PROMPT
        impostor.say("\u0410\u0440\u0435")  # Cyrillic, capital first
        assert impostor.next_line() == '*** Sorry, "\u0430\u0440\u0435" looks too much like "ape", who is here.'
        assert impostor.next_line() == NAME_PROMPT
        impostor.say("mallory")
        impostor.expect(r"Welcome, mallory!")
        impostor.say("/nick \u0430\u0440\u0435")
        impostor.expect(re.escape('*** Sorry, "\u0430\u0440\u0435" looks too much like "ape", who is here'))
        ape.expect("mallory joined")
        ape.say("/who")
        assert ape.expect(r"In lobby \(2\): (.*)\. ").group(1) == "ape, mallory"


def test_a_person_may_take_a_lookalike_of_their_own_name_and_keeps_what_looks_like_it(redis_server, cluster_node):
    redis = redis_server()
    (a, _), (b, _) = cluster_node(redis.url), cluster_node(redis.url)
    assert a.claim("ape")
    with pytest.raises(NameTakenError):
        a.claim("\u0430\u0440\u0435")  # for someone else, even on the same node
    assert a.claim("\u0430\u0440\u0435", renaming="ape")  # a /nick of ape's own
    a.release("ape")  # which then frees the old name, not the look the two share
    with pytest.raises(NameTakenError, match='"ape" looks too much like "\u0430\u0440\u0435", who is here'):
        b.claim("ape")
    a.release("\u0430\u0440\u0435")
    assert b.claim("ape")
