"""Resources: the application database, the store of model weight files, and the warehouse."""

import fcntl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from spam_filter import weights
from spam_filter.file_locks import LockTimeout, lock_exclusively
from spam_filter.spam import SpamModel
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.factory import open_storage
from spam_filter.storage.postgres_storage import release_run_lock, take_run_lock
from spam_filter.storage.records import StorageUnavailable
from spam_filter.tunables import DESCRIBED_BY_DOCSTRINGS
from spam_filter.warehouse_memory import memory_capped, release_memory

# Where the dagster CLI keeps its instance when DAGSTER_HOME is unset: a folder of this name in the
# working directory, deleted when the command exits.
TEMPORARY_HOME_PREFIX = ".tmp_dagster_home_"


def temporary_instance_warning(instance: dg.DagsterInstance | None) -> str | None:
    """What to tell a run recorded in an instance that is deleted when it ends, else None."""
    if instance is None:
        return None
    if not instance.is_ephemeral:
        home = Path(instance.root_directory)
        if not home.name.startswith(TEMPORARY_HOME_PREFIX):
            return None
    return (
        "this run is recorded in a temporary Dagster instance, deleted when the command ends: "
        "the Dagster UI will not show it. Retrain with `make retrain`, or set DAGSTER_HOME to "
        "the UI's folder (`make run` uses .dagster_home/ in the project)."
    )


class ApplicationDatabase(dg.ConfigurableResource):
    """The application database (`messages`, `models`), shared with the API and the scripts."""

    model_config = DESCRIBED_BY_DOCSTRINGS

    path: str
    """A DuckDB file, or a postgresql:// URL (see `storage.factory.open_storage`)."""
    lock_timeout_seconds: float = 120.0
    """How long to wait for another process's hold on a DuckDB file before failing."""

    def storage(self, on_wait: Callable[[str], None] | None = None) -> ApplicationStorage:
        """The database behind its storage interface; each call opens short connections only.

        `on_wait`, if given, is told whenever the storage waits for another process.
        """
        return open_storage(self.path, self.lock_timeout_seconds, on_wait)


class ModelStorage(dg.ConfigurableResource):
    """The folder of JSON weight files that the API loads (see `spam_filter.weights`)."""

    model_config = DESCRIBED_BY_DOCSTRINGS

    weights_dir: str
    """The folder of weights files, which the API reads too."""
    lock_timeout_seconds: float = 600.0
    """How long to wait for another promotion's hold on the folder before failing."""

    def exclusive(self, on_wait: Callable[[str], None] | None = None) -> AbstractContextManager:
        """Hold the folder's lock from writing a file until its `models` row is committed."""
        return weights.exclusive(self.weights_dir, self.lock_timeout_seconds, on_wait)

    def save(self, model: SpamModel) -> str:
        """Write the weights under a new unique name, atomically, and return that name.

        The name is what `models.path` records: relative to the weights folder, so the project
        can move. The file stays marked pending until `settle`, so a crash before then leaves it
        to cleanup.
        """
        return weights.write(model.to_weights(), self.weights_dir).name

    def settle(self, name: str) -> None:
        """The file's row is committed, or the file deleted: it is no longer cleanup's concern."""
        weights.settle(weights.resolve(name, self.weights_dir))

    def discard(self, name: str) -> None:
        """Delete a file that `save` wrote and no row will name."""
        weights.resolve(name, self.weights_dir).unlink()
        self.settle(name)

    def remove_orphans(self, recorded_paths: list[str]) -> list[str]:
        """Delete what crashed runs left (see `weights.orphans`); call it holding `exclusive`."""
        removed = []
        for path in weights.orphans(self.weights_dir, recorded_paths):
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed


class Warehouse(DuckDBResource):
    """The pipeline's DuckDB file of intermediate tables, held by one run at a time."""

    # The steps of one run take turns on DuckDB's own lock, but two runs started together (two
    # `dagster job execute`, which bypass the run queue) would interleave, and one could score
    # its model on the other's test split. A lock file beside the warehouse, taken when the
    # run's resources start and released when they stop, makes the second run wait for the
    # first. The run also keeps one connection open from start to end: each step's connection
    # then joins that open database instead of starting DuckDB again (tens of milliseconds of
    # CPU each), and DuckDB's cache stays warm from one step to the next.

    model_config = DESCRIBED_BY_DOCSTRINGS

    run_lock_timeout_seconds: float = 3600.0
    """How long a run waits for the run holding the warehouse before failing."""
    run_lock_database_url: str = ""
    """A PostgreSQL URL: take the run lock there, as an advisory lock, so that runs on different
    machines take turns too; empty for the lock file beside the warehouse."""
    _run_lock: object = PrivateAttr(default=None)
    _held_open: object = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every run starts here, so this is where a run learns that nobody will see it.
        warning = temporary_instance_warning(context.instance)
        if warning and context.log is not None:
            context.log.warning(warning)
        on_wait = context.log.info if context.log is not None else None
        self._run_lock = self._take_run_lock(on_wait)
        held_open = self.get_connection()
        try:
            held_open.__enter__()
        except BaseException:
            self.teardown_after_execution(context)
            raise
        self._held_open = held_open

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse; when the step is done with it, however it ends, DuckDB's
        buffers are freed (see `warehouse_memory`), so that the next step starts from the run's
        floor."""
        with super().get_connection() as conn:
            try:
                yield conn
            finally:
                release_memory(conn)

    @contextmanager
    def get_streaming_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for statements that stream rows through rather than hold them (copies,
        counts, checks): DuckDB is held to the small streaming cap while it is open."""
        with self.get_connection() as conn, memory_capped(conn):
            yield conn

    def _take_run_lock(self, on_wait: Callable[[str], None] | None) -> object:
        """The advisory lock on the server in PostgreSQL mode; a lock file beside the warehouse
        otherwise."""
        if self.run_lock_database_url:
            try:
                return take_run_lock(
                    self.run_lock_database_url, self.run_lock_timeout_seconds, on_wait
                )
            except (LockTimeout, StorageUnavailable) as error:
                raise dg.Failure(str(error)) from None
        lock_path = Path(self.database + ".run-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
        try:
            lock_exclusively(
                handle.fileno(), lock_path, self.run_lock_timeout_seconds, on_wait, "another run"
            )
        except LockTimeout as error:
            handle.close()
            raise dg.Failure(str(error)) from None
        return handle

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        held_open, self._held_open = self._held_open, None
        if held_open is not None:
            held_open.__exit__(None, None, None)
        handle, self._run_lock = self._run_lock, None
        if isinstance(handle, psycopg.Connection):
            release_run_lock(handle)
        elif handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
