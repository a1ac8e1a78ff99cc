"""Fixtures on real components: DuckDB files, weights and Dagster storage in a temporary folder."""

from pathlib import Path

import dagster as dg
import pytest

import database
import sample_data
from spam_filter import checks
from spam_filter.assets import data, model
from spam_filter.definitions import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent
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
