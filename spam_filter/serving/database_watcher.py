"""What each API process keeps in memory from the database: the active model and the reporters'
keys, refreshed in the background so that a promotion or a revoked key takes effect in seconds.

Answering a request never reads the database: DuckDB lets one process write or several read, and
a request path that opened it would fail whenever the pipeline writes. The same background thread
checkpoints the report inbox, which requests write to.
"""

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from spam_filter import weights
from spam_filter.fork_safe_lock import ForkSafeLock
from spam_filter.serving import metrics
from spam_filter.spam import SpamModel, load_model
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.factory import open_storage
from spam_filter.storage.records import ModelRecord, ReporterKey

EXTENSION_KEY = "database_watcher"
# In the weights folder: the name of the model an API process on this machine served last.
LAST_SERVED_FILE = ".last-served"
# The watcher's problem before the first promotion: nothing is wrong but the missing training.
NO_ACTIVE_MODEL = "no active model recorded in the database yet"


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory and where it came from."""

    model: SpamModel
    path: str
    loaded_at: datetime
    # When the model was promoted (its `models.created_at`), if known.
    promoted_at: datetime | None = None
    # Every answer carries the name: derive it once, not per request.
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", Path(self.path).name)


class DatabaseWatcher:
    """Keeps the active model and the reporters' keys in memory, and swaps in new ones.

    A daemon thread checks every `refresh_seconds`. When the storage's change marker (for DuckDB,
    the file and its write-ahead log) is unchanged since a successful check, the check ends there;
    otherwise, and at least every `full_check_seconds`, it reads `models` and `reporters` with
    short read-only connections. PostgreSQL has no such marker: every check reads the active
    model's row (without its weights) and the keys on a connection kept open, about a millisecond,
    and loads the weights from the row only when the active model changed. While the database or
    the weights are locked, unreachable, missing or corrupt, the last good model and keys keep
    serving and the problem is logged once, not on every check.

    Skipping the connection keeps requests fast: opening DuckDB takes tens of milliseconds and
    releases and retakes the GIL many times, each time waiting behind the thread that serves.
    """

    def __init__(
        self,
        storage: ApplicationStorage,
        weights_dir: str,
        refresh_seconds: float,
        logger: logging.Logger,
        full_check_seconds: float = 30.0,
    ):
        self.storage = storage
        self.weights_dir = weights_dir
        self.refresh_seconds = refresh_seconds
        self.full_check_seconds = full_check_seconds
        self.logger = logger
        self.loaded: LoadedModel | None = None
        self.reporter_keys: dict[str, ReporterKey] = {}
        # Whether the keys were read once: before that, an unknown key may be a valid one.
        self.keys_read = False
        self.problem: str | None = None
        self.keys_problem: str | None = None
        self.checkpoint_problem: str | None = None
        self.last_checked_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._start_lock = ForkSafeLock()
        # (change marker, monotonic time) of the last check that found the active model loaded.
        self._verified: tuple[Any, float] | None = None

    def refresh(self) -> None:
        """Check the database once; load the active model if it changed, and the keys."""
        marker = self.storage.change_marker()
        verified = self._verified
        if (
            marker is not None
            and verified is not None
            and verified[0] == marker
            and time.monotonic() - verified[1] < self.full_check_seconds
        ):
            self.last_checked_at = datetime.now(UTC)
            return
        checked_at = time.monotonic()
        # Keep serving the last good model whatever goes wrong.
        try:
            record = self.storage.active_model()
        except Exception as error:  # keep serving the last good model whatever went wrong
            self._report(f"cannot refresh the model: {_reason(error)}")
            if self.loaded is None:
                self._serve_last_served()
        else:
            self._refresh_reporter_keys()
            self._serve(record)
        if self.problem is not None and self.problem != NO_ACTIVE_MODEL:
            metrics.MODEL_REFRESH_FAILURES.inc()
        healthy = self.problem is None and self.keys_problem is None
        self._verified = (marker, checked_at) if healthy else None
        self.last_checked_at = datetime.now(UTC)

    def _serve(self, record: ModelRecord | None) -> None:
        """Load the recorded active model unless it is the one in memory already."""
        if record is None:
            self._report(NO_ACTIVE_MODEL)
            return
        if self.loaded is not None and record.path == self.loaded.path:
            if self.loaded.promoted_at is None and record.created_at is not None:
                # Loaded from `.last-served` while the database could not be read: its promotion
                # time, which the model's age is counted from, is known only now.
                self.loaded = replace(self.loaded, promoted_at=record.created_at)
                metrics.model_served(None, self.loaded.name, record.created_at)
            self._report(None)
            return
        try:
            if self.storage.keeps_weights:
                record, model = self._load_from_storage()
            else:
                # The row is not trusted to point outside the weights folder.
                model = load_model(weights.resolve(record.path, self.weights_dir))
        except Exception as error:  # keep serving the last good model whatever went wrong
            self._report(
                f"cannot refresh the model: the active model {record.path!r} does not load "
                f"from {self.weights_dir}: {_reason(error)}"
            )
            return
        previous = self.model_name
        self.loaded = LoadedModel(model, record.path, datetime.now(UTC), record.created_at)
        metrics.model_served(previous, self.loaded.name, record.created_at)
        self.logger.info("serving model %s", record.path)
        self._report(None)
        if not self.storage.keeps_weights:
            self._record_last_served(record.path)

    @property
    def _last_served_file(self) -> Path:
        return Path(self.weights_dir) / LAST_SERVED_FILE

    def _record_last_served(self, path: str) -> None:
        """Note the model served, for a process that starts while the database cannot be read."""
        written = self._last_served_file.with_name(f"{LAST_SERVED_FILE}.{os.getpid()}")
        try:
            written.write_text(path)
            os.replace(written, self._last_served_file)
        except OSError as error:  # only a start during a lock needs it
            self.logger.warning("cannot note the model served in %s: %s", written, error)

    def _serve_last_served(self) -> None:
        """A process that starts while another holds the database (a worker gunicorn replaces,
        a restart): the model this machine served last, rather than none, until the database can
        be read. The problem stays reported, so health says it is degraded."""
        if self.storage.keeps_weights:
            return
        try:
            path = self._last_served_file.read_text()
            model = load_model(weights.resolve(path, self.weights_dir))
        except (OSError, ValueError):  # never served here, or since pruned: nothing to fall on
            return
        self.loaded = LoadedModel(model, path, datetime.now(UTC))
        metrics.model_served(None, self.loaded.name, None)
        self.logger.warning(
            "serving %s, the model last served here, until the database reads", path
        )

    def _load_from_storage(self) -> tuple[ModelRecord, SpamModel]:
        """The active model from its row, for a storage that keeps weights there (PostgreSQL):
        every host reads the same row, so no file has to reach every host."""
        found = self.storage.active_model_weights()
        if found is None:
            raise ValueError("the active model's row holds no weights")
        record, text = found
        return record, SpamModel.from_weights(weights.from_json(text))

    def _refresh_reporter_keys(self) -> None:
        problem = None
        try:
            self.reporter_keys = self.storage.reporter_keys()
            self.keys_read = True
        except Exception as error:  # keep the last keys until the next check
            problem = f"cannot refresh the reporters' keys: {_reason(error)}"
        self.keys_problem = self._log_change(
            self.keys_problem, problem, "reporters' keys refresh recovered"
        )

    def _log_change(self, previous: str | None, problem: str | None, recovered: str) -> str | None:
        """Log a problem when it starts or changes, and when it ends, not on every check."""
        if problem is not None and problem != previous:
            self.logger.warning(problem)
        elif problem is None and previous is not None:
            self.logger.info(recovered)
        return problem

    def _report(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is None:
            self.logger.info("model refresh recovered")
        else:
            self.logger.warning("%s; still serving %s", problem, self.model_name or "no model")
        self.problem = problem

    @property
    def model_name(self) -> str | None:
        loaded = self.loaded
        return loaded.name if loaded else None

    def current(self) -> LoadedModel | None:
        """The model to answer with."""
        self.ensure_running()
        return self.loaded

    def ensure_running(self) -> None:
        """Restart the background thread in a forked worker: threads do not survive a fork."""
        if self._owner_pid != os.getpid():
            with self._start_lock:
                if self._owner_pid != os.getpid():
                    self.start()

    def start(self) -> None:
        self._owner_pid = os.getpid()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="database-watcher", daemon=True)
        self._thread.start()
        _STARTED_WATCHERS.add(self)

    def stop(self, timeout_seconds: float | None = 5.0) -> None:
        """Stop the thread, waiting up to `timeout_seconds` (None: until it ends), and close the
        storage's connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_seconds)
        self.storage.close()

    def resume_in_forked_worker(self) -> None:
        """Bring a copy inherited through a fork up to date, and keep it so from this process.

        Never raises: in gunicorn's `post_worker_init`, an error would stop the whole server,
        and the thread checks again seconds later anyway."""
        try:
            self.refresh()
            if self.loaded is not None:
                # Inherited metric values start from zero in a new process: say again what it
                # serves.
                metrics.model_served(None, self.loaded.name, self.loaded.promoted_at)
        except Exception as error:
            self.logger.warning("cannot refresh after the fork: %s", _reason(error))
        self.ensure_running()

    def running_here(self) -> bool:
        """Whether this process started the thread and it still runs."""
        thread = self._thread
        return self._owner_pid == os.getpid() and thread is not None and thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()
            if self._stop.is_set():
                break
            self._checkpoint_report_inbox()

    def _checkpoint_report_inbox(self) -> None:
        """Here rather than in a request: the copy takes milliseconds a request would wait for."""
        problem = None
        try:
            self.storage.checkpoint_report_inbox()
        except Exception as error:  # the next round retries; commits checkpoint past a backstop
            problem = f"cannot checkpoint the report inbox: {_reason(error)}"
            metrics.REPORT_INBOX_CHECKPOINT_FAILURES.inc()
        self.checkpoint_problem = self._log_change(
            self.checkpoint_problem, problem, "report inbox checkpoint recovered"
        )

    def health(self) -> dict[str, Any]:
        loaded = self.loaded
        checked = self.last_checked_at
        stale = checked is None or (
            (datetime.now(UTC) - checked).total_seconds() > 3 * self.refresh_seconds + 5
        )
        # A failing checkpoint does not stop reports (commits copy the log past a backstop), but
        # the log grows until someone looks.
        problem = self.problem or self.keys_problem or self.checkpoint_problem
        degraded = problem is not None or stale
        status = "no_model" if loaded is None else ("degraded" if degraded else "ok")
        return {
            "success": loaded is not None,
            "status": status,
            "model": loaded.name if loaded else None,
            "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
            "last_checked_at": checked.isoformat() if checked else None,
            "stale": stale,
            "degraded": degraded,
            "problem": problem,
        }


# Every watcher whose thread was started in this process or its parent (stopped ones too, until
# collected), and those `stop_before_fork` stopped: only these resume after a fork.
_STARTED_WATCHERS: "weakref.WeakSet[DatabaseWatcher]" = weakref.WeakSet()
_STOPPED_FOR_FORKS: list["DatabaseWatcher"] = []
# How long a fork waits for a watcher to leave the database: a refresh ends within its
# connection and statement timeouts, but a master must not hang on one that never does.
FORK_WAIT_SECONDS = 60.0


def stop_before_fork() -> bool:
    """Stop this process's watcher threads, each once it is out of the database, so that a child
    is forked with none of them inside it; whether any was running.

    For a gunicorn master that preloaded the app: SQLite's record of the locks a process holds
    is copied by a fork, and nothing in the child could release what a thread held then."""
    running = [watcher for watcher in list(_STARTED_WATCHERS) if watcher.running_here()]
    for watcher in running:
        watcher.stop(timeout_seconds=FORK_WAIT_SECONDS)
        if watcher.running_here():
            watcher.logger.warning(
                "the database watcher did not stop within %.0f s; forking anyway",
                FORK_WAIT_SECONDS,
            )
    _STOPPED_FOR_FORKS.extend(running)
    return bool(running)


def resume_after_fork() -> None:
    """In a worker forked from a preloading master: each watcher the master stopped for its
    forks, brought up to date and running here."""
    for watcher in _STOPPED_FOR_FORKS:
        watcher.resume_in_forked_worker()


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def init_app(app: Flask) -> None:
    """Load the active model and keys for `app` now, and keep them fresh in the background."""
    refresh_seconds = app.config["MODEL_REFRESH_SECONDS"]
    # A check waits briefly while the pipeline holds the database, then gives up until the next
    # one; requests never wait for it.
    storage = open_storage(
        app.config["DATABASE"], lock_timeout_seconds=min(refresh_seconds, 2.0), serving=True
    )
    watcher = DatabaseWatcher(
        storage,
        app.config["WEIGHTS_DIR"],
        refresh_seconds,
        app.logger,
        full_check_seconds=app.config["MODEL_FULL_CHECK_SECONDS"],
    )
    watcher.refresh()
    watcher.start()
    app.extensions[EXTENSION_KEY] = watcher


def current_watcher() -> DatabaseWatcher:
    """The watcher of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
