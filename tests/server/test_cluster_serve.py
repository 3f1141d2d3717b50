"""``groupchat serve --redis`` as real processes: two nodes talk, and a Redis that cannot be used is one line."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import GROUPCHAT, REPO, Peer, wait_for

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_serve_processes_on_one_redis_are_one_chat(redis_server, server_process, monkeypatch):
    redis = redis_server()
    first = server_process("--redis", redis.url)
    monkeypatch.setenv("GROUPCHAT_REDIS", redis.url)  # the second is told by its environment
    second = server_process()
    ann, bob = Peer(first.address), Peer(second.address)
    try:
        ann.join("ann")
        bob.join("bob")
        ann.expect(r"bob joined")
        bob.say("hello from the other node")
        ann.expect(r"<bob> hello from the other node$")
        with contextlib.closing(Peer(second.address)) as carol:
            carol.next_line()  # the name prompt
            carol.say("ANN")  # taken on the other node
            carol.expect(r'Sorry, the name "ANN" is taken \(on another server of this chat\)')
        second.proc.terminate()
        ann.expect(r"\*\*\* bob is reconnecting$")  # (their client may resume on the first node)
        assert second.finish()[0] == 0
    finally:
        ann.close()
        bob.close()


def ann_in(event: dict) -> bool:
    """Whether ``event`` tells of ann coming or going."""
    return event["type"] in ("leave", "reconnecting", "back") and "ann" in event.get("names", ())


@pytest.mark.parametrize("url, said", [
    ("redis://:s3cret@127.0.0.1:{port}/0", r"^Error: Redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0 is unreachable"),
    ("http://127.0.0.1:{port}", r"^Error: http://127\.0\.0\.1:\d+ is not a Redis URL"),
])
def test_a_redis_that_cannot_be_used_is_one_line_and_exit_1(url, said):
    done = subprocess.run(GROUPCHAT + ["serve", "--host", "127.0.0.1", "--port", "0", "--no-history",
                                       "--redis", url.format(port=free_port())],
                          capture_output=True, text=True, cwd=REPO, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.search(said, lines[0]), lines[0]
    assert "s3cret" not in done.stderr + done.stdout


@pytest.mark.timeout(120)
def test_a_node_killed_under_load_leaves_the_others_serving_with_nothing_lost(redis_server, server_process):
    redis = redis_server()
    nodes = [server_process("--redis", redis.url, "--rate", "0") for _ in range(3)]
    ann, bob, cy = (Peer(node.address) for node in nodes)
    try:
        for peer, name in ((ann, "ann"), (bob, "bob"), (cy, "cy")):
            peer.join(name)
        ann.expect(r"cy joined")
        count = 300
        for i in range(count):
            if i == count // 3:
                nodes[2].proc.kill()  # kill -9 cy's server while ann and bob talk
            ann.say(f"a{i}")
            bob.say(f"b{i}")
        heard_by_ann = [ann.expect(r"<bob> (b\d+)$").group(1) for _ in range(count)]
        heard_by_bob = [bob.expect(r"<ann> (a\d+)$").group(1) for _ in range(count)]
        assert heard_by_ann == [f"b{i}" for i in range(count)]
        assert heard_by_bob == [f"a{i}" for i in range(count)]
        # cy's name stays held until its lease runs out: no one else takes it meanwhile.
        with contextlib.closing(Peer(nodes[0].address)) as again:
            again.next_line()
            again.say("cy")
            again.expect(r'Sorry, the name "cy" is taken')
        # Within a few heartbeats one node finds cy's gone and says so, once for all nodes: cy
        # is reconnecting, and has left once the name comes free.
        for said in (r"cy is reconnecting", r"cy left \(their server stopped responding\)"):
            ann.expect(rf"^\[\d\d:\d\d\] \*\*\* {said}$", timeout=40)
            assert re.search(rf"\*\*\* {said}$", bob.next_line(timeout=10))  # (nothing else came first)
            ann.say("and now")
            assert re.search(r"<ann> and now$", bob.next_line())  # not a second notice
        bob.say("/who")
        bob.expect(r"^\[\d\d:\d\d\] \*\*\* In lobby \(2\): ann, bob")

        def takes_cy() -> bool:
            with contextlib.closing(Peer(nodes[1].address)) as again:
                again.next_line()
                again.say("cy")
                line = again.next_line()
                if "taken" not in line:
                    assert "as cy with what you missed" in line, line  # the session, then the welcome
                    return True
            time.sleep(1)  # (a connection a second at most)
            return False

        wait_for(takes_cy, timeout=15, what="cy's name free")  # and the name comes free
    finally:
        for peer in (ann, bob, cy):
            peer.close()


def test_one_nodes_console_speaks_kicks_and_bans_on_every_node(redis_server, server_process):
    redis = redis_server()
    controller, terminal = pty.openpty()  # the console reads a terminal
    first = server_process("--redis", redis.url, stdin=terminal)
    second = server_process("--redis", redis.url)
    ann, bob = Peer(second.address), Peer(second.address)

    def type_line(line: str) -> None:
        os.write(controller, line.encode() + b"\n")

    try:
        ann.join("ann")
        bob.join("bob")
        ann.expect(r"bob joined")
        type_line("say maintenance at noon")
        first.expect_output(r"^Said to 0 people here, and to the people on the other servers\.$")
        ann.expect(r"\*\*\* Notice from the server: maintenance at noon$")
        type_line("who")
        first.expect_output(r"^ann in lobby on another server$")
        type_line("kick bob bye now")
        first.expect_output(r"^Kicked bob\.$")
        bob.expect(r"You were kicked by the server: bye now\.$")
        ann.expect(r"\*\*\* bob left \(kicked by the server: bye now\)$")
        type_line("ban ann 10")
        first.expect_output(r'^Banned the name "ann" for 10 minutes; kicked ann \(on another server\)\.$')
        ann.expect(r"You were kicked by the server: banned\.$")
        type_line("bans")
        first.expect_output(r'^the name "ann" for 10 more minutes$')
    finally:
        ann.close()
        bob.close()
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_a_session_resumes_on_another_node_when_its_own_is_killed_or_stopped(redis_server, server_process, tmp_path,
                                                                              stop):
    redis = redis_server()
    first, second = (server_process("--redis", redis.url, "--rate", "0", "--history", str(tmp_path / f"{n}.db"))
                     for n in range(2))
    ann, bob, again = Peer(first.address), Peer(second.address), None
    try:
        ann.join_json("ann")
        bob.join_json("bob")
        ann.expect_event("join", names=["bob"])
        bob.say("before")
        last = ann.expect_event("msg", text="before")["id"]
        getattr(first.proc, stop)()  # kill -9 ann's server, or stop it (SIGTERM)
        first.proc.wait()
        for i in range(5):  # said while ann is away
            bob.say(f"missed {i}")

        told = []  # what bob hears of ann's coming and going, from the stop on

        def stored() -> bool:  # in the other node's history, that is
            bob.say("/history 1")
            texts = []
            while (event := bob.event())["type"] != "history_end":
                if ann_in(event):
                    told.append(event["type"])
                else:
                    texts.append(event.get("text"))
            return texts == ["missed 4"]

        wait_for(stored, what="bob's lines stored by his node")
        again = Peer(second.address)  # ann's client, on the other node, with its token
        again.next_line()
        again.say("/mode json")
        again.expect_event("prompt")
        again.say(f"/resume {ann.token} {last}")
        assert again.expect_event("session")["token"] != ann.token
        welcome = again.event()
        assert (welcome["type"], welcome["name"], welcome["resumed"], welcome["names"]) == ("welcome", "ann", True,
                                                                                            ["bob"])
        replayed = [again.event() for _ in range(6)]  # what bob said meanwhile, from the node's history
        assert [(e["type"], e.get("text")) for e in replayed] == [("history", f"missed {i}") for i in range(5)] + [
            ("history_end", None)]
        assert replayed[-1]["missed"] == 5 and last < replayed[0]["id"]
        again.say("hello again")
        heard = [bob.event()]
        while heard[-1]["type"] != "msg":
            heard.append(bob.event())
        assert (heard[-1]["from"], heard[-1]["text"]) == ("ann", "hello again")
        told += [event["type"] for event in heard[:-1] if ann_in(event)]
        # Stopped, ann's node said she was reconnecting; killed, no node knew yet whether she
        # was (unless the resume came after the others found it gone): never a "back" alone.
        assert told == ["reconnecting", "back"] or (stop == "kill" and told == []), heard
        bob.say("/who")
        assert bob.expect_event("who")["names"] == ["ann", "bob"]
        again.say("/quit")
        again.expect_event("bye")
        stale = Peer(second.address)  # a token works once, on any node
        stale.next_line()
        stale.say(f"/resume {ann.token} {last}")
        stale.expect(r"no session to resume with that token")
        stale.close()
    finally:
        for peer in (ann, bob, again):
            if peer is not None:
                peer.close()


def test_a_session_held_by_a_live_node_resumes_on_another_which_it_lets_go(redis_server, server_process):
    redis = redis_server()
    first, second = (server_process("--redis", redis.url, "--rate", "0") for _ in range(2))
    ann, bob, again = Peer(first.address), Peer(second.address), Peer(second.address)
    try:
        ann.join_json("ann")
        bob.join_json("bob")
        ann.expect_event("join", names=["bob"])
        ann.close()  # dropped: its node holds the session
        bob.expect_event("reconnecting", names=["ann"])
        again.next_line()
        again.say(f"/resume {ann.token}")
        again.expect(r"Welcome, ann!")
        bob.expect_event("back", names=["ann"])
        again.say("/quit")
        again.expect_eof()
        assert bob.expect_event("leave", names=["ann"])["reason"] == "quit"
        with contextlib.closing(Peer(first.address)) as anew:  # the first node let the name go
            anew.join("ann")
    finally:
        for peer in (ann, bob, again):
            peer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
def test_redis_restarted_under_two_serve_processes_while_people_talk(redis_server, server_process, kill):
    """Every line is either delivered to the other node's person, once and in order, or its
    sender is told NOT_SENT; a line Redis acknowledged is never lost (Redis keeps what it
    acknowledges: appendfsync always)."""
    redis = redis_server("--appendonly", "yes", "--appendfsync", "always")
    nodes = [server_process("--redis", redis.url, "--rate", "0") for _ in range(2)]
    ann, bob = Peer(nodes[0].address), Peer(nodes[1].address)
    count = 150
    events: dict[str, list] = {"ann": [], "bob": []}
    other_of = {"ann": "bob", "bob": "ann"}

    def read(peer: Peer) -> None:  # until its own last line's answer and the other's last line
        def done(wanted: dict) -> bool:
            return any(all(e.get(key) == value for key, value in wanted.items()) for e in events[peer.name])

        while not (done({"label": "end"}) and done({"type": "msg", "text": f"{other_of[peer.name]} end"})):
            events[peer.name].append(peer.event(timeout=60))

    def talk(peer: Peer) -> None:
        for i in range(count):
            peer.say(json.dumps({"op": "send", "text": f"{peer.name} {i}", "label": str(i)}))
            time.sleep(0.01)

    try:
        ann.join_json("ann")
        bob.join_json("bob")
        ann.expect_event("join", names=["bob"])
        readers = [threading.Thread(target=read, args=(peer,)) for peer in (ann, bob)]
        talkers = [threading.Thread(target=talk, args=(peer,)) for peer in (ann, bob)]
        for thread in readers + talkers:
            thread.start()
        time.sleep(0.5)
        redis.stop(kill=kill)
        time.sleep(1.0)  # lines said now wait for Redis
        redis.start()
        for thread in talkers:
            thread.join(60)
        for peer in (ann, bob):
            peer.say(json.dumps({"op": "send", "text": f"{peer.name} end", "label": "end"}))
        for thread in readers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in readers + talkers)
        for me, other in other_of.items():
            answers = {e["label"]: e for e in events[me] if e["type"] in ("ack", "error") and e.get("label")}
            assert sorted(answers) == sorted([str(i) for i in range(count)] + ["end"])  # each answered once
            refused = {label for label, e in answers.items() if e["type"] == "error"}
            assert all(answers[label]["code"] == "NOT_SENT" for label in refused)
            heard = [e for e in events[other] if e["type"] == "msg" and e["from"] == me]
            texts = [e["text"] for e in heard]
            assert len(texts) == len(set(texts))  # none twice
            assert [e["id"] for e in heard] == sorted(e["id"] for e in heard)  # in order
            assert texts == sorted(texts[:-1], key=lambda text: int(text.split()[1])) + [f"{me} end"]
            acked = {f"{me} {label}" for label, e in answers.items() if e["type"] == "ack" and label != "end"}
            assert acked <= set(texts)  # nothing acknowledged is lost
            assert not any(e["type"] == "leave" for e in events[other])  # no node was taken for gone
    finally:
        ann.close()
        bob.close()


def test_a_session_resumes_into_a_room_the_new_node_never_read_with_nothing_missed(redis_server, server_process,
                                                                                   tmp_path):
    redis = redis_server()
    first, second, third = (server_process("--redis", redis.url, "--rate", "0", "--history", str(tmp_path / f"{n}.db"))
                            for n in range(3))
    ann, bob, again = Peer(first.address), Peer(second.address), Peer(third.address)
    try:
        ann.join_json("ann")
        bob.join_json("bob")
        for peer in (ann, bob):
            peer.say("/join dev")
            peer.expect_event("enter", room="dev")
        ann.expect_event("join", names=["bob"])
        bob.say("before")
        last = ann.expect_event("msg", text="before")["id"]
        first.kill()
        for i in range(5):  # each in Redis (acknowledged) before ann comes back
            bob.say(json.dumps({"op": "send", "text": f"missed {i}", "label": f"m{i}"}))
            bob.expect_event("ack", label=f"m{i}")
        again.next_line()
        again.say("/mode json")
        again.expect_event("prompt")
        again.say(f"/resume {ann.token} {last}")  # the third node has never read dev: it catches up first
        again.expect_event("session")
        welcome = again.event()
        assert (welcome["type"], welcome["room"], welcome["names"]) == ("welcome", "dev", ["bob"])
        replayed = [again.event() for _ in range(6)]
        assert [(e["type"], e.get("text")) for e in replayed] == [("history", f"missed {i}") for i in range(5)] + [
            ("history_end", None)]
        bob.say("after")  # (her node killed a moment ago: no one heard she was away, nor hears she is back)
        assert again.expect_event("msg")["text"] == "after"  # live, once
    finally:
        for peer in (ann, bob, again):
            peer.close()
