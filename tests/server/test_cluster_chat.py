"""Three servers, one chat: real ChatServers linked through a real redis-server, a real client on each."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest

from groupchat.protocol import is_welcome

from conftest import UNLIMITED, Peer, stored_messages, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def redis(redis_server):
    return redis_server()


@pytest.fixture
def nodes(redis, start_server, tmp_path):
    """Three servers sharing one Redis, each with its own SQLite history."""
    return [start_server(**UNLIMITED, redis=redis.url, op_password="sesame",
                         history_path=str(tmp_path / f"node{i}.db"))
            for i in range(3)]


@pytest.fixture
def peers(nodes, connect):
    """A JSON client on each node: ann on the first, bob on the second, cy on the third."""
    opened = []
    for name, node in zip(("ann", "bob", "cy"), nodes):
        peer = connect(target=node)
        peer.join_json(name)
        opened.append(peer)
    for peer, later in zip(opened, ("bob", "cy", None)):  # each hears the ones who came after it
        if later:
            peer.expect_event("join", names=[later])
    return opened


def messages(peer: Peer, count: int, others: list | None = None) -> list[tuple[int, str, str]]:
    """The next ``count`` messages a peer gets, as (id, from, text); the other events
    meanwhile go to ``others``."""
    got = []
    while len(got) < count:
        event = peer.event()
        if event["type"] == "msg":
            got.append((event["id"], event["from"], event["text"]))
        elif others is not None:
            others.append(event)
    return got


def test_lines_from_every_node_reach_every_node_in_one_order_with_the_same_ids(nodes, peers):
    per_peer = 30

    def talk(peer: Peer) -> None:
        for i in range(per_peer):
            peer.say(f"{peer.name} {i}")

    threads = [threading.Thread(target=talk, args=(peer,)) for peer in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each hears the others' lines (not its own): merged by id, all three tell one story.
    heard = {peer.name: messages(peer, per_peer * 2) for peer in peers}
    for name, lines in heard.items():
        assert [line[0] for line in lines] == sorted(line[0] for line in lines)
        assert {line[1] for line in lines} == {"ann", "bob", "cy"} - {name}
        for sender in {"ann", "bob", "cy"} - {name}:
            assert [text for _, who, text in lines if who == sender] == [f"{sender} {i}" for i in range(per_peer)]
    everyone = sorted(set().union(*map(set, heard.values())))
    assert len(everyone) == per_peer * 3  # one id per line, the same on every node
    for name, lines in heard.items():
        assert lines == [line for line in everyone if line[1] != name]
    # Every node keeps every line in its own history.
    for node in nodes:
        assert node.history.flush()
        wanted = sorted((who, text) for _, who, text in everyone)
        wait_for(lambda: sorted(stored_messages(node.history.path)) == wanted, what="every line stored")


def test_a_topic_set_on_one_node_is_the_topic_on_the_others(peers):
    ann, bob, cy = peers
    make_op(ann)  # (topics are for operators where there is an operator password)
    ann.say("/topic cross-node plans")
    for peer in peers:
        peer.expect_event("topic", text="cross-node plans")
    cy.say(json.dumps({"op": "cmd", "line": "/topic", "label": "t1"}))
    assert cy.expect_event("topic")["text"] == "cross-node plans"


def test_who_and_rooms_count_everyone_on_every_node(peers):
    ann, bob, cy = peers
    cy.say("/join dev")
    cy.expect_event("enter", room="dev")
    ann.say("/who")
    who = ann.expect_event("who")
    assert (who["names"], who["count"], who["online"]) == (["ann", "bob"], 2, 3)
    bob.say("/rooms")
    assert bob.expect_event("rooms")["rooms"] == [{"name": "lobby", "count": 2, "topic": ""},
                                                  {"name": "dev", "count": 1, "topic": ""}]


def test_a_private_message_reaches_its_person_on_another_node_and_back(peers):
    ann, bob, cy = peers
    ann.say("/msg CY psst")
    got = cy.expect_event("dm")
    sent = ann.expect_event("dm")
    assert (got["from"], got["text"], got["id"]) == ("ann", "psst", sent["id"])
    cy.say("/r hi back")
    assert (ann.expect_event("dm")["from"], cy.expect_event("dm")["to"]) == ("cy", "ann")
    ann.say("/msg nobody hello")
    ann.expect_event("error", code="NO_SUCH_NAME")


def test_a_name_is_one_person_across_nodes(nodes, peers, connect):
    again = connect(target=nodes[2])
    assert again.next_line()
    again.say("/mode json")
    again.expect_event("prompt")
    again.say("ANN")
    refused = again.expect_event("error", code="NAME_TAKEN")
    assert "another server" in refused["message"]
    peers[1].say("/nick Ann")
    peers[1].expect_event("error", code="NAME_TAKEN")
    # A name freed on one node is free on the others.
    peers[0].say("/nick anna")
    peers[1].expect_event("nick", old="ann", new="anna")
    again.say("ann")
    again.expect_event("welcome", name="ann")


def test_two_nodes_claiming_one_name_at_once_give_it_to_one(nodes, connect):
    for attempt in range(5):
        name = f"same{attempt}"
        contenders = [connect(target=node) for node in nodes]
        for peer in contenders:
            assert peer.next_line()
            peer.say("/mode json")
            peer.expect_event("prompt")
        barrier = threading.Barrier(len(contenders))

        def claim(peer: Peer) -> None:
            barrier.wait()
            peer.say(name)

        threads = [threading.Thread(target=claim, args=(peer,)) for peer in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers = []
        for peer in contenders:
            event = peer.event()
            while event["type"] not in ("welcome", "error"):
                event = peer.event()
            answers.append(event.get("code", event["type"]))
        assert sorted(answers) == ["NAME_TAKEN", "NAME_TAKEN", "welcome"]
        for peer in contenders:
            peer.close()


def test_a_node_that_stops_under_load_loses_nothing_for_the_others(nodes, peers):
    ann, bob, cy = peers
    per_peer = 200
    stop_at = threading.Event()

    def talk(peer: Peer) -> None:
        for i in range(per_peer):
            if i == per_peer // 4:
                stop_at.set()
            peer.say(f"{peer.name} {i}")

    threads = [threading.Thread(target=talk, args=(peer,)) for peer in (ann, bob)]
    for thread in threads:
        thread.start()
    stop_at.wait(10)
    nodes[2].stop()  # cy's server goes while ann and bob talk
    for thread in threads:
        thread.join()
    ann_also: list = []
    ann_heard = messages(ann, per_peer, ann_also)
    bob_heard = messages(bob, per_peer)
    assert [text for _, _, text in ann_heard] == [f"bob {i}" for i in range(per_peer)]
    assert [text for _, _, text in bob_heard] == [f"ann {i}" for i in range(per_peer)]
    leaves = [event for event in ann_also if event["type"] == "leave"] or [ann.expect_event("leave")]
    # (without sessions, as here, no one can resume: cy left; with them, cy is reconnecting: see
    # test_the_people_of_a_stopped_node_are_reconnecting_then_back_where_they_resume_else_gone)
    assert [(event["names"], event["reason"]) for event in leaves] == [(["cy"], "their server stopped")]
    assert [line[0] for line in ann_heard] == sorted(line[0] for line in ann_heard)


def test_a_line_redis_did_not_take_is_an_error_to_its_sender_and_the_chat_carries_on(redis, nodes, peers,
                                                                                      monkeypatch):
    from groupchat.server.cluster.publisher import Publisher

    monkeypatch.setattr(Publisher, "hold_seconds", 0.3)
    ann, bob, _ = peers
    redis.stop()
    ann.say(json.dumps({"op": "send", "text": "into the void", "label": "v1"}))
    error = ann.expect_event("error", code="NOT_SENT", label="v1")
    assert error["message"].startswith("not sent:") and "unreachable" in error["message"]
    redis.start()  # back, without its data
    ann.say(json.dumps({"op": "send", "text": "back again", "label": "v2"}))
    ack = ann.expect_event("ack", label="v2")
    assert messages(bob, 1) == [(ack["id"], "ann", "back again")]  # and never the line not sent


def make_op(peer: Peer) -> None:
    peer.say("/op sesame")
    peer.expect_event("notice", text="You are now an operator.")


def test_an_operator_kicks_someone_on_another_node(peers):
    ann, bob, cy = peers
    make_op(ann)
    ann.say("/kick bob enough")
    bye = bob.expect_event("bye", code="KICKED")
    assert bye["message"] == "You were kicked by ann: enough."
    bob.expect_eof()
    for peer in (ann, cy):
        leave = peer.expect_event("leave", names=["bob"])
        assert leave["reason"] == "kicked by ann: enough"
    ann.say("/kick nobody")
    ann.expect_event("error", code="NO_SUCH_NAME")


def test_a_ban_holds_on_every_node_until_lifted(nodes, peers, connect, start_server, redis, tmp_path):
    ann, bob, cy = peers
    make_op(ann)
    ann.say("/ban Bob")
    said = ann.expect_event("notice")["text"]
    assert said == 'Banned the name "Bob" until lifted; kicked bob (on another server).'
    assert bob.expect_event("bye", code="BANNED")["message"] == "You were kicked by ann: banned."
    cy.expect_event("leave", names=["bob"], reason="kicked by ann: banned")
    for node in (nodes[1], nodes[2]):  # nobody takes the name on any node
        again = connect(target=node)
        again.next_line()
        again.say("bob")
        again.expect(r'the name "bob" is banned')
    later = start_server(**UNLIMITED, redis=redis.url, history_path=str(tmp_path / "later.db"))
    make_op(cy)
    cy.say("/bans")  # the same list everywhere, and on a node that started after the ban
    assert cy.expect_event("notice")["text"] == 'the name "Bob" until lifted'
    late = connect(target=later)
    late.next_line()
    late.say("BOB")
    late.expect(r'the name "BOB" is banned')
    cy.say("/unban bob")
    cy.expect_event("notice", text='Lifted the ban on the name "bob".')
    for node in (nodes[0], later):  # each node lifts it as it reads the unban: soon, not at once
        wait_for(lambda: welcomed(node, "bob"), what=f"bob welcome on {node.server_address}")


def welcomed(node, name: str) -> bool:
    """Whether ``node`` welcomes a newcomer called ``name`` (who then leaves)."""
    with contextlib.closing(Peer(node.server_address)) as peer:
        peer.next_line()
        peer.say(name)
        return is_welcome(peer.next_line())


def test_an_address_ban_removes_whoever_has_the_address_on_any_node(nodes, peers):
    ann, bob, cy = peers
    make_op(ann)
    ann.say("/ban --address cy 5")  # everyone here is on 127.0.0.1: all three go
    said = ann.expect_event("bye", code="BANNED")
    assert said["message"] == "You were kicked by ann: banned."
    for peer in (bob, cy):
        peer.expect_event("bye", code="BANNED")
    for node in nodes:  # and no one from the address gets in anywhere
        with contextlib.closing(Peer(node.server_address)) as again:
            assert "this address is banned" in again.next_line()


def test_whois_answers_for_someone_on_another_node(peers):
    ann, bob, cy = peers
    cy.say("/away lunch")
    cy.expect_event("notice", text="You are away: lunch")
    ann.say("/whois CY")
    seen = ann.expect_event("whois")
    assert (seen["name"], seen["room"], seen["away"], seen["op"], seen.get("address")) == ("cy", "lobby", "lunch",
                                                                                       False, None)
    make_op(ann)
    ann.say("/whois cy")
    assert ann.expect_event("whois")["address"].startswith("127.0.0.1:")
    ann.say("/whois nobody")
    ann.expect_event("error", code="NO_SUCH_NAME")


def test_a_topic_set_where_no_one_else_is_is_told_to_a_newcomer_on_another_node(peers):
    ann, bob, cy = peers
    make_op(ann)
    ann.say("/join dev")
    ann.expect_event("enter", room="dev")
    ann.say("/topic release friday")
    ann.expect_event("topic", text="release friday")
    cy.say("/join dev")
    cy.expect_event("enter", room="dev")
    assert cy.expect_event("topic")["text"] == "release friday"


def test_the_welcome_names_everyone_in_the_room_on_every_node(nodes, peers, connect):
    ann, bob, cy = peers
    dee = connect(target=nodes[1])
    welcome = dee.join_json("dee")
    assert (welcome["names"], welcome["count"]) == (["ann", "bob", "cy"], 3)
    ann.say("/join dev")
    ann.expect_event("enter", room="dev")
    cy.say("/join dev")
    entered = cy.expect_event("enter", room="dev")
    assert (entered["names"], entered["count"]) == (["ann"], 1)


@pytest.fixture
def quick_unwatch(monkeypatch):
    """Nodes stop reading a room no one on them is in after 0.3 s (asked before they start)."""
    from groupchat.server.cluster.bridge import Bridge

    monkeypatch.setattr(Bridge, "unwatch_seconds", 0.3)


def test_a_room_no_one_here_is_in_any_more_is_read_no_longer_and_again_on_coming_back(quick_unwatch, nodes, peers):
    ann, bob, cy = peers
    node = nodes[0].chat.cluster.node
    ann.say("/join dev")
    ann.expect_event("enter", room="dev")
    bob.say("/join dev")
    bob.expect_event("enter", room="dev")
    assert "dev" in node.rooms_read()
    ann.say("/part")
    ann.expect_event("enter", room="lobby")
    wait_for(lambda: "dev" not in node.rooms_read(), what="dev no longer read by ann's node")
    assert node.rooms_read() == ["lobby"]  # the lobby always is
    bob.say(json.dumps({"op": "send", "text": "while ann was out", "label": "w"}))  # nodes[0] does not read it
    bob.expect_event("ack", label="w")
    ann.say("/join dev")
    ann.expect_event("enter", room="dev")
    assert played(ann)[-1] == "while ann was out"  # caught up into her node's history first
    bob.say("welcome back")
    assert [text for _, _, text in messages(ann, 1)] == ["welcome back"]


def played(peer: Peer) -> list[str]:
    """The texts of the history a peer is played on entering a room, up to its end."""
    texts = []
    while (event := peer.event())["type"] != "history_end":
        if event["type"] == "history":
            texts.append(event["text"])
    return texts


def test_a_node_that_starts_late_has_what_was_said_before_it_in_its_history(redis, nodes, peers, start_server,
                                                                           connect, tmp_path):
    ann = peers[0]
    for n in range(3):
        ann.say(f"before the new node {n}")
    messages(peers[1], 3)  # said, and read by the other nodes
    late = start_server(**UNLIMITED, redis=redis.url, history_path=str(tmp_path / "late.db"))
    dee = connect(target=late)
    dee.join_json("dee")
    assert played(dee)[-3:] == [f"before the new node {n}" for n in range(3)]
    assert [entry.text for entry in late.chat.history.recent("lobby", 3)] == [
        f"before the new node {n}" for n in range(3)]


def test_the_people_of_a_node_that_stops_can_resume_on_another(redis, start_server, connect, tmp_path):
    """An upgrade, say: the node stops cleanly, and keeps its people's sessions in Redis."""
    first, second = (start_server(**{**UNLIMITED, "resume_window": 60}, redis=redis.url,
                                  history_path=str(tmp_path / f"node{i}.db")) for i in range(2))
    ann = connect(target=first)
    ann.join_json("ann")
    first.stop()
    ann.expect_event("bye", code="SHUTDOWN")
    ann.expect_eof()
    wait_for(lambda: not first.registry.connections(), what="the stopped node's connections gone")
    again = connect(target=second)
    again.next_line()
    again.say("/mode json")
    again.expect_event("prompt")
    again.say(f"/resume {ann.token}")
    event = again.event()
    assert event["type"] == "session", event
    assert again.expect_event("welcome")["resumed"] is True


def test_the_people_of_a_stopped_node_are_reconnecting_then_back_where_they_resume_else_gone(
        redis, start_server, connect, tmp_path, monkeypatch):
    """Stopping a node (an upgrade): its people are reconnecting, not gone; who resumes elsewhere
    is back, and who does not leaves once their lease runs out, told once, by one node."""
    from groupchat.server.cluster.node import Node

    monkeypatch.setattr(Node, "lease_seconds", 1.0)
    first, second, third = (start_server(**{**UNLIMITED, "resume_window": 60}, redis=redis.url,
                                         history_path=str(tmp_path / f"node{i}.db")) for i in range(3))
    ann, bob = connect(target=first), connect(target=first)
    ann.join_json("ann")
    bob.join_json("bob")
    cy, dee = connect(target=second), connect(target=third)
    cy.join_json("cy")
    dee.join_json("dee")
    cy.expect_event("join", names=["dee"])
    first.stop()
    assert sorted(cy.expect_event("reconnecting")["names"]) == ["ann", "bob"]
    again = connect(target=third)
    again.next_line()
    again.say("/mode json")
    again.expect_event("prompt")
    again.say(f"/resume {ann.token}")
    assert again.expect_event("welcome")["resumed"] is True
    cy.expect_event("back", names=["ann"])
    leave = cy.expect_event("leave", timeout=15)  # a lease after the stop: bob did not come back
    assert (leave["names"], leave["reason"]) == (["bob"], "their server stopped")
    cy.say("/who")
    assert cy.expect_event("who")["names"] == ["ann", "cy", "dee"]
    dee.say("said after")
    events = [cy.event()]
    while events[-1]["type"] != "msg":
        events.append(cy.event())
    assert [event["type"] for event in events] == ["msg"]  # one leave only, and nothing else
    assert events[-1]["text"] == "said after"


def test_who_resumes_from_a_killed_node_not_yet_found_gone_is_not_said_to_be_back(redis, start_server, tmp_path,
                                                                                  monkeypatch):
    """Its liveness ran out, but until a node finds it gone no room heard its people are
    reconnecting: the node they resume on says nothing of them either; then it would."""
    from groupchat.server.cluster.link import Link
    from groupchat.server.cluster.node import Node
    from groupchat.server.cluster.presence import Presence

    monkeypatch.setattr(Node, "lease_seconds", 600.0)  # no heartbeat finds anyone gone but the test's
    bridge = start_server(**UNLIMITED, redis=redis.url, history_path=str(tmp_path / "node.db")).chat.cluster
    link = Link(redis.url)
    try:
        others = Presence(link, 600_000)
        others.beat("killed", 50, judge=False)  # a node that beat once, then was killed
        wait_for(lambda: not link.redis.exists(link.keys.alive("killed")), what="its liveness to run out")
        assert not bridge.told_away({"node": "killed"})
        assert bridge.told_away({"node": "killed", "dropped": True})  # (her connection dropped first)
        assert others.beat("judge", 600_000, judge=True) == {"killed": []}  # found gone: its rooms are told
        assert bridge.told_away({"node": "killed"})
    finally:
        link.redis.close()


def test_who_came_after_someone_on_another_node_is_not_told_they_joined(redis, start_server, connect, tmp_path):
    """As on one server: a join told after you came (another node's, held back by its notice
    interval) is not news to you, whose welcome named them; those there before hear it."""
    first, second = (start_server(**{**UNLIMITED, "notice_interval": interval}, redis=redis.url,
                                  history_path=str(tmp_path / f"node{n}.db")) for n, interval in enumerate((0, 2)))
    dee, carl = connect(target=first), connect(target=second)
    dee.join_json("dee")
    carl.join_json("carl")
    dee.expect_event("join", names=["carl"])  # the room's first notice on the second node: told at once
    bob, ann = connect(target=second), connect(target=first)
    bob.join_json("bob")  # told up to 2 s later: the second node told one a moment ago
    assert "bob" in ann.join_json("ann")["names"]
    dee.expect_event("join", names=["bob"])
    carl.expect_event("join", names=["bob"])
    dee.say("after it")
    heard = [ann.event()]
    while heard[-1]["type"] != "msg":
        heard.append(ann.event())
    assert heard[-1]["text"] == "after it" and not any(e["type"] == "join" for e in heard), heard


def test_a_nick_may_look_like_ones_own_name_but_not_like_anyone_elses_on_any_node(nodes, peers):
    ann, bob, cy = peers
    cy.say("/nick \u0441\u0443")  # Cyrillic: cy's own look
    assert ann.expect_event("nick")["new"] == "\u0441\u0443"
    bob.say("/nick cy")
    assert bob.expect_event("error", code="NAME_TAKEN")["message"] == (
        'Sorry, "cy" looks too much like "\u0441\u0443", who is here')


def test_a_new_room_that_looks_like_one_in_use_on_another_node_is_refused(nodes, peers):
    ann, bob, _ = peers
    ann.say("/join dev")
    ann.expect_event("enter", room="dev")
    bob.say("/join clev")  # cl for d, on another node
    assert bob.expect_event("error")["message"] == (
        '"clev" looks too much like "dev", a room in use: /join dev goes there')
    bob.say("/join dev")
    bob.expect_event("enter", room="dev")
    ann.expect_event("join", names=["bob"])
