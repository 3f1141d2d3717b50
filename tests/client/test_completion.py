"""Tab completion: the names learnt from the server's events, and what the completer offers."""

from __future__ import annotations

from typing import Optional

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from groupchat.client.completion import CHAT_COMMAND_NAMES, ChatCompleter, KnownNames, KnownRooms
from groupchat.protocol import CHAT_COMMANDS
from groupchat.server.chat_commands import ChatCommands

WELCOME = {"type": "welcome", "name": "alice", "room": "lobby", "names": ["bob", "carol"], "count": 2}


def known(*events: dict) -> KnownNames:
    names = KnownNames()
    for event in events:
        names.heard(event)
    return names


def completions(names: KnownNames, typed: str, rooms: Optional[KnownRooms] = None) -> list[tuple[str, int]]:
    """What Tab offers after ``typed`` (cursor at its end): each completion and where it starts."""
    found = ChatCompleter(names, rooms).get_completions(Document(typed), CompleteEvent(completion_requested=True))
    return [(completion.text, completion.start_position) for completion in found]


def test_the_commands_are_the_servers_and_their_irc_names_but_mode():
    served = {attr[len("cmd_"):] for attr in dir(ChatCommands) if attr.startswith("cmd_")}
    aliases = {alias for spec in CHAT_COMMANDS for alias in spec.aliases}
    assert {"names", "list", "leave", "exit", "query"} <= aliases
    assert set(CHAT_COMMAND_NAMES) == (served | aliases) - {"mode"}  # the client keeps the connection in JSON
    assert len(CHAT_COMMAND_NAMES) == len(served | aliases) - 1


def test_names_come_from_the_welcome_and_the_lists_of_who_is_here():
    assert known(WELCOME).starting("") == ["bob", "carol"]
    assert known({"type": "enter", "room": "dev", "names": ["dave", "a.b"], "count": 2}).starting("") == [
        "a.b", "dave"]
    assert known({"type": "who", "room": "lobby", "names": ["x", "y", "z"], "count": 3,
                  "online": 9}).starting("") == ["x", "y", "z"]
    assert known({**WELCOME, "names": [], "count": 0}).starting("") == []


def test_names_come_from_whoever_speaks_acts_whispers_or_spoke_before():
    names = known({"type": "msg", "from": "bob", "text": "hi"}, {"type": "me", "from": "carol", "text": "waves"},
                  {"type": "dm", "from": "dave", "to": "alice", "text": "psst"},
                  {"type": "history", "from": "erin", "kind": "msg", "text": "old"})
    assert names.starting("") == ["alice", "bob", "carol", "dave", "erin"]


def test_arrivals_and_renames_are_learnt_and_leavers_forgotten():
    names = known({"type": "join", "names": ["bob", "carol", "dave"], "count": 3},
                  {"type": "leave", "names": ["dave"], "count": 1, "to": "dev"},
                  {"type": "leave", "names": ["carol"], "count": 1, "reason": "quit: bye"},
                  {"type": "nick", "old": "bob", "new": "rob"},
                  {"type": "join", "names": ["erin", "frank"], "count": 40},
                  {"type": "leave", "names": ["erin"], "count": 1})
    assert names.starting("") == ["dave", "frank", "rob"]  # dave moved rooms, and is still there to /msg


def test_what_a_person_says_teaches_only_their_name():
    assert known({"type": "msg", "from": "mallory", "text": "eve joined"}).starting("") == ["mallory"]


def test_an_event_missing_its_fields_teaches_nothing():
    assert known({"type": "join"}, {"type": "nick"}, {"type": "msg"}, {"type": "who", "names": [3]}).starting(
        "") == []


def test_names_are_unique_ignoring_case_and_kept_as_last_seen():
    names = known({"type": "msg", "from": "bob", "text": "hi"}, {"type": "msg", "from": "BOB", "text": "hi"})
    assert names.starting("b") == ["BOB"]
    assert names.starting("Bo") == ["BOB"]


def test_a_slash_word_at_the_start_completes_to_a_command():
    assert completions(KnownNames(), "/to") == [("/topic", -3)]
    assert completions(KnownNames(), "/TO") == [("/topic", -3)]
    assert completions(KnownNames(), "/ba") == [("/ban", -3), ("/bans", -3)]
    assert len(completions(KnownNames(), "/")) == len(CHAT_COMMAND_NAMES)


@pytest.mark.parametrize("typed", ["hi /wh", " /wh", "//wh", "/nosuch"])
def test_a_slash_word_anywhere_else_completes_to_nothing(typed):
    assert completions(known({"type": "msg", "from": "whoever", "text": "hi"}), typed) == []


@pytest.mark.parametrize("typed", ["bo", "Bo", "/msg bo", "/kick bo", "hi there bo"])
def test_any_other_word_completes_to_a_known_name(typed):
    assert completions(known(WELCOME), typed) == [("bob", -2)]


def test_after_a_space_every_name_is_offered():
    assert completions(known(WELCOME), "/msg ") == [("bob", 0), ("carol", 0)]


def test_the_word_after_help_completes_to_a_command():
    assert completions(known(WELCOME), "/help to") == [("topic", -2)]
    assert completions(known(WELCOME), "/HELP TO") == [("topic", -2)]
    assert len(completions(known(WELCOME), "/help ")) == len(CHAT_COMMAND_NAMES)
    assert completions(known(WELCOME), "/help topic bo") == [("bob", -2)]  # past it: names again


def test_the_word_after_join_completes_to_a_room_the_client_has_heard_of():
    rooms = KnownRooms()
    for event in (WELCOME, {"type": "leave", "room": "lobby", "names": ["bob"], "count": 1, "to": "dev"},
                  {"type": "rooms", "rooms": [{"name": "design", "count": 1}, {"name": "Ops", "count": 3}]}):
        rooms.heard(event)
    assert completions(known(WELCOME), "/join de", rooms) == [("design", -2), ("dev", -2)]
    assert completions(known(WELCOME), "/join o", rooms) == [("Ops", -1)]
    assert completions(known(WELCOME), "/join bo", rooms) == []  # rooms, not names
