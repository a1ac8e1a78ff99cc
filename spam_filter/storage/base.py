"""The application database's interface: messages and models, the same on every backend.

Everything that is the same across backends (the statements, the promotion's compare-and-swap)
is written here once; a backend supplies connections, transactions, its schema and the bulk copy
of messages into the warehouse.
"""

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from spam_filter import weights
from spam_filter.faults import crash_point
from spam_filter.spam import SpamModel, load_model
from spam_filter.storage import queries
from spam_filter.storage.records import (
    ActiveModelChanged,
    ModelRecord,
    Report,
    Reporter,
    ReporterExists,
    ReporterKey,
    ReportOutcome,
)

# A connection of the backend's driver. DuckDB's and psycopg's (with a raw cursor) share what is
# used here: `execute(sql, params)` returning something with `fetchone()` and `fetchall()`.
Connection = Any


class ApplicationStorage(ABC):
    """The `messages` and `models` tables, shared by the pipeline, the API and the scripts."""

    # Whether a promoted model's weights live in its `models` row (read them with
    # `active_model_weights`) rather than in the weights folder that `models.path` names.
    keeps_weights: bool = False

    @abstractmethod
    def connection(self, *, read_only: bool = False) -> AbstractContextManager[Connection]:
        """A short-lived connection, closed on exit: no process holds the database for long."""

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A read-write connection in one transaction: committed on exit, rolled back on error."""
        with self.connection() as conn, in_transaction(conn):
            yield conn

    @abstractmethod
    def create_schema(self) -> None:
        """Create the tables that do not exist yet; existing rows are left alone."""

    @abstractmethod
    def copy_messages_into(
        self,
        warehouse: Connection,
        max_messages: int,
        sample_seed: int,
    ) -> None:
        """Write the `messages` rows into the warehouse's `user_messages` table, in bulk: spam,
        body, source ('messages'), synthetic, and no reporter_id or supporters.

        Args:
            warehouse: A DuckDB connection to the pipeline's warehouse.
            max_messages: Cap on the rows copied (0 = all): the newest, or a seeded sample when
                the table has no `created_at`.
            sample_seed: Seed of that sample.
        """

    @abstractmethod
    def copy_reports_into(self, warehouse: Connection) -> None:
        """Write every vote of an unrevoked reporter into the warehouse's `user_reports` table:
        reporter_id, text_key, body, spam, reported_at. Reports accepted elsewhere are moved
        into `reports` first, so the copy holds everything acknowledged before it started."""

    @abstractmethod
    def record_reports(self, reporter_id: int, reports: list[Report]) -> ReportOutcome:
        """Store one request's reports durably, one vote per reporter and message.

        Raises:
            StorageUnavailable: Nothing was stored; the caller may retry later.
        """

    @abstractmethod
    def report_sequence(self) -> int:
        """A number that grows by one with every accepted or changed vote, cheap to read."""

    def drain_reports(self) -> int:
        """Move reports accepted elsewhere into `reports`; how many moved (none by default)."""
        return 0

    def close(self) -> None:
        """Release what the storage keeps open between calls (nothing by default)."""
        return None

    def checkpoint_report_inbox(self) -> None:
        """Tidy the local store of reports off the request path (nothing by default); a serving
        process calls it every few seconds."""
        return None

    def change_marker(self) -> Hashable | None:
        """A cheap value that changes whenever a commit may have changed `models`.

        None means the backend cannot tell without a query, so readers query every time.
        """
        return None

    def insert_messages(self, messages: Iterable[tuple[bool, str]]) -> int:
        """Insert labelled (spam, body) messages in one transaction; returns how many."""
        rows = [(bool(spam), body) for spam, body in messages]
        with self.transaction() as conn:
            conn.executemany(queries.INSERT_MESSAGE, rows)
        return len(rows)

    def message_count(self) -> int:
        with self.connection(read_only=True) as conn:
            return conn.execute(queries.COUNT_MESSAGES).fetchone()[0]

    def active_model(self) -> ModelRecord | None:
        """The model the API should serve, or None before the first promotion."""
        with self.connection(read_only=True) as conn:
            row = conn.execute(queries.SELECT_ACTIVE_MODEL).fetchone()
        return ModelRecord(*row) if row else None

    def active_model_weights(self) -> tuple[ModelRecord, str] | None:
        """The active model and the JSON of its weights, when the backend keeps weights with the
        row; None before the first promotion, or when the row holds no weights."""
        with self.connection(read_only=True) as conn:
            row = conn.execute(queries.SELECT_ACTIVE_MODEL_WEIGHTS).fetchone()
        if row is None or row[-1] is None:
            return None
        return ModelRecord(*row[:-1]), row[-1]

    def model_history(self) -> list[ModelRecord]:
        """Every recorded model, newest first."""
        with self.connection(read_only=True) as conn:
            rows = conn.execute(queries.SELECT_MODEL_HISTORY).fetchall()
        return [ModelRecord(*row) for row in rows]

    def recorded_model_paths(self) -> list[str]:
        """Every weights file a row of `models` points at, whatever its status."""
        with self.connection(read_only=True) as conn:
            rows = conn.execute(queries.SELECT_RECORDED_PATHS).fetchall()
        return [path for (path,) in rows]

    def promote_model(
        self, record: ModelRecord, replacing: str | None, weights: str | None = None
    ) -> None:
        """Make `record` the one active model, in one transaction with retiring the previous one.

        Args:
            record: The new model; its status is stored as 'active'.
            replacing: Path of the active model the caller compared against (None if none).
            weights: The weights' JSON, stored in the same row and transaction, for a backend
                that `keeps_weights`; None when they are in the weights folder.

        Raises:
            ActiveModelChanged: Another run promoted a different model meanwhile; nothing changed.
        """
        with self.connection() as conn:
            with in_transaction(conn):
                self._serialize_promotions(conn)
                current = [path for (path,) in conn.execute(queries.SELECT_ACTIVE_PATHS).fetchall()]
                if current != ([replacing] if replacing is not None else []):
                    raise ActiveModelChanged(
                        f"expected active model {replacing!r}, found {current!r}"
                    )
                crash_point("switch_checked")
                conn.execute(queries.RETIRE_ACTIVE_MODEL)
                crash_point("switch_retired_old")
                _insert_model(conn, replace(record, status="active"), weights)
                crash_point("switch_inserted_new")
            crash_point("switch_committed")

    def reactivate_model(self, path: str, replacing: str | None) -> None:
        """Make a retired model active again, in one transaction with retiring the current one.

        Raises:
            ActiveModelChanged: The active model is no longer `replacing`; nothing changed.
            ValueError: No retired model has that path, or the backend keeps weights in rows and
                that row's were cleared; nothing changed.
        """
        with self.connection() as conn:
            with in_transaction(conn):
                self._serialize_promotions(conn)
                current = [p for (p,) in conn.execute(queries.SELECT_ACTIVE_PATHS).fetchall()]
                if current != ([replacing] if replacing is not None else []):
                    raise ActiveModelChanged(
                        f"expected active model {replacing!r}, found {current!r}"
                    )
                conn.execute(queries.RETIRE_ACTIVE_MODEL)
                row = conn.execute(queries.REACTIVATE_MODEL, [path]).fetchone()
                if row is None:
                    raise ValueError(f"no retired model {path!r} to make active again")
                if self.keeps_weights and row[1] is None:
                    raise ValueError(f"the weights of {path!r} were cleared; it cannot be active")

    def model_weights(self, path: str) -> str | None:
        """The JSON of the weights kept in the row of the model at `path`; None when the backend
        keeps weights in files, or they were cleared."""
        with self.connection(read_only=True) as conn:
            row = conn.execute(queries.SELECT_MODEL_WEIGHTS, [path]).fetchone()
        return row[0] if row else None

    def paths_with_weights(self) -> set[str]:
        """The models whose rows still hold their weights, in one query rather than one per model;
        empty where the backend keeps weights in files."""
        with self.connection(read_only=True) as conn:
            return {path for (path,) in conn.execute(queries.SELECT_PATHS_WITH_WEIGHTS).fetchall()}

    def load_model(self, path: str, weights_dir: Path | str) -> SpamModel:
        """The recorded model at `path`: from its row where the backend keeps weights there, else
        from its file in `weights_dir`.

        Raises:
            OSError: The file is missing or unreadable.
            ValueError: The weights are malformed, the row holds none, or the path is unsafe.
        """
        if not self.keeps_weights:
            return load_model(weights.resolve(path, weights_dir))
        text = self.model_weights(path)
        if text is None:
            raise ValueError(f"the row of {path} holds no weights (cleared when it grew old)")
        return SpamModel.from_weights(weights.from_json(text))

    def clear_old_retired_weights(self, keep: int) -> list[str]:
        """Clear the weights kept in the rows of retired models beyond the `keep` most recently
        retired; returns their paths. Nothing to clear where weights live in files."""
        with self.connection() as conn:
            with in_transaction(conn):
                # Taking turns with rollbacks: one never makes a row active as it is cleared.
                self._serialize_promotions(conn)
                rows = conn.execute(queries.CLEAR_OLD_RETIRED_WEIGHTS, [keep]).fetchall()
        return [path for (path,) in rows]

    def relativize_model_paths(self, weights_dir: Path | str) -> int:
        """Rewrite absolute paths of files in `weights_dir` as bare names, in one transaction.

        A row names its weights file relative to the weights folder, so a copied or moved project
        (database and weights together) still finds its models. Absolute paths elsewhere are left
        as they are, for the API to refuse. Returns how many distinct paths were rewritten.
        """
        folder = Path(weights_dir).resolve()
        with self.transaction() as conn:
            paths = [
                path for (path,) in conn.execute(queries.SELECT_ABSOLUTE_MODEL_PATHS).fetchall()
            ]
            inside = [path for path in paths if Path(path).parent.resolve() == folder]
            for path in inside:
                conn.execute(queries.RENAME_MODEL_PATH, [Path(path).name, path])
                conn.execute(queries.RENAME_COMPARED_MODEL_PATH, [Path(path).name, path])
        return len(inside)

    def _serialize_promotions(self, conn: Connection) -> None:
        """Make concurrent promotions take turns inside their transactions, so that the
        compare-and-swap above sees the other's commit. DuckDB needs nothing: it lets one
        process write at a time and aborts a transaction that conflicts."""
        return None

    def record_rejected_model(self, record: ModelRecord) -> None:
        """Keep a row for a model that was not promoted, so the decision stays visible."""
        with self.transaction() as conn:
            _insert_model(conn, replace(record, status="rejected"))

    def add_reporter(self, name: str, key_hash: str) -> int:
        """Create a reporter with the hash of its key; returns its id.

        Raises:
            ReporterExists: A reporter of that name exists, revoked or not.
        """
        with self.transaction() as conn:
            if conn.execute(queries.SELECT_REPORTER_BY_NAME, [name]).fetchone() is not None:
                raise ReporterExists(f"a reporter named {name!r} exists already")
            (reporter_id,) = conn.execute(queries.INSERT_REPORTER, [name, key_hash]).fetchone()
        return reporter_id

    def revoke_reporter(self, name: str) -> bool:
        """Revoke the reporter's key; False when no active reporter has that name."""
        with self.transaction() as conn:
            return bool(conn.execute(queries.REVOKE_REPORTER, [name]).fetchall())

    def flag_reporter(self, reporter_id: int, reason: str) -> None:
        """Mark a reporter whose reports a run left out, with the reason."""
        self.record_reporter_impacts({reporter_id: reason})

    def record_reporter_impacts(self, flags: dict[int, str | None]) -> None:
        """Flag each reporter a run left out, with the reason; clear the flags of the others
        that run checked."""
        if not flags:
            return
        with self.transaction() as conn:
            for reporter_id, reason in flags.items():
                if reason is None:
                    conn.execute(queries.CLEAR_REPORTER_FLAG, [reporter_id])
                else:
                    conn.execute(queries.FLAG_REPORTER, [reporter_id, reason])

    def reporters(self) -> list[Reporter]:
        """Every reporter with its status and recorded votes, by name."""
        with self.connection(read_only=True) as conn:
            return [Reporter(*row) for row in conn.execute(queries.SELECT_REPORTERS).fetchall()]

    def reporter_keys(self) -> dict[str, ReporterKey]:
        """The keys the API accepts: each unrevoked reporter by the hash of its key."""
        with self.connection(read_only=True) as conn:
            rows = conn.execute(queries.SELECT_REPORTER_KEYS).fetchall()
        return {key_hash: ReporterKey(reporter_id, name) for key_hash, reporter_id, name in rows}

    def describe(self) -> str:
        """A printable summary of each table: its columns and row count."""
        lines = []
        with self.connection(read_only=True) as conn:
            for table in queries.TABLE_ROW_COUNTS:
                columns = conn.execute(queries.SELECT_COLUMNS, [table]).fetchall()
                (rows,) = conn.execute(queries.TABLE_ROW_COUNTS[table]).fetchone()
                lines.append(f"{table} ({rows} rows)")
                lines.extend(f"    {name} {data_type}" for name, data_type in columns)
        return "\n".join(lines)


@contextmanager
def in_transaction(conn: Connection) -> Iterator[Connection]:
    """Run the body as one transaction on `conn`: committed when it returns, rolled back when it
    raises. Both backends take these statements; PostgreSQL connections run in autocommit mode."""
    conn.execute(queries.BEGIN)
    try:
        yield conn
    except BaseException:
        try:
            conn.execute(queries.ROLLBACK)
        except Exception:  # the connection itself failed: the server rolls back without us
            pass
        raise
    conn.execute(queries.COMMIT)


def _insert_model(conn: Connection, record: ModelRecord, weights: str | None = None) -> None:
    conn.execute(
        queries.INSERT_MODEL,
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
            weights,
        ],
    )
