"""The client's side of a JSON connection with no I/O: the handshake, labels, and what it follows."""

from __future__ import annotations

import json
import threading

import pytest

from groupchat import jsonl
from groupchat.client.session import CatchUp, Caught, Handshake, Labels, Sent, Session, Step
from groupchat.protocol import NAME_PROMPT, PASSWORD_PROMPT, LineTooLong, render_refusal

PROMPT_NAME = {"type": "prompt", "for": "name"}
PROMPT_PASSWORD = {"type": "prompt", "for": "password"}
MODE = {"type": "mode", "mode": "json"}
WELCOME = {"type": "welcome", "name": "alice", "room": "lobby", "names": ["bob"], "count": 1}


def error(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


def test_the_greeting_in_text_is_answered_with_the_switch_and_the_json_prompt_with_the_name():
    handshake = Handshake(" alice ")
    assert [handshake.feed(line) for line in (NAME_PROMPT, MODE, PROMPT_NAME)] == [
        Step.SWITCH, Step.WAIT, Step.SEND_NAME]
    assert handshake.name == "alice"
    assert handshake.feed(WELCOME) is Step.JOINED


def test_handshake_answers_a_password_prompt():
    handshake = Handshake("alice")
    assert [handshake.feed(line) for line in (PASSWORD_PROMPT, MODE, PROMPT_PASSWORD)] == [
        Step.SWITCH, Step.WAIT, Step.SEND_PASSWORD]


def test_a_greeting_in_text_after_the_switch_means_a_server_with_no_json_mode():
    handshake = Handshake("alice")
    handshake.feed(NAME_PROMPT)
    assert handshake.feed(render_refusal('a name cannot start with "/"')) is Step.SHOW
    assert handshake.feed(NAME_PROMPT) is Step.NO_JSON


@pytest.mark.parametrize("code", [jsonl.BYE_WRONG_PASSWORD, jsonl.BYE_LOCKED_OUT])
def test_a_bye_for_the_password_ends_the_handshake(code):
    handshake = Handshake("bob")
    handshake.feed(PROMPT_PASSWORD)
    assert handshake.feed({"type": "bye", "code": code, "message": "wrong password"}) is Step.PASSWORD_REFUSED


def test_handshake_asks_for_another_name_only_after_a_refusal():
    handshake = Handshake("bob")
    assert handshake.feed(PROMPT_NAME) is Step.SEND_NAME
    assert handshake.feed(error(jsonl.NAME_TAKEN, 'the name "bob" is taken')) is Step.SHOW
    assert handshake.refusal == 'the name "bob" is taken'
    assert handshake.feed(PROMPT_NAME) is Step.ASK_ANOTHER_NAME
    assert handshake.name_taken
    handshake.rename("rob")
    assert handshake.refusal is None and not handshake.name_taken
    assert handshake.feed(PROMPT_NAME) is Step.SEND_NAME


def test_a_refusal_in_text_or_in_a_bye_is_kept_as_the_reason_the_connection_closes():
    handshake = Handshake("bob")
    assert handshake.feed(render_refusal("the server is full")) is Step.SHOW
    assert handshake.refusal == "the server is full" and not handshake.name_taken
    assert handshake.feed({"type": "bye", "code": jsonl.BYE_BANNED, "message": "banned"}) is Step.SHOW
    assert handshake.refusal == "banned"


@pytest.mark.parametrize("line", ["SSH-2.0-OpenSSH_9.6", LineTooLong(4096), {"type": "notice", "text": "hi"}])
def test_handshake_shows_anything_unexpected(line):
    assert Handshake("alice").feed(line) is Step.SHOW


def test_typed_lines_become_labeled_operations():
    session = Session("alice")
    sent = [json.loads(session.op_line(line)) for line in ["hi", "/who", "//etc", "/me waves"]]
    assert sent == [{"op": "send", "text": "hi", "label": "c1"}, {"op": "cmd", "line": "/who", "label": "c2"},
                    {"op": "send", "text": "/etc", "label": "c3"}, {"op": "cmd", "line": "/me waves", "label": "c4"}]
    assert len(session.labels) == 4
    assert session.heard({"type": "ack", "label": "c2"}) == Sent("cmd", "/who")
    assert session.heard({"type": "error", "code": "USAGE", "message": "usage", "label": "c4"}) == \
        Sent("cmd", "/me waves")
    assert len(session.labels) == 2


def test_a_programs_lines_get_labels_unless_they_have_their_own():
    session = Session("bot")
    assert json.loads(session.program_line("hi")) == {"op": "send", "text": "hi", "label": "c1"}
    assert json.loads(session.program_line('{"op": "cmd", "line": "/who"}')) == {
        "op": "cmd", "line": "/who", "label": "c2"}
    assert json.loads(session.program_line('{"op":"send","text":"é","label":"mine"}')) == {
        "op": "send", "text": "é", "label": "mine"}
    assert session.program_line('{"op": "send"') == b'{"op": "send"\n'  # the server says BAD_JSON
    session.program_line('{"op": "send", "text": "hi", "label": 7}')  # so it does, naming no label
    assert len(session.labels) == 3
    for label in ("c1", "c2", "mine"):
        session.heard({"type": "ack", "label": label})
    assert len(session.labels) == 0


def test_a_label_used_twice_waits_for_two_answers():
    labels = Labels()
    labels.expect("x")
    labels.expect("x")
    labels.answer("x")
    assert len(labels) == 1
    labels.answer("x")
    assert len(labels) == 0


def test_an_answer_that_cannot_name_its_label_answers_the_oldest():
    session = Session("alice")
    session.op_line("x" * 5000)
    session.op_line("hi")
    too_long = {"type": "error", "code": jsonl.LINE_TOO_LONG, "message": "Line not sent: longer than 4096 bytes."}
    assert session.heard(too_long) == Sent("send", "x" * 5000)
    assert session.heard({"type": "error", "code": jsonl.BAD_JSON, "message": "not a JSON object"}) is None
    assert len(session.labels) == 1


def test_waiting_for_answers_ends_when_all_come_or_the_connection_closes():
    labels = Labels()
    assert labels.wait(0) == 0
    labels.new(Sent("send", "a"))
    labels.new(Sent("send", "b"))
    answering = threading.Thread(target=lambda: [labels.answer("c1"), labels.answer("c2")])
    answering.start()
    assert labels.wait(10) == 0
    answering.join()
    labels.new(Sent("send", "c"))
    closing = threading.Thread(target=labels.close)
    closing.start()
    assert labels.wait(10) == 1
    closing.join()


def test_waiting_gives_up_after_a_quiet_spell_but_not_while_answers_come():
    labels = Labels()
    for text in "abc":
        labels.new(Sent("send", text))
    # Read by wait(): at the start, then before and after each wait on the condition.  An
    # answer comes just before each quiet spell of 5 would end; the third never comes.
    clock = iter([0.0, 4.99, 4.99, 9.98, 9.98, 15.0])
    answer_at = {1: "c1", 3: "c2"}
    calls = iter(range(100))

    def now() -> float:
        label = answer_at.get(next(calls))
        if label:
            labels.answer(label)
        return next(clock)

    assert labels.wait(5, monotonic=now) == 1


def test_the_session_follows_your_name_room_and_the_last_id_of_each_room():
    session = Session("alice")
    assert not session.joined
    session.heard({**WELCOME, "name": "Alice"})
    assert (session.name, session.room, session.joined) == ("Alice", "lobby", True)
    session.heard({"type": "msg", "id": 5, "room": "lobby", "from": "bob", "text": "hi"})
    session.heard({"type": "history", "id": 2, "room": "lobby", "replay": True, "from": "bob", "text": "old"})
    session.heard({"type": "nick", "id": 6, "room": "lobby", "old": "bob", "new": "rob"})
    assert session.name == "Alice"
    session.heard({"type": "nick", "id": 7, "room": "lobby", "old": "alice", "new": "al"})
    assert session.name == "al"
    session.heard({"type": "enter", "room": "dev", "names": [], "count": 0})
    session.op_line("hello dev")
    session.heard({"type": "ack", "label": "c1", "id": 9})
    session.heard({"type": "dm", "id": 10, "from": "rob", "to": "al", "text": "psst"})
    assert session.last_ids == {"lobby": 7, "dev": 9}


def test_only_a_bye_for_quit_makes_the_end_expected():
    session = Session("alice")
    session.heard({"type": "bye", "code": jsonl.BYE_KICKED, "message": "You were kicked by op."})
    assert not session.quitting
    session.heard({"type": "bye", "code": jsonl.BYE_QUIT, "message": "Goodbye."})
    assert session.quitting


def history(event_id: int, text: str, replay: bool = False) -> dict:
    return {"type": "history", "replay": replay, "id": event_id, "room": "dev", "from": "bob", "kind": "msg",
            "text": text}


def test_a_catch_up_after_a_restart_shows_each_missed_line_once_in_order_before_live_ones():
    catch_up = CatchUp("dev", since=10)
    assert catch_up.feed({"type": "welcome", "name": "al", "room": "lobby"}, None).ask == [
        "/join dev", "/history after 10"]
    for event in (history(9, "seen", replay=True), history(12, "b", replay=True),  # the room's replay
                  {"type": "history_end", "room": "dev", "replay": True, "count": 2},
                  {"type": "msg", "id": 14, "room": "dev", "from": "bob", "text": "live"},
                  history(11, "a"), history(12, "b")):
        assert catch_up.feed(event, None) == Caught([], [])
    caught = catch_up.feed({"type": "history_end", "room": "dev", "count": 2, "missed": 2}, None)
    assert [event["text"] for event, _ in caught.show] == ["a", "b", "live"]
    assert caught.missed == 3


def test_a_catch_up_shows_what_has_no_id_at_once_and_keeps_a_failed_resume_to_itself():
    catch_up = CatchUp("dev", since=10)
    assert catch_up.feed({"type": "error", "code": "RESUME_FAILED", "message": "no session"}, None) == Caught([], [])
    # The handshake's refusal of a name held elsewhere is the link's to tell; a /nick's is shown.
    assert catch_up.feed(error(jsonl.NAME_TAKEN, 'the name "bob" is taken'), None) == Caught([], [])
    refused_nick = {**error(jsonl.NAME_TAKEN, 'the name "rob" is taken'), "label": "c7"}
    assert catch_up.feed(refused_nick, None) == Caught([(refused_nick, None)], [])
    notice = {"type": "notice", "text": "hello"}
    assert catch_up.feed(notice, None) == Caught([(notice, None)], [])


def test_a_slow_readers_catch_up_asks_for_the_lines_after_the_last_it_saw():
    catch_up, ask = CatchUp.after_missed("dev", since=41)
    assert ask == "/history after 41"
    catch_up.feed(history(42, "lost"), None)
    assert catch_up.feed({"type": "history_end", "room": "dev", "count": 1, "missed": 1}, None).missed == 1


def test_unanswered_operations_are_handed_back_once_the_connection_dropped():
    labels = Labels()
    labels.new(Sent("send", "hi"))
    labels.expect("mine")  # a program's own label: nothing of the client's to send again
    assert labels.take_unanswered() == [Sent("send", "hi")]
    assert len(labels) == 0
