"""The JSON Lines mode with no sockets: every event the chat makes, checked against the table in
the README, ids against the history, labels, error codes, and switching back and forth."""

from __future__ import annotations

import json
import re

from groupchat.jsonl import render_operation
from groupchat.protocol import MAX_LINE_BYTES, LineTooLong
from groupchat.server.registry import Stage

from conftest import DOCUMENTED_EVENTS, checked_event, make_chat, named, newcomer

SEEN: set[str] = set()  # event types the tests here produced: all of the table, checked last


def events(member) -> list[dict]:
    """The events sent to ``member`` since last asked, each checked against the README's table."""
    out = []
    for line in member.link.lines:
        event = checked_event(json.loads(line))
        SEEN.add(event["type"])
        out.append(event)
    member.link.lines.clear()
    return out


def json_named(chat, name: str):
    member = newcomer(chat)
    chat.receive(member, ["/mode json", name])
    member.link.lines.clear()
    return member


def json_room(chat, *names: str):
    """Members named ``names`` in JSON mode, with what their arrivals made cleared."""
    members = [json_named(chat, name) for name in names]
    for member in members:
        member.link.lines.clear()
    return members


def send(chat, member, text: str, label: str) -> list[dict]:
    chat.receive(member, [render_operation("send", text, label).decode().rstrip("\n")])
    return events(member)


def command(chat, member, line: str, label: str | None = None) -> list[dict]:
    chat.receive(member, [render_operation("cmd", line, label).decode().rstrip("\n")])
    return events(member)


def test_the_handshake_in_json_prompts_refuses_with_codes_and_welcomes():
    chat = make_chat()
    named(chat, "bob")
    member = newcomer(chat)
    member.link.lines.clear()
    chat.receive(member, ["/mode json"])
    assert events(member) == [{"v": 1, "type": "mode", "mode": "json"}, {"v": 1, "type": "prompt", "for": "name"}]
    chat.receive(member, ["bob", "<x>"])
    taken, prompt, invalid, _ = events(member)
    assert (taken["code"], prompt["for"], invalid["code"]) == ("NAME_TAKEN", "name", "NAME_INVALID")
    assert taken["message"] == 'the name "bob" is taken; "bob2" is free'
    chat.receive(member, ["alice"])
    (welcome,) = events(member)
    assert welcome == {"v": 1, "type": "welcome", "name": "alice", "room": "lobby", "names": ["bob"], "count": 1}


def test_the_password_prompt_and_its_refusal_in_json():
    chat = make_chat(password="sesame")
    member = newcomer(chat)
    member.link.lines.clear()
    chat.receive(member, ["/mode json"])
    assert events(member)[1] == {"v": 1, "type": "prompt", "for": "password"}
    chat.receive(member, ["wrong", "alice"])
    (bye,) = events(member)
    assert bye["code"] == "WRONG_PASSWORD" and member.link.ended


def test_messages_reach_text_and_json_members_alike_and_the_sender_gets_its_ack_with_the_id(history):
    chat = make_chat()
    chat.history = history
    alice, bob = json_room(chat, "alice", "bob")
    carol = named(chat, "carol")
    events(alice), events(bob)
    chat.receive(alice, [render_operation("send", "hi", "c1").decode(), "//etc is a message too",
                         render_operation("send", "/etc", "c2").decode()])
    ack1, ack2 = events(alice)
    assert (ack1["label"], ack2["label"], ack2["id"] - ack1["id"]) == ("c1", "c2", 2)
    got = events(bob)
    assert [(e["type"], e["from"], e["text"]) for e in got] == [
        ("msg", "alice", "hi"), ("msg", "alice", "/etc is a message too"), ("msg", "alice", "/etc")]
    assert [e["id"] for e in got] == [ack1["id"], ack1["id"] + 1, ack2["id"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got[0]["ts"])
    assert [line.split("] ", 1)[1] for line in carol.link.lines[-3:]] == [
        "<alice> hi", "<alice> /etc is a message too", "<alice> /etc"]
    assert history.flush()
    stored = history.recent("lobby", 3)
    assert [(e.id, e.text) for e in stored] == [(e["id"], e["text"]) for e in got]
    (me_ack,) = command(chat, alice, "/me waves", "c3")
    (action,) = events(bob)
    assert (action["type"], action["text"], me_ack["label"], me_ack["id"]) == ("me", "waves", "c3", action["id"])
    assert action["id"] > ack2["id"]


def test_history_and_search_in_json_carry_the_ids_history_gave(history):
    chat = make_chat()
    chat.history = history
    alice, bob = json_room(chat, "alice", "bob")
    (ack,) = send(chat, alice, "deploy v1", "a")
    events(bob)
    assert history.flush()
    *lines, end = command(chat, bob, "/history 5", "h")[:-1]
    assert [(e["id"], e["kind"], e["from"], e["replay"]) for e in lines] == [(ack["id"], "msg", "alice", False)]
    assert end == {"v": 1, "type": "history_end", "room": "lobby", "replay": False, "count": 1}
    found, end, done = command(chat, bob, "/search DEPLOY", "s")
    assert (found["id"], found["query"], end["count"], done) == (ack["id"], "DEPLOY", 1,
                                                                {"v": 1, "type": "ack", "label": "s"})
    assert command(chat, bob, "/search nothing")[0]["count"] == 0
    carol = newcomer(chat)
    carol.link.lines.clear()  # the text prompt, before it asked for JSON
    chat.receive(carol, ["/mode json", "carol"])
    *_, welcome, replayed, end = events(carol)
    assert (welcome["type"], replayed["replay"], replayed["id"], end["replay"]) == ("welcome", True, ack["id"], True)


def test_ids_increase_across_every_room_event_and_private_messages():
    chat = make_chat()
    alice, bob = json_room(chat, "alice", "bob")
    ids = []
    ids.append(send(chat, alice, "one", "1")[0]["id"])
    command(chat, alice, "/topic ship it")
    command(chat, alice, "/nick al")
    sent = command(chat, alice, "/msg bob psst")
    carol = json_named(chat, "carol")
    chat.receive(carol, ["/quit lunch"])
    chat.leave(carol)  # as the server does once the connection has ended
    got = events(bob)
    assert [e["type"] for e in got] == ["msg", "topic", "nick", "dm", "join", "leave"]
    topic, nick, dm, join, leave = got[1:]
    assert (topic["from"], topic["text"], nick["old"], nick["new"]) == ("alice", "ship it", "alice", "al")
    assert (dm["from"], dm["to"], dm["text"]) == ("al", "bob", "psst")
    assert (join["names"], join["count"], leave["names"], leave["reason"]) == (["carol"], 1, ["carol"], "quit: lunch")
    ids += [e["id"] for e in got[1:]]
    assert ids == sorted(set(ids))
    assert sent == [dm]  # the sender sees what it sent, with the same id


def test_joins_and_leaves_coalesced_in_json_name_the_first_ten_and_count_all():
    chat = make_chat(notice_interval=60)
    alice = json_named(chat, "alice")
    crowd = [named(chat, f"p{n}") for n in range(14)]
    for member in crowd[:3]:
        chat.leave(member)
    chat.notices._batches[alice.room].due = 0  # the interval has passed
    chat.tell_due_notices()
    first, join, leave = events(alice)
    assert (first["type"], first["names"], first["count"]) == ("join", ["p0"], 1)  # told at once
    assert (join["names"], join["count"], leave["count"], leave["id"]) == (
        [f"p{n}" for n in range(1, 11)], 13, 3, join["id"] + 1)
    assert "reason" not in leave


def test_who_names_everyone_and_rooms_lists_each_room():
    chat = make_chat()
    alice = json_named(chat, "alice")
    for n in range(25):
        named(chat, f"p{n}")
    events(alice)
    who, ack = command(chat, alice, "/who", "w")
    assert (len(who["names"]), who["count"], who["online"], ack["label"]) == (26, 26, 26, "w")
    command(chat, alice, "/join dev")
    (rooms,) = command(chat, alice, "/rooms")
    assert rooms["rooms"] == [{"name": "lobby", "count": 25, "topic": ""}, {"name": "dev", "count": 1, "topic": ""}]


def test_moving_rooms_is_an_enter_for_the_mover_and_a_leave_with_to_for_the_room_left():
    chat = make_chat()
    alice, bob = json_room(chat, "alice", "bob")
    command(chat, bob, "/topic lobby talk")
    events(alice)
    carol = json_named(chat, "carol")
    command(chat, carol, "/join dev")
    chat.receive(carol, ["/topic shipping"])
    events(carol), events(alice), events(bob)
    enter, topic = command(chat, alice, "/join dev")
    assert (enter["type"], enter["room"], enter["names"], topic["text"]) == ("enter", "dev", ["carol"], "shipping")
    assert "id" not in topic
    (leave,) = [e for e in events(bob) if e["type"] == "leave"]
    assert (leave["names"], leave["to"]) == (["alice"], "dev")


def test_errors_carry_codes_and_labels_and_the_connection_stays():
    chat = make_chat(op_password="root")
    alice = json_named(chat, "alice")
    chat.receive(alice, ['{"op": "send"', '{"op": "send", "text": 5}', '{"op": "dance", "label": "d"}', '{"op": "send", "text": ""}',
                         LineTooLong(MAX_LINE_BYTES)])
    assert [(e["code"], e.get("label")) for e in events(alice)] == [
        ("BAD_JSON", None), ("BAD_JSON", None), ("UNKNOWN_OP", "d"), ("USAGE", None), ("LINE_TOO_LONG", None)]
    for line, code in [("/nosuch", "UNKNOWN_COMMAND"), ("/msg", "USAGE"), ("/kick bob", "NOT_OP"),
                       ("/msg nobody hi", "NO_SUCH_NAME"), ("/op wrong", "COMMAND_FAILED"),
                       ("/nick <bob>", "NAME_INVALID"), ("/mode xml", "USAGE")]:
        error, *_ = command(chat, alice, line, "L")
        assert (error["type"], error["code"], error["label"]) == ("error", code, "L"), line
    bob = named(chat, "bob")
    for _ in range(5):
        command(chat, alice, "/msg bob hi")
    (limited,) = command(chat, alice, "/msg bob hi", "m")
    assert (limited["code"], limited["label"]) == ("RATE_LIMITED", "m")
    assert alice.stage is Stage.CHATTING and send(chat, alice, "still here", "ok")[0]["type"] == "ack"
    assert bob.link.lines[-1].endswith("<alice> still here")


def test_switching_back_and_forth_mid_chat():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.link.lines.clear()
    chat.receive(alice, ["/mode json"])
    assert events(alice) == [{"v": 1, "type": "mode", "mode": "json"}]
    chat.receive(bob, ["in json now"])
    assert events(alice)[0]["text"] == "in json now"
    chat.receive(alice, ['{"op": "cmd", "line": "/mode text"}'])
    assert alice.link.lines[-1].endswith("*** Mode: text.")
    chat.receive(bob, ["{not json for a text member}"])
    assert alice.link.lines[-1].endswith("<bob> {not json for a text member}")
    chat.receive(alice, ["/mode JSON", "hello"])
    assert json.loads(alice.link.lines[-1])["mode"] == "json" and bob.link.lines[-1].endswith("<alice> hello")


def test_every_way_out_is_a_bye_with_its_code():
    chat = make_chat(op_password="root")
    op = json_named(chat, "op")
    command(chat, op, "/op root")
    quitter, kicked, banned, stayer = (json_named(chat, name) for name in ("quitter", "kicked", "banned", "stayer"))
    chat.receive(quitter, ["/quit"])
    command(chat, op, "/kick kicked")
    command(chat, op, "/ban banned")
    chat.announce("Server is shutting down.", bye="SHUTDOWN")
    for member, code in [(quitter, "QUIT"), (kicked, "KICKED"), (banned, "BANNED"), (stayer, "SHUTDOWN")]:
        byes = [event for event in events(member) if event["type"] == "bye"]
        assert byes and byes[0]["code"] == code, member  # (a real outbox takes nothing after the first)
    assert quitter.link.ended and kicked.link.ended and banned.link.ended and stayer.link.ended


def test_a_slow_readers_missed_count_is_an_event():
    chat = make_chat()
    assert json.loads(chat.missed_notice(12, json=True)) == {"v": 1, "type": "missed", "count": 12}
    assert b"You missed 12 messages" in chat.missed_notice(12, json=False)
    SEEN.add("missed")


def test_help_and_notices_are_notice_events():
    chat = make_chat()
    alice = json_named(chat, "alice")
    *helps, ack = command(chat, alice, "/help", "h")
    assert {e["type"] for e in helps} == {"notice"} and len(helps) > 10 and ack["label"] == "h"


def test_sessions_in_json_a_token_before_the_welcome_then_reconnecting_and_back(history):
    chat = make_chat(resume_window=120)
    chat.history = history
    alice = newcomer(chat)
    alice.link.lines.clear()
    chat.receive(alice, ["/mode json", "alice"])
    _, _, session, welcome = events(alice)
    assert (session["type"], session["window"], welcome["type"]) == ("session", 120, "welcome")
    bob = json_named(chat, "bob")
    events(alice)
    chat.leave(alice, "connection lost")
    (away,) = events(bob)
    assert (away["type"], away["names"]) == ("reconnecting", ["alice"])
    back = newcomer(chat)
    chat.receive(back, ["/mode json", f"/resume {session['token']}"])
    (returned,) = events(bob)
    assert (returned["type"], returned["names"], returned["id"]) == ("back", ["alice"], away["id"] + 1)


def test_being_held_back_by_flood_control_is_an_event():
    chat = make_chat()
    alice = json_named(chat, "alice")
    chat.tell_throttled(alice, 40, 5.0)
    assert events(alice) == [{"v": 1, "type": "throttled", "waiting": 40, "rate": 5.0}]


def test_whois_and_who_with_someone_away_in_json():
    chat = make_chat()
    alice, bob = json_room(chat, "alice", "bob")
    command(chat, bob, "/away lunch")
    who, whois = command(chat, alice, "/who")[0], command(chat, alice, "/whois bob")[0]
    assert who["away"] == {"bob": "lunch"}
    assert (whois["name"], whois["room"], whois["away"], whois["op"]) == ("bob", "lobby", "lunch", False)
    assert "address" not in whois  # for operators only


def test_zz_every_documented_event_type_was_produced_and_checked():
    """Last in this file: the tests above made every type the README documents."""
    assert set(DOCUMENTED_EVENTS) - SEEN == set()
