"""History in the chat: replay on entering a room, /history, /search, and what survives a stop."""

from __future__ import annotations

import re
import signal
import subprocess
import threading

import pytest

from groupchat.protocol import LIVE_MARKER
from groupchat.server.history import HistoryStore

from conftest import GROUPCHAT, REPO, UNLIMITED, WAIT_SECONDS, Peer, stored_messages, wait_for

STAMP = r"\[\d\d:\d\d\] "
HISTORY = r"\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d\] \(history\) "
NOTICE = STAMP + r"\*\*\* "


def joined(server, name: str) -> tuple[Peer, list[str]]:
    """A new peer through the handshake, and the lines after its welcome up to the live marker."""
    peer = Peer(server.server_address)
    peer.join(name)
    greeting = []
    while not greeting or not greeting[-1].endswith(LIVE_MARKER):
        greeting.append(peer.next_line())
    return peer, greeting


def test_joining_replays_the_room_then_marks_where_live_chat_begins(server, connect):
    alice = connect("alice")
    for text in ("one", "two", "/me waves", "three"):
        alice.say(text)
    alice.say("/who")  # a command is not history
    alice.say("/topic plans")
    alice.expect("set the topic")
    bob, greeting = joined(server, "bob")
    # The topic is told as it holds now; the stored line that set it is not played again.
    patterns = [f"{NOTICE}Topic of lobby: plans", f"{HISTORY}<alice> one", f"{HISTORY}<alice> two",
                f"{HISTORY}\\* alice waves", f"{HISTORY}<alice> three", f"{NOTICE}{LIVE_MARKER}"]
    assert len(greeting) == len(patterns), greeting
    for line, pattern in zip(greeting, patterns):
        assert re.fullmatch(pattern, line), (line, pattern)
    alice.say("live now")
    bob.expect(f"^{STAMP}<alice> live now$")
    bob.close()


def test_replay_on_join_room_and_the_replay_limit(start_server, connect):
    server = start_server(replay=3, **UNLIMITED)
    alice = connect("alice", server)
    alice.say("/join dev")
    alice.expect("You are now in dev")
    for n in range(10):
        alice.say(f"dev {n}")
    alice.say("/who")  # once answered, her lines before it have been handled
    alice.expect("In dev")
    bob = connect("bob", server)
    bob.say("/join dev")
    assert bob.expect("You are now in dev")
    assert [re.sub(HISTORY, "", bob.next_line()) for _ in range(3)] == [
        "<alice> dev 7", "<alice> dev 8", "<alice> dev 9"]
    assert bob.next_line().endswith(LIVE_MARKER)


def test_no_replay_and_no_marker_in_an_empty_room_or_with_replay_0(start_server):
    server = start_server(replay=0, **UNLIMITED)
    alice = Peer(server.server_address)
    alice.join("alice")
    alice.say("said before bob came")
    alice.say("/who")  # once answered, the line before it has been handled
    alice.expect("In lobby")
    bob = Peer(server.server_address)
    bob.join("bob")
    alice.say("live")
    assert bob.next_line().endswith("<alice> live")  # nothing replayed in between
    alice.close()
    bob.close()


def test_history_and_search_commands(server, connect):
    alice, bob = connect("alice"), connect("bob")
    alice.expect("bob joined")
    for n in range(30):
        alice.say(f"line {n}" + (" about Straße" if n == 7 else ""))
    alice.say("/msg bob a private word")  # never stored
    bob.expect("private")
    bob.say("/history")
    assert bob.next_line().endswith("*** The last 20 messages in lobby:")
    got = [re.sub(HISTORY, "", bob.next_line()) for _ in range(20)]
    assert got == [f"<alice> line {n}" for n in range(10, 30)]
    assert bob.next_line().endswith("*** End of the lines asked for.")
    bob.say("/history 3")
    bob.next_line()
    assert [re.sub(HISTORY, "", bob.next_line()) for _ in range(3)] == [
        "<alice> line 27", "<alice> line 28", "<alice> line 29"]
    bob.next_line()
    for bad in ("/history x", "/history 0", "/history -5"):
        bob.say(bad)
        assert re.fullmatch(f"{NOTICE}usage: /history \\[N\\|after ID\\]", bob.next_line())
    bob.say("/search STRASSE")
    assert bob.next_line().endswith('*** 1 messages in lobby containing "STRASSE", newest first:')
    assert re.fullmatch(f"{HISTORY}<alice> line 7 about Straße", bob.next_line())
    bob.next_line()
    bob.say("/search line 2")
    bob.next_line()
    assert [re.sub(HISTORY, "", bob.next_line()) for _ in range(2)] == [
        "<alice> line 29", "<alice> line 28"]  # newest first
    bob.say("/search private word")
    bob.expect(f'^{NOTICE}No messages in lobby contain "private word".$')
    bob.say("/search")
    bob.expect(f"^{NOTICE}usage: /search TEXT$")
    bob.say("/join empty")
    bob.say("/history")
    bob.expect(f"^{NOTICE}No history in empty yet.$")


def test_a_newcomer_during_busy_chat_gets_every_line_once_replayed_or_live(start_server, connect):
    """The replay stops exactly where live delivery starts, while senders never pause."""
    server = start_server(replay=500, **UNLIMITED)
    senders = [connect(f"s{i}", server) for i in range(3)]
    stop = threading.Event()
    said = {s.name: 0 for s in senders}

    def chatter(peer: Peer) -> None:
        while not stop.is_set() and said[peer.name] < 5000:
            peer.say(f"n {said[peer.name]}")
            said[peer.name] += 1

    threads = [threading.Thread(target=chatter, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    wait_for(lambda: min(said.values()) > 50, what="the chat to get going")
    newcomer, greeting = joined(server, "newcomer")
    wait_for(lambda: min(said.values()) > 300, what="more chat after the join")
    stop.set()
    for thread in threads:
        thread.join()
    seen: dict[str, list[int]] = {s.name: [] for s in senders}
    for line in greeting[:-1]:
        sender, n = re.fullmatch(f"{HISTORY}<(s\\d)> n (\\d+)", line).groups()
        seen[sender].append(int(n))
    last = {s.name: said[s.name] - 1 for s in senders}
    while any(not seen[name] or seen[name][-1] < last[name] for name in seen):
        match = re.fullmatch(f"{STAMP}<(s\\d)> n (\\d+)", newcomer.next_line())
        if match:
            seen[match.group(1)].append(int(match.group(2)))
    for name, numbers in seen.items():  # replayed then live: one unbroken run per sender
        assert numbers == list(range(numbers[0], last[name] + 1)), f"{name}: a line twice or missing"
    newcomer.close()


def test_ten_senders_times_a_thousand_all_stored_each_in_order(start_server, tmp_path):
    path = tmp_path / "history.db"
    server = start_server(history_path=str(path), **UNLIMITED)
    senders = [Peer(server.server_address) for _ in range(10)]
    for n, peer in enumerate(senders):
        peer.join(f"s{n}")
    listener = Peer(server.server_address)
    listener.join("listener")
    for peer in senders:
        peer.send(b"".join(b"m %d\n" % i for i in range(1000)))
    for _ in range(10 * 1000):
        listener.expect(r"<s\d> m \d+$")
    server.stop()
    rows = stored_messages(path)
    for n in range(10):
        assert [text for sender, text in rows if sender == f"s{n}"] == [f"m {i}" for i in range(1000)]
    for peer in senders + [listener]:
        peer.close()


def serve_with_history(path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(GROUPCHAT + ["serve", "--host", "127.0.0.1", "--port", "0", "--rate", "0",
                                         "--max-per-address", "0", "--history", str(path), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def address_of(proc: subprocess.Popen) -> tuple[str, int]:
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    proc.stdout.readline()
    return ("127.0.0.1", port)


def test_a_restart_keeps_history(tmp_path):
    path = tmp_path / "history.db"
    first = serve_with_history(path)
    alice = Peer(address_of(first))
    alice.join("alice")
    alice.say("remember me")
    alice.say("/who")
    alice.expect("In lobby")
    first.send_signal(signal.SIGTERM)
    assert first.wait(WAIT_SECONDS) == 0
    alice.close()
    second = serve_with_history(path)
    try:
        bob = Peer(address_of(second))
        bob.join("bob")
        assert re.fullmatch(f"{HISTORY}<alice> remember me", bob.next_line())
        bob.close()
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=WAIT_SECONDS)
        first.communicate()


def load_then_stop(path, how: int) -> tuple[list[str], list[str]]:
    """Five senders at full speed, a listener recording what was relayed; stop the server by
    ``how`` mid-flood; return (relayed, stored) message texts."""
    proc = serve_with_history(path)
    address = address_of(proc)
    listener = Peer(address)
    listener.join("listener")
    senders = [Peer(address) for _ in range(5)]
    for n, peer in enumerate(senders):
        peer.join(f"s{n}")

    def flood(peer: Peer) -> None:
        try:
            for start in range(0, 200_000, 100):
                peer.send(b"".join(b"%s %d\n" % (peer.name.encode(), i) for i in range(start, start + 100)))
        except OSError:
            pass  # the server went away mid-flood

    threads = [threading.Thread(target=flood, args=(peer,)) for peer in senders]
    for thread in threads:
        thread.start()
    relayed = []
    try:
        while len(relayed) < 20_000:
            match = re.search(r"<s\d> (s\d \d+)$", listener.next_line())
            if match:
                relayed.append(match.group(1))
        proc.send_signal(how)
        while True:
            match = re.search(r"<s\d> (s\d \d+)$", listener.next_line())
            if match:
                relayed.append(match.group(1))
    except (EOFError, OSError):
        pass  # the server is gone; everything it relayed has been read
    for thread in threads:
        thread.join()
    for peer in senders + [listener]:
        peer.close()
    proc.communicate(timeout=WAIT_SECONDS)
    HistoryStore.open(path).close()  # opens cleanly, whatever the stop left
    return relayed, [text for _, text in stored_messages(path)]


def test_a_clean_stop_under_load_loses_nothing_relayed(tmp_path):
    relayed, stored = load_then_stop(tmp_path / "history.db", signal.SIGTERM)
    assert relayed and set(relayed) <= set(stored), "a relayed message is missing from the history"


def test_kill_9_under_load_leaves_a_database_that_opens_missing_only_the_tail(tmp_path):
    relayed, stored = load_then_stop(tmp_path / "history.db", signal.SIGKILL)
    kept = set(stored)
    missing = [text for text in relayed if text not in kept]
    for sender in {text.split()[0] for text in relayed}:  # per sender, only its newest may be gone
        mine = [int(t.split()[1]) for t in relayed if t.startswith(sender + " ")]
        gone = [int(t.split()[1]) for t in missing if t.startswith(sender + " ")]
        kept_numbers = [n for n in mine if n not in gone]
        assert not gone or not kept_numbers or min(gone) > max(kept_numbers), f"{sender}: a gap, not a tail"
    assert len(missing) < len(relayed) / 2, f"{len(missing)} of {len(relayed)} relayed lines lost"


@pytest.mark.parametrize("content, message", [
    (b"this is not a database at all, just text that is long enough" * 10, "not a SQLite database"),
])
def test_a_bad_database_is_one_line_at_start_and_left_untouched(tmp_path, content, message):
    path = tmp_path / "history.db"
    path.write_bytes(content)
    result = subprocess.run(GROUPCHAT + ["serve", "--port", "0", "--history", str(path)],
                            capture_output=True, text=True, cwd=REPO, timeout=WAIT_SECONDS,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert path.read_bytes() == content


def test_a_second_server_on_the_same_history_is_refused(tmp_path):
    path = tmp_path / "history.db"
    first = serve_with_history(path)
    try:
        address_of(first)
        result = subprocess.run(GROUPCHAT + ["serve", "--port", "0", "--history", str(path)],
                                capture_output=True, text=True, cwd=REPO, timeout=WAIT_SECONDS,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 1 and "in use by another groupchat server" in result.stderr
        assert result.stderr.count("\n") == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT_SECONDS)
