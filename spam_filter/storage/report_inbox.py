"""The report inbox: where the API stores reports durably while the DuckDB file may be busy.

DuckDB lets one process write at a time, and a retrain or a bulk insert holds the application
database for seconds. Reports must be acknowledged only once they are on disk, and must keep being
accepted meanwhile, so each API process writes them to this SQLite file beside the database
(write-ahead log, synced on every commit: a report acknowledged survives a power cut). Writers
take turns on SQLite's write lock, which a request holds for its upserts and one fsync. Each
accepted vote gets the next number of one sequence; whoever writes the DuckDB file next (the
pipeline, the command line) moves the votes with numbers past the last one moved into `reports`,
in one transaction with that number, so a move interrupted at any point is redone without loss or
repeat.

The inbox keeps every vote, so it also tells a repeated report (same reporter, same message, same
label) from a new or changed one: the answer counts repeats as duplicates.

In an API process the write-ahead log is folded back into the file by a background thread
(`checkpoint`), not by whichever request's commit crosses SQLite's threshold: ten reports touch
about twenty pages, so at a thousand reports a second that threshold falls every half second and
the unlucky request waited several milliseconds for the copy, holding up its worker.
"""

import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from spam_filter.fork_safe_lock import ForkSafeLock
from spam_filter.storage.records import Report, ReportOutcome, StorageUnavailable, vote_rows

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS votes (
        reporter_id INTEGER NOT NULL,
        message_key TEXT NOT NULL,
        text_key TEXT NOT NULL,
        message_id TEXT,
        body TEXT NOT NULL,
        spam INTEGER NOT NULL,
        reported_at TEXT NOT NULL,
        change_seq INTEGER NOT NULL,
        PRIMARY KEY (reporter_id, message_key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS votes_by_change ON votes (change_seq)",
    "CREATE TABLE IF NOT EXISTS sequence (last_change INTEGER NOT NULL)",
    "INSERT INTO sequence SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM sequence)",
    # Which inbox this is, and which database its votes belong to (their reporter ids are that
    # database's): the database keeps how far it moved this inbox, by its id, so that a new inbox
    # (the file deleted, a project copied without it) is moved from its start, and an inbox
    # that outlived its database is refused rather than credited to another database's reporters.
    "CREATE TABLE IF NOT EXISTS identity (inbox_id TEXT NOT NULL, database_id TEXT)",
)
# Run with a fresh random id; a second process creating the file at once finds the row there.
NAME_INBOX = "INSERT INTO identity (inbox_id) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM identity)"
IDENTITY = "SELECT inbox_id, database_id FROM identity"
CLAIM_FOR_DATABASE = "UPDATE identity SET database_id = ? WHERE database_id IS NULL"

LAST_CHANGE = "SELECT last_change FROM sequence"
SET_LAST_CHANGE = "UPDATE sequence SET last_change = ?"

# A vote that repeats the stored label changes nothing and returns no row: a duplicate.
RECORD_VOTE = """
    INSERT INTO votes (
        reporter_id, message_key, text_key, message_id, body, spam, reported_at, change_seq
    )
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (reporter_id, message_key) DO UPDATE SET
        text_key = excluded.text_key,
        message_id = excluded.message_id,
        body = excluded.body,
        spam = excluded.spam,
        reported_at = excluded.reported_at,
        change_seq = excluded.change_seq
    WHERE votes.spam IS NOT excluded.spam
    RETURNING change_seq
"""

CHANGES_AFTER = """
    SELECT reporter_id, message_key, text_key, message_id, body, spam, reported_at, change_seq
    FROM votes
    WHERE change_seq > ?
    ORDER BY change_seq
    LIMIT ?
"""

# Copies what it can without waiting for readers or writers.
CHECKPOINT_PASSIVELY = "PRAGMA wal_checkpoint(PASSIVE)"
# Waits for the write lock (and for readers of the old log) to copy the rest, so that the next
# commit writes the log from its start; gives up after the connection's busy timeout.
CHECKPOINT_AND_RESTART = "PRAGMA wal_checkpoint(RESTART)"
# How long the restart pass may wait: writers wait for it as long as it holds the lock.
RESTART_WAIT_SECONDS = 0.02
# Waits for the write lock in `_begin_writing`, retrying this soon and then up to this often.
_FIRST_RETRY_SECONDS = 0.0001
_LAST_RETRY_SECONDS = 0.001

# With checkpoints in the background, a commit still checkpoints past 16,384 log pages (64 MB): a
# backstop for a process whose background thread stopped, never the usual path.
BACKSTOP_CHECKPOINTS_ONLY = "PRAGMA wal_autocheckpoint = 16384"


class ReportInbox:
    """The SQLite file of accepted votes, shared by every API process on this machine."""

    def __init__(
        self,
        path: Path | str,
        busy_timeout_seconds: float = 5.0,
        background_checkpoints: bool = False,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_seconds = busy_timeout_seconds
        # Whether the owner calls `checkpoint` regularly, so commits need not.
        self.background_checkpoints = background_checkpoints
        self._lock = ForkSafeLock()
        self._reader = _ProcessConnection()
        # Writes go through a connection of their own that never sleeps in SQLite's busy handler.
        self._writer = _ProcessConnection()
        # The checkpointing thread's own connection, so a request never waits behind a checkpoint.
        self._checkpoint_lock = ForkSafeLock()
        self._checkpointer = _ProcessConnection()

    def create(self) -> None:
        """Create the file and its tables if they are missing."""
        with self._lock:
            self._connection()

    def record(self, reporter_id: int, reports: Iterable[Report]) -> ReportOutcome:
        """Store one request's reports in one durable transaction.

        Raises:
            StorageUnavailable: The inbox stayed locked or could not be written; nothing stored.
        """
        # SQLite stores the flag as 1 or 0 and the time as ISO text.
        rows = vote_rows(reporter_id, reports, datetime.now(UTC).isoformat())
        accepted = duplicates = 0
        try:
            with self._lock:
                conn = self._writing_connection()
                self._begin_writing(conn)
                try:
                    (last_change,) = conn.execute(LAST_CHANGE).fetchone()
                    for row in rows:
                        if conn.execute(RECORD_VOTE, (*row, last_change + 1)).fetchone():
                            last_change += 1
                            accepted += 1
                        else:
                            duplicates += 1
                    conn.execute(SET_LAST_CHANGE, (last_change,))
                    conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT may leave the transaction open on this kept connection.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise StorageUnavailable(
                f"the report inbox {self.path} cannot be written: {error}"
            ) from error
        return ReportOutcome(accepted, duplicates)

    def _begin_writing(self, conn: sqlite3.Connection) -> None:
        """Take the inbox's write lock, retrying at once and often while another writer holds it.

        SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, so a request that met
        another worker's commit (under a millisecond) waited several: the retries here are spaced
        0.1 ms apart at first, and never more than 1 ms.
        """
        deadline = time.monotonic() + self.busy_timeout_seconds
        pause = _FIRST_RETRY_SECONDS
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                # Any kind of busy (another writer, or a process recovering the log) is waited out.
                busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, _LAST_RETRY_SECONDS)

    def identity(self, database_id: str) -> tuple[str, str]:
        """(this inbox's id, the id of the database its votes belong to); an inbox that belongs
        to none yet becomes `database_id`'s."""
        with self._lock:
            conn = self._connection()
            conn.execute(CLAIM_FOR_DATABASE, (database_id,))
            return conn.execute(IDENTITY).fetchone()

    def last_change(self) -> int:
        """How many votes were accepted or changed since the inbox was created."""
        with self._lock:
            return self._connection().execute(LAST_CHANGE).fetchone()[0]

    def changes_after(self, change: int, limit: int) -> list[tuple]:
        """Votes whose last change is numbered after `change`, in order, at most `limit`."""
        with self._lock:
            return self._connection().execute(CHANGES_AFTER, (change, limit)).fetchall()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the file, and let the next commit start the log afresh.

        The passive pass copies while writers go on. As they keep appending, the log is never
        wholly copied by it alone, and a log not wholly copied is never started afresh: it would
        grow to the backstop. The restart pass takes the write lock for the few pages added since
        (waiting at most `RESTART_WAIT_SECONDS` for it, else trying again next time).
        """
        with self._checkpoint_lock:
            conn = self._checkpointer.get(self._open_checkpointer)
            conn.execute(CHECKPOINT_PASSIVELY).fetchone()
            conn.execute(CHECKPOINT_AND_RESTART).fetchone()

    def close(self) -> None:
        """Close this process's connections; they reopen when next needed. Connections a forked
        process inherited are left to their owner."""
        with self._checkpoint_lock, self._lock:
            for connection in (self._reader, self._writer, self._checkpointer):
                connection.close()

    def _connection(self) -> sqlite3.Connection:
        """The connection that creates the file and reads (the caller holds `_lock`)."""
        return self._reader.get(self._open_reader)

    def _writing_connection(self) -> sqlite3.Connection:
        """The connection `record` writes with (the caller holds `_lock`)."""
        return self._writer.get(self._open_writer)

    def _open_reader(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        conn = self._open(self.busy_timeout_seconds)
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(NAME_INBOX, (uuid.uuid4().hex,))
        if not existed:
            _sync_folder(self.path.parent)
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        self._connection()  # the file, its tables and its write-ahead mode exist
        # No busy handler: `_begin_writing` waits for the lock instead.
        conn = self._open(0.0)
        if self.background_checkpoints:
            conn.execute(BACKSTOP_CHECKPOINTS_ONLY)
        return conn

    def _open_checkpointer(self) -> sqlite3.Connection:
        with self._lock:
            self._connection()  # the file and its write-ahead mode exist
        return self._open(RESTART_WAIT_SECONDS)

    def _open(self, busy_timeout_seconds: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout_seconds,
            isolation_level=None,
            check_same_thread=False,
        )
        # Synced on every commit: an acknowledged report survives a power cut.
        conn.execute("PRAGMA synchronous = FULL")
        return conn


class _ProcessConnection:
    """A connection opened on first use in each process: a connection must not cross a fork
    (gunicorn's workers), and one a forked process inherited is its parent's to close."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        # Kept referenced, never closed: dropping one would let garbage collection close it in
        # the child, and SQLite warns against touching a connection across a fork at all.
        self._inherited: list[sqlite3.Connection] = []

    def get(self, open_connection: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:
                self._inherited.append(self._conn)
            self._conn, self._pid = open_connection(), os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            if self._pid == os.getpid():
                self._conn.close()
            else:
                self._inherited.append(self._conn)
        self._conn = None


def _sync_folder(folder: Path) -> None:
    """Make a new file's name durable, as its content is."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
