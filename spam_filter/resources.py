"""Resources: the application database and the store of model weight files."""

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

import database
from spam_filter.spam import SpamModel, load_model


class ApplicationDatabase(dg.ConfigurableResource):
    """The DuckDB file that holds `messages` and `models`, shared with the API."""

    path: str
    lock_timeout_seconds: float = 120.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; held only for a step's query because the API polls the file."""
        with database.connection(
            self.path, read_only=read_only, timeout=self.lock_timeout_seconds
        ) as conn:
            yield conn

    def attach_read_only(self, conn: duckdb.DuckDBPyConnection, alias: str) -> None:
        """Make the application tables readable from another connection as `alias`.<table>."""
        database.attach_read_only(conn, self.path, alias, timeout=self.lock_timeout_seconds)


class ModelStorage(dg.ConfigurableResource):
    """The folder of JSON weight files that the API loads."""

    weights_dir: str

    def save(self, model: SpamModel) -> str:
        """Write the weights under a new unique name, atomically, and return the file's path.

        The file is written under a temporary name, flushed to disk and renamed, so a reader never
        sees half a file; the name carries microseconds and a random suffix, so two runs finishing
        in the same second never overwrite each other.
        """
        directory = Path(self.weights_dir)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = directory / f"spam_model_{stamp}_{uuid.uuid4().hex[:8]}.json"
        partial = final.with_name(f".{final.name}.partial")
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(model.to_weights(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        # The rename itself is durable only once the folder is synced: the `models` row that will
        # point at this file must never outlive it after a crash.
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return str(final)

    def load(self, path: str) -> SpamModel:
        """Read a weights file; raises OSError or ValueError when it is missing or malformed."""
        return load_model(path)
