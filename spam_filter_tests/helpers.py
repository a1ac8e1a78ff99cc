"""What tests share beyond fixtures: paths, data set-up, waiting, and a second writing process."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import dagster as dg

import sample_data
from spam_filter import checks, settings, weights
from spam_filter.assets import deployment, ingestion, training
from spam_filter.processes import RETRAIN_JOB_ARGUMENTS
from spam_filter.resources import ModelStorage
from spam_filter.spam import SpamModel, load_model, train_model
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.postgres_storage import PostgresStorage
from spam_filter.storage.records import ModelRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JOB_COMMAND = [str(BIN / "dagster"), *RETRAIN_JOB_ARGUMENTS]
# How often the apps built by the `make_app` fixture check the database for a new model.
APP_REFRESH_SECONDS = 0.2
# Longer than any test: changes must be noticed from the files, without the periodic full check.
APP_FULL_CHECK_SECONDS = 60.0
# How long a test waits for the API to serve a newly promoted model.
SWAP_DEADLINE_SECONDS = 5.0
ASSETS_AND_CHECKS = [
    *dg.load_assets_from_modules([ingestion, training, deployment]),
    *dg.load_asset_checks_from_modules([checks, deployment]),
]


def project_paths(root: Path) -> dict[str, str]:
    """The environment that points every configurable path into `root`."""
    return {
        "SPAM_FILTER_DATABASE": str(root / "app.duckdb"),
        "SPAM_FILTER_WAREHOUSE": str(root / "warehouse.duckdb"),
        "SPAM_FILTER_WEIGHTS_DIR": str(root / "weights"),
        "SPAM_FILTER_STORAGE_DIR": str(root / "storage"),
    }


def add_sample_messages(path: str, count: int = 2_000, seed: int = 0) -> None:
    sample_data.insert_sample_messages(DuckDBStorage(path), count, seed=seed, progress=False)


def add_sample_messages_to_postgres(url: str, count: int = 2_000, seed: int = 0) -> None:
    """The same sample messages as `add_sample_messages`, appended to a PostgreSQL database."""
    storage = PostgresStorage(url)
    storage.create_schema()
    sample_data.insert_sample_messages(storage, count, seed=seed, progress=False)


def promote_weak_model_in_row(url: str) -> str:
    """`promote_weak_model` on PostgreSQL: the weak model's weights go into its row."""
    weak = train_model(
        [("claim your prize now", True), ("see you at lunch", False)],
        alpha=1.0,
        false_positive_cost=1.0,
    )
    storage = PostgresStorage(url)
    current = storage.active_model()
    name = weights.new_name()
    record = ModelRecord(name, "active", 0.5, 0.5, reason="a weak model for a test")
    storage.promote_model(
        record,
        replacing=current.path if current else None,
        weights=weights.to_json(weak.to_weights()),
    )
    return name


def materialize_all(resources: dict, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """Materialize every asset and check, in process, as `create_spam_model_job` would."""
    return dg.materialize(
        ASSETS_AND_CHECKS, resources=resources, run_config=run_config, raise_on_error=False
    )


def active_model(path: str) -> ModelRecord | None:
    return DuckDBStorage(path).active_model()


def copy_trained_state(trained_state: dict[str, str], database_path: str, weights_dir: str) -> Path:
    """Copy the trained database and its model file; returns the copied file.

    Rows name weights files relative to the weights folder, so the copy's row names the copy.
    """
    shutil.copyfile(trained_state["database"], database_path)
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    model_path = Path(weights_dir) / Path(trained_state["model_path"]).name
    shutil.copyfile(trained_state["model_path"], model_path)
    return model_path


def recorded_file(path: str) -> Path:
    """The file a `models.path` value names, in the configured weights folder."""
    return weights.resolve(path, settings.weights_dir())


def load_recorded(path: str) -> SpamModel:
    """The model a `models.path` value names, in the configured weights folder."""
    return load_model(recorded_file(path))


def start_job(env: dict[str, str], run_config: Path | None = None) -> subprocess.Popen:
    """`create_spam_model_job` through the real CLI, its output as text on stdout."""
    command = JOB_COMMAND if run_config is None else [*JOB_COMMAND, "--config", str(run_config)]
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def load_run_system() -> ModuleType:
    """scripts/run_system.py as a module: a script, not part of the package."""
    spec = importlib.util.spec_from_file_location(
        "run_system", PROJECT_ROOT / "scripts" / "run_system.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fork_checking(check: Callable[[], bool]) -> int:
    """Fork this process; the child exits 0 when `check()` holds, 1 when it does not and 2 when it
    raises, without running the test run's clean-up. Returns the child's pid."""
    child = os.fork()
    if child == 0:
        try:
            os._exit(0 if check() else 1)
        finally:
            os._exit(2)
    return child


def child_exit_code(child: int, timeout_seconds: float = 10) -> int | None:
    """A forked child's exit code, or None when it has not ended within `timeout_seconds` (it is
    then killed)."""
    deadline = time.monotonic() + timeout_seconds
    while (ended := os.waitpid(child, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            return None
        time.sleep(0.05)
    return os.waitstatus_to_exitcode(ended[1])


def as_in_a_terminal() -> None:
    """A `preexec_fn` that gives the child Ctrl-C's default handling, as a command typed in a
    terminal has: a test suite started in the background (`cmd &` without job control) hands
    its children SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(
    condition: Callable[[], bool], seconds: float = SWAP_DEADLINE_SECONDS, interval: float = 0.02
) -> bool:
    """Whether `condition` holds within `seconds`, polling it every `interval` seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


_OTHER_PROCESS_SCRIPT = """
import json
import sys
import time

from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import ModelRecord
from spam_filter.weights import settle

for line in sys.stdin:
    command, db, argument = json.loads(line)
    try:
        storage = DuckDBStorage(db, lock_timeout_seconds=30)
        if command == "promote":
            current = storage.active_model()
            record = ModelRecord(argument, "active", 0.9, 0.01, reason="a test")
            storage.promote_model(record, replacing=current.path if current else None)
            print("ok", flush=True)
        elif command == "lock":
            conn = storage.connect()
            print("ok", flush=True)
            time.sleep(argument)
            conn.close()
            print("released", flush=True)
    except Exception as error:
        print(f"error {type(error).__name__}: {error}", flush=True)
"""


class OtherProcess:
    """A second Python process that writes the database, as the pipeline does beside the API.

    Another process, because inside one process DuckDB refuses a read-write connection next to the
    watcher's read-only one without the lock error that the storage retries. It stays up for the
    session so that each write does not pay for starting Python again.
    """

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS_SCRIPT],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _call(self, command: str, db: str, argument: object) -> None:
        self._process.stdin.write(json.dumps([command, db, argument]) + "\n")
        self._process.stdin.flush()
        self._expect("ok")

    def _expect(self, answer: str) -> None:
        line = self._process.stdout.readline().strip()
        if line != answer:
            raise RuntimeError(f"the other process answered {line!r}, not {answer!r}")

    def promote(self, db: str, model_path: str) -> None:
        """Make `model_path` the active model, replacing whichever is active."""
        self._call("promote", db, model_path)

    def hold_lock(self, db: str, seconds: float) -> None:
        """Open `db` read-write and return once it is held; `wait_released` waits for the end."""
        self._call("lock", db, seconds)

    def wait_released(self) -> None:
        self._expect("released")

    def close(self) -> None:
        self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def model_record(path: str | None, tpr: float = 0.9, fpr: float = 0.01) -> ModelRecord:
    """A model row to promote in storage tests."""
    return ModelRecord(
        path=path,
        status="active",
        true_positive_rate=tpr,
        false_positive_rate=fpr,
        seed=0,
        reason="test",
    )


def spelled(number: int) -> str:
    """A word of letters only that stands for `number`: texts that differ only in their numbers
    are one message to the model, so distinct test messages differ in words."""
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters = "abcdefghijklmnopqrstuvwxyz"[digit] + letters
        if number == 0:
            return "x" + letters


def promote_weak_model(database_path: str, weights_dir: str) -> str:
    """Make a barely trained model active, so that the next retrain beats it and is promoted.

    A retrain on unchanged data is better nowhere and promotes nothing; tests of what happens
    around a promotion start from a model worth replacing. Returns the weak model's name.
    """
    weak = train_model(
        [("claim your prize now", True), ("see you at lunch", False)],
        alpha=1.0,
        false_positive_cost=1.0,
    )
    model_storage = ModelStorage(weights_dir=weights_dir)
    name = model_storage.save(weak)
    storage = DuckDBStorage(database_path, lock_timeout_seconds=30)
    current = storage.active_model()
    record = ModelRecord(name, "active", 0.5, 0.5, reason="a weak model for a test")
    storage.promote_model(record, replacing=current.path if current else None)
    model_storage.settle(name)
    return name
