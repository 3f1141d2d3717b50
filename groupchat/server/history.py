"""Durable room history: every room message kept in SQLite, without any sender waiting on the disk.

Handler threads call :meth:`HistoryStore.append`, which only puts the message on a queue.
One writer thread owns the write connection: it takes everything queued, inserts it in one
transaction and commits, then takes whatever queued up meanwhile (group commit).  No timer is
needed: while messages wait, a commit is always under way, so a ``kill -9`` loses only what
was appended during the last commit or two (``PYTHONPATH=. python tests/test_history.py``
measures it).  Commits use ``synchronous=FULL`` in WAL mode, so what is committed survives a
power cut too; the fsync is paid by the writer thread, never by a sender.

The lines a sender's one read brings (a busy sender's hundreds) are one row: their texts
joined by newlines, which no message holds, with consecutive ids from the row's.  A row costs
SQLite the same whether it holds one message or hundreds, so a flood costs history almost
nothing; reads take rows apart into messages again.

Searches use a trigram index (SQLite's FTS5) of the rows' case-folded text, on connections of
their own, so however many search at once, replays and ``/history`` never wait for them.  The
file is kept within a size bound by pruning the oldest rows, and the messages waiting for a
disk that refuses them within a bound in bytes.

Private messages are never stored: callers pass room lines only, and :meth:`HistoryStore.append`
refuses every kind but "message", "action" (``/me``) and "notice".

A database that cannot be used safely (held by another server, not SQLite, damaged, unreadable,
read-only, on a full disk, or one that another user owns or may write, as ssh refuses such
files) is refused when it is opened, with one line saying what to do, and is never written
to: history is never "repaired" by overwriting it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, TypeVar, Union

from groupchat.errors import HistoryError
from groupchat.protocol import LINE_ACTION, LINE_MESSAGE, LINE_NOTICE, MAX_HISTORY, MAX_SEARCH, name_key

log = logging.getLogger(__name__)

DEFAULT_FILE_NAME = "history.db"
KINDS = frozenset({LINE_MESSAGE, LINE_ACTION, LINE_NOTICE})  # never LINE_PRIVATE
# Messages held in memory while the disk refuses them; past this many, or this many bytes of
# them, the oldest are dropped, counted and logged.
MAX_PENDING = 100_000
MAX_PENDING_BYTES = 64 << 20
ROW_OVERHEAD_BYTES = 200  # what a queued row costs Python besides its strings
# How long the writer lets messages gather before a commit: at a chat's usual pace this
# turns a commit (and fsync, and a new segment of the search index) per message into one per
# window, for a crash window this long.  A read or a flush does not wait it out: see _hurry.
COMMIT_WINDOW_SECONDS = 0.05
READERS = 4  # read-only connections kept open for replays and /history
SEARCHERS = 2  # and apart from those, for /search: searches wait for each other, never replays
# A search shorter than a trigram cannot use the index; it reads this many of the room's newest rows.
SCAN_ROWS = 20_000
TRIGRAMS_PER_SEARCH = 16  # a long search looks up this many of its trigrams, then checks each row
# Oldest text pruned per step while the messages are past their size bound: a step re-reads
# it for the index, so a bounded step keeps the writer's pause short.
PRUNE_STEP_BYTES = 1 << 20
# Pages of the index merged after each delete: until merged, what was deleted from it stays,
# and it would grow with everything ever written.
MERGE_PAGES = 500
JOURNAL_SIZE_LIMIT = 64 << 20  # the write-ahead log is cut back to this after a big transaction
# Past this many waiting, senders are slowed (see wait_for_room) rather than history lost:
# only a flood faster than the disk, with flood control off, gets here.
HIGH_WATER = 2_000
MAX_MEMORY_MESSAGES = 100_000  # an in-memory store keeps about the newest this many (whole rows)
RETRY_SECONDS = 1.0  # how often a refused write is tried again
PRUNE_INTERVAL_SECONDS = 3600.0
# A read waits at most this long for earlier appends to be committed, so a line just seen is found.
READ_WAIT_SECONDS = 1.0
FLUSH_SECONDS = 5.0
CLOSE_SECONDS = 10.0
# Less free space than this at open counts as a full disk: the server would fail on its first commit.
MIN_FREE_BYTES = 1 << 20

SCHEMA_VERSION = 3  # PRAGMA user_version; a later schema migrates from the number it finds
UNINDEXED_VERSION = 2  # where an SQLite without FTS5's trigrams stops: no search index
APPLICATION_ID = 0x67636874  # "gcht" in PRAGMA application_id: this file is groupchat history
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = f"""
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never go back, even after pruning
    room_key TEXT NOT NULL,  -- the room as rooms are compared: protocol.name_key(room)
    room TEXT NOT NULL,
    time REAL NOT NULL,
    sender TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,  -- one message per line
    lines INTEGER NOT NULL DEFAULT 1  -- messages in the row: ids id .. id + lines - 1
);
CREATE INDEX messages_by_room ON messages (room_key, id);
CREATE INDEX messages_by_time ON messages (time);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {UNINDEXED_VERSION};
"""
# Schema 1 kept one message per row, each with lines = 1 in schema 2's terms.
_MIGRATE_FROM_1 = """
ALTER TABLE messages ADD COLUMN lines INTEGER NOT NULL DEFAULT 1;
PRAGMA user_version = 2;
"""
# Schema 3 adds the search index: every row's text, case-folded, as trigrams; contentless (the
# text is in messages) and without positions (detail=none), so it costs about the text's size
# again rather than four times it.  The writer keeps it in step: SQLite alone cannot, as it
# does not know Python's case folding.
_MIGRATE_FROM_2 = f"""
CREATE VIRTUAL TABLE messages_search USING fts5(text, content='', detail=none, tokenize='trigram');
INSERT INTO messages_search (rowid, text) SELECT id, casefold(text) FROM messages;
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INDEX = "INSERT INTO messages_search (rowid, text) VALUES "
_INSERT = "INSERT INTO messages (id, room_key, room, time, sender, kind, text, lines) VALUES "
# Rows per INSERT statement: one statement for many rows costs far less per row than
# executemany's one per row, and 8 x 120 parameters stay under old SQLite's limit of 999.
ROWS_PER_INSERT = 120
ID_BLOCK = 10_000  # ids recorded ahead of those given: a restart skips at most this many
ANSWER_BYTES = 64 * 1024  # text one answer of missed lines holds at most (see after)
_COLUMNS = "messages.id, room, time, sender, kind, messages.text, lines"
_DAMAGED = "refusing to touch it; move it away or choose --history PATH"

_Row = tuple[int, str, str, float, str, str, str, int]  # as _INSERT has them
_T = TypeVar("_T")


class Entry(NamedTuple):
    """One stored room message."""

    id: int  # increases with every message, across rooms
    room: str  # the room's name as it was spelled then
    time: float  # seconds since the epoch
    sender: str
    kind: str  # "message", "action" or "notice"
    text: str


class Batch(NamedTuple):
    """Messages of one sender and kind, checked and joined into one row's text."""

    kind: str
    text: str  # one message per line
    count: int

    @classmethod
    def of(cls, kind: str, texts: Sequence[str]) -> Batch:
        """Check and join ``texts``; ValueError for a kind never kept, none at all, or a newline."""
        if kind not in KINDS:
            raise ValueError(f"history keeps only {sorted(KINDS)} lines, not {kind!r}")
        if not texts:
            raise ValueError("no messages to keep")
        text = "\n".join(texts)
        if text.count("\n") != len(texts) - 1:
            raise ValueError("history keeps one line per message")
        return cls(kind, text, len(texts))


def default_history_path() -> Path:
    """Where history lives unless told otherwise: ``$XDG_DATA_HOME/groupchat/history.db``.

    ``XDG_DATA_HOME`` counts only if absolute (as the XDG spec says); else ``~/.local/share``.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    data = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return data / "groupchat" / DEFAULT_FILE_NAME


class HistoryStore:
    """Room messages, saved by one writer thread, read back by anyone.

    Make one with :meth:`open` (a file, locked against a second server) or :meth:`in_memory`
    (nothing on disk: replay works within the run).  Any thread may call :meth:`append`,
    :meth:`recent`, :meth:`search` and :meth:`flush`; call :meth:`close` once, after the last
    append, to save everything and release the file.  Subclasses may change the class attributes.
    """

    max_pending = MAX_PENDING
    max_pending_bytes = MAX_PENDING_BYTES
    high_water = HIGH_WATER
    commit_window = COMMIT_WINDOW_SECONDS
    retry_interval = RETRY_SECONDS
    prune_interval = PRUNE_INTERVAL_SECONDS
    prune_step = PRUNE_STEP_BYTES
    search_index = True  # index searches if SQLite can; False searches as an SQLite without FTS5 does

    def __init__(self, db: sqlite3.Connection, path: Optional[Path], lock_fd: Optional[int],
                 retention: Optional[float], keep_at_most: Optional[int],
                 max_bytes: Optional[int] = None) -> None:
        """Take over an open, checked connection; use :meth:`open` or :meth:`in_memory`."""
        self.path = path
        self.retention = retention
        self.max_bytes = max_bytes
        self._db = db
        self._indexed = _indexed(db)
        self._lock_fd = lock_fd
        self._keep_at_most = keep_at_most
        self._db_lock = threading.Lock()  # the writer's transaction vs. in-memory readers
        self._lock = threading.Lock()  # the queue and the counters below
        self._wake = threading.Condition(self._lock)  # the writer waits for work
        self._progress = threading.Condition(self._lock)  # flushes and reads wait for commits
        self._queue: collections.deque[_Row] = collections.deque()
        self._queued = 0  # messages in the queue's rows
        self._queued_bytes = 0  # and the memory they take (see _row_bytes)
        self._next_id = _last_id(db) + 1  # given out by append, so callers know it at once
        # Ids are recorded a block ahead of those given, so a process killed before its last
        # messages were saved never gives their ids again (a client asking for what came after
        # one of them would miss the new ones): the block now, and the next whenever the ids
        # given pass half of it.
        self._recorded = self._next_id - 1 + ID_BLOCK
        with _transaction(db):
            _raise_sequence(db, self._recorded)
        self._text_bytes = _text_bytes(db, "id > ?", 0) if max_bytes else 0  # the writer's to keep
        self._appended = 0
        self._saved = 0
        self._dropped = 0
        self._lost = _Loss()  # dropped since the disk began refusing, for the log
        self._failing = False
        self._closing = False
        self._sequence_due = False  # ids were reserved since the writer last recorded the sequence
        self._hurry = False  # someone waits for the queue to be saved: commit without the window
        self._pruned_for_size = False  # logged once a run
        self._readers = _Connections(path, READERS, db, self._db_lock)
        self._searchers = _Connections(path, SEARCHERS, db, self._db_lock)
        self._writer = threading.Thread(target=self._write_until_closed, name="history-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, path: Union[str, Path], retention: Optional[float] = None,
             max_bytes: Optional[int] = None) -> HistoryStore:
        """Open or create the history file at ``path``, or raise :class:`HistoryError` saying why not.

        ``retention`` is in seconds: older messages are pruned now and every
        ``prune_interval``; None keeps everything.  Past ``max_bytes`` of text (UTF-8) in
        its messages (None: no bound), the oldest are pruned as new ones are saved.
        """
        path = Path(path).expanduser().absolute()
        _make_directory(path.parent)
        _check_private(path)
        _check_space(path)
        lock_fd = _lock(path)
        try:
            db = _open_database(path, retention, cls.search_index)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(db, path, lock_fd, retention, keep_at_most=None, max_bytes=max_bytes)

    @classmethod
    def in_memory(cls, retention: Optional[float] = None,
                  keep_at_most: int = MAX_MEMORY_MESSAGES) -> HistoryStore:
        """A store that writes nothing to disk (``--no-history``) and keeps about the newest
        ``keep_at_most`` (whole rows, so up to a batch more or fewer)."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _prepare(db, None, cls.search_index)
        return cls(db, None, None, retention, keep_at_most)

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing: any thread --------------------------------------------------------------

    def append(self, room: str, sender: str, kind: str, text: str,
               when: Optional[float] = None) -> Optional[int]:
        """Queue one room message to be saved; never waits.  Return its id; None (ignored)
        once closing.

        ``when`` is in seconds since the epoch, now if None.  Ids are given in the order of
        the calls, so each sender's messages come back in the order it said them, and a
        caller can tell what was appended before a point (see :attr:`next_id`).
        """
        return self.extend(room, sender, kind, [text], when)

    def extend(self, room: str, sender: str, kind: str, texts: Sequence[str],
               when: Optional[float] = None) -> Optional[int]:
        """:meth:`append` several messages of one sender and kind at once; return the first id.

        They become one row, for one lock and one insert: a busy room's lines come in batches.
        """
        return self.add(room, sender, Batch.of(kind, texts), when)

    def add(self, room: str, sender: str, batch: Batch, when: Optional[float] = None,
            first: Optional[int] = None) -> Optional[int]:
        """:meth:`extend` with a batch made beforehand, so that a caller holding a lock of its
        own (the chat holds the registry's) does only this quick part under it.  ``first``: the
        id given elsewhere (a cluster's Redis); later ids are past it."""
        key = name_key(room)
        row_time = time.time() if when is None else when
        with self._lock:
            if self._closing:
                return None
            first = self._next_id if first is None else first
            self._next_id = max(self._next_id, first + batch.count)
            row = (first, key, room, row_time, sender, batch.kind, batch.text, batch.count)
            self._queue.append(row)
            self._appended += batch.count
            self._queued += batch.count
            self._queued_bytes += _row_bytes(row)
            began_dropping = self._drop_past_max_pending()
            if len(self._queue) == 1:  # the writer sleeps only when the queue is empty
                self._wake.notify()
        if began_dropping:
            self._log_dropping()
        return first

    def reserve(self, count: int = 1, first: Optional[int] = None) -> int:
        """Take ``count`` ids from the messages' sequence for events not kept (joins, leaves, a
        /nick, a private message), so every event's id increases with the messages'; return
        the first (``first`` when given elsewhere: a cluster's Redis).  The writer records the
        sequence soon, so no id is given twice, even after a restart."""
        with self._lock:
            first = self._next_id if first is None else first
            self._next_id = max(self._next_id, first + count)
            if not self._sequence_due:
                self._sequence_due = True
                self._wake.notify()
            return first

    def wait_for_room(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait, if the writer has fallen :attr:`high_water` messages behind, until it catches up.

        Backpressure for a flood faster than the disk: call it before appending, holding no
        lock, and the flooder slows instead of history being dropped.  It never waits while
        the disk refuses writes (those messages are held, see :attr:`max_pending`).
        """
        def room() -> bool:  # counted: queued, and taken by the writer but not yet committed
            return (self._appended - self._saved - self._dropped < self.high_water
                    or self._failing or self._closing)

        if room():  # the usual case, per message: no lock taken
            return
        with self._lock:
            self._progress.wait_for(room, timeout)

    @property
    def next_id(self) -> int:
        """The id the next append will get: everything appended so far has a smaller one."""
        with self._lock:
            return self._next_id

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until everything appended before this call is on disk.

        False if that did not happen within ``timeout`` or the disk is refusing writes (the
        messages are then held and retried, see :attr:`max_pending`).
        """
        return self._wait_for_writer(timeout)

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """Save everything appended so far, stop the writer and release the file.

        Returns True if nothing appended was lost.  Appends after this are ignored, so call it
        once the server has stopped relaying (Ctrl-D, SIGINT, SIGTERM).
        """
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("history: %s did not finish saving within %gs", self.path, timeout)
            return False
        self._db.close()
        self._readers.close()
        self._searchers.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        return self._saved == self._appended

    @property
    def dropped(self) -> int:
        """Messages lost so far: dropped past :attr:`max_pending`, or unsaved at close."""
        return self._dropped

    @property
    def indexed(self) -> bool:
        """Whether searches use the index (else they read the room)."""
        return self._indexed

    # -- reading: any thread --------------------------------------------------------------

    def recent(self, room: str, limit: int = MAX_HISTORY, before: Optional[int] = None) -> list[Entry]:
        """The last ``limit`` (at most ``MAX_HISTORY``) messages in ``room``, oldest first;
        with ``before``, only those with a smaller id."""
        limit = _cap(limit, MAX_HISTORY)
        before = sys.maxsize if before is None else before
        rows = self._read(  # each row holds at least one message, so ``limit`` rows are enough
            self._readers,
            f"SELECT {_COLUMNS} FROM messages WHERE room_key = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (name_key(room), before, limit), list)
        newest_first = [entry for entry in _newest_first(rows) if entry.id < before][:limit]
        return newest_first[::-1]

    def after(self, room: str, after: int, limit: int = MAX_HISTORY,
              before: Optional[int] = None) -> tuple[list[Entry], int]:
        """The first ``limit`` (at most ``MAX_HISTORY``) messages in ``room`` with an id past
        ``after`` (and below ``before``), oldest first, and how many such messages there are
        in all: what someone who saw up to ``after`` missed."""
        limit = _cap(limit, MAX_HISTORY)
        before = sys.maxsize if before is None else before
        key = name_key(room)

        def read(db: sqlite3.Connection) -> tuple[list[Entry], int]:
            # A row holds a batch of messages: the one holding ``after`` may hold later ones.
            holding = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE room_key = ? AND id <= ?"
                                 " ORDER BY id DESC LIMIT 1", (key, after)).fetchall()
            later = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE room_key = ? AND id > ? AND id < ?"
                               " ORDER BY id LIMIT ?", (key, after, before, limit)).fetchall()
            (total,) = db.execute("SELECT coalesce(sum(lines), 0) FROM messages WHERE room_key = ?"
                                  " AND id > ? AND id < ?", (key, after, before)).fetchone()
            partial = [entry for entry in _oldest_first(holding) if after < entry.id < before]
            entries = (partial + list(_oldest_first(later)))[:limit]
            # The answer is not droppable (it is what a slow reader asked for): bounded in bytes
            # too, it fits a reader's queue, and the count tells how much more there is.
            sizes = itertools.accumulate(len(entry.text) for entry in entries)
            kept = next((n for n, size in enumerate(sizes) if size > ANSWER_BYTES), len(entries))
            return entries[:max(1, kept)], total + len(partial)

        return self._use(self._readers, read)

    def search(self, room: str, text: str, limit: int = MAX_SEARCH) -> list[Entry]:
        """Messages in ``room`` containing ``text`` ignoring case, newest first, at most ``MAX_SEARCH``.

        ``text`` is plain text: "%", "_", "\\" and '"' match only themselves.  Case is ignored
        the Unicode way (``str.casefold``: "STRASSE" finds "Straße").  Text of three characters
        or more is looked up in the index; shorter text is looked for in the room's newest
        ``SCAN_ROWS`` rows (without an index, the text is looked for in the whole room).
        """
        needle = text.casefold()
        limit = _cap(limit, MAX_SEARCH)

        def pick(rows: Iterator[tuple]) -> list[Entry]:  # the index finds rows that may match
            found = (entry for row in rows for entry in _newest_first([row])
                     if needle in entry.text.casefold())
            return list(itertools.islice(found, limit))

        return self._read(self._searchers, *self._search_query(name_key(room), needle), pick)

    def _search_query(self, room_key: str, needle: str) -> tuple[str, tuple]:
        """SQL for the rows of a room that may hold ``needle`` (case-folded), newest first."""
        if not self._indexed:
            return (f"SELECT {_COLUMNS} FROM messages WHERE room_key = ?"
                    " AND instr(casefold(text), ?) > 0 ORDER BY id DESC", (room_key, needle))
        if len(needle) < 3:
            return (f"SELECT {_COLUMNS} FROM messages WHERE room_key = ? ORDER BY id DESC LIMIT ?",
                    (room_key, SCAN_ROWS))
        return (f"SELECT {_COLUMNS} FROM messages_search CROSS JOIN messages"  # CROSS: the index
                " ON messages.id = messages_search.rowid"  # leads, newest first, and stops early
                " WHERE messages_search MATCH ? AND room_key = ? ORDER BY messages_search.rowid DESC",
                (_trigram_query(needle), room_key))

    def _read(self, connections: _Connections, sql: str, args: tuple,
              pick: Callable[[Iterator[tuple]], _T]) -> _T:
        """``pick`` what it needs from the rows of a query, on one of ``connections``."""
        return self._use(connections, lambda db: pick(db.execute(sql, args)))

    def _use(self, connections: _Connections, use: Callable[[sqlite3.Connection], _T]) -> _T:
        """``use`` one of ``connections``, once what was appended before is saved."""
        self._wait_for_writer(READ_WAIT_SECONDS)  # a line the reader just saw is found
        try:
            with connections.lend() as db:
                return use(db)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read history database {self.path}: {exc}") from exc

    def _wait_for_writer(self, timeout: float) -> bool:
        with self._lock:
            target = self._appended
            if self._saved + self._dropped < target:  # what it waits for is not kept waiting
                self._hurry = True
                self._wake.notify()
            self._progress.wait_for(
                lambda: self._saved + self._dropped >= target or self._failing, timeout)
            return self._saved + self._dropped >= target and not self._failing

    # -- the writer thread ----------------------------------------------------------------

    def _write_until_closed(self) -> None:
        """Save what is queued, one transaction per batch, until closed; between batches keep
        the file within its bounds: its size a step at a time, its retention now and then."""
        next_prune = time.monotonic() + self.prune_interval
        over_size = self._prune_step_for_size()
        while True:
            with self._lock:
                if self._failing:
                    self._wake.wait_for(lambda: self._closing, self.retry_interval)
                else:
                    self._wake.wait_for(lambda: self._closing or self._queue or self._sequence_due,
                                        0 if over_size else None if self.retention is None
                                        else max(0.0, next_prune - time.monotonic()))
                    if self._queue and not self._closing:  # let a group gather: one commit for it
                        self._wake.wait_for(lambda: self._closing or self._hurry, self.commit_window)
                self._hurry = False
                rows = list(self._queue)
                self._queue.clear()
                self._queued = self._queued_bytes = 0
                closing, failing = self._closing, self._failing
                reserved = 0
                if self._next_id + ID_BLOCK // 2 > self._recorded:
                    reserved = self._recorded = self._next_id - 1 + ID_BLOCK
                self._sequence_due = False
            if rows or reserved:
                self._save(rows, final=closing, reserved=reserved)
            if closing:
                return
            if self.retention is not None and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.prune_interval
                self._prune("time < ?", time.time() - self.retention)
            over_size = not failing and self._prune_step_for_size()

    def _prune_step_for_size(self) -> bool:
        """Prune the oldest :attr:`prune_step` bytes of text if the messages hold more than
        :attr:`max_bytes`; return whether it did (and so may still be past it).

        Counted in text, not in the file's pages: the index keeps what is deleted from it
        until SQLite merges its segments, so the pages would say to prune everything.
        """
        if self.max_bytes is None or self._text_bytes <= self.max_bytes:
            return False
        try:
            with self._db_lock:
                cut = _id_past_oldest(self._db, self.prune_step)
        except sqlite3.Error as exc:
            log.error("history: cannot prune %s: %s", self.path, exc)
            return False
        if cut is None:
            return False
        if not self._pruned_for_size:
            self._pruned_for_size = True
            log.info("history: %s holds past its bound of %g MiB; pruning the oldest messages",
                     self.path, self.max_bytes / (1 << 20))
        return self._prune("id < ?", cut)

    def _prune(self, where: str, bound: float) -> bool:
        try:
            with self._db_lock:
                self._text_bytes -= _prune(self._db, where, bound, self._indexed)
            return True
        except sqlite3.Error as exc:
            log.error("history: cannot prune %s: %s", self.path, exc)
            return False

    def _save(self, rows: list[_Row], final: bool, reserved: int = 0) -> None:
        """Insert ``rows``, and record ids given up to ``reserved`` (see :meth:`reserve`)."""
        try:
            with self._db_lock, _transaction(self._db):
                _insert(self._db, rows, self._indexed)
                if reserved:
                    _raise_sequence(self._db, reserved)
                if self._keep_at_most is not None:
                    _delete(self._db, "id <= (SELECT max(id) FROM messages) - ?",  # by rowid: no scan
                            self._keep_at_most, self._indexed)
        except sqlite3.Error as exc:
            self._hold(rows, exc, final)
            return
        self._text_bytes += sum(len(row[6].encode()) for row in rows)
        with self._lock:
            self._saved += _messages(rows)
            recovered, self._failing = self._failing, False
            dropped, lost, self._lost = self._dropped, self._lost, _Loss()
            self._progress.notify_all()
        if recovered or lost.messages:
            log.warning("history: saving to %s again; %d unsaved messages (%d bytes of text) were "
                        "dropped meanwhile, %d in all", self.path or "memory", lost.messages,
                        lost.bytes, dropped)

    def _hold(self, rows: list[_Row], exc: sqlite3.Error, final: bool) -> None:
        """Keep rows the disk refused, to retry (the oldest dropped past ``max_pending`` or
        ``max_pending_bytes``); on the last try, count them lost.  Logged once per failure,
        not once per retry."""
        began_dropping = False
        with self._lock:
            self._sequence_due, self._recorded = True, 0  # not recorded: again with the next save
            if final:
                self._dropped += _messages(rows)
            else:
                self._queue.extendleft(reversed(rows))
                self._queued += _messages(rows)
                self._queued_bytes += sum(map(_row_bytes, rows))
                began_dropping = self._drop_past_max_pending()
            first, self._failing = not self._failing, True
            self._progress.notify_all()
        if final:
            log.error("history: %d messages could not be saved to %s: %s", _messages(rows), self.path,
                      exc)
        elif first:
            log.error("history: cannot save to %s: %s; holding up to %d messages (%d MiB) in memory "
                      "and retrying every %gs", self.path, exc, self.max_pending,
                      self.max_pending_bytes >> 20, self.retry_interval)
        if began_dropping:
            self._log_dropping()

    def _drop_past_max_pending(self) -> bool:
        """Drop the oldest queued rows, counted as lost, while more than :attr:`max_pending`
        messages or :attr:`max_pending_bytes` wait, so memory stays bounded; call it holding
        ``self._lock``.  True if these are the first dropped since the disk began refusing."""
        first = not self._lost.messages
        while self._queued > self.max_pending or self._queued_bytes > self.max_pending_bytes:
            row = self._queue.popleft()
            self._dropped += row[-1]
            self._queued -= row[-1]
            self._queued_bytes -= _row_bytes(row)
            self._lost = _Loss(self._lost.messages + row[-1], self._lost.bytes + len(row[6].encode()))
        return first and bool(self._lost.messages)

    def _log_dropping(self) -> None:
        log.warning("history: dropping the oldest unsaved messages for %s past %d (%d MiB) held in "
                    "memory; how many is logged once it saves again", self.path or "memory", self.max_pending,
                    self.max_pending_bytes >> 20)


class _Loss(NamedTuple):
    """Messages dropped unsaved, and the bytes of their text."""

    messages: int = 0
    bytes: int = 0


class _Connections:
    """Connections for reading, lent to one thread at a time: a few read-only ones kept for a
    file (WAL lets them run beside the writer), opened as needed up to ``size``; or, for an
    in-memory store, its one database, taken in turn with the writer.  Keeping a few, rather
    than one per read, bounds the memory and the cost of a crowd joining at once."""

    def __init__(self, path: Optional[Path], size: int, shared: sqlite3.Connection,
                 shared_lock: threading.Lock) -> None:
        self._path = path
        self._size = size
        self._shared = shared
        self._shared_lock = shared_lock
        self._free = threading.Condition()  # guards the two below
        self._idle: list[sqlite3.Connection] = []
        self._open = 0

    @contextlib.contextmanager
    def lend(self) -> Iterator[sqlite3.Connection]:
        if self._path is None:
            with self._shared_lock:
                yield self._shared
            return
        with self._free:
            db = self._idle.pop() if self._idle else None
            if db is None and self._open < self._size:
                self._open += 1
            elif db is None:
                self._free.wait_for(lambda: self._idle)
                db = self._idle.pop()
        if db is None:
            db = sqlite3.connect(f"{self._path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
            _add_functions(db)
        try:
            yield db
        finally:
            with self._free:
                self._idle.append(db)
                self._free.notify()

    def close(self) -> None:
        with self._free:
            for db in self._idle:
                db.close()
            self._idle.clear()


def _row_bytes(row: _Row) -> int:
    """About what a queued row holds in memory: its strings and the rest."""
    return (sys.getsizeof(row[2]) + sys.getsizeof(row[4]) + sys.getsizeof(row[6])
            + ROW_OVERHEAD_BYTES)


def _cap(limit: int, most: int) -> int:
    return max(0, min(limit, most))


# -- opening a file: each step refuses with one line a person can act on --------------------

def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(f"cannot create directory {directory} for history: "
                             f"{_reason(exc)}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise HistoryError(f"history directory {directory} is read-only (the lock file and "
                             f"write-ahead log go there); choose --history PATH")


def _check_private(path: Path) -> None:
    """Refuse, as ssh does its files, a history directory or file that another user owns or
    may write: they could read the chat, change it, or swap its files.  The directory may also
    be root's; a database that is a symbolic link is checked where it points."""
    real = Path(os.path.realpath(path))
    try:
        _check_owner(real.parent, "history directory", os.stat(real.parent), os.geteuid(), 0)
    except OSError as exc:  # a link to a directory that is not there
        raise HistoryError(f"cannot use history directory {real.parent}: {_reason(exc)}") from None
    for each in (real, Path(f"{real}-wal"), Path(f"{real}-shm")):
        with contextlib.suppress(FileNotFoundError):
            _check_owner(each, "history database" if each == real else "history file",
                         os.lstat(each), os.geteuid())


def _check_owner(path: Path, what: str, status: os.stat_result, *owners: int) -> None:
    """Refuse ``path`` unless it is a directory or plain file that one of ``owners`` owns and
    no one else may write."""
    if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
        raise HistoryError(f"{what} {path} is not a plain file: refusing to follow it; "
                           f"remove it or choose --history PATH")
    if status.st_uid not in owners:
        raise HistoryError(f"{what} {path} belongs to another user (uid {status.st_uid}): "
                           f"refusing it, as they could read or change it; choose --history PATH")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise HistoryError(f"{what} {path} may be written by other users "
                           f"(mode {stat.S_IMODE(status.st_mode):04o}): refusing it; "
                           f"chmod go-w it or choose --history PATH")


def _check_space(path: Path) -> None:
    space = os.statvfs(path.parent)
    if space.f_bavail * space.f_frsize < MIN_FREE_BYTES:
        raise HistoryError(f"cannot use history database {path}: the disk is full")


def _lock(path: Path) -> int:
    """Hold ``PATH.lock`` exclusively until closed (the kernel lets go if the process dies), so a
    second server on the same file is refused rather than sharing it.  A symbolic link there is
    never followed (writing the pid would truncate its target), nor another user's file used."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HistoryError(f"history lock file {lock_path} is a symbolic link: refusing to "
                               f"follow it; remove it or choose --history PATH") from None
        raise HistoryError(f"cannot create the history lock file {lock_path}: {_reason(exc)}") from None
    try:
        _check_owner(Path(lock_path), "history lock file", os.fstat(fd), os.geteuid())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except HistoryError:
        os.close(fd)
        raise
    except OSError as exc:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise HistoryError(f"cannot lock {lock_path}: {_reason(exc)}") from None
        raise HistoryError(f"history database {path} is in use by another groupchat server"
                             + (f" (pid {holder})" if holder else "")) from None
    with contextlib.suppress(OSError):  # only a hint for the next one: who holds it
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _check_file(path: Path) -> None:
    """Refuse what SQLite would misread or fail on later: checked before SQLite opens the file."""
    try:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        # Made here, not by SQLite, to keep chat history private to its owner.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise HistoryError(f"cannot create history database {path}: {_reason(exc)}") from None
        return
    except OSError as exc:
        raise HistoryError(f"cannot read history database {path}: {_reason(exc)}") from None
    if header and header != _SQLITE_MAGIC:  # an empty file is an empty database
        raise HistoryError(f"history database {path} is not a SQLite database (corrupt?): {_DAMAGED}")
    if not os.access(path, os.W_OK):
        raise HistoryError(f"history database {path} is read-only; choose --history PATH")


def _open_database(path: Path, retention: Optional[float], search_index: bool) -> sqlite3.Connection:
    _check_file(path)
    db = None
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, isolation_level=None,
                             check_same_thread=False)
        _prepare(db, path, search_index)
        if retention is not None:
            _prune(db, "time < ?", time.time() - retention, _indexed(db))
        return db
    except BaseException as exc:
        if db is not None:
            db.close()
        if isinstance(exc, sqlite3.Error):
            raise _explain(path, exc) from None
        raise


def _prepare(db: sqlite3.Connection, path: Optional[Path], search_index: bool) -> None:
    """Check the database is groupchat history of a schema we know (making it if empty), then
    set it up for the writer and bring it to the newest schema this SQLite can keep: with the
    search index if ``search_index`` and SQLite has FTS5's trigrams.  Nothing is written before
    the checks pass."""
    _add_functions(db)
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id != APPLICATION_ID and (app_id or version or tables):
        raise HistoryError(f"{path} is a SQLite database but not groupchat history: {_DAMAGED}")
    if version > SCHEMA_VERSION:
        raise HistoryError(f"history database {path} was written by a newer groupchat "
                             f"(schema {version}; this one knows {SCHEMA_VERSION}): upgrade groupchat")
    indexed = search_index and _can_index(db)
    if version == SCHEMA_VERSION and not indexed:
        raise HistoryError(f"history database {path} has a search index that this SQLite "
                           f"({sqlite3.sqlite_version}) cannot keep, lacking FTS5 trigrams: "
                           f"run groupchat with a Python whose SQLite has them")
    if path is not None:
        if tables:
            _probe(db)
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise HistoryError(f"history database {path} cannot use write-ahead logging: {_DAMAGED}")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    steps = [] if tables else [_SCHEMA]
    if version == 1:
        steps.append(_MIGRATE_FROM_1)
    if indexed and version < SCHEMA_VERSION:
        steps.append(_MIGRATE_FROM_2)
        if tables:
            log.info("history: building the search index of %s (once; about a minute per 200 MB)",
                     path)
    if steps:
        db.executescript(f"BEGIN IMMEDIATE; {''.join(steps)} COMMIT;")
    if tables and steps:
        log.info("history: %s upgraded to schema %d", path, _version(db))
    if not indexed:
        log.warning("history: no search index for %s (SQLite %s, FTS5 trigrams needed): /search "
                    "reads whole rooms", path or "memory", sqlite3.sqlite_version)


def _can_index(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has FTS5 and its trigram tokenizer (3.34 and later, if built with FTS5);
    tried on a temporary table, so the file is not touched."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.can_index USING fts5(text, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    db.execute("DROP TABLE temp.can_index")
    return True


def _version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def _indexed(db: sqlite3.Connection) -> bool:
    return _version(db) >= SCHEMA_VERSION


def _probe(db: sqlite3.Connection) -> None:
    """Read both ends of every b-tree: cheap (no full scan), and a truncated or damaged file
    fails here, at open, rather than at the first replay."""
    for sql in ("SELECT min(id), max(id) FROM messages",
                "SELECT min(time), max(time) FROM messages",
                "SELECT room_key, id FROM messages ORDER BY room_key, id LIMIT 1",
                "SELECT room_key, id FROM messages ORDER BY room_key DESC, id DESC LIMIT 1"):
        db.execute(sql).fetchall()


def _last_id(db: sqlite3.Connection) -> int:
    """The largest id ever given, pruned or not (kept in sqlite_sequence, see _prune)."""
    newest = db.execute("SELECT id + lines - 1 FROM messages ORDER BY id DESC LIMIT 1").fetchone()
    largest = newest[0] if newest else 0
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    return max(largest, row[0] if row else 0)


def _raise_sequence(db: sqlite3.Connection, last: int) -> None:
    """Record that the sequence has given ids up to ``last`` (where _last_id looks on opening)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    if row is None:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (last,))
    elif row[0] < last:
        db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'messages'", (last,))


def _insert(db: sqlite3.Connection, rows: Sequence[_Row], indexed: bool) -> None:
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        db.execute(_INSERT + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                   list(itertools.chain.from_iterable(chunk)))
        if indexed:
            db.execute(_INDEX + ",".join(["(?, ?)"] * len(chunk)),
                       [value for row in chunk for value in (row[0], row[6].casefold())])


def _delete(db: sqlite3.Connection, where: str, bound: float, indexed: bool) -> None:
    """Delete the rows ``where`` (with one parameter, ``bound``) says, and their index entries.

    A contentless index forgets a row only when told the words it was given for it, so those
    are read back first: the same ``casefold`` of the same text.  It only marks them deleted,
    until it merges the segments that hold them: a step of that merging follows each delete
    that found rows (an in-memory store calls this after every save, mostly for nothing).
    """
    if indexed:
        db.execute("INSERT INTO messages_search (messages_search, rowid, text)"
                   f" SELECT 'delete', id, casefold(text) FROM messages WHERE {where}", (bound,))
    deleted = db.execute(f"DELETE FROM messages WHERE {where}", (bound,)).rowcount
    if indexed and deleted:  # negative: merge whichever segments hold what was deleted
        db.execute("INSERT INTO messages_search (messages_search, rank) VALUES ('merge', ?)",
                   (-MERGE_PAGES,))


def _trigram_query(needle: str) -> str:
    '''An FTS5 query for the rows holding every trigram of ``needle`` (or, for a long one,
    ``TRIGRAMS_PER_SEARCH`` spread along it), each quoted so that nothing is an operator.

    >>> print(_trigram_query('1" OR x'))
    "1"" " AND """ O" AND " OR" AND "OR " AND "R x"
    '''
    grams = list(dict.fromkeys(needle[at:at + 3] for at in range(len(needle) - 2)))
    step = max(1, -(-len(grams) // TRIGRAMS_PER_SEARCH))
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams[::step])


def _text_bytes(db: sqlite3.Connection, where: str, bound: float) -> int:
    """Bytes of text (UTF-8) in the rows ``where`` says."""
    return db.execute("SELECT coalesce(sum(length(CAST(text AS BLOB))), 0) FROM messages"
                      f" WHERE {where}", (bound,)).fetchone()[0]


def _id_past_oldest(db: sqlite3.Connection, size: int) -> Optional[int]:
    """The id just past the oldest rows that hold ``size`` bytes of text; None if there are none."""
    total, last = 0, None
    for last, length in db.execute("SELECT id, length(CAST(text AS BLOB)) FROM messages ORDER BY id"):
        total += length
        if total >= size:
            break
    return None if last is None else last + 1


def _newest_first(rows: Sequence[tuple]) -> Iterator[Entry]:
    """The messages in rows that come newest first (as ``_COLUMNS`` has them)."""
    for row in rows:
        yield from reversed(list(_oldest_first([row])))


def _oldest_first(rows: Sequence[tuple]) -> Iterator[Entry]:
    """The messages in rows that come oldest first."""
    for first, room, when, sender, kind, text, _ in rows:
        for offset, line in enumerate(text.split("\n")):
            yield Entry(first + offset, room, when, sender, kind, line)


def _messages(rows: Sequence[_Row]) -> int:
    return sum(row[-1] for row in rows)


def _add_functions(db: sqlite3.Connection) -> None:
    db.create_function("casefold", 1, str.casefold, deterministic=True)


def _prune(db: sqlite3.Connection, where: str, bound: float, indexed: bool) -> int:
    """Delete the oldest messages, as ``where`` says (``time < ?`` or ``id < ?``, with ``bound``);
    return the bytes of text they held.

    AUTOINCREMENT keeps the largest row id in sqlite_sequence; the largest message id is
    its row's last, so that is kept first: ids never go back, even once every row is gone.
    """
    with _transaction(db):
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, coalesce("
                   "(SELECT id + lines - 1 FROM messages ORDER BY id DESC LIMIT 1), 0))"
                   " WHERE name = 'messages'")
        deleted = _text_bytes(db, where, bound)
        _delete(db, where, bound, indexed)
    return deleted


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction: taken at once (IMMEDIATE), so it never fails
    half-way on a lock; committed, or on an SQLite error rolled back (if SQLite has not
    already) and the error raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _explain(path: Path, exc: sqlite3.Error) -> HistoryError:
    """One line for an SQLite error at open: what is wrong with the file, and what to do.

    Told apart by SQLite's own words, which every Python version passes on unchanged.
    """
    words = str(exc)
    if "malformed" in words or "not a database" in words:
        return HistoryError(f"history database {path} is damaged ({words}): {_DAMAGED}")
    if "disk is full" in words:
        return HistoryError(f"cannot use history database {path}: the disk is full")
    if "readonly" in words:
        return HistoryError(f"history database {path} is read-only; choose --history PATH")
    if "locked" in words:
        return HistoryError(f"history database {path} is in use by another program")
    return HistoryError(f"cannot open history database {path}: {words}")


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
