"""Fixtures on real components: DuckDB files, weights and Dagster storage in a temporary folder."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from flask import Flask

import api
import database
import sample_data
from spam_filter import checks
from spam_filter.assets import data, model
from spam_filter.definitions import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# How often the apps built by `make_app` check the database for a newly promoted model.
APP_REFRESH_SECONDS = 0.2
# Longer than any test: changes must be noticed from the files, without the periodic full check.
APP_FULL_CHECK_SECONDS = 60.0
# How long a test waits for the watcher to notice a change: the 5 s bound.
SWAP_DEADLINE_SECONDS = 5.0
ASSETS_AND_CHECKS = [
    *dg.load_assets_from_modules([data, model]),
    *dg.load_asset_checks_from_modules([checks]),
]


@pytest.fixture
def project_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every configurable path at a fresh temporary folder."""
    env = {
        "SPAM_FILTER_DATABASE": str(tmp_path / "app.duckdb"),
        "SPAM_FILTER_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "SPAM_FILTER_WEIGHTS_DIR": str(tmp_path / "weights"),
        "SPAM_FILTER_STORAGE_DIR": str(tmp_path / "storage"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def app_db(project_env: dict[str, str]) -> str:
    """An application database with the schema and no rows."""
    path = project_env["SPAM_FILTER_DATABASE"]
    with database.connection(path) as conn:
        database.create_schema(conn)
    return path


@pytest.fixture
def resources(app_db: str) -> dict:
    """The code location's resources, built on the temporary paths."""
    return build_resources()


def add_sample_messages(path: str, count: int = 2_000, seed: int = 0) -> None:
    with database.connection(path) as conn:
        sample_data.insert_sample_messages(conn, count, seed=seed, progress=False)


def materialize_all(resources: dict, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """Materialize every asset and check, in process, as `create_spam_model_job` would."""
    return dg.materialize(
        ASSETS_AND_CHECKS, resources=resources, run_config=run_config, raise_on_error=False
    )


def active_model(path: str) -> database.ModelRecord | None:
    with database.connection(path, read_only=True) as conn:
        return database.active_model(conn)


@pytest.fixture(scope="session")
def trained_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sample messages and one promoted model, trained once per session; tests copy the database."""
    root = tmp_path_factory.mktemp("trained")
    env = {
        "SPAM_FILTER_DATABASE": str(root / "app.duckdb"),
        "SPAM_FILTER_WAREHOUSE": str(root / "warehouse.duckdb"),
        "SPAM_FILTER_WEIGHTS_DIR": str(root / "weights"),
        "SPAM_FILTER_STORAGE_DIR": str(root / "storage"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with database.connection(env["SPAM_FILTER_DATABASE"]) as conn:
            database.create_schema(conn)
        add_sample_messages(env["SPAM_FILTER_DATABASE"])
        result = materialize_all(build_resources())
    assert result.success
    record = active_model(env["SPAM_FILTER_DATABASE"])
    assert record is not None and record.path is not None
    return {"database": env["SPAM_FILTER_DATABASE"], "model_path": record.path}


def copy_trained_state(trained_state: dict[str, str], database_path: str, weights_dir: str) -> Path:
    """Copy the trained database and its model file; the copy's row points at the copied file.

    The API refuses weights outside its own weights folder, so the row must be rewritten too.
    """
    shutil.copyfile(trained_state["database"], database_path)
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    model_path = Path(weights_dir) / Path(trained_state["model_path"]).name
    shutil.copyfile(trained_state["model_path"], model_path)
    with database.connection(database_path) as conn:
        conn.execute(
            "UPDATE models SET path = ? WHERE path = ?",
            [str(model_path), trained_state["model_path"]],
        )
    return model_path


@pytest.fixture
def trained_db(project_env: dict[str, str], trained_state: dict[str, str]) -> str:
    """This test's application database and weights folder, copies of `trained_state`'s."""
    path = project_env["SPAM_FILTER_DATABASE"]
    copy_trained_state(trained_state, path, project_env["SPAM_FILTER_WEIGHTS_DIR"])
    return path


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Build apps on a database; every watcher started here is stopped at teardown."""
    apps: list[Flask] = []

    def build(database_path: str, **config: Any) -> Flask:
        app = api.create_app(
            {
                "TESTING": True,
                "DATABASE": database_path,
                "MODEL_REFRESH_SECONDS": APP_REFRESH_SECONDS,
                "MODEL_FULL_CHECK_SECONDS": APP_FULL_CHECK_SECONDS,
                **config,
            }
        )
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["model_watcher"].stop()


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

import database

for line in sys.stdin:
    command, db, argument = json.loads(line)
    try:
        if command == "promote":
            with database.connection(db) as conn:
                current = database.active_model(conn)
                record = database.ModelRecord(argument, "active", 0.9, 0.01, reason="a test")
                database.promote_model(conn, record, replacing=current.path if current else None)
            print("ok", flush=True)
        elif command == "lock":
            conn = database.connect(db, timeout=30)
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
    watcher's read-only one without the lock error that `database.connect` retries. It stays up
    for the session so that each write does not pay for importing Dagster again.
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


@pytest.fixture(scope="session")
def other_process() -> Iterator[OtherProcess]:
    """The session's second process for database writes."""
    process = OtherProcess()
    yield process
    process.close()
