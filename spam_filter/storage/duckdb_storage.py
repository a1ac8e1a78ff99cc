"""The application database in one DuckDB file: the default, with no server to run.

DuckDB lets one process write or several read, and refuses an open at once otherwise. The
pipeline, the API's model watcher and the scripts each hold the file for moments, so every open
here retries a lock conflict with backoff.
"""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.records import Report, ReportOutcome, StorageUnavailable
from spam_filter.storage.report_inbox import ReportInbox

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS messages (
        spam BOOLEAN,
        body VARCHAR,
        created_at TIMESTAMP DEFAULT current_timestamp
    )
    """,
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS synthetic BOOLEAN DEFAULT false",
    """
    CREATE TABLE IF NOT EXISTS models (
        path VARCHAR,
        status VARCHAR CHECK (status IN ('active', 'inactive', 'rejected')),
        true_positive_rate FLOAT CHECK (true_positive_rate BETWEEN 0 AND 1),
        false_positive_rate FLOAT CHECK (false_positive_rate BETWEEN 0 AND 1),
        created_at TIMESTAMP DEFAULT current_timestamp,
        seed INTEGER,
        reason VARCHAR,
        compared_with VARCHAR,
        compared_true_positive_rate FLOAT,
        compared_false_positive_rate FLOAT
    )
    """,
    # When the model stopped being the active one: what a rollback without a name returns to.
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS retired_at TIMESTAMP",
    # Always NULL here: this backend keeps weights in the weights folder (see `weights`).
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS weights VARCHAR",
    "CREATE SEQUENCE IF NOT EXISTS reporter_ids START 1",
    """
    CREATE TABLE IF NOT EXISTS reporters (
        reporter_id INTEGER PRIMARY KEY DEFAULT nextval('reporter_ids'),
        name VARCHAR NOT NULL UNIQUE,
        key_hash VARCHAR NOT NULL UNIQUE,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        revoked_at TIMESTAMP,
        flagged_at TIMESTAMP,
        flag_reason VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reports (
        reporter_id INTEGER NOT NULL,
        message_key VARCHAR NOT NULL,
        text_key VARCHAR NOT NULL,
        message_id VARCHAR,
        body VARCHAR NOT NULL,
        spam BOOLEAN NOT NULL,
        reported_at TIMESTAMP NOT NULL,
        PRIMARY KEY (reporter_id, message_key)
    )
    """,
    # The number of the last inbox change moved into `reports`, the inbox it counts in, and this
    # database's own id, which the inbox records (see `report_inbox`).
    "CREATE TABLE IF NOT EXISTS report_inbox_progress (last_change BIGINT NOT NULL)",
    """
    INSERT INTO report_inbox_progress (last_change)
    SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM report_inbox_progress)
    """,
    "ALTER TABLE report_inbox_progress ADD COLUMN IF NOT EXISTS inbox_id VARCHAR",
    "ALTER TABLE report_inbox_progress ADD COLUMN IF NOT EXISTS database_id VARCHAR",
    "UPDATE report_inbox_progress SET database_id = gen_random_uuid()::VARCHAR "
    "WHERE database_id IS NULL",
)

DATABASE_ID = "SELECT database_id FROM report_inbox_progress"
DRAIN_PROGRESS = "SELECT last_change, inbox_id, database_id FROM report_inbox_progress"
SET_DRAINED_UP_TO = "UPDATE report_inbox_progress SET last_change = $1, inbox_id = $2"
UPSERT_INBOX_BATCH = """
    INSERT INTO reports (reporter_id, message_key, text_key, message_id, body, spam, reported_at)
    SELECT reporter_id, message_key, text_key, message_id, body, spam, reported_at::TIMESTAMP
    FROM inbox_batch
    ON CONFLICT (reporter_id, message_key) DO UPDATE SET
        text_key = excluded.text_key,
        message_id = excluded.message_id,
        body = excluded.body,
        spam = excluded.spam,
        reported_at = excluded.reported_at
"""
_DRAIN_BATCH_VOTES = 100_000

ATTACH_READ_ONLY = "ATTACH $1 AS app (READ_ONLY)"
DETACH = "DETACH app"
HAS_CREATED_AT = """
    SELECT count(*) > 0
    FROM duckdb_columns()
    WHERE database_name = 'app' AND table_name = 'messages' AND column_name = 'created_at'
"""
# The product's messages as rows of the warehouse's `user_messages`: no reporter stands behind
# them, so they are never capped or left out like reports.
COPY_ALL_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT
        spam, body, 'messages' AS source, coalesce(synthetic, false) AS synthetic,
        NULL::INTEGER AS reporter_id, NULL::INTEGER AS supporters
    FROM app.messages
"""
COPY_NEWEST_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT
        spam, body, 'messages' AS source, coalesce(synthetic, false) AS synthetic,
        NULL::INTEGER AS reporter_id, NULL::INTEGER AS supporters
    FROM app.messages
    ORDER BY created_at DESC
    LIMIT $cap
"""
# A top-N by a seeded hash: a deterministic sample that holds only N rows.
COPY_SAMPLED_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT
        spam, body, 'messages' AS source, coalesce(synthetic, false) AS synthetic,
        NULL::INTEGER AS reporter_id, NULL::INTEGER AS supporters
    FROM app.messages
    ORDER BY hash(spam, body, $seed)
    LIMIT $cap
"""
# Votes of reporters whose keys are not revoked.
COPY_REPORTS = """
    CREATE OR REPLACE TABLE public.user_reports AS
    SELECT reports.reporter_id, reports.text_key, reports.body, reports.spam, reports.reported_at
    FROM app.reports
    JOIN app.reporters ON reporters.reporter_id = reports.reporter_id
    WHERE reporters.revoked_at IS NULL
"""

_LOCK_ERROR_MARKERS = (
    "Could not set lock",
    "Conflicting lock",
    "with a different configuration than existing connections",
)
T = TypeVar("T")


def is_lock_conflict(error: BaseException) -> bool:
    """Whether DuckDB refused to open a file because someone else holds it for now."""
    return isinstance(error, duckdb.Error) and any(m in str(error) for m in _LOCK_ERROR_MARKERS)


def retry_lock_conflicts(
    open_database: Callable[[], T],
    timeout_seconds: float,
    on_first_wait: Callable[[], None] | None = None,
) -> T:
    """Call `open_database` until it stops meeting a lock conflict; `on_first_wait` runs once.

    Raises:
        duckdb.Error: Any other error at once, or the lock conflict after `timeout_seconds`.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = 0.02
    while True:
        try:
            return open_database()
        except duckdb.Error as error:
            if not is_lock_conflict(error) or time.monotonic() + delay > deadline:
                raise
        if on_first_wait is not None:
            on_first_wait()
            on_first_wait = None
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


class DuckDBStorage(ApplicationStorage):
    """The application tables in the DuckDB file at `path`."""

    def __init__(
        self,
        path: Path | str,
        lock_timeout_seconds: float = 60.0,
        on_wait: Callable[[str], None] | None = None,
        serving: bool = False,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_seconds = lock_timeout_seconds
        # Told, once per open, that this process waits for another to release the file.
        self.on_wait = on_wait
        # An API process checkpoints the inbox from its watcher thread (`checkpoint_report_inbox`).
        self.inbox = ReportInbox(
            self.path.with_name(self.path.stem + ".report-inbox.sqlite"),
            background_checkpoints=serving,
        )

    def __repr__(self) -> str:
        return f"DuckDBStorage({str(self.path)!r})"

    @property
    def _waiting_message(self) -> str:
        return f"waiting for another process to release {self.path}"

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process holds its lock; the caller closes it."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return retry_lock_conflicts(
            lambda: duckdb.connect(str(self.path), read_only=read_only),
            self.lock_timeout_seconds,
            None if self.on_wait is None else lambda: self.on_wait(self._waiting_message),
        )

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self.connect(read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def create_schema(self) -> None:
        with self.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            ((database_id,),) = conn.execute(DATABASE_ID).fetchall()
        self.inbox.create()
        self.inbox.identity(database_id)  # an inbox made for this database is claimed at once

    def record_reports(self, reporter_id: int, reports: list[Report]) -> ReportOutcome:
        # Into the inbox, never the DuckDB file: another process may hold that for seconds.
        return self.inbox.record(reporter_id, reports)

    def report_sequence(self) -> int:
        return self.inbox.last_change()

    def checkpoint_report_inbox(self) -> None:
        self.inbox.checkpoint()

    def close(self) -> None:
        self.inbox.close()

    def drain_reports(self) -> int:
        """Move the inbox's new and changed votes into `reports`, a batch per transaction.

        Moves what was accepted until the call started: under a steady stream of reports, the
        inbox never empties, and the move must end.
        """
        moved = 0
        last_change = self.inbox.last_change()
        while True:
            with self.transaction() as conn:
                ((drained, moved_inbox, database_id),) = conn.execute(DRAIN_PROGRESS).fetchall()
                inbox_id, inbox_database = self.inbox.identity(database_id)
                if inbox_database != database_id:
                    raise StorageUnavailable(
                        f"the report inbox {self.inbox.path} holds votes for another database "
                        f"(one {self.path} replaced): its reporter ids are not this database's. "
                        "Stop the API processes on this machine and move it aside with its -wal "
                        "and -shm files; a new one starts with the next report"
                    )
                if moved_inbox is None:
                    # Files from before the ids: the progress counts in this inbox. Said now,
                    # even with nothing to move, so that a later new inbox is told apart.
                    conn.execute(SET_DRAINED_UP_TO, [drained, inbox_id])
                elif moved_inbox != inbox_id:
                    drained = 0  # a new inbox: its numbers start again
                batch = [
                    vote
                    for vote in self.inbox.changes_after(drained, _DRAIN_BATCH_VOTES)
                    if vote[-1] <= last_change
                ]
                if not batch:
                    return moved
                frame = pd.DataFrame(
                    batch,
                    columns=[
                        "reporter_id",
                        "message_key",
                        "text_key",
                        "message_id",
                        "body",
                        "spam",
                        "reported_at",
                        "change_seq",
                    ],
                ).astype({"spam": bool, "message_id": object})
                conn.register("inbox_batch", frame)
                try:
                    conn.execute(UPSERT_INBOX_BATCH)
                finally:
                    conn.unregister("inbox_batch")
                conn.execute(SET_DRAINED_UP_TO, [int(frame["change_seq"].iloc[-1]), inbox_id])
            moved += len(batch)

    def change_marker(self) -> tuple:
        """Identity, size and modification time of the file and its write-ahead log.

        A commit by any process changes one of them, so an unchanged marker means that nobody
        promoted anything since it was last read.
        """
        marker = []
        for path in (str(self.path), str(self.path) + ".wal"):
            try:
                stat = os.stat(path)
            except OSError:
                marker.append(None)
            else:
                marker.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        return tuple(marker)

    def copy_messages_into(
        self,
        warehouse: duckdb.DuckDBPyConnection,
        max_messages: int,
        sample_seed: int,
    ) -> None:
        with self._attached(warehouse):
            if max_messages <= 0:
                warehouse.execute(COPY_ALL_MESSAGES)
            elif warehouse.execute(HAS_CREATED_AT).fetchone()[0]:
                warehouse.execute(COPY_NEWEST_MESSAGES, {"cap": max_messages})
            else:
                warehouse.execute(COPY_SAMPLED_MESSAGES, {"cap": max_messages, "seed": sample_seed})

    def copy_reports_into(self, warehouse: duckdb.DuckDBPyConnection) -> None:
        self.drain_reports()
        with self._attached(warehouse):
            warehouse.execute(COPY_REPORTS)

    @contextmanager
    def _attached(self, warehouse: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """The file attached read-only to the warehouse as `app`, only for one copy, so that the
        API's watcher and other writers wait as little as possible."""
        retry_lock_conflicts(
            lambda: warehouse.execute(ATTACH_READ_ONLY, [str(self.path)]),
            self.lock_timeout_seconds,
            None if self.on_wait is None else lambda: self.on_wait(self._waiting_message),
        )
        try:
            yield
        finally:
            warehouse.execute(DETACH)
