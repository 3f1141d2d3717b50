"""The history store on real files, threads and processes: order, durability, and refusals.

Run as a script (``PYTHONPATH=.:tests python tests/server/test_history.py``) to measure what a ``kill -9``
loses at several message rates and how many appends a second the store takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

import pytest

from groupchat.errors import GroupchatError
from groupchat.server.history import (
    APPLICATION_ID,
    MAX_HISTORY,
    MAX_SEARCH,
    ROWS_PER_INSERT,
    HistoryStore,
    default_history_path,
)

from conftest import REPO, WAIT_SECONDS, stored_messages, wait_for

DAY = 24 * 3600.0


@pytest.fixture(params=["file", "memory"])
def open_store(request, tmp_path) -> Iterator[Callable[..., HistoryStore]]:
    """Open stores of the parametrized kind (class and retention as keywords); close them after."""
    stores: list[HistoryStore] = []

    def open_one(cls: type[HistoryStore] = HistoryStore, retention: Optional[float] = None) -> HistoryStore:
        store = (cls.open(tmp_path / "history.db", retention) if request.param == "file"
                 else cls.in_memory(retention))
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store) -> HistoryStore:
    return open_store()


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "history.db"


def texts(entries) -> list[str]:
    return [entry.text for entry in entries]


def run_python(code: str, *args: str, prefix: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=WAIT_SECONDS, **kwargs)


# -- what a store does, on a file and in memory alike ----------------------------------------

def test_the_default_path_is_in_the_users_data_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_history_path() == tmp_path / "groupchat" / "history.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_history_path() == tmp_path / ".local" / "share" / "groupchat" / "history.db"


def test_a_message_reads_back_with_every_field(store):
    assert store.append("Lobby", "alice", "message", "hi", when=1000.5)
    store.append("Lobby", "alice", "action", "waves")
    store.append("Lobby", "", "notice", "bob joined")
    first, second, third = store.recent("lobby")
    assert first == (first.id, "Lobby", 1000.5, "alice", "message", "hi")
    assert first.id < second.id < third.id
    assert (second.kind, third.kind, third.text) == ("action", "notice", "bob joined")


def test_private_messages_and_unknown_kinds_are_refused(store):
    for kind in ("private", "shout"):
        with pytest.raises(ValueError, match="history keeps only"):
            store.append("lobby", "alice", kind, "psst")


def test_many_rows_in_one_commit_are_kept_in_order_across_insert_statements(open_store):
    class SlowCommits(HistoryStore):
        commit_window = 0.5  # all the appends below gather into one commit

    store = open_store(SlowCommits)
    count = ROWS_PER_INSERT * 2 + 3  # whole statements and a shorter last one
    first = store.append("lobby", "bob", "message", "first")
    for n in range(count):
        store.append("Lobby", "alice", "message", str(n))
    assert store.next_id == first + count + 1
    entries = store.recent("lobby", MAX_HISTORY)
    assert texts(entries) == ["first", *map(str, range(count))]
    assert [entry.id for entry in entries] == list(range(first, first + count + 1))
    assert {(entry.room, entry.sender) for entry in entries[1:]} == {("Lobby", "alice")}


def test_a_read_or_a_flush_does_not_wait_out_the_commit_window(open_store):
    class LongWindow(HistoryStore):
        commit_window = 60.0  # far past a read's wait: only being hurried saves the line in time

    store = open_store(LongWindow)
    store.append("lobby", "alice", "message", "just said")
    assert texts(store.recent("lobby")) == ["just said"]
    store.append("lobby", "alice", "message", "and this")
    assert store.flush(timeout=5)  # saved long before the window would have ended


def test_a_message_holding_a_newline_is_refused(store):
    with pytest.raises(ValueError, match="one line per message"):
        store.extend("lobby", "alice", "message", ["fine", "two\nlines"])
    assert store.recent("lobby") == []


def test_a_batch_is_one_row_and_reads_back_message_by_message(db_path):
    with HistoryStore.open(db_path) as store:
        first = store.extend("lobby", "alice", "message", [f"line {n}" for n in range(300)])
        store.extend("lobby", "alice", "action", ["waves"])
        store.append("lobby", "alice", "message", "last")
        assert texts(store.recent("lobby", 2, before=first + 3)) == ["line 1", "line 2"]
        assert [e.id for e in store.recent("lobby", 3)] == [first + 299, first + 300, first + 301]
        assert [(e.kind, e.text) for e in store.recent("lobby", 2)] == [("action", "waves"),
                                                                        ("message", "last")]
        assert texts(store.search("lobby", "LINE 29", 3)) == ["line 299", "line 298", "line 297"]
        assert [e.id for e in store.search("lobby", "line 7", 1)] == [first + 79]
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("SELECT kind, lines FROM messages ORDER BY id").fetchall() == [
            ("message", 300), ("action", 1), ("message", 1)]
    assert stored_messages(db_path)[:2] == [("alice", "line 0"), ("alice", "line 1")]


def test_a_schema_1_file_is_upgraded_in_place_and_keeps_its_messages(db_path):
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.executescript(SCHEMA_1)
        db.executemany("INSERT INTO messages (room_key, room, time, sender, kind, text)"
                       " VALUES ('lobby', 'Lobby', 1000, 'alice', 'message', ?)", [("a",), ("b",)])
        db.commit()
    with HistoryStore.open(db_path) as store:
        assert [(e.id, e.text) for e in store.recent("lobby")] == [(1, "a"), (2, "b")]
        assert store.append("lobby", "bob", "message", "c") == 3
        assert store.indexed
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert stored_messages(db_path) == [("alice", "a"), ("alice", "b"), ("bob", "c")]


class Unindexed(HistoryStore):
    search_index = False  # as with an SQLite that has no FTS5: schema 2, searches read the room


def test_a_schema_2_file_gets_a_search_index_that_finds_its_old_messages(db_path, caplog):
    with Unindexed.open(db_path) as store:
        store.extend("lobby", "alice", "message", ["Straße", "deploy v1"])
        store.append("ops", "bob", "message", "deploy v2")
        assert not store.indexed and texts(store.search("lobby", "DEPLOY")) == ["deploy v1"]
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    with caplog.at_level("INFO"), HistoryStore.open(db_path) as store:
        assert store.indexed
        assert "building the search index" in caplog.text and "upgraded to schema 3" in caplog.text
        assert texts(store.search("lobby", "DEPLOY")) == ["deploy v1"]
        assert texts(store.search("lobby", "strasse")) == ["Straße"]
        store.append("lobby", "carol", "message", "deploy v3")
        assert texts(store.search("lobby", "deploy v")) == ["deploy v3", "deploy v1"]


def test_an_indexed_file_is_refused_by_an_sqlite_that_cannot_keep_its_index(db_path):
    HistoryStore.open(db_path).close()
    with pytest.raises(GroupchatError, match="has a search index that this SQLite .* cannot keep"):
        Unindexed.open(db_path)


@pytest.mark.parametrize("cls", [HistoryStore, Unindexed])
def test_search_finds_the_same_with_and_without_the_index(db_path, cls):
    with cls.open(db_path) as store:
        store.extend("lobby", "alice", "message", ['say "hi" OR bye', "x AND y", "NEAR(a b)", "ab", "   "])
        store.extend("lobby", "alice", "message", ["abc " * 30 + "end", "abc " * 30])
        assert texts(store.search("lobby", '"hi" or')) == ['say "hi" OR bye']
        assert texts(store.search("lobby", "x and")) == ["x AND y"]
        assert texts(store.search("lobby", "near(")) == ["NEAR(a b)"]
        assert texts(store.search("lobby", "   ")) == ["   "]
        assert texts(store.search("lobby", "b")) == ["abc " * 30, "abc " * 30 + "end", "ab",
                                                     "NEAR(a b)", 'say "hi" OR bye']
        assert texts(store.search("lobby", "abc " * 25 + "end")) == ["abc " * 30 + "end"]
        assert store.search("lobby", "abc abd") == []  # every trigram is there, not the text


def test_ids_never_go_back_even_once_every_row_is_pruned(db_path):
    with HistoryStore.open(db_path) as store:
        first = store.extend("lobby", "alice", "message", ["a", "b", "c"], when=time.time() - 2 * DAY)
    with HistoryStore.open(db_path, retention=DAY) as store:
        assert store.recent("lobby") == []
        assert store.append("lobby", "bob", "message", "d") > first + 2


def test_ids_reserved_for_events_not_kept_are_never_given_again_after_a_restart(db_path):
    with HistoryStore.open(db_path) as store:
        first = store.append("lobby", "alice", "message", "kept")
        joins = store.reserve(3)  # a join, a leave, a /nick: ids, no rows
        assert joins == first + 1
    with HistoryStore.open(db_path) as store:
        reserved = store.reserve()  # with nothing appended since the last restart either
        assert reserved > joins + 2
    with HistoryStore.open(db_path) as store:
        assert store.append("lobby", "bob", "message", "after") > reserved
        assert [entry.text for entry in store.recent("lobby")] == ["kept", "after"]


SCHEMA_1 = f"""
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, room_key TEXT NOT NULL, room TEXT NOT NULL,
    time REAL NOT NULL, sender TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX messages_by_room ON messages (room_key, id);
CREATE INDEX messages_by_time ON messages (time);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = 1;
"""


def test_a_read_finds_what_was_appended_just_before_it(store):
    for n in range(2000):
        store.append("lobby", "alice", "message", str(n))
    assert texts(store.recent("lobby", 1)) == ["1999"]


def test_rooms_are_compared_ignoring_case_and_kept_apart(store):
    store.append("Dev", "alice", "message", "in dev")
    store.append("DEV", "bob", "message", "still dev")
    store.append("ops", "carol", "message", "in ops")
    assert texts(store.recent("dev")) == ["in dev", "still dev"]
    assert [e.room for e in store.recent("dev")] == ["Dev", "DEV"]  # as spelled at the time
    assert texts(store.search("OPS", "in")) == ["in ops"]


def test_recent_is_oldest_first_and_capped(store):
    for n in range(MAX_HISTORY + 100):
        store.append("lobby", "alice", "message", str(n))
    assert texts(store.recent("lobby", 3)) == ["597", "598", "599"]
    assert texts(store.recent("lobby", 10_000)) == [str(n) for n in range(100, 600)]
    assert store.recent("lobby", 0) == [] and store.recent("nowhere") == []


def test_search_is_newest_first_ignores_case_and_is_capped(store):
    for n in range(MAX_SEARCH + 20):
        store.append("lobby", "alice", "message", f"Deploy number {n}")
        store.append("lobby", "bob", "message", "unrelated")
    store.append("lobby", "carol", "message", "Straße")
    found = store.search("lobby", "DEPLOY", 10_000)
    assert texts(found) == [f"Deploy number {n}" for n in range(69, 19, -1)]
    assert texts(store.search("lobby", "deploy number 1", 3)) == ["Deploy number 19", "Deploy number 18",
                                                                  "Deploy number 17"]
    assert texts(store.search("lobby", "STRASSE")) == ["Straße"]  # Unicode case folding


def test_search_takes_wildcards_and_escapes_literally(store):
    for text in ("100% sure", "1000 sure", "snake_case", "snakeXcase", r"back\slash", "backslash"):
        store.append("lobby", "alice", "message", text)
    assert texts(store.search("lobby", "0%")) == ["100% sure"]
    assert texts(store.search("lobby", "e_c")) == ["snake_case"]
    assert texts(store.search("lobby", "k\\s")) == [r"back\slash"]
    assert store.search("lobby", "%") == store.search("lobby", "100%")


def test_retention_prunes_while_running(open_store):
    class QuickPruning(HistoryStore):
        prune_interval = 0.05

    store = open_store(QuickPruning, retention=DAY)
    store.append("lobby", "alice", "message", "old", when=time.time() - 2 * DAY)
    store.append("lobby", "alice", "message", "new")
    wait_for(lambda: texts(store.recent("lobby")) == ["new"], what="the old message to be pruned")


def test_an_in_memory_store_keeps_the_newest_messages_up_to_its_bound():
    store = HistoryStore.in_memory(keep_at_most=100)
    try:
        for n in range(250):
            store.append("lobby", "alice", "message", str(n))
        assert texts(store.recent("lobby")) == [str(n) for n in range(150, 250)]
    finally:
        store.close()


# -- durability of a file ---------------------------------------------------------------------

def test_history_survives_a_restart(db_path):
    with HistoryStore.open(db_path) as store:
        for n in range(300):
            store.append("lobby", "alice", "message", str(n))
    assert oct(db_path.stat().st_mode & 0o777) == "0o600"  # chat is private to its owner
    with HistoryStore.open(db_path) as store:
        store.append("lobby", "bob", "message", "after the restart")
        entries = store.recent("lobby")
    assert texts(entries) == [str(n) for n in range(300)] + ["after the restart"]
    ids = [e.id for e in entries]
    assert ids[:300] == list(range(1, 301)) and ids[300] > 300  # a restart skips the ids recorded ahead


def test_ten_senders_in_ten_threads_are_all_stored_each_in_order(db_path):
    senders, each = 10, 1000

    def send(name: str) -> None:
        for n in range(each):
            store.append("lobby", name, "message", str(n))

    with HistoryStore.open(db_path) as store:
        threads = [threading.Thread(target=send, args=(f"s{k}",)) for k in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_SECONDS)
    rows = stored_messages(db_path)
    assert len(rows) == senders * each
    for k in range(senders):
        assert [int(text) for sender, text in rows if sender == f"s{k}"] == list(range(each))


def test_close_under_load_loses_nothing_that_was_accepted(db_path):
    class Unbounded(HistoryStore):
        max_pending = 10**9  # the bound is tested on its own below

    store, most = Unbounded.open(db_path), 50_000
    accepted = {f"s{k}": 0 for k in range(8)}

    def send(name: str) -> None:
        while accepted[name] < most and store.append("lobby", name, "message", str(accepted[name])):
            accepted[name] += 1

    threads = [threading.Thread(target=send, args=(name,)) for name in accepted]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(accepted.values()), what="every sender to be under way")
    assert store.close()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert any(count < most for count in accepted.values()), "close() came after the load"
    rows = stored_messages(db_path)
    for name, count in accepted.items():
        assert [int(text) for sender, text in rows if sender == name] == list(range(count))


def test_appends_never_wait_for_a_blocked_disk_and_are_saved_once_it_frees(db_path):
    store = HistoryStore.open(db_path)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer cannot commit
        for n in range(10_000):  # these return although the writer cannot commit
            store.append("lobby", "alice", "message", str(n))
        assert not store.flush(0.2)
        blocker.execute("ROLLBACK")
        assert store.flush()
    finally:
        blocker.close()
        store.close()
    assert [text for _, text in stored_messages(db_path)] == [str(n) for n in range(10_000)]


def test_past_its_bound_a_store_drops_the_oldest_waiting_messages_and_counts_them(db_path):
    class Small(HistoryStore):
        max_pending = 100

    store = Small.open(db_path)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        for n in range(1000):
            store.append("lobby", "alice", "message", str(n))
        blocker.execute("ROLLBACK")
        assert store.flush()
    finally:
        blocker.close()
        store.close()
    saved = [int(text) for _, text in stored_messages(db_path)]
    assert saved == sorted(saved) and saved[-100:] == list(range(900, 1000))
    assert store.dropped == 1000 - len(saved) >= 800


APPENDER = """
import sys, time
from groupchat.server.history import HistoryStore
store = HistoryStore.open(sys.argv[1])
rate = float(sys.argv[2])
start = time.time()
print(start, flush=True)
sent = 0
while True:  # a steady rate: catch up with the clock, then nap
    due = int((time.time() - start) * rate) + 1
    while sent < due:
        store.append("lobby", "steady", "message", str(sent))
        sent += 1
    time.sleep(0.0005)
"""


class KillResult(NamedTuple):
    saved: int  # messages on disk after the kill
    lost: int  # messages appended before the kill and not on disk
    lost_seconds: float  # from the last saved message to the kill


def kill_while_appending(path: Path, rate: float, saved_first: int) -> KillResult:
    """Append at ``rate`` a second in another process, ``kill -9`` it once ``saved_first`` are
    on disk, reopen the file and see what the tail lost."""
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(rate)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        start = float(proc.stdout.readline())
        wait_for(lambda: path.exists() and len(stored_messages(path)) >= saved_first,
                 what=f"{saved_first} messages on disk")
        killed_at = time.time()
    finally:
        proc.kill()  # SIGKILL, as kill -9
        proc.wait()
        proc.stdout.close()
    with HistoryStore.open(path) as store:  # opens cleanly: the lock went with the process
        tail = store.recent("lobby")
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # No holes: message n has id n + 1, so the last one tells how many are there.
    assert [int(e.text) + 1 for e in tail] == [e.id for e in tail] == list(range(tail[0].id, tail[-1].id + 1))
    appended = int((killed_at - start) * rate) + 1
    return KillResult(tail[-1].id, appended - tail[-1].id, killed_at - tail[-1].time)


def test_kill_9_leaves_a_database_that_opens_with_only_the_tail_missing(db_path):
    result = kill_while_appending(db_path, rate=2000, saved_first=500)
    assert result.lost_seconds <= 1.0, result  # generous: measured windows are a few ms


GIVER = """
import os, sys
from groupchat.server.history import HistoryStore
store = HistoryStore.open(sys.argv[1])
store.append("lobby", "alice", "message", "saved?")
print(store.reserve(3) + 2, flush=True)  # the last id given
os._exit(0)  # as kill -9 would: the writer never saved or recorded anything
"""


def test_ids_given_by_a_process_killed_before_saving_are_never_given_again(db_path):
    given = subprocess.run([sys.executable, "-c", GIVER, str(db_path)], capture_output=True, text=True,
                           cwd=REPO, timeout=WAIT_SECONDS, check=True)
    last_given = int(given.stdout)
    with HistoryStore.open(db_path) as store:
        assert store.append("lobby", "bob", "message", "after the crash") > last_given


# -- databases that must be refused, with one line and untouched -------------------------------

HOLDER = """
import sys
from groupchat.server.history import HistoryStore
with HistoryStore.open(sys.argv[1]):
    print("open", flush=True)
    sys.stdin.read()
"""


def test_a_second_server_process_is_refused_while_the_first_holds_the_file(db_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db_path)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(GroupchatError) as refused:
            HistoryStore.open(db_path)
        assert str(refused.value) == (f"history database {db_path} is in use by another "
                                      f"groupchat server (pid {holder.pid})")
    finally:
        holder.stdin.close()
        assert holder.wait(WAIT_SECONDS) == 0
        holder.stdout.close()
    HistoryStore.open(db_path).close()  # free again once it has gone


def write_history(path: Path, count: int) -> None:
    with HistoryStore.open(path) as store:
        for n in range(count):
            store.append("lobby", "alice", "message", f"message {n} " + "x" * 100)


def make_not_sqlite(path: Path) -> None:
    path.write_text("alice: hi\n" * 100)


def make_truncated(path: Path) -> None:
    write_history(path, 3000)
    os.truncate(path, path.stat().st_size // 2)


def make_header_only(path: Path) -> None:
    write_history(path, 10)
    os.truncate(path, 50)


def make_foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE accounts (name TEXT)")


def make_newer(path: Path) -> None:
    write_history(path, 1)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")


@pytest.mark.parametrize("make, message", [
    (make_not_sqlite, "is not a SQLite database (corrupt?): refusing to touch it; "
                      "move it away or choose --history PATH"),
    (make_truncated, "is damaged (database disk image is malformed): refusing to touch it"),
    (make_header_only, "is damaged (database disk image is malformed): refusing to touch it"),
    (make_foreign, "is a SQLite database but not groupchat history: refusing to touch it"),
    (make_newer, "was written by a newer groupchat (schema 99; this one knows 3): upgrade groupchat"),
])
def test_a_bad_database_is_refused_in_one_line_and_left_untouched(db_path, make, message):
    make(db_path)
    before = db_path.read_bytes()
    with pytest.raises(GroupchatError) as refused:
        HistoryStore.open(db_path)
    assert message in str(refused.value) and str(db_path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert db_path.read_bytes() == before
    assert not Path(f"{db_path}-wal").exists()


OPENER = """
import sys
from groupchat.errors import GroupchatError
from groupchat.server.history import HistoryStore
try:
    HistoryStore.open(sys.argv[1]).close()
except GroupchatError as exc:
    sys.exit(str(exc))
"""


@pytest.fixture
def open_as_plain_user(tmp_path) -> Iterator[Callable[[Path], str]]:
    """Open a history file in a process that file permissions apply to, and return its one-line
    error.  As root that is root without the capabilities that override permissions."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
        if not shutil.which("setpriv") or run_python("", prefix=prefix).returncode:
            pytest.skip("running as root and setpriv cannot drop the capabilities that override "
                        "file permissions")

    def open_file(path: Path) -> str:
        result = run_python(OPENER, str(path), prefix=prefix)
        assert result.returncode == 1, result
        return result.stderr.strip()

    yield open_file
    for path in tmp_path.rglob("*"):  # let pytest clean up
        path.chmod(0o700)


def test_an_unreadable_database_is_refused(db_path, open_as_plain_user):
    write_history(db_path, 1)
    db_path.chmod(0o000)
    assert open_as_plain_user(db_path) == f"cannot read history database {db_path}: permission denied"


def test_a_read_only_database_is_refused(db_path, open_as_plain_user):
    write_history(db_path, 1)
    db_path.chmod(0o400)
    assert open_as_plain_user(db_path) == f"history database {db_path} is read-only; choose --history PATH"


def test_a_read_only_directory_is_refused(db_path, open_as_plain_user):
    write_history(db_path, 1)
    db_path.parent.chmod(0o500)
    assert open_as_plain_user(db_path) == (
        f"history directory {db_path.parent} is read-only (the lock file and write-ahead log go "
        f"there); choose --history PATH")


def test_a_directory_that_cannot_be_made_is_refused(tmp_path, open_as_plain_user):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert open_as_plain_user(locked / "groupchat" / "history.db") == (
        f"cannot create directory {locked / 'groupchat'} for history: permission denied")


# -- full and read-only disks: a small tmpfs in a mount namespace of its own -----------------

@pytest.fixture
def on_small_disk(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run a shell script with a 2 MiB tmpfs mounted at $DISK only for it; $PY is Python."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("unshare") or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("a full or read-only disk needs root and unshare to mount a private tmpfs")

    def run(script: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["unshare", "--mount", "sh", "-c",
             'mount -t tmpfs -o size=2m,mode=0700 tmpfs "$DISK" && ' + script],
            cwd=REPO, text=True, capture_output=True, timeout=WAIT_SECONDS,
            env={**os.environ, "DISK": str(disk), "PY": sys.executable, **env})

    return run


def test_a_full_disk_is_refused_at_open(on_small_disk, tmp_path):
    result = on_small_disk('cat /dev/zero > "$DISK/filler" 2>/dev/null; "$PY" -c "$OPENER" "$DISK/h.db"',
                           OPENER=OPENER)
    path = tmp_path / "disk" / "h.db"
    assert result.stderr.strip() == f"cannot use history database {path}: the disk is full"


def test_a_read_only_file_system_is_refused(on_small_disk, tmp_path):
    make = "import sys\nfrom groupchat.server.history import HistoryStore\nHistoryStore.open(sys.argv[1]).close()"
    result = on_small_disk('"$PY" -c "$MAKE" "$DISK/h.db" && mount -o remount,ro "$DISK" && '
                           '"$PY" -c "$OPENER" "$DISK/h.db"', MAKE=make, OPENER=OPENER)
    assert result.stderr.strip() == (f"history directory {tmp_path / 'disk'} is read-only (the lock file "
                                     f"and write-ahead log go there); choose --history PATH")


FILL_THE_DISK = """
import json, logging, os, sys
from groupchat.server.history import HistoryStore
logging.basicConfig(format="%(levelname)s %(message)s")

class Small(HistoryStore):
    max_pending = 100
    retry_interval = 0.02

disk = os.environ["DISK"]
store = Small.open(os.path.join(disk, "h.db"))
store.append("lobby", "alice", "message", "before")
assert store.flush()
with open(os.path.join(disk, "filler"), "wb") as filler:
    try:
        while True:
            filler.write(bytes(1 << 16))
            filler.flush()
    except OSError:
        pass
for n in range(1000):
    store.append("lobby", "alice", "message", str(n))
refused = not store.flush(1)
os.remove(os.path.join(disk, "filler"))
while not store.flush(0.1):
    pass
kept = [e.text for e in store.recent("lobby")]
print(json.dumps({"refused": refused, "kept": kept, "dropped": store.dropped, "closed": store.close()}))
"""


def test_a_full_disk_while_running_is_logged_once_and_what_fits_in_memory_is_saved_later(on_small_disk):
    result = on_small_disk('"$PY" -c "$CHILD"', CHILD=FILL_THE_DISK)
    assert result.returncode == 0, result
    outcome = json.loads(result.stdout)
    assert outcome["refused"] and not outcome["closed"]  # close() owns up to the 900 dropped
    assert outcome["kept"] == ["before"] + [str(n) for n in range(900, 1000)]
    assert outcome["dropped"] == 900
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "database or disk is full" in errors[0], result.stderr
    assert result.stderr.count("dropping the oldest unsaved messages") == 1, result.stderr
    assert ("again; 900 unsaved messages (2590 bytes of text) were dropped meanwhile, 900 in all"
            in result.stderr), result.stderr


# -- figures, not tests: PYTHONPATH=.:tests python tests/server/test_history.py ------------

def measure() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        print("kill -9 while appending at a steady rate (10 runs each):")
        for rate in (100, 1000, 10_000, 50_000):
            runs = []
            for n in range(10):
                runs.append(kill_while_appending(Path(scratch, f"kill-{rate}-{n}.db"), rate,
                                                 saved_first=max(50, rate // 4)))
            windows = sorted(r.lost_seconds * 1000 for r in runs)
            lost = sorted(r.lost for r in runs)
            print(f"  {rate:>6}/s: lost window median {windows[5]:.1f} ms, max {windows[-1]:.1f} ms; "
                  f"messages lost median {lost[5]}, max {lost[-1]}")
        for label, open_one in (("file", lambda: HistoryStore.open(Path(scratch, "rate.db"))),
                                ("memory", HistoryStore.in_memory)):
            store, count = open_one(), 200_000
            started = time.perf_counter()
            for n in range(count):
                store.append("lobby", "alice", "message", f"message number {n}, of a usual length")
            appended = time.perf_counter() - started
            assert store.flush(60)
            saved = time.perf_counter() - started
            store.close()
            print(f"{label}: one thread appends {count / appended:,.0f}/s; appended and committed "
                  f"{count / saved:,.0f}/s")


def test_append_gives_increasing_ids_that_survive_a_restart_and_bound_recent(db_path):
    with HistoryStore.open(db_path) as store:
        first = store.append("lobby", "alice", "message", "one")
        second = store.append("lobby", "alice", "message", "two")
        assert second == first + 1 == store.next_id - 1
        assert texts(store.recent("lobby", before=second)) == ["one"]
    with HistoryStore.open(db_path) as store:
        assert store.append("lobby", "bob", "message", "three") > second


def test_after_gives_what_someone_who_saw_up_to_an_id_missed_even_inside_a_batch(store):
    first = store.extend("lobby", "alice", "message", [f"a{n}" for n in range(5)])
    store.append("dev", "bob", "message", "elsewhere")
    store.extend("lobby", "carol", "message", ["c0", "c1"])
    entries, total = store.after("lobby", first + 2)
    assert [e.text for e in entries] == ["a3", "a4", "c0", "c1"] and total == 4
    entries, total = store.after("lobby", first + 2, limit=3)
    assert [e.text for e in entries] == ["a3", "a4", "c0"] and total == 4
    entries, total = store.after("lobby", first - 1, before=first + 5)  # before: where live lines began
    assert [e.text for e in entries] == ["a0", "a1", "a2", "a3", "a4"] and total == 5
    assert store.after("lobby", first + 100) == ([], 0)



def test_missed_lines_come_in_answers_a_slow_reader_can_take(store):
    first = store.extend("lobby", "alice", "message", ["x" * 4000] * 100)
    entries, total = store.after("lobby", first - 1)
    assert total == 100 and 10 <= len(entries) < 20  # about 64 KiB of text; the count says the rest
    assert [e.id for e in entries] == list(range(first, first + len(entries)))


if __name__ == "__main__":
    measure()
