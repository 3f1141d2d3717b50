"""Tab completion: the names learnt from the server's lines, and what the completer offers."""

from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from groupchat.client.completion import CHAT_COMMAND_NAMES, ChatCompleter, KnownNames
from groupchat.protocol import render_notice
from groupchat.server.chat_commands import ChatCommands
from groupchat.server.notices import MAX_NOTICE_NAMES, Comings

from conftest import make_chat, named, newcomer


def known(*lines: str) -> KnownNames:
    names = KnownNames()
    for line in lines:
        names.heard(line)
    return names


def completions(names: KnownNames, typed: str) -> list[tuple[str, int]]:
    """What Tab offers after ``typed`` (cursor at its end): each completion and where it starts."""
    found = ChatCompleter(names).get_completions(Document(typed), CompleteEvent(completion_requested=True))
    return [(completion.text, completion.start_position) for completion in found]


def test_the_commands_are_the_servers():
    served = {attr[len("cmd_"):] for attr in dir(ChatCommands) if attr.startswith("cmd_")}
    assert set(CHAT_COMMAND_NAMES) == served
    assert len(CHAT_COMMAND_NAMES) == len(served)


def test_names_are_learnt_from_what_the_real_chat_says():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    alice.link.lines.clear()
    dave = named(chat, "dave")
    erin = named(chat, "erin")
    chat.receive(bob, ["/nick rob"])
    chat.receive(carol, ["/join dev"])
    chat.leave(dave, "quit: bye")
    chat.receive(erin, ["hi all"])
    chat.receive(alice, ["/who"])
    assert known(*alice.link.lines).starting("") == ["alice", "carol", "erin", "rob"]  # /who names you
    frank = newcomer(chat)
    chat.receive(frank, ["frank"])
    assert known(*frank.link.lines).starting("") == ["alice", "erin", "rob"]


def test_names_come_from_the_welcome_and_the_lists_of_who_is_here():
    assert known("*** Welcome, alice! Here now: bob, carol.").starting("") == ["bob", "carol"]
    assert known("[14:03] *** You are now in dev. Here now: dave, a.b.").starting("") == ["a.b", "dave"]
    assert known("[14:03] *** In lobby (3): x, y, z. 9 online in all.").starting("") == ["x", "y", "z"]
    crowd = known("*** Welcome, alice! Here now: bob, carol and 1,000 others.")
    assert crowd.starting("") == ["bob", "carol"]
    assert known("*** Welcome, alice! Nobody else is here yet.").starting("") == []


def test_names_come_from_whoever_speaks_acts_or_whispers():
    names = known("[14:03] <bob> hi", "[14:03] * carol waves", "[14:03] (private) <dave> psst")
    assert names.starting("") == ["bob", "carol", "dave"]


def test_arrivals_and_renames_are_learnt_and_leavers_forgotten():
    names = known("[14:03] *** bob joined", "[14:03] *** carol joined", "[14:03] *** dave went to dev",
                  "[14:04] *** carol left (quit: bye)", "[14:04] *** bob is now known as rob",
                  "[14:05] *** erin joined", "[14:05] *** erin left")
    assert names.starting("") == ["dave", "rob"]  # dave moved rooms, and is still there to /msg


def test_a_rooms_batch_of_comings_and_goings_is_learnt_whole():
    names = known("[14:03] *** bob, carol, dave joined",
                  "[14:04] *** erin, frank and 3 others joined; bob left",
                  "[14:05] *** carol left (kicked by op: spam; really)")
    assert names.starting("") == ["dave", "erin", "frank"]


def test_the_servers_own_batches_are_understood():
    crowd = [f"p{n}" for n in range(3 * MAX_NOTICE_NAMES)]
    names = known(render_notice("14:03", Comings(["bob", "carol"], []).text()),
                  render_notice("14:04", Comings(crowd, ["bob"]).text()))
    assert names.starting("") == sorted(["carol", *crowd[:MAX_NOTICE_NAMES]])


def test_a_message_that_looks_like_a_notice_only_teaches_its_sender():
    assert known("[14:03] <mallory> eve joined").starting("") == ["mallory"]


def test_names_are_unique_ignoring_case_and_kept_as_last_seen():
    names = known("[14:03] <bob> hi", "[14:03] <BOB> hi again")
    assert names.starting("b") == ["BOB"]
    assert names.starting("Bo") == ["BOB"]


def test_a_slash_word_at_the_start_completes_to_a_command():
    assert completions(KnownNames(), "/wh") == [("/who", -3)]
    assert completions(KnownNames(), "/WH") == [("/who", -3)]
    assert completions(KnownNames(), "/ba") == [("/ban", -3), ("/bans", -3)]
    assert len(completions(KnownNames(), "/")) == len(CHAT_COMMAND_NAMES)


@pytest.mark.parametrize("typed", ["hi /wh", " /wh", "//wh", "/nosuch"])
def test_a_slash_word_anywhere_else_completes_to_nothing(typed):
    assert completions(known("[14:03] <whoever> hi"), typed) == []


@pytest.mark.parametrize("typed", ["bo", "Bo", "/msg bo", "/kick bo", "hi there bo"])
def test_any_other_word_completes_to_a_known_name(typed):
    names = known("*** Welcome, alice! Here now: bob, carol.")
    assert completions(names, typed) == [("bob", -2)]


def test_after_a_space_every_name_is_offered():
    names = known("*** Welcome, alice! Here now: bob, carol.")
    assert completions(names, "/msg ") == [("bob", 0), ("carol", 0)]
