"""The report inbox: where the API stores reports durably while the DuckDB file may be busy.

DuckDB lets one process write at a time, and a retrain or a bulk insert holds the application
database for seconds. Reports must be acknowledged only once they are on disk, and must keep being
accepted meanwhile, so each API process writes them to this SQLite file beside the database
(write-ahead log, synced on every commit: a report acknowledged survives a power cut). Writers
take turns on SQLite's own lock in microseconds. Each accepted vote gets the next number of one
sequence; whoever writes the DuckDB file next (the pipeline, the command line) moves the votes
with numbers past the last one moved into `reports`, in one transaction with that number, so a
move interrupted at any point is redone without loss or repeat.

The inbox keeps every vote, so it also tells a repeated report (same reporter, same message, same
label) from a new or changed one: the answer counts repeats as duplicates.
"""

import os
import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

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
)

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

COUNT_VOTES_BY_REPORTER = "SELECT reporter_id, count(*) FROM votes GROUP BY reporter_id"


class ReportInbox:
    """The SQLite file of accepted votes, shared by every API process on this machine."""

    def __init__(self, path: Path | str, busy_timeout_seconds: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_seconds = busy_timeout_seconds
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None

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
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    (last_change,) = conn.execute(LAST_CHANGE).fetchone()
                    for row in rows:
                        if conn.execute(RECORD_VOTE, (*row, last_change + 1)).fetchone():
                            last_change += 1
                            accepted += 1
                        else:
                            duplicates += 1
                    conn.execute(SET_LAST_CHANGE, (last_change,))
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StorageUnavailable(
                f"the report inbox {self.path} cannot be written: {error}"
            ) from error
        return ReportOutcome(accepted, duplicates)

    def last_change(self) -> int:
        """How many votes were accepted or changed since the inbox was created."""
        with self._lock:
            return self._connection().execute(LAST_CHANGE).fetchone()[0]

    def changes_after(self, change: int, limit: int) -> list[tuple]:
        """Votes whose last change is numbered after `change`, in order, at most `limit`."""
        with self._lock:
            return self._connection().execute(CHANGES_AFTER, (change, limit)).fetchall()

    def votes_by_reporter(self) -> dict[int, int]:
        with self._lock:
            return dict(self._connection().execute(COUNT_VOTES_BY_REPORTER).fetchall())

    def _connection(self) -> sqlite3.Connection:
        # One connection per process: a connection must not cross a fork (gunicorn's workers).
        if self._conn is None or self._conn_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_seconds,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode = WAL")
            # Synced on every commit: an acknowledged report survives a power cut.
            conn.execute("PRAGMA synchronous = FULL")
            for statement in SCHEMA:
                conn.execute(statement)
            if not existed:
                _sync_folder(self.path.parent)
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn


def _sync_folder(folder: Path) -> None:
    """Make a new file's name durable, as its content is."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
