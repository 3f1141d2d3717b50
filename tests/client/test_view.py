"""Events as a person sees them: every event type of the JSON mode rendered into text mode's line.

The expected lines are made with the renderers the server's text mode uses
(:mod:`groupchat.protocol`, :mod:`groupchat.server.notices`), so the two cannot drift apart.
Times are rendered in UTC here (``localtime=time.gmtime``).
"""

from __future__ import annotations

import calendar
import time

import pytest

from groupchat import jsonl
from groupchat.client.session import Session
from groupchat.client.view import Shown, View, clean_event
from groupchat.protocol import (
    LINE_ACTION,
    LINE_HANDSHAKE,
    LINE_HISTORY,
    LINE_MESSAGE,
    LINE_NOTICE,
    LINE_PRIVATE,
    LIVE_MARKER,
    list_names,
    render_action,
    render_entered,
    render_history,
    render_message,
    render_missed,
    render_moved,
    render_notice,
    render_private,
    render_refusal,
    render_rename,
    render_welcome,
    render_who,
)
from groupchat.protocol import render_comings

NOW = calendar.timegm((2026, 12, 1, 18, 40, 12))  # 18:40 UTC
TS = "2026-12-01T14:03:59.999Z"  # an event's time: 14:03


def make_event(event_type: str, **fields) -> dict:
    """An event as the client gets it: rendered by the shared module and parsed back."""
    return jsonl.parse_event(jsonl.render_event(event_type, **fields).decode())


def joined_view(name: str = "alice") -> View:
    session = Session(name)
    session.heard(make_event("welcome", name=name, room="lobby", names=[], count=0))
    return View(session, localtime=time.gmtime, now=lambda: NOW)


def shown(view: View, event_type: str, **fields) -> list[Shown]:
    """What the person sees for one event, once the session has followed it (as the client does)."""
    event = make_event(event_type, **fields)
    return view.lines(event, view.session.heard(event))


def lines(view: View, event_type: str, **fields) -> list[str]:
    return [one.line for one in shown(view, event_type, **fields)]


def test_a_message_and_an_action_keep_who_said_what():
    view = joined_view()
    assert shown(view, "msg", id=1, room="lobby", ts=TS, **{"from": "bob"}, text="hi alice") == [
        Shown(LINE_MESSAGE, render_message("14:03", "bob", "hi alice"), "bob", "hi alice")]
    assert shown(view, "me", id=2, room="lobby", ts=TS, **{"from": "bob"}, text="waves") == [
        Shown(LINE_ACTION, render_action("14:03", "bob", "waves"), "bob", "waves")]


def test_a_private_message_shows_its_direction():
    view = joined_view()
    assert shown(view, "dm", id=3, ts=TS, **{"from": "bob"}, to="alice", text="psst") == [
        Shown(LINE_PRIVATE, render_private("14:03", "bob", "psst"), "bob", "psst")]
    assert lines(view, "dm", id=4, ts=TS, **{"from": "Alice"}, to="bob", text="psst") == [
        render_private("14:03", "Alice", "psst", to="bob")]


def test_the_welcome_and_entering_a_room_list_who_is_here():
    view = View(Session("alice"), localtime=time.gmtime, now=lambda: NOW)
    assert shown(view, "welcome", name="alice", room="lobby", names=["bob", "carol"], count=3) == [
        Shown(LINE_HANDSHAKE, render_welcome("alice", list_names(["bob", "carol", "x"], 2)))]
    assert lines(view, "welcome", name="alice", room="lobby", names=[], count=0) == [
        "*** Welcome, alice! Nobody else is here yet."]
    assert lines(view, "enter", room="dev", names=["dave"], count=1) == [
        render_notice("18:40", render_entered("dev", "dave"))]


@pytest.mark.parametrize("joined, left, reason", [
    (["bob"], [], ""),
    ([f"p{n}" for n in range(40)], [], ""),
    ([], ["bob"], "quit: lunch"),
    ([], ["bob"], ""),
    ([], [f"p{n}" for n in range(12)], ""),
])
def test_comings_and_goings_read_as_the_servers_notices(joined, left, reason):
    view = joined_view()
    names = joined or left
    kind = "join" if joined else "leave"
    got = lines(view, kind, id=5, room="lobby", ts=TS, names=names[:10], count=len(names),
                reason=reason or None)
    assert got == [render_notice("14:03", render_comings(joined, left, 10, reason))]


@pytest.mark.parametrize("kind, names, text", [
    ("reconnecting", ["alice"], "alice is reconnecting"),
    ("reconnecting", ["alice", "bob"], "alice, bob are reconnecting"),
    ("back", ["alice"], "alice is back"),
])
def test_who_dropped_off_and_who_came_back(kind, names, text):
    got = lines(joined_view("carol"), kind, id=5, room="lobby", ts=TS, names=names, count=3)
    assert got == [render_notice("14:03", text)]


def test_someone_leaving_for_another_room_is_told_where():
    assert lines(joined_view(), "leave", id=6, room="lobby", ts=TS, names=["bob"], count=1, to="dev") == [
        render_notice("14:03", render_moved("bob", "dev"))]


def test_renames_and_topics():
    view = joined_view()
    assert lines(view, "nick", id=7, room="lobby", ts=TS, old="bob", new="rob") == [
        render_notice("14:03", render_rename("bob", "rob"))]
    assert lines(view, "topic", id=8, room="lobby", ts=TS, **{"from": "bob"}, text="lunch at 1") == [
        render_notice("14:03", "bob set the topic: lunch at 1")]
    assert lines(view, "topic", room="lobby", text="lunch at 1") == [
        render_notice("18:40", "Topic of lobby: lunch at 1")]
    assert lines(view, "topic", room="lobby", text="") == [render_notice("18:40", "No topic is set in lobby.")]


def test_answers_to_who_and_rooms():
    view = joined_view()
    everyone = [f"p{n}" for n in range(30)]
    assert lines(view, "who", room="lobby", names=everyone, count=30, online=31) == [
        render_notice("18:40", render_who("lobby", everyone, 31, cap=20))]
    assert lines(view, "rooms", rooms=[{"name": "lobby", "count": 2, "topic": ""},
                                       {"name": "dev", "count": 1, "topic": "builds"}]) == [
        render_notice("18:40", "lobby (2)"), render_notice("18:40", "dev (1): builds")]
    assert lines(view, "rooms", rooms=[]) == [render_notice("18:40", "No rooms: nobody is here.")]


def test_notices_and_missed_lines():
    view = joined_view()
    assert lines(view, "notice", text="You are now an operator.") == [
        render_notice("18:40", "You are now an operator.")]
    assert lines(view, "missed", count=12) == [render_notice("18:40", render_missed(12))]


def test_history_is_marked_and_dated_when_not_from_today():
    view = joined_view()
    replayed = dict(replay=True, id=9, room="lobby", **{"from": "bob"})
    assert shown(view, "history", **replayed, ts=TS, kind="msg", text="hi") == [
        Shown(LINE_HISTORY, render_history("14:03", LINE_MESSAGE, "bob", "hi"), "bob", "hi")]
    assert lines(view, "history", **replayed, ts="2026-11-24T09:30:00.000Z", kind="me", text="waves") == [
        render_history("2026-11-24 09:30", LINE_ACTION, "bob", "waves")]
    assert lines(view, "history_end", room="lobby", replay=True, count=2) == [
        render_notice("18:40", LIVE_MARKER)]
    assert lines(view, "history_end", room="lobby", replay=True, count=0) == []
    assert lines(view, "history_end", room="lobby", replay=False, count=3) == []


def test_history_answers_with_nothing_in_them_say_so():
    view = joined_view()
    assert lines(view, "history_end", room="lobby", replay=False, count=0) == [
        render_notice("18:40", "No history in lobby yet.")]
    assert lines(view, "history_end", room="lobby", replay=False, count=0, query="lunch") == [
        render_notice("18:40", 'No messages in lobby contain "lunch".')]
    view.session.op_line("/search lunch at one")  # an empty answer need not say what was searched
    assert lines(view, "history_end", room="lobby", replay=False, count=0) == [
        render_notice("18:40", 'No messages in lobby contain "lunch at one".')]


def test_your_message_is_shown_when_acknowledged_not_when_sent():
    view = joined_view()
    view.session.op_line("hi bob")
    view.session.op_line("/me waves")
    view.session.op_line("//etc")
    view.session.op_line("/who")
    assert shown(view, "ack", label="c1", id=10) == [
        Shown(LINE_MESSAGE, render_message("18:40", "alice", "hi bob"), "alice", "hi bob")]
    assert lines(view, "ack", label="c2") == [render_action("18:40", "alice", "waves")]
    assert lines(view, "ack", label="c3", id=11) == [render_message("18:40", "alice", "/etc")]
    assert lines(view, "ack", label="c4") == []
    assert lines(view, "ack", label="c4") == []  # answered already, or never ours


def test_errors_and_byes_are_refusals_before_the_welcome_and_notices_after():
    view = View(Session("bob"), localtime=time.gmtime, now=lambda: NOW)
    taken = 'the name "bob" is taken'
    assert shown(view, "error", code=jsonl.NAME_TAKEN, message=taken) == [
        Shown(LINE_HANDSHAKE, render_refusal(taken))]
    assert lines(view, "bye", code=jsonl.BYE_WRONG_PASSWORD, message="wrong password") == [
        render_refusal("wrong password; goodbye")]
    view = joined_view()
    view.session.op_line("x" * 5000)
    assert lines(view, "error", code=jsonl.LINE_TOO_LONG, message="Line not sent: longer than 4096 bytes.",
                 label="c1") == [render_notice("18:40", "Line not sent: longer than 4096 bytes.")]
    assert len(view.session.labels) == 0
    assert lines(view, "bye", code=jsonl.BYE_QUIT, message="Goodbye.") == [render_notice("18:40", "Goodbye.")]


@pytest.mark.parametrize("kind", ["mode", "prompt", "a-type-added-later"])
def test_what_is_not_for_people_shows_nothing(kind):
    assert joined_view().lines(make_event(kind, mode="json")) == []


def test_an_event_missing_its_fields_is_one_line_not_a_crash():
    assert joined_view().lines(make_event("msg", text="hi")) == [
        Shown(LINE_NOTICE, "(an event the client cannot show: msg)")]


def test_nothing_in_an_event_reaches_the_terminal_raw():
    view = joined_view()
    got = shown(view, "msg", id=1, room="lobby", ts=TS, **{"from": "bob\x1b[31m"}, text="\x1b[2Jhi\x07")
    assert got == [Shown(LINE_MESSAGE, "[14:03] <bob> hi", "bob", "hi")]
    assert clean_event({"rooms": [{"topic": "\x9b31m"}]}) == {"rooms": [{"topic": "31m"}]}
