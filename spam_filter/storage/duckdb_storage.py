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

from spam_filter.storage.base import ApplicationStorage

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS messages (
        spam BOOLEAN,
        body VARCHAR,
        created_at TIMESTAMP DEFAULT current_timestamp
    )
    """,
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
)

ATTACH_READ_ONLY = "ATTACH $1 AS app (READ_ONLY)"
DETACH = "DETACH app"
HAS_CREATED_AT = """
    SELECT count(*) > 0
    FROM duckdb_columns()
    WHERE database_name = 'app' AND table_name = 'messages' AND column_name = 'created_at'
"""
COPY_ALL_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT spam, body FROM app.messages
"""
COPY_NEWEST_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT spam, body FROM app.messages
    ORDER BY created_at DESC
    LIMIT $cap
"""
# A top-N by a seeded hash: a deterministic sample that holds only N rows.
COPY_SAMPLED_MESSAGES = """
    CREATE OR REPLACE TABLE public.user_messages AS
    SELECT spam, body FROM app.messages
    ORDER BY hash(spam, body, $seed)
    LIMIT $cap
"""

_LOCK_ERROR_MARKERS = ("Could not set lock", "Conflicting lock")
T = TypeVar("T")


def is_lock_conflict(error: BaseException) -> bool:
    """Whether DuckDB refused to open a file because another process holds its lock."""
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

    def __init__(self, path: Path | str, lock_timeout_seconds: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout_seconds = lock_timeout_seconds

    def __repr__(self) -> str:
        return f"DuckDBStorage({str(self.path)!r})"

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process holds its lock; the caller closes it."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return retry_lock_conflicts(
            lambda: duckdb.connect(str(self.path), read_only=read_only),
            self.lock_timeout_seconds,
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
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        # The copy runs inside DuckDB, with the file attached read-only and only for the copy, so
        # the API's watcher and other writers wait as little as possible.
        message = f"waiting for another process to release {self.path}"
        retry_lock_conflicts(
            lambda: warehouse.execute(ATTACH_READ_ONLY, [str(self.path)]),
            self.lock_timeout_seconds,
            None if on_wait is None else lambda: on_wait(message),
        )
        try:
            if max_messages <= 0:
                warehouse.execute(COPY_ALL_MESSAGES)
            elif warehouse.execute(HAS_CREATED_AT).fetchone()[0]:
                warehouse.execute(COPY_NEWEST_MESSAGES, {"cap": max_messages})
            else:
                warehouse.execute(COPY_SAMPLED_MESSAGES, {"cap": max_messages, "seed": sample_seed})
        finally:
            warehouse.execute(DETACH)
