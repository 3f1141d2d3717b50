"""Every chat command, with good and bad arguments, over real sockets to a real server."""

from __future__ import annotations

import re
import threading

import pytest

from conftest import UNLIMITED, Peer, wait_for

STAMP = r"\[\d\d:\d\d\] "
NOTICE = STAMP + r"\*\*\* "


@pytest.fixture
def trio(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.expect("carol joined")
    bob.expect("carol joined")
    return alice, bob, carol


def test_help_lists_every_command_and_explains_one(connect):
    alice = connect("alice")
    alice.say("/help")
    listed = set()
    for _ in range(20):
        listed.add(re.match(f"{NOTICE}/(\\w+)", alice.next_line()).group(1))
    assert listed == {"help", "nick", "who", "me", "msg", "quit", "join", "rooms", "topic", "op", "mode", "resume",
                      "history", "search", "whois", "r", "away", "ignore", "unignore", "part"}
    alice.say("/help msg")
    alice.expect(f"^{NOTICE}/msg NAME TEXT: a private message only NAME sees \\(also /query\\)$")
    alice.say("/help nosuch")
    alice.expect(f'^{NOTICE}unknown command "/nosuch"; /help lists them$')


@pytest.mark.parametrize("line, answer", [
    ("/frobnicate", 'unknown command "/frobnicate"; /help lists them'),
    ("/nick", "usage: /nick NEW"),
    ("/nick <x>", 'Sorry, a name cannot start with "<"'),
    ("/me", "usage: /me ACTION"),
    ("/msg", "usage: /msg NAME TEXT"),
    ("/msg bob", "usage: /msg NAME TEXT"),
    ("/msg nobody hi", 'no one called "nobody" is here'),
    ("/join", "usage: /join ROOM"),
    ("/join lobby", "you are already in lobby"),
    ("/join #", "a room name cannot be empty"),
    ("/op secret", "there are no operators on this server"),
    ("/kick bob", "/kick is for operators only"),
    ("/ban bob", "/ban is for operators only"),
])
def test_mistakes_get_one_line_and_the_connection_stays(trio, line, answer):
    alice, bob, _ = trio
    alice.say(line)
    assert re.fullmatch(NOTICE + re.escape(answer), alice.next_line())
    alice.say("still here")
    bob.expect("<alice> still here")


def test_double_slash_sends_a_literal_slash(trio):
    alice, bob, carol = trio
    alice.say("//help is a command")
    bob.expect(f"^{STAMP}<alice> /help is a command$")


def test_nick_renames_and_the_room_is_told(trio, connect):
    alice, bob, carol = trio
    alice.say("/nick alicia")
    for peer in (alice, bob, carol):
        peer.expect(f"^{NOTICE}alice is now known as alicia$")
    alice.say("hi")
    bob.expect(f"^{STAMP}<alicia> hi$")
    bob.say("/nick ALICIA")
    bob.expect(f'^{NOTICE}Sorry, the name "ALICIA" is taken; "ALICIA2" is free$')
    connect("alice")  # the old name is free again


def test_nick_race_exactly_one_wins(start_server, connect):
    server = start_server(**UNLIMITED)
    peers = [connect(f"p{i}", server) for i in range(8)]
    barrier = threading.Barrier(len(peers))

    def rename(peer: Peer) -> None:
        barrier.wait()
        peer.say("/nick winner")

    threads = [threading.Thread(target=rename, args=(p,)) for p in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = [p.expect(f"({p.name} is now known as winner|taken)").group(1) for p in peers]
    assert sum(o.endswith("is now known as winner") for o in outcomes) == 1
    assert sorted(m.name for m in server.registry.named()).count("winner") == 1


def test_who_lists_the_room_and_counts_everyone(trio, connect):
    alice, bob, carol = trio
    carol.say("/join dev")
    carol.expect("You are now in dev")
    alice.say("/who")
    alice.expect(f"^{NOTICE}In lobby \\(2\\): alice, bob. 3 online in all.$")


def test_me_is_an_action_line(trio):
    alice, bob, carol = trio
    alice.say("/me waves")
    bob.expect(f"^{STAMP}\\* alice waves$")
    carol.expect(f"^{STAMP}\\* alice waves$")


def test_msg_reaches_only_its_target_marked_private_on_both_sides(trio):
    alice, bob, carol = trio
    alice.say("/msg BOB psst, a secret")
    bob.expect(f"^{STAMP}\\(private\\) <alice> psst, a secret$")
    alice.expect(f"^{STAMP}\\(private to bob\\) <alice> psst, a secret$")
    alice.say("public")
    assert carol.next_line().endswith("<alice> public")  # carol never saw the secret


def test_quit_with_a_reason(trio, server):
    alice, bob, carol = trio
    bob.say("/quit off to lunch")
    assert bob.expect_eof()[-1].endswith("*** Goodbye.")
    alice.expect(f"^{NOTICE}bob left \\(quit: off to lunch\\)$")
    wait_for(lambda: len(server.registry) == 2, what="bob to be gone")


def test_rooms_isolate_traffic_and_notices(trio):
    """Each peer's lines are read strictly in order, so anything leaking across rooms shows."""
    alice, bob, carol = trio

    def next_notice(peer: Peer) -> str:
        return re.fullmatch(f"{NOTICE}(.*)", peer.next_line()).group(1)

    bob.say("/join #dev")
    assert next_notice(bob) == "You are now in dev. Nobody else is here yet."
    assert next_notice(alice) == next_notice(carol) == "bob went to dev"
    carol.say("/join dev")
    assert next_notice(carol) == "You are now in dev. Here now: bob."
    assert next_notice(bob) == "carol joined"
    assert next_notice(alice) == "carol went to dev"
    bob.say("dev talk")
    assert carol.next_line().endswith("<bob> dev talk")
    alice.say("lobby talk")  # alice is alone in the lobby: nobody gets this
    carol.say("/rooms")
    assert [next_notice(carol), next_notice(carol)] == ["dev (2)", "lobby (1)"]
    bob.say("/join lobby")
    assert next_notice(bob) == "You are now in lobby. Here now: alice."
    assert next_notice(alice) == "bob joined"
    assert next_notice(carol) == "bob went to lobby"
    bob.say("back")
    assert alice.next_line().endswith("<bob> back")


def test_topic_shown_set_and_shown_on_joining(trio):
    alice, bob, carol = trio
    alice.say("/topic")
    alice.expect(f"^{NOTICE}No topic is set in lobby.$")
    alice.say("/topic release on friday")
    for peer in (alice, bob, carol):
        peer.expect(f"^{NOTICE}alice set the topic: release on friday$")
    bob.say("/join dev")
    bob.expect("You are now in dev")
    bob.say("/join lobby")
    bob.expect("You are now in lobby")
    bob.expect(f"^{NOTICE}Topic of lobby: release on friday$")


@pytest.fixture
def opped(start_server, connect):
    server = start_server(op_password="hunter2")
    alice, bob = connect("alice", server), connect("bob", server)
    alice.expect("bob joined")
    alice.say("/op wrong")
    alice.expect(f"^{NOTICE}wrong operator password$")
    alice.say("/op hunter2")
    alice.expect(f"^{NOTICE}You are now an operator.$")
    return server, alice, bob


def test_operators_kick(opped):
    server, alice, bob = opped
    bob.say("/kick alice")
    bob.expect(f"^{NOTICE}/kick is for operators only$")
    bob.say("/topic mine")
    bob.expect(f"^{NOTICE}setting the topic is for operators only$")
    alice.say("/kick")
    alice.expect(f"^{NOTICE}usage: /kick NAME \\[REASON\\]$")
    alice.say("/kick bob spamming")
    assert bob.expect_eof()[-1].endswith("*** You were kicked by alice: spamming.")
    alice.expect(f"^{NOTICE}bob left \\(kicked by alice: spamming\\)$")


def test_operators_ban_and_unban(opped, connect):
    server, alice, bob = opped
    alice.say("/ban bob soon")
    alice.expect(f'^{NOTICE}"soon" is not a number of minutes$')
    alice.say("/ban --address 300.1.1.1")
    alice.expect(f'^{NOTICE}"300.1.1.1" is neither an address nor a connected name$')
    alice.say("/ban --address 10.9.0.0/16 5")
    alice.expect(f"^{NOTICE}Banned 10.9.0.0/16 for 5 minutes.$")
    alice.say("/bans")
    alice.expect(f"^{NOTICE}10.9.0.0/16 for 5 more minutes$")
    alice.say("/unban --address 10.9.0.0/16")
    alice.expect(f"^{NOTICE}Lifted the ban on 10.9.0.0/16.$")
    alice.say("/unban --address 10.9.0.0/16")
    alice.expect(f"^{NOTICE}10.9.0.0/16 is not banned$")
    alice.say("/ban bob")  # the name only: alice, on the same address, stays
    assert bob.expect_eof()[-1].endswith("You were kicked by alice: banned.")
    alice.expect(f'^{NOTICE}Banned the name "bob" until lifted; kicked bob.$')
    refused = connect(None, server)
    refused.expect("What is your name")
    refused.say("bob")
    refused.expect(r'^\*\*\* Sorry, the name "bob" is banned.$')
    alice.say("/ban --address alice")  # 127.0.0.1 itself, alice included
    assert alice.expect_eof()[-1].endswith("You were kicked by alice: banned.")
    assert Peer(server.server_address).expect_eof() == ["*** Sorry, this address is banned."]
    server.chat.moderation.bans.remove("127.0.0.1")
    connect("dave", server)
