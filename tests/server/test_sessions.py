"""Sessions: held after a drop, resumed with every missed line once, refused when guessed, used
or expired; first with no sockets, then under load against a real server."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading

import pytest

from groupchat.protocol import NAME_PROMPT, parse_session
from groupchat.server.sessions import SessionTable

from conftest import Peer, make_chat, newcomer, wait_for

WINDOW = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def with_sessions(history=None, **settings):
    """A chat that holds sessions, on a clock the test moves; and the clock."""
    chat = make_chat(resume_window=WINDOW, **settings)
    clock = Clock()
    chat.sessions = SessionTable(WINDOW, now=clock)
    chat.history = history
    return chat, clock


def join(chat, name: str, json_mode: bool = False):
    """A member named ``name``; its token as ``member.token``; its lines cleared."""
    member = newcomer(chat)
    chat.receive(member, (["/mode json"] if json_mode else []) + [name])
    lines = member.link.lines
    token = json.loads(lines[-2])["token"] if json_mode else parse_session(lines[-2])
    assert token is not None, lines
    member.token = token
    lines.clear()
    return member


def resume(chat, line: str):
    member = newcomer(chat, address="10.0.0.9:9")
    member.link.lines.clear()
    chat.receive(member, [line])
    return member


def test_a_named_connection_gets_a_token_of_128_bits_before_its_welcome(history):
    chat, _ = with_sessions(history)
    member = newcomer(chat)
    chat.receive(member, ["alice"])
    session, welcome = member.link.lines[-2:]
    token = parse_session(session)
    assert len(token) >= 22 and re.fullmatch(r"[A-Za-z0-9_-]+", token)  # 16 random bytes, base64
    assert f'send "/resume {token}" instead of your name' in session and welcome.startswith("*** Welcome, alice!")
    other = join(chat, "bob", json_mode=True)
    assert other.token != token


def test_a_drop_holds_the_name_and_a_resume_brings_back_every_missed_line_once(history):
    chat, _ = with_sessions(history, op_password="root")
    alice, bob = join(chat, "alice"), join(chat, "bob")
    chat.receive(alice, ["/op root", "before the drop"])
    bob.link.lines.clear()
    chat.leave(alice, "connection lost: reset")  # as the server does when the socket fails
    assert bob.link.lines[-1].endswith("*** alice is reconnecting")
    thief = newcomer(chat)
    chat.receive(thief, ["alice"])
    assert thief.link.lines[-2] == '*** Sorry, the name "alice" is taken; "alice2" is free.'
    chat.receive(bob, ["missed 1", "missed 2"])
    back = resume(chat, f"/resume {alice.token}")
    lines = back.link.lines
    assert parse_session(lines[0]) not in (None, alice.token)  # a new token: the old one is spent
    assert lines[1].startswith("*** Welcome, alice!")
    assert lines[2].endswith("*** 2 messages were said since: here they are.")
    assert [line.split("(history) ")[1] for line in lines[3:5]] == ["<bob> missed 1", "<bob> missed 2"]
    assert lines[5].endswith("End of history; live chat from here.") and len(lines) == 6
    assert bob.link.lines[-1].endswith("*** alice is back")
    assert back.name == "alice" and back.is_op and back.room.name == "lobby"
    chat.receive(bob, ["live"])
    assert back.link.lines[-1].endswith("<bob> live")
    again = resume(chat, f"/resume {alice.token}")
    assert again.link.lines[-2].startswith("*** Sorry, no session to resume") and again.link.lines[-1] == NAME_PROMPT


def test_resume_after_a_given_id_and_in_json_with_the_ids(history):
    chat, _ = with_sessions(history)
    alice, bob = join(chat, "alice", json_mode=True), join(chat, "bob")
    chat.receive(bob, ["one", "two", "three"])
    got = [event for event in map(json.loads, alice.link.lines) if event["type"] == "msg"]
    chat.leave(alice, "connection closed")
    member = newcomer(chat)
    member.link.lines.clear()
    chat.receive(member, ["/mode json", f"/resume {alice.token} {got[0]['id']}"])
    events = [json.loads(line) for line in member.link.lines[2:]]
    assert [e["type"] for e in events] == ["session", "welcome", "history", "history", "history_end"]
    assert events[1]["resumed"] is True
    assert [(e["id"], e["text"]) for e in events[2:4]] == [(g["id"], g["text"]) for g in got[1:]]
    assert events[4]["missed"] == 2


def test_a_guessed_token_gets_a_clear_error_and_the_name_prompt():
    chat, _ = with_sessions()
    join(chat, "alice")
    for line in ["/resume", "/resume AAAAAAAAAAAAAAAAAAAAAA", "/resume " + "x" * 5000]:
        member = resume(chat, line)
        assert member.link.lines == ["*** Sorry, no session to resume with that token (unknown, used or "
                                     "expired); give your name.", NAME_PROMPT]
    member = newcomer(chat)
    member.link.lines.clear()
    chat.receive(member, ["/mode json", "/resume nope"])
    error = json.loads(member.link.lines[2])
    assert (error["type"], error["code"]) == ("error", "RESUME_FAILED")


def test_the_window_ends_with_the_usual_leave_and_an_expired_token_is_refused():
    chat, clock = with_sessions()
    alice, bob = join(chat, "alice"), join(chat, "bob")
    chat.leave(alice, "not reading: too far behind")
    clock.now = WINDOW - 1
    chat.expire_sessions()
    assert bob.link.lines[-1].endswith("alice is reconnecting")
    clock.now = WINDOW
    chat.expire_sessions()
    assert bob.link.lines[-1].endswith("*** alice left (not reading: too far behind)")
    assert resume(chat, f"/resume {alice.token}").link.lines[-1] == NAME_PROMPT
    newcomer_alice = newcomer(chat)
    chat.receive(newcomer_alice, ["alice"])
    assert newcomer_alice.name == "alice"  # the name is free again


def test_quit_kick_and_ban_end_the_session_at_once():
    chat, _ = with_sessions(op_password="root")
    op = join(chat, "op")
    chat.receive(op, ["/op root"])
    quitter, kicked, banned = join(chat, "quitter"), join(chat, "kicked"), join(chat, "banned")
    chat.receive(quitter, ["/quit bye"])
    chat.receive(op, ["/kick kicked", "/ban banned"])
    for member in (quitter, kicked, banned):
        chat.leave(member, "connection closed")
        assert op.link.lines[-1].endswith(f"*** {member.name} left" + (" (quit: bye)" if member is quitter else
                                                                         f" (kicked by op{': banned' if member is banned else ''})"))
        assert resume(chat, f"/resume {member.token}").link.lines[-1] == NAME_PROMPT


def test_resuming_a_connection_still_open_closes_the_old_one():
    chat, _ = with_sessions()
    alice, bob = join(chat, "alice"), join(chat, "bob")
    back = resume(chat, f"/resume {alice.token}")
    assert alice.link.ended and alice.link.lines[-1].endswith("Your session was resumed from another connection.")
    chat.leave(alice, "connection closed")  # its handler finishes: nobody hears of it
    chat.receive(bob, ["still there?"])
    assert back.link.lines[-1].endswith("<bob> still there?") and not bob.link.lines[-1].endswith("left")


def test_more_missed_than_a_replay_holds_says_how_many_and_how_to_get_the_rest(history):
    chat, _ = with_sessions(history)
    alice, bob = join(chat, "alice"), join(chat, "bob")
    chat.leave(alice, "connection lost")
    chat.receive(bob, [f"line {n}" for n in range(700)])
    back = resume(chat, f"/resume {alice.token}")
    said = back.link.lines[2]
    last_shown = int(re.search(r"/history after (\d+)", said).group(1))
    assert said.endswith(f"700 messages were said since: here are the first 500; /history after {last_shown} shows more.")
    assert back.link.lines[502].endswith("<bob> line 499")
    back.link.lines.clear()
    chat.receive(back, [f"/history after {last_shown}"])
    assert back.link.lines[0].endswith("200 messages were said since: here they are.")
    assert [line.split("<bob> ")[1] for line in back.link.lines[1:-1]] == [f"line {n}" for n in range(500, 700)]
    assert back.link.lines[-1].endswith("*** End of the lines asked for.")


def test_without_a_window_there_are_no_sessions():
    chat = make_chat(resume_window=0)
    member = newcomer(chat)
    chat.receive(member, ["alice"])
    assert not any("session" in line for line in member.link.lines)
    assert chat.sessions is None


# -- a real server -------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_under_load_a_reset_connection_resumes_with_every_line_once_in_order(start_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = start_server(rate=0, max_per_address=0)
    reader = Peer(server.server_address)
    reader.join_json("reader")
    token = reader.token
    senders = [Peer(server.server_address) for _ in range(3)]
    for n, sender in enumerate(senders):
        sender.join(f"s{n}")
    lines_each = 150  # what is missed fits in one replay (more is tested without sockets above)

    def send(n: int) -> None:
        for k in range(lines_each):
            senders[n].say(f"s{n} {k}")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    seen = []
    while len(seen) < 100:  # mid-stream
        event = reader.event()
        if event["type"] == "msg":
            seen.append((event["id"], event["text"]))
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    reader.close()  # a reset: whatever was in flight is lost
    back = Peer(server.server_address)
    assert back.next_line() == NAME_PROMPT
    back.say("/mode json")
    back.event(), back.event()
    back.say(f"/resume {token} {seen[-1][0]}")
    session, welcome = back.event(), back.event()
    assert (session["type"], welcome["type"], welcome["resumed"]) == ("session", "welcome", True)
    for thread in threads:
        thread.join()
    while len(seen) < 3 * lines_each:
        event = back.event()
        if event["type"] in ("msg", "history") and event.get("kind", "msg") == "msg":
            seen.append((event["id"], event["text"]))
    ids = [id for id, _ in seen]
    assert ids == sorted(set(ids)), "a line came twice or out of order"
    for n in range(3):
        assert [text for _, text in seen if text.startswith(f"s{n} ")] == [f"s{n} {k}" for k in range(lines_each)]
    assert token not in caplog.text and session["token"] not in caplog.text  # tokens are never logged
    wait_for(lambda: "reader resumed" in caplog.text, what="the resume to be logged")
    for peer in senders + [back]:
        peer.close()
