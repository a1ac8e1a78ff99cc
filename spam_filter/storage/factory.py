"""The application storage the configuration names."""

import sqlite3
from collections.abc import Callable
from pathlib import Path

import duckdb
import psycopg
from psycopg.conninfo import conninfo_to_dict

from spam_filter import settings
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.postgres_storage import PostgresStorage, is_postgres_url
from spam_filter.storage.records import StorageUnavailable


class UnusableLocation(ValueError):
    """The configured database location is neither a DuckDB file's path nor a PostgreSQL URL."""


# What opening or using a storage raises when the database cannot be used: a file that is not
# DuckDB or sits where no folder can be made, a lock held elsewhere, a server that does not
# answer, a malformed location. Command lines answer these with one line, not a traceback; any
# other error is a bug, and keeps its traceback.
STORAGE_ERRORS = (
    OSError,
    duckdb.IOException,
    psycopg.OperationalError,
    sqlite3.OperationalError,
    StorageUnavailable,
    UnusableLocation,
)


def open_storage(
    database: Path | str | None = None,
    lock_timeout_seconds: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    *,
    serving: bool = False,
) -> ApplicationStorage:
    """The storage at `database`: a postgresql:// URL or a DuckDB file; by default
    `SPAM_FILTER_DATABASE_URL` if set, else `SPAM_FILTER_DATABASE` (or its default file).

    `on_wait`, if given, is told whenever the storage waits for another process. `serving`
    configures it for an API process: connections kept for reuse, statements that give up after a
    few seconds instead of hanging a request on an unresponsive server, and the report inbox left
    for `checkpoint_report_inbox` to checkpoint.
    """
    location = str(database or settings.database_location())
    if "://" in location and not is_postgres_url(location):
        raise UnusableLocation(
            f"unsupported database URL scheme {location.split('://')[0]!r}: give a "
            "postgresql:// URL or a DuckDB file's path"
        )
    if is_postgres_url(location):
        try:
            conninfo_to_dict(location)  # libpq's own parse, several hosts included
        except psycopg.ProgrammingError:
            # Not echoed: the URL may hold a password.
            raise UnusableLocation(
                "the postgresql:// URL is malformed (not shown: it may hold a password)"
            ) from None
        return PostgresStorage(
            location,
            connect_timeout_seconds=lock_timeout_seconds,
            statement_timeout_seconds=10.0 if serving else None,
            keep_connections=serving,
        )
    return DuckDBStorage(location, lock_timeout_seconds, on_wait, serving=serving)
