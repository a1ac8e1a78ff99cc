"""The application storage the configuration names."""

from pathlib import Path

from spam_filter import settings
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage


def open_storage(
    database: Path | str | None = None, lock_timeout_seconds: float = 60.0
) -> ApplicationStorage:
    """The storage at `database`, else at `SPAM_FILTER_DATABASE` (or its default file)."""
    return DuckDBStorage(database or settings.database_path(), lock_timeout_seconds)
