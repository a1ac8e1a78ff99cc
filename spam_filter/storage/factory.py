"""The application storage the configuration names."""

from collections.abc import Callable
from pathlib import Path

from spam_filter import settings
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage


def open_storage(
    database: Path | str | None = None,
    lock_timeout_seconds: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
) -> ApplicationStorage:
    """The storage at `database`, else at `SPAM_FILTER_DATABASE` (or its default file).

    `on_wait`, if given, is told whenever the storage waits for another process.
    """
    return DuckDBStorage(database or settings.database_path(), lock_timeout_seconds, on_wait)
