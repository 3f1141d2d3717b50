"""History under attack: a disk that refuses, a crowd of searchers, a flood, and files that
someone else placed.  Each test failed before its fix.

Run as a script (``PYTHONPATH=.:tests python tests/server/test_hostile_history.py [MB]``) to
measure searches and replays on a big room, with 8 threads searching.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import statistics
import string
import sys
import threading
import time
from pathlib import Path

import pytest

from groupchat.errors import GroupchatError
from groupchat.server.history import MAX_PENDING_BYTES, HistoryStore
from groupchat.server.settings import MAX_HISTORY_MB, ServerSettings

from conftest import WAIT_SECONDS, stored_messages, wait_for

OTHER_UID = 65534  # nobody


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "history.db"


def refusal(path: Path) -> str:
    with pytest.raises(GroupchatError) as refused:
        HistoryStore.open(path).close()
    assert "\n" not in str(refused.value)
    return str(refused.value)


@contextlib.contextmanager
def disk_refusing(path: Path):
    """Hold the database's write lock, as a full disk would refuse the writer's commits."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


# -- a disk that refuses: what waits in memory is bounded in bytes ------------------------------

def test_unsaved_messages_are_held_within_a_bound_in_bytes_and_the_loss_is_logged(db_path, caplog):
    class Small(HistoryStore):
        max_pending_bytes = 1 << 20
        retry_interval = 0.02

    big = 4000  # bytes a message: far fewer than max_pending messages fill the bound
    store = Small.open(db_path)
    try:
        with caplog.at_level(logging.WARNING), disk_refusing(db_path):
            for n in range(1000):  # 4 MB, 1,000 messages
                store.append("lobby", "flood", "message", f"{n:04} " + "x" * big)
            assert not store.flush(0.2)
        assert store.flush()
    finally:
        store.close()
    saved = [int(text.split()[0]) for _, text in stored_messages(db_path)]
    assert saved == list(range(1000 - len(saved), 1000)), "the newest are kept, in order"
    assert len(saved) * big <= Small.max_pending_bytes and store.dropped == 1000 - len(saved) > 700
    assert caplog.text.count("dropping the oldest unsaved messages") == 1
    lost_bytes = store.dropped * (big + 5)
    assert (f"again; {store.dropped} unsaved messages ({lost_bytes} bytes of text) were dropped "
            f"meanwhile, {store.dropped} in all") in caplog.text
    assert HistoryStore.max_pending_bytes == MAX_PENDING_BYTES <= 64 << 20


# -- searches never hold up replays ---------------------------------------------------------------

ROOM_ROWS = 4000
ROW_TEXT = "\n".join(["the quick brown fox jumps over the lazy dog " * 4] * 40)  # 7 KB of 40 lines


def test_replays_never_wait_for_a_crowd_of_searches(db_path):
    """8 threads search a 28 MB room without its index, each search reading all of it; replays
    of the room, meanwhile, take their own connections and stay quick."""
    class Unindexed(HistoryStore):  # the slowest searches there are: a whole room each
        search_index = False

    Unindexed.open(db_path).close()
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute("BEGIN")
        db.executemany("INSERT INTO messages (id, room_key, room, time, sender, kind, text, lines)"
                       " VALUES (?, 'lobby', 'lobby', 0, 'bob', 'message', ?, 40)",
                       [(1 + 40 * n, ROW_TEXT) for n in range(ROOM_ROWS)])
        db.execute("COMMIT")
    stop, searches = threading.Event(), []

    def search() -> None:
        while not stop.is_set():
            searches.append(len(store.search("lobby", "no such text")))

    with Unindexed.open(db_path) as store:
        searchers = [threading.Thread(target=search) for _ in range(8)]
        for thread in searchers:
            thread.start()
        try:
            wait_for(lambda: len(searches) >= 2, what="searches to be under way")
            slowest = 0.0
            for _ in range(20):
                started = time.monotonic()
                assert len(store.recent("lobby", 20)) == 20
                slowest = max(slowest, time.monotonic() - started)
        finally:
            stop.set()
            for thread in searchers:
                thread.join(WAIT_SECONDS)
    assert slowest < 1.0, f"a replay waited {slowest:.2f}s for searches"


# -- a size bound: a flood cannot fill the disk ---------------------------------------------------

def test_history_stays_within_its_size_bound_pruning_the_oldest(db_path, caplog):
    class SmallSteps(HistoryStore):
        prune_step = 32 << 10

    bound, rng = 512 << 10, random.Random(7)
    with caplog.at_level(logging.INFO), SmallSteps.open(db_path, max_bytes=bound) as store:
        for n in range(40):  # 2 MB of varied text, arriving as a flood does: a batch, a commit
            store.extend("lobby", "flood", "message", [
                f"{n:02}-{k:02} " + "".join(rng.choices(string.ascii_lowercase + " ", k=500))
                for k in range(100)])
            assert store.flush()
        assert store.search("lobby", "39-99") and not store.search("lobby", "00-00")
    kept = [text for _, text in stored_messages(db_path)]
    assert kept[-1].startswith("39-99") and not kept[0].startswith("00-")
    assert bound // 2 <= sum(map(len, kept)) <= bound, "pruned the oldest, not everything"
    assert os.path.getsize(db_path) <= 8 * bound  # the index too, once merged: measured 3 to 5
    assert "holds past its bound of 0.5 MiB; pruning the oldest messages" in caplog.text
    assert ServerSettings().max_history_mb == MAX_HISTORY_MB and 0 < MAX_HISTORY_MB <= 1024


def test_the_server_bounds_its_history_file_by_default(start_server, tmp_path):
    server = start_server(history_path=str(tmp_path / "h.db"))
    assert server.history.max_bytes == MAX_HISTORY_MB << 20
    unbounded = start_server(history_path=str(tmp_path / "u.db"), max_history_mb=0)
    assert unbounded.history.max_bytes is None


# -- files someone else placed or may write --------------------------------------------------------

def test_a_database_others_may_write_is_refused_and_left_alone(db_path):
    HistoryStore.open(db_path).close()
    db_path.chmod(0o666)
    before = db_path.read_bytes()
    assert refusal(db_path) == (f"history database {db_path} may be written by other users (mode 0666): "
                                f"refusing it; chmod go-w it or choose --history PATH")
    assert db_path.read_bytes() == before


def test_a_directory_others_may_write_is_refused_even_if_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    for mode in (0o770, 0o1777):
        shared.chmod(mode)
        assert refusal(shared / "history.db") == (
            f"history directory {shared} may be written by other users (mode {mode:04o}): refusing it; "
            f"chmod go-w it or choose --history PATH")
    assert list(shared.iterdir()) == []


def test_a_symlink_at_the_lock_path_is_never_followed(db_path, tmp_path):
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    os.symlink(victim, f"{db_path}.lock")
    assert refusal(db_path) == (f"history lock file {db_path}.lock is a symbolic link: refusing to "
                                f"follow it; remove it or choose --history PATH")
    assert victim.read_text() == "keep me\n"


def test_a_write_ahead_log_others_may_write_is_refused(db_path):
    HistoryStore.open(db_path).close()
    wal = Path(f"{db_path}-wal")
    wal.write_bytes(b"")
    wal.chmod(0o622)
    assert refusal(db_path).startswith(f"history file {wal} may be written by other users (mode 0622)")


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")


def test_a_database_another_user_made_is_refused(db_path, as_root):
    """The attack: another user makes the file first, so as to read what the server keeps in it."""
    HistoryStore.open(db_path).close()
    os.chown(db_path, OTHER_UID, OTHER_UID)
    assert refusal(db_path) == (f"history database {db_path} belongs to another user (uid {OTHER_UID}): "
                                f"refusing it, as they could read or change it; choose --history PATH")


def test_a_directory_another_user_owns_is_refused(tmp_path, as_root):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    assert refusal(theirs / "history.db").startswith(
        f"history directory {theirs} belongs to another user (uid {OTHER_UID})")
    assert list(theirs.iterdir()) == []


def test_a_lock_file_another_user_placed_is_refused(db_path, as_root):
    Path(f"{db_path}.lock").write_text("")
    os.chown(f"{db_path}.lock", OTHER_UID, OTHER_UID)
    assert refusal(db_path).startswith(f"history lock file {db_path}.lock belongs to another user")


def test_a_symlink_to_nowhere_is_refused_in_one_line(db_path, tmp_path):
    os.symlink(tmp_path / "gone" / "history.db", db_path)
    assert refusal(db_path) == f"cannot use history directory {tmp_path / 'gone'}: no such file or directory"


def test_a_private_database_reached_by_a_symlink_is_used(tmp_path):
    (tmp_path / "disk").mkdir(mode=0o700)
    real = tmp_path / "disk" / "history.db"
    HistoryStore.open(real).close()
    os.symlink(real, tmp_path / "history.db")
    with HistoryStore.open(tmp_path / "history.db") as store:
        store.append("lobby", "alice", "message", "through the link")
    assert stored_messages(real) == [("alice", "through the link")]


# -- figures, not tests: PYTHONPATH=.:tests python tests/server/test_hostile_history.py [MB] -------

def measure(path: Path, megabytes: int) -> None:
    """Fill a room with ``megabytes`` of varied text, then time searches and replays alone and
    with 8 threads searching."""
    rng = random.Random(1)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(20_000)]
    started = time.perf_counter()
    with HistoryStore.open(path, max_bytes=None) as store:
        size = 0
        while size < megabytes << 20:
            lines = [" ".join(rng.choices(words, k=rng.randint(3, 30)))
                     for _ in range(rng.choice((1, 5, 20)))]
            store.extend("big", "u", "message", lines)
            store.wait_for_room()
            size += sum(map(len, lines))
    print(f"filled {megabytes} MB in {time.perf_counter() - started:.0f}s; file "
          f"{os.path.getsize(path) >> 20} MB")
    with HistoryStore.open(path, max_bytes=None) as store:
        for needle in ("zzzq", "abc d", "qwe", "ab"):
            times = []
            for _ in range(3):
                started = time.perf_counter()
                found = len(store.search("big", needle))
                times.append(time.perf_counter() - started)
            print(f"search {needle!r}: {found} found in {min(times) * 1000:.1f}-{max(times) * 1000:.1f} ms")

        def replays(label: str) -> None:
            waits = []
            for n in range(40):
                started = time.perf_counter()
                store.recent("big", 20 if n % 2 else 500)
                waits.append(time.perf_counter() - started)
            print(f"{label}: replay median {statistics.median(waits) * 1000:.1f} ms, "
                  f"max {max(waits) * 1000:.1f} ms")

        replays("alone")
        stop, searches = threading.Event(), [0]

        def search(needle: str) -> None:
            while not stop.is_set():
                store.search("big", needle)
                searches[0] += 1

        crowd = [threading.Thread(target=search, args=(("zzzq", "abc d", "qwe", "ab")[n % 4],))
                 for n in range(8)]
        for thread in crowd:
            thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        replays("8 searching")
        elapsed = time.perf_counter() - started
        stop.set()
        for thread in crowd:
            thread.join()
        print(f"searches meanwhile: {searches[0]} ({searches[0] / (elapsed + 0.5):.0f}/s)")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        measure(Path(scratch, "big.db"), int(sys.argv[1]) if len(sys.argv) > 1 else 50)
