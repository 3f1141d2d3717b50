"""The JSON Lines mode against a real server: a text and a JSON client in one room, ids against
the history database, the handshake before a password, flood control, and shutdown."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3

import pytest

from groupchat.jsonl import render_operation
from groupchat.protocol import NAME_PROMPT, PASSWORD_PROMPT

from conftest import UNLIMITED, Peer, wait_for

pytestmark = pytest.mark.timeout(60)


def op(kind: str, text: str, label: str | None = None) -> str:
    return render_operation(kind, text, label).decode().rstrip("\n")


def stored_ids(path) -> list[tuple[int, str]]:
    """(id, text) of every stored message, read with plain sqlite3."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, text FROM messages ORDER BY id").fetchall()
    return [(first + n, line) for first, text in rows for n, line in enumerate(text.split("\n"))]


def test_a_text_and_a_json_client_see_the_same_messages_with_the_ids_history_stores(start_server, tmp_path):
    server = start_server(**UNLIMITED, history_path=tmp_path / "history.db")
    alice, bob, carol = (Peer(server.server_address) for _ in range(3))
    alice.join("alice")
    bob.join_json("bob")
    carol.join_json("carol")
    bob.expect_event("join", names=["carol"])
    alice.say("hello from text")
    first = bob.expect_event("msg")  # before carol speaks: two connections' lines have no order between them
    carol.say(op("send", "hello from json", "c1"))
    carol.say(op("cmd", "/me waves", "c2"))
    ack = carol.expect_event("ack", label="c1")
    me_ack = carol.expect_event("ack", label="c2")
    alice.expect("<carol> hello from json$")
    alice.expect(r"\* carol waves$")
    got = [first, bob.expect_event("msg"), bob.expect_event("me")]
    assert [(e["from"], e["text"]) for e in got] == [("alice", "hello from text"), ("carol", "hello from json"),
                                                     ("carol", "waves")]
    assert (got[1]["id"], got[2]["id"]) == (ack["id"], me_ack["id"]) and got[0]["id"] < got[1]["id"] < got[2]["id"]
    assert server.history.flush()
    assert stored_ids(tmp_path / "history.db")[-3:] == [(e["id"], e["text"]) for e in got]
    bob.say("/history 3")
    played = [bob.expect_event("history") for _ in range(3)]
    assert [(e["id"], e["kind"]) for e in played] == [(e["id"], e["type"]) for e in got]
    assert bob.expect_event("history_end")["count"] == 3
    for peer in (alice, bob, carol):
        peer.close()


def test_mode_json_before_the_password_and_a_wrong_one_is_a_bye(start_server):
    server = start_server(**UNLIMITED, password="sesame", wrong_password_delay=0)
    peer = Peer(server.server_address)
    assert peer.next_line() == PASSWORD_PROMPT
    peer.say("/mode json")
    assert [peer.event(), peer.event()] == [{"v": 1, "type": "mode", "mode": "json"},
                                            {"v": 1, "type": "prompt", "for": "password"}]
    peer.say("wrong")
    assert json.loads(peer.expect_eof()[-1])["code"] == "WRONG_PASSWORD"
    peer.close()
    right = Peer(server.server_address)
    assert right.next_line() == PASSWORD_PROMPT
    right.say("sesame")
    assert right.next_line() == NAME_PROMPT
    right.say("/mode json")
    right.event()
    assert right.event() == {"v": 1, "type": "prompt", "for": "name"}
    right.say("dana")
    assert right.event()["type"] == "welcome"
    right.close()


def test_flood_control_paces_json_operations_and_refuses_private_floods_with_a_code(start_server):
    server = start_server(rate=50, burst=5, max_per_address=0, notice_interval=0)  # the default rate is slow for a test
    sender, reader = Peer(server.server_address), Peer(server.server_address)
    sender.join_json("sender")
    reader.join_json("reader")
    sender.send("".join(op("send", f"line {n}", f"s{n}") + "\n" for n in range(40)).encode())
    acks = [sender.expect_event("ack") for _ in range(40)]
    assert [a["label"] for a in acks] == [f"s{n}" for n in range(40)]
    assert [reader.expect_event("msg")["text"] for _ in range(40)] == [f"line {n}" for n in range(40)]
    for n in range(6):
        sender.say(op("cmd", "/msg reader psst", f"m{n}"))
    refused = sender.expect_event("error", label="m5")
    assert refused["code"] == "RATE_LIMITED"
    sender.say(op("send", "still welcome", "ok"))
    sender.expect_event("ack", label="ok")
    sender.close()
    reader.close()


def test_shutdown_is_the_last_event_a_json_client_gets(server_process):
    proc = server_process()
    peer = Peer(proc.address)
    peer.join_json("last")
    proc.proc.send_signal(signal.SIGTERM)
    lines = peer.expect_eof()
    assert json.loads(lines[-1]) == {"v": 1, "type": "bye", "code": "SHUTDOWN", "message": "Server is shutting down."}
    peer.close()
    wait_for(lambda: proc.proc.poll() is not None, what="the server to exit")


def test_a_json_operation_may_carry_a_text_as_long_as_a_text_line_and_a_longer_one_is_refused_by_label(start_server):
    server = start_server(**UNLIMITED, max_line=200)
    sender, reader = Peer(server.server_address), Peer(server.server_address)
    sender.join_json("sender")
    reader.join("reader")
    longest = 'q"' * 100  # 200 bytes of text; as JSON, 300 with its escapes
    sender.say(op("send", longest, "fits"))
    sender.expect_event("ack", label="fits")
    assert reader.expect("<sender> ").string.endswith(longest)
    sender.say(op("send", longest + "x", "over"))
    refused = sender.expect_event("error", label="over")
    assert (refused["code"], refused["message"]) == ("LINE_TOO_LONG", "Line not sent: longer than 200 bytes.")
    sender.say("p" * 201)  # a plain line is held to the same bound
    assert sender.expect_event("error")["code"] == "LINE_TOO_LONG"
    sender.close()
    reader.close()
