"""The application database: its schema and the few queries the pipeline and the API need.

`python database.py` creates the tables (idempotently) and prints them. Every statement is
parameterized, and every change that touches more than one row runs in one explicit transaction.
"""

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from spam_filter import settings
from spam_filter.faults import crash_point
from spam_filter.sql import identifier

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

_LOCK_ERROR_MARKERS = ("Could not set lock", "Conflicting lock")
T = TypeVar("T")


class ActiveModelChanged(RuntimeError):
    """Another run promoted a model after this run compared itself with the active one."""


@dataclass(frozen=True)
class ModelRecord:
    """One row of `models`: a trained model and the decision taken about it."""

    path: str | None
    status: str
    true_positive_rate: float
    false_positive_rate: float
    seed: int | None = None
    reason: str = ""
    compared_with: str | None = None
    compared_true_positive_rate: float | None = None
    compared_false_positive_rate: float | None = None
    created_at: datetime | None = None


def is_lock_conflict(error: BaseException) -> bool:
    """Whether DuckDB refused to open a file because another process holds its lock."""
    return isinstance(error, duckdb.Error) and any(m in str(error) for m in _LOCK_ERROR_MARKERS)


def connect(
    path: Path | str | None = None, *, read_only: bool = False, timeout: float = 60.0
) -> duckdb.DuckDBPyConnection:
    """Open the database, retrying with backoff while another process holds its lock.

    DuckDB lets one process write or several read, and refuses an open at once otherwise; the
    pipeline, the API's model watcher and these scripts only hold it for moments, so waiting works.

    Args:
        path: Database file; `settings.database_path()` when omitted.
        read_only: Open read-only (several processes may do so at once).
        timeout: Seconds to keep retrying a lock conflict before raising it.

    Returns:
        An open connection; the caller closes it.
    """
    path = Path(path) if path is not None else settings.database_path()
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return _retry_lock_conflicts(lambda: duckdb.connect(str(path), read_only=read_only), timeout)


def attach_read_only(
    conn: duckdb.DuckDBPyConnection,
    path: Path | str,
    alias: str,
    timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """ATTACH another database file read-only as `alias`, retrying lock conflicts like `connect`.

    `on_wait`, if given, is told once when another process holds the file and this one waits.
    """
    statement = "ATTACH ? AS " + identifier(alias) + " (READ_ONLY)"
    message = f"waiting for another process to release {path}"
    say_waiting = None if on_wait is None else lambda: on_wait(message)
    _retry_lock_conflicts(lambda: conn.execute(statement, [str(path)]), timeout, say_waiting)


def _retry_lock_conflicts(
    open_database: Callable[[], T],
    timeout: float,
    on_first_wait: Callable[[], None] | None = None,
) -> T:
    """Call `open_database` until it stops meeting a lock conflict; `on_first_wait` runs once."""
    deadline = time.monotonic() + timeout
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


@contextmanager
def connection(
    path: Path | str | None = None, *, read_only: bool = False, timeout: float = 60.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect` as a context manager that always closes, so no process keeps the lock."""
    conn = connect(path, read_only=read_only, timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the body as one transaction: committed when it returns, rolled back when it raises."""
    conn.begin()
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the tables that do not exist yet; existing data is left alone."""
    with transaction(conn):
        for statement in SCHEMA:
            conn.execute(statement)


def insert_messages(conn: duckdb.DuckDBPyConnection, messages: Iterable[tuple[bool, str]]) -> int:
    """Insert labelled (spam, body) messages in one transaction; returns how many."""
    rows = [(bool(spam), body) for spam, body in messages]
    with transaction(conn):
        conn.executemany("INSERT INTO messages (spam, body) VALUES (?, ?)", rows)
    return len(rows)


def message_count(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT count(*) FROM messages").fetchone()[0]


_SELECT_MODELS = (
    "SELECT path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with, "
    "compared_true_positive_rate, compared_false_positive_rate, created_at FROM models"
)


def active_model(conn: duckdb.DuckDBPyConnection) -> ModelRecord | None:
    """The model the API should serve, or None before the first promotion."""
    row = conn.execute(
        _SELECT_MODELS + " WHERE status = 'active' ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    return ModelRecord(*row) if row else None


def model_history(conn: duckdb.DuckDBPyConnection) -> list[ModelRecord]:
    """Every recorded model, newest first."""
    rows = conn.execute(_SELECT_MODELS + " ORDER BY created_at DESC").fetchall()
    return [ModelRecord(*row) for row in rows]


def _insert_model(conn: duckdb.DuckDBPyConnection, record: ModelRecord) -> None:
    conn.execute(
        "INSERT INTO models (path, status, true_positive_rate, false_positive_rate, seed, reason, "
        "compared_with, compared_true_positive_rate, compared_false_positive_rate) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.path,
            record.status,
            record.true_positive_rate,
            record.false_positive_rate,
            record.seed,
            record.reason,
            record.compared_with,
            record.compared_true_positive_rate,
            record.compared_false_positive_rate,
        ],
    )


def promote_model(
    conn: duckdb.DuckDBPyConnection, record: ModelRecord, replacing: str | None
) -> None:
    """Make `record` the one active model, in one transaction with retiring the previous one.

    Args:
        conn: A read-write connection.
        record: The new model; its status is stored as 'active'.
        replacing: Path of the active model the caller compared against (None if there was none).

    Raises:
        ActiveModelChanged: Another run promoted a different model in the meantime; nothing changed.
    """
    with transaction(conn):
        current = conn.execute("SELECT path FROM models WHERE status = 'active'").fetchall()
        current_paths = [path for (path,) in current]
        if current_paths != ([replacing] if replacing is not None else []):
            raise ActiveModelChanged(
                f"expected active model {replacing!r}, found {current_paths!r}"
            )
        crash_point("switch_checked")
        conn.execute("UPDATE models SET status = 'inactive' WHERE status = 'active'")
        crash_point("switch_retired_old")
        _insert_model(conn, replace(record, status="active"))
        crash_point("switch_inserted_new")
    crash_point("switch_committed")


def recorded_model_paths(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every weights file a row of `models` points at, whatever its status."""
    rows = conn.execute("SELECT DISTINCT path FROM models WHERE path IS NOT NULL").fetchall()
    return [path for (path,) in rows]


def record_rejected_model(conn: duckdb.DuckDBPyConnection, record: ModelRecord) -> None:
    """Keep a row for a model that was not promoted, so the decision stays visible."""
    with transaction(conn):
        _insert_model(conn, replace(record, status="rejected"))


def describe(conn: duckdb.DuckDBPyConnection) -> str:
    """A printable summary of each table: its columns and row count."""
    lines = []
    for (table,) in conn.execute(
        "SELECT table_name FROM information_schema.tables ORDER BY table_name"
    ).fetchall():
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        ((rows,),) = conn.table(table).count("*").fetchall()
        lines.append(f"{table} ({rows} rows)")
        lines.extend(f"    {name} {data_type}" for name, data_type in columns)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Create the application database's tables.")
    parser.add_argument(
        "--database", type=Path, help="database file (default: SPAM_FILTER_DATABASE)"
    )
    args = parser.parse_args()
    path = args.database or settings.database_path()
    with connection(path) as conn:
        create_schema(conn)
        print(f"database {path}\n{describe(conn)}")


if __name__ == "__main__":
    main()
