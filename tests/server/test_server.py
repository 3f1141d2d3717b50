"""The server over real sockets on loopback, driven by raw clients the way nc would."""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import time

import pytest

from groupchat.errors import ServerStartError
from groupchat.protocol import NAME_PROMPT
from groupchat.server.settings import ServerSettings
from groupchat.server.tcp import ChatServer

from conftest import UNLIMITED, Peer, serve_in_thread, wait_for

STAMP = r"\[\d\d:\d\d\] "


def test_welcome_says_who_is_here_and_others_see_the_join(connect):
    alice = connect("alice")
    bob = connect()
    assert bob.join("bob") == "*** Welcome, bob! Here now: alice."
    alice.expect(f"^{STAMP}\\*\\*\\* bob joined$")


def test_message_reaches_everyone_else_stamped_with_sender(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.expect("carol joined")
    bob.expect("carol joined")
    alice.say("hello all")
    assert re.fullmatch(f"{STAMP}<alice> hello all", bob.next_line())
    assert re.fullmatch(f"{STAMP}<alice> hello all", carol.next_line())
    bob.say("hi alice")
    alice.expect("<bob> hi alice")  # and alice's own line never came back to her first:
    carol.expect("<bob> hi alice")


def test_thousands_of_lines_from_concurrent_senders_arrive_complete_and_in_order(connect):
    senders = [connect(f"s{i}") for i in range(3)]
    receivers = [connect(f"r{i}") for i in range(3)]
    count = 3000
    for peer in senders + receivers[:-1]:  # drain the join notices up to the last one
        peer.expect("r2 joined")

    def send_all(peer: Peer) -> None:
        peer.send(b"".join(f"{peer.name} {n}\n".encode() for n in range(count)))

    threads = [threading.Thread(target=send_all, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for peer in receivers + senders:
        expected = {s.name: 0 for s in senders if s is not peer}
        while any(n < count for n in expected.values()):
            sender, n = re.fullmatch(f"{STAMP}<(\\w+)> \\w+ (\\d+)", peer.next_line()).groups()
            assert sender in expected, f"{peer.name} got a line from {sender}"
            assert int(n) == expected[sender], f"{peer.name}: {sender}'s lines out of order or lost"
            expected[sender] += 1
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("name, reason", [
    ("ALICE", 'the name "ALICE" is taken; "ALICE2" is free'),
    ("", "a name cannot be empty"),
    ("two words", "a name cannot contain spaces"),
    ("*star", 'a name cannot start with "*"'),
    ("<bob>", 'a name cannot start with "<"'),
    ("Server", '"Server" is reserved'),
    ("x" * 33, "a name can have at most 32 characters"),
])
def test_refused_name_gets_a_reason_and_the_question_again(connect, name, reason):
    connect("alice")
    peer = connect()
    assert peer.next_line() == NAME_PROMPT
    peer.say(name)
    assert peer.next_line() == f"*** Sorry, {reason}."
    assert peer.next_line() == NAME_PROMPT
    peer.say("newcomer")
    assert peer.next_line().startswith("*** Welcome, newcomer!")


def test_a_name_is_free_again_once_its_holder_left(server, connect):
    alice = connect("alice")
    alice.close()
    wait_for(lambda: len(server.registry) == 0, what="alice to be unregistered")
    connect("alice")


def test_disconnect_is_announced_and_leaves_nothing_behind(server, connect):
    alice = connect("alice")
    threads_before = threading.active_count()
    bob = connect("bob")
    alice.expect("bob joined")
    bob.close()
    alice.expect(f"^{STAMP}\\*\\*\\* bob left")
    wait_for(lambda: len(server.registry) == 1, what="bob to be unregistered")
    wait_for(lambda: threading.active_count() <= threads_before, what="bob's threads to end")


@pytest.mark.parametrize("how", ["reset", "half-close", "close"])
def test_abrupt_disconnects_leave_registry_and_threads_as_they_were(server, connect, how):
    alice = connect("alice")
    threads_before = threading.active_count()
    for i in range(20):
        peer = connect(f"p{i}")
        peer.say("a message in flight")
        if how == "reset":  # close with SO_LINGER 0 sends RST instead of FIN
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
        elif how == "half-close":
            peer.sock.shutdown(socket.SHUT_WR)
        else:
            peer.close()
        alice.expect(f"p{i} left")
    wait_for(lambda: len(server.registry) == 1, what="the registry to be back to alice alone")
    wait_for(lambda: threading.active_count() <= threads_before, what="the thread count to return")
    connect("bob")
    alice.expect("bob joined")


def test_forged_lines_arrive_stamped_with_the_real_sender_line_by_line(connect):
    mallory, bob = connect("mallory"), connect("bob")
    mallory.expect("bob joined")
    mallory.send(b"one\n<bob> give me your password\r\n[12:00] *** Server is shutting down.\n"
                 b"hi\r[12:00] <bob> fake\x1b[2K\n")
    assert re.fullmatch(f"{STAMP}<mallory> one", bob.next_line())
    assert re.fullmatch(f"{STAMP}<mallory> <bob> give me your password", bob.next_line())
    assert re.fullmatch(f"{STAMP}<mallory> \\[12:00\\] \\*\\*\\* Server is shutting down.",
                        bob.next_line())
    # The "\r" that would have sent the terminal's cursor back, and the escape, are gone.
    assert re.fullmatch(f"{STAMP}<mallory> hi\\[12:00\\] <bob> fake", bob.next_line())


def test_invalid_utf8_is_replaced_and_the_connection_keeps_working(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.expect("bob joined")
    alice.send(b"caf\xc3\xa9 \xfe\xfe ok\n")  # not \xff: that is telnet's IAC (test_telnet.py)
    assert bob.next_line().endswith("<alice> caf\u00e9 \ufffd\ufffd ok")
    alice.say("still here")
    bob.expect("<alice> still here")


def test_overlong_line_is_refused_to_its_sender_and_the_connection_stays(start_server, connect):
    server = start_server(max_line=100)
    alice, bob = connect("alice", server), connect("bob", server)
    alice.expect("bob joined")
    alice.send(b"x" * 5000 + b"\n")
    alice.expect(r"\*\*\* Line not sent: longer than 100 bytes\.")
    alice.say("short")
    assert bob.next_line().endswith("<alice> short")


def test_a_client_that_never_reads_holds_nobody_up_and_is_cut_off_once_stalled(start_server, connect):
    server = start_server(max_queued_bytes=64 * 1024, stall_timeout=1.0, **UNLIMITED)
    stuck = Peer(server.server_address)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.join("stuck")
    sender, reader = connect("sender", server), connect("reader", server)
    sender.expect("reader joined")
    payload, sent, received, cut_off = "y" * 1000, 0, 0, False
    deadline = time.monotonic() + 30
    while not cut_off and time.monotonic() < deadline:
        sender.send(b"".join(f"{n} {payload}\n".encode() for n in range(sent, sent + 100)))
        sent += 100
        while received < sent:
            line = reader.next_line()
            if re.search(r"\*\*\* stuck left \(not reading: took nothing for 1 seconds\)", line):
                cut_off = True
                continue
            assert line.endswith(f"<sender> {received} {payload}"), "the reader lost a line"
            received += 1
    assert cut_off, "the client that never reads was never cut off"
    wait_for(lambda: len(server.registry) == 2, what="the stuck client to be dropped")
    stuck.close()


def test_a_slow_reader_is_told_what_it_missed_and_stays(start_server, connect):
    server = start_server(max_queued_bytes=64 * 1024, **UNLIMITED)
    slow = Peer(server.server_address)
    slow.join("slow")
    sender, reader = connect("sender", server), connect("reader", server)
    sender.expect("reader joined")
    count = 3000  # 3 MB while slow reads nothing: far past its queue and kernel buffers
    for start in range(0, count, 100):  # the reader keeps up, batch by batch
        sender.send(b"".join(f"{n} {'y' * 1000}\n".encode() for n in range(start, start + 100)))
        for n in range(start, start + 100):
            assert reader.next_line().endswith(f"<sender> {n} {'y' * 1000}")
    sender.say("after the burst")
    reader.expect("<sender> after the burst")
    numbers, missed = [], 0
    while True:  # now slow reads everything it was sent
        line = slow.next_line()
        if match := re.search(r"\*\*\* You missed (\d+) messages .*; /history \d+ shows them\.$", line):
            missed += int(match.group(1))
        elif line.endswith("<sender> after the burst"):
            break
        elif "joined" not in line:
            numbers.append(int(re.search(r"<sender> (\d+) ", line).group(1)))
    assert missed > 0 and len(numbers) + missed == count
    assert numbers == sorted(numbers), "what slow did get came out of order"
    slow.say("still connected")
    reader.expect("<slow> still connected")


def test_a_client_that_never_names_itself_holds_nobody_up_and_is_dropped(start_server, connect):
    server = start_server(handshake_timeout=0.5)
    silent = Peer(server.server_address)
    assert silent.next_line() == NAME_PROMPT
    alice, bob = connect("alice", server), connect("bob", server)
    alice.say("hi")
    bob.expect("<alice> hi")
    assert silent.expect_eof() == ["*** Sorry, no name came within 0.5 seconds; goodbye."]
    wait_for(lambda: len(server.registry) == 2, what="the silent connection to be dropped")


def test_stop_tells_every_client_and_closes_every_connection(start_server):
    server = start_server()
    alice = Peer(server.server_address)
    alice.join("alice")
    unnamed = Peer(server.server_address)
    assert unnamed.next_line() == NAME_PROMPT
    threads_before_stop = threading.active_count()
    server.stop()
    assert alice.expect_eof()[-1].endswith("*** Server is shutting down.")
    assert unnamed.expect_eof() == []
    wait_for(lambda: threading.active_count() < threads_before_stop, what="handler threads to end")
    alice.close()
    unnamed.close()


def test_the_shutdown_line_is_the_last_even_with_notices_waiting_and_the_log_has_every_leave(start_server, caplog):
    caplog.set_level(logging.INFO)
    server = start_server(notice_interval=60)  # whatever comes after the first arrival waits
    peers = [Peer(server.server_address) for _ in range(4)]
    for n, peer in enumerate(peers):
        peer.join(f"p{n}")
    peers[0].expect("p1 joined$")
    peers[3].close()  # a leave waits too
    wait_for(lambda: "p3 dropped off" in caplog.text, what="p3's drop")
    server.stop()
    for peer in peers[:3]:
        assert peer.expect_eof()[-1].endswith("*** Server is shutting down.")
        peer.close()
    for n in range(3):
        assert f"p{n} left from" in caplog.text and "(the server is shutting down)" in caplog.text


def test_ipv6_loopback(start_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = ChatServer(("::1", 0))
    except ServerStartError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    thread = serve_in_thread(server)
    try:
        alice, bob = Peer(server.server_address), Peer(server.server_address)
        alice.join("alice")
        bob.join("bob")
        bob.say("over v6")
        alice.expect("<bob> over v6")
        alice.close()
        bob.close()
    finally:
        server.stop()
        thread.join()


def test_port_in_use_is_one_clear_error_and_leaves_no_history_files(server, tmp_path):
    port = server.server_address[1]
    with pytest.raises(ServerStartError, match=f"port {port} is already in use"):
        ChatServer(("127.0.0.1", port), ServerSettings(history_path=str(tmp_path / "chat" / "history.db")))
    assert list(tmp_path.iterdir()) == []


def test_unknown_listen_address_is_one_clear_error():
    with pytest.raises(ServerStartError, match="unknown host"):
        ChatServer(("no-such-host.invalid", 0))


def test_a_sender_held_back_by_flood_control_is_told_once_per_spell(start_server):
    server = start_server(rate=20, burst=5, max_per_address=0, address_rate=0)
    carol, bob = Peer(server.server_address), Peer(server.server_address)
    carol.join("carol")
    bob.join_json("bob")
    carol.send(b"".join(b"paste %d\n" % n for n in range(30)))
    told = carol.expect(r"\*\*\* Slowing down: (\d+) lines waiting, 20 a second\.$")
    assert 0 < int(told.group(1)) <= 30
    assert [bob.expect_event("msg")["text"] for _ in range(30)] == [f"paste {n}" for n in range(30)]
    carol.say("/who")  # answered at once: the spell is over, and no second notice came
    assert re.search(r"\*\*\* In lobby", carol.next_line())
    time.sleep(0.5)  # the bucket fills again
    bob.send(b"".join(b'{"op": "send", "text": "b%d"}\n' % n for n in range(12)))
    throttled = bob.expect_event("throttled")
    assert throttled["rate"] == 20 and throttled["waiting"] > 0
    carol.close()
    bob.close()
