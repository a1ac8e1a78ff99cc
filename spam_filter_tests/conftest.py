"""Fixtures on real components: DuckDB files, weights and Dagster storage in a temporary folder."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import api
from spam_filter.definitions import build_resources
from spam_filter.serving.database_watcher import EXTENSION_KEY
from spam_filter.storage.duckdb_storage import DuckDBStorage
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
