"""Every chat command and every stage of the handshake, with no socket: the chat is called and
each member's link records what it is sent (see conftest).  tests/server/test_commands.py drives the
same commands over real sockets."""

from __future__ import annotations

import re

import pytest

from groupchat.protocol import CHAT_COMMANDS, NAME_PROMPT, PASSWORD_PROMPT, parse_who, render_notice
from groupchat.server.registry import Stage

from conftest import fixed_clock, make_chat, named, newcomer

STAMP = fixed_clock().stamp()


def notice(text: str) -> str:
    return render_notice(STAMP, text)


def said(chat, member, line: str) -> list[str]:
    """What ``member`` is sent in answer to one line it types."""
    member.link.lines.clear()
    chat.receive(member, [line])
    return list(member.link.lines)


# -- the handshake's stages ------------------------------------------------------------------

def test_without_a_password_the_first_stage_is_the_name():
    chat = make_chat()
    alice = newcomer(chat)
    assert (alice.stage, alice.link.lines) == (Stage.NAME, [NAME_PROMPT])
    chat.receive(alice, ["<alice>"])
    assert alice.stage is Stage.NAME and alice.name is None
    chat.receive(alice, ["alice"])
    assert alice.stage is Stage.CHATTING and alice.name == "alice"


def test_the_right_password_leads_to_the_name_prompt():
    chat = make_chat(password="sesame")
    alice = newcomer(chat)
    assert (alice.stage, alice.link.lines) == (Stage.PASSWORD, [PASSWORD_PROMPT])
    assert said(chat, alice, "sesame") == [NAME_PROMPT]
    assert alice.stage is Stage.NAME
    chat.receive(alice, ["alice"])
    assert alice.stage is Stage.CHATTING


def test_a_wrong_password_is_answered_once_and_the_connection_ended():
    waits = []
    chat = make_chat(password="sesame", wrong_password_delay=2.0)
    chat.sleep = waits.append
    bob = newcomer(chat)
    assert said(chat, bob, "guess") == ["*** Sorry, wrong password; goodbye."]
    assert bob.link.ended and bob.leave_reason == "wrong password" and waits == [2.0]
    assert bob.name is None


def test_a_password_is_never_taken_for_a_name_or_a_message():
    chat = make_chat(password="sesame")
    alice = newcomer(chat)
    chat.receive(alice, ["sesame", "alice", "hello"])
    bob = newcomer(chat)
    chat.receive(bob, ["sesame", "bob"])
    assert alice.name == "alice" and bob.name == "bob"


# -- the commands -----------------------------------------------------------------------------

def test_help_lists_the_commands_of_the_table_and_hides_operators_ones_without_operators():
    chat = make_chat()
    alice = named(chat, "alice")
    lines = said(chat, alice, "/help")
    listed = {line.split()[2].lstrip("/") for line in lines}
    assert listed == {spec.name for spec in CHAT_COMMANDS if not spec.ops_only}
    assert said(chat, alice, "/help msg") == [notice("/msg NAME TEXT: a private message only NAME sees "
                                                     "(also /query)")]
    assert said(chat, alice, "/help query") == said(chat, alice, "/help msg")
    with_ops = make_chat(op_password="root")
    assert len(said(with_ops, named(with_ops, "bob"), "/help")) == len(CHAT_COMMANDS)


def test_nick_to_the_name_one_has_says_so_and_tells_no_one():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, "/nick alice") == [notice("You are alice already.")]
    assert bob.link.lines == []


def test_nick_renames_and_tells_the_room_and_the_renamed():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    alice.link.lines.clear()
    assert said(chat, bob, "/nick robert") == [notice("bob is now known as robert")]
    assert alice.link.lines == [notice("bob is now known as robert")]
    assert said(chat, bob, "/nick ALICE") == [notice('Sorry, the name "ALICE" is taken; "ALICE2" is free')]
    assert said(chat, bob, "/nick") == [notice("usage: /nick NEW")]


def test_who_names_the_room_and_counts_everyone_online():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    chat.receive(carol, ["/join dev"])
    (line,) = said(chat, alice, "/who")
    assert parse_who(line.split("*** ", 1)[1]) == ("lobby", ["alice", "bob"], 3)


def test_me_is_an_action_for_the_others():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, "/me waves") == []
    assert bob.link.lines[-1] == f"[{STAMP}] * alice waves"
    assert said(chat, alice, "/me") == [notice("usage: /me ACTION")]


def test_msg_reaches_only_its_target_and_shows_the_sender_what_was_sent():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    for member in (bob, carol):
        member.link.lines.clear()
    assert said(chat, alice, "/msg Bob psst there") == [f"[{STAMP}] (private to bob) <alice> psst there"]
    assert bob.link.lines == [f"[{STAMP}] (private) <alice> psst there"]
    assert carol.link.lines == []
    assert said(chat, alice, "/msg nobody hi") == [notice('no one called "nobody" is here')]
    assert said(chat, alice, "/msg bob") == [notice("usage: /msg NAME TEXT")]


def test_quit_says_goodbye_ends_the_connection_and_the_room_hears_the_reason():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, bob, "/quit off to lunch") == [notice("Goodbye.")]
    assert bob.link.ended
    alice.link.lines.clear()
    chat.leave(bob, "connection closed")  # what the server does once the connection ends
    assert alice.link.lines == [notice("bob left (quit: off to lunch)")]


def test_join_moves_rooms_and_both_rooms_hear_it():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    chat.receive(carol, ["/join dev"])
    alice.link.lines.clear()
    carol.link.lines.clear()
    assert said(chat, bob, "/join #dev") == [notice("You are now in dev. Here now: carol.")]
    assert alice.link.lines == [notice("bob went to dev")]
    assert carol.link.lines == [notice("bob joined")]
    assert said(chat, bob, "/join DEV") == [notice("you are already in dev")]
    assert said(chat, bob, "/join") == [notice("usage: /join ROOM")]


def test_rooms_lists_each_room_largest_first_with_its_topic():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    chat.receive(carol, ["/join dev", "/topic builds"])
    assert said(chat, alice, "/rooms") == [notice("lobby (2)"), notice("dev (1): builds")]


def test_topic_is_shown_and_set_and_only_operators_set_it_when_there_are_operators():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, "/topic") == [notice("No topic is set in lobby.")]
    assert said(chat, alice, "/topic release day") == [notice("alice set the topic: release day")]
    assert bob.link.lines[-1] == notice("alice set the topic: release day")
    assert said(chat, bob, "/topic") == [notice("Topic of lobby: release day")]
    ops = make_chat(op_password="root")
    carol = named(ops, "carol")
    assert said(ops, carol, "/topic mine") == [notice("setting the topic is for operators only")]


def test_history_and_search_play_back_what_the_room_said(history):
    chat = make_chat()
    chat.history = history
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, "/history") == [notice("No history in lobby yet.")]
    chat.receive(alice, ["first", "second build"])
    assert history.flush()
    title, line, end = said(chat, bob, "/history 1")  # stamped with the chat's time it was said (1970 here)
    assert (title, end) == (notice("The last 1 messages in lobby:"), notice("End of the lines asked for."))
    assert re.fullmatch(r"\[(\d{4}-\d\d-\d\d )?\d\d:\d\d\] \(history\) <alice> second build", line)
    assert said(chat, bob, "/search BUILD") == [
        notice('1 messages in lobby containing "BUILD", newest first:'), line, end]
    assert said(chat, bob, "/history 5") == [notice("The last 2 messages in lobby:"),
                                             line.replace("second build", "first"), line, end]
    assert said(chat, bob, "/history 9999")[0] == notice("The last 2 messages in lobby (at most 500 at a time):")
    assert said(chat, bob, "/search nothing") == [notice('No messages in lobby contain "nothing".')]
    assert said(chat, bob, "/history x") == [notice("usage: /history [N|after ID]")]
    assert said(chat, bob, "/history \u00b2") == [notice("usage: /history [N|after ID]")]  # isdigit(), not int()
    assert said(chat, bob, "/search") == [notice("usage: /search TEXT")]


def test_op_makes_an_operator_only_with_the_operators_password():
    plain = make_chat()
    assert said(plain, named(plain, "alice"), "/op x") == [notice("there are no operators on this server")]
    chat = make_chat(op_password="root")
    alice = named(chat, "alice")
    assert said(chat, alice, "/op guess") == [notice("wrong operator password")]
    assert not alice.is_op
    assert said(chat, alice, "/op root") == [notice("You are now an operator.")]
    assert alice.is_op


def test_kick_is_for_operators_and_ends_the_target_with_the_reason():
    chat = make_chat(op_password="root")
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, bob, "/kick alice") == [notice("/kick is for operators only")]
    chat.receive(alice, ["/op root"])
    assert said(chat, alice, "/kick bob spamming") == []
    assert bob.link.lines[-1] == notice("You were kicked by alice: spamming.")
    assert bob.link.ended and bob.leave_reason == "kicked by alice: spamming"
    assert said(chat, alice, "/kick nobody") == [notice('no one called "nobody" is here')]


def opped_chat():
    """A chat with alice an operator, and bob and carol sharing 10.0.0.2 (one NAT)."""
    chat = make_chat(op_password="root")
    alice = named(chat, "alice")
    chat.receive(alice, ["/op root"])
    bob, carol = (newcomer(chat, address=f"10.0.0.2:{port}") for port in (5, 6))
    chat.receive(bob, ["bob"])
    chat.receive(carol, ["carol"])
    return chat, alice, bob, carol


def test_ban_bans_a_name_and_kicks_its_holder_only_and_unban_lifts_it():
    chat, alice, bob, carol = opped_chat()
    assert said(chat, alice, "/bans") == [notice("No bans.")]
    assert said(chat, alice, "/ban bob 1") == [notice('Banned the name "bob" for 1 minute; kicked bob.')]
    assert bob.link.ended and bob.leave_reason == "kicked by alice: banned"
    assert not carol.link.ended  # the same address, another person
    chat.leave(bob)
    assert said(chat, alice, "/bans") == [notice('the name "bob" for 1 more minute')]
    again = newcomer(chat, address="10.0.0.9:1")
    assert said(chat, again, "BOB") == ['*** Sorry, the name "BOB" is banned.', NAME_PROMPT]
    assert said(chat, carol, "/nick Bob") == [notice('Sorry, the name "Bob" is banned')]
    assert said(chat, alice, "/unban bob") == [notice('Lifted the ban on the name "bob".')]
    assert said(chat, alice, "/unban bob") == [notice('the name "bob" is not banned')]
    chat.receive(again, ["bob"])
    assert again.stage is Stage.CHATTING


def test_a_name_just_kicked_can_be_banned():
    chat, alice, bob, _ = opped_chat()
    chat.receive(alice, ["/kick bob"])
    chat.leave(bob)  # as the server does once the connection is closed
    assert said(chat, alice, "/ban bob") == [notice('Banned the name "bob" until lifted.')]


def test_ban_address_bans_a_members_address_and_says_who_else_it_kicked():
    chat, alice, bob, carol = opped_chat()
    assert said(chat, alice, "/ban --address bob 5") == [notice(
        "Banned 10.0.0.2/32 (bob's address) for 5 minutes; kicked bob; also kicked carol (same address).")]
    assert bob.link.ended and carol.link.ended and not alice.link.ended
    assert said(chat, alice, "/bans") == [notice("10.0.0.2/32 for 5 more minutes")]
    assert said(chat, alice, "/ban --address 10.9.0.0/16") == [notice("Banned 10.9.0.0/16 until lifted.")]
    assert said(chat, alice, "/unban --address 10.0.0.2") == [notice("Lifted the ban on 10.0.0.2.")]
    assert said(chat, alice, "/unban --address 10.0.0.2") == [notice("10.0.0.2 is not banned")]


def test_an_address_banned_after_connecting_is_refused_at_naming():
    chat, alice, _, _ = opped_chat()
    early = newcomer(chat, address="10.0.0.7:1")  # connected, not yet named
    chat.receive(alice, ["/ban --address 10.0.0.0/24"])
    assert said(chat, early, "dave") == ["*** Sorry, this address is banned; goodbye."]
    assert early.link.ended and early.stage is not Stage.CHATTING


@pytest.mark.parametrize("line, answer", [
    ("/ban", "usage: /ban NAME|--address ADDRESS [MINUTES]"),
    ("/ban --address", "usage: /ban NAME|--address ADDRESS [MINUTES]"),
    ("/ban bob 5 more", "usage: /ban NAME|--address ADDRESS [MINUTES]"),
    ("/unban bob 5", "usage: /unban NAME|--address ADDRESS"),
    ("/ban bob soon", '"soon" is not a number of minutes'),
    ("/ban bob \u00b2", '"\u00b2" is not a number of minutes'),
    ("/ban <bob>", 'a name cannot start with "<"; /ban --address bans an address'),
    ("/ban --address 300.1.1.1", '"300.1.1.1" is neither an address nor a connected name'),
    ("/unban --address bob", '"bob" is not an address or CIDR block'),
])
def test_ban_mistakes_get_one_line(line, answer):
    chat, alice, bob, _ = opped_chat()
    assert said(chat, alice, line) == [notice(answer)]
    assert not bob.link.ended


def test_a_bug_in_a_command_costs_one_line_and_the_member_stays(monkeypatch):
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    monkeypatch.setattr(chat, "describe_rooms", lambda: 1 / 0)
    assert said(chat, alice, "/rooms") == [notice("/rooms failed; the server's log says why")]
    chat.receive(alice, ["still here"])
    assert bob.link.lines[-1] == f"[{STAMP}] <alice> still here"


def test_every_command_of_the_table_has_a_test_here():
    tested = {name for name in globals() if name.startswith("test_")}
    for spec in CHAT_COMMANDS:
        assert any(spec.name in name.split("_") for name in tested), f"/{spec.name} has no test"


def test_mode_switches_a_connection_to_json_and_back_and_says_its_usage():
    chat = make_chat()
    alice = named(chat, "alice")
    assert said(chat, alice, "/mode json") == ['{"v":1,"type":"mode","mode":"json"}']
    assert said(chat, alice, "/mode text") == [notice("Mode: text.")]
    assert said(chat, alice, "/mode") == [notice("usage: /mode json|text")]


def test_resume_is_only_for_the_first_line_of_a_new_connection():
    chat = make_chat()
    alice = named(chat, "alice")
    assert said(chat, alice, "/resume sometoken") == [
        notice("you are connected already: /resume is the first line of a new connection")]


@pytest.mark.parametrize("alias, command", [("/names", "/who"), ("/list", "/rooms"), ("/query bob hi", "/msg bob hi")])
def test_irc_names_for_commands_do_the_same(alias, command):
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, alias) == said(chat, alice, command)


def test_exit_is_quit_and_part_and_leave_go_back_to_the_lobby():
    chat = make_chat()
    alice, bob = named(chat, "alice"), named(chat, "bob")
    assert said(chat, alice, "/part") == [notice("you are in the lobby already; /quit leaves the chat")]
    chat.receive(alice, ["/join dev"])
    assert said(chat, alice, "/leave")[0] == notice("You are now in lobby. Here now: bob.")
    chat.receive(alice, ["/join dev"])
    assert said(chat, alice, "/part")[0] == notice("You are now in lobby. Here now: bob.")
    assert said(chat, alice, "/exit") == [notice("Goodbye.")] and alice.link.ended


def test_away_shows_in_who_and_whois_and_to_whoever_writes_and_r_answers_the_last_private_message():
    chat = make_chat(op_password="root")
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    assert said(chat, alice, "/away lunch") == [notice("You are away: lunch")]
    assert said(chat, bob, "/who")[0].endswith("In lobby (3): alice (away), bob, carol. 3 online in all.")
    assert said(chat, bob, "/msg alice back soon?")[-1] == notice("alice is away: lunch")
    (whois,) = said(chat, carol, "/whois alice")
    assert re.fullmatch(r"\[00:00\] \*\*\* alice is in lobby, here since \d\d:\d\d, away: lunch\.", whois)
    chat.receive(carol, ["/op root"])
    assert said(chat, carol, "/whois alice")[0].endswith(", away: lunch, from 10.0.0.1:1.")
    assert said(chat, alice, "/r yes")[0].endswith("(private to bob) <alice> yes")
    assert bob.link.lines[-1].endswith("(private) <alice> yes")
    assert said(chat, alice, "/away") == [notice("You are back.")]
    assert "(away)" not in said(chat, bob, "/who")[0]
    assert said(chat, carol, "/r hi") == [notice("no private message to answer yet")]


def test_ignore_hides_a_persons_room_and_private_lines_from_one_member_only_until_unignore():
    chat = make_chat()
    alice, bob, carol = named(chat, "alice"), named(chat, "bob"), named(chat, "carol")
    assert said(chat, alice, "/ignore BOB") == [
        notice("You will see nothing more from BOB, in rooms or in private (/unignore BOB undoes it).")]
    assert said(chat, alice, "/ignore") == [notice("You ignore bob.")]
    assert said(chat, alice, "/ignore alice") == [notice("you cannot ignore yourself")]
    alice.link.lines.clear()
    chat.receive(bob, ["can you hear me", "/msg alice psst", "/me waves"])
    chat.receive(carol, ["carol here"])
    assert [line.split("] ", 1)[1] for line in alice.link.lines] == ["<carol> carol here"]
    assert carol.link.lines[-2].endswith("<bob> can you hear me")  # only alice's view changed
    assert said(chat, alice, "/unignore bob") == [notice("You see bob's lines again.")]
    chat.receive(bob, ["now?"])
    assert alice.link.lines[-1].endswith("<bob> now?")
    assert said(chat, alice, "/unignore bob") == [notice("you do not ignore bob")]
