"""Rollback: list the models, make an earlier one active again, keep the last retired weights."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from spam_filter.definitions import defs
from spam_filter.resources import ModelStorage
from spam_filter.rollback import RollbackRefused, prune_retired_weights, roll_back
from spam_filter.spam import train_model
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import ModelRecord
from spam_filter_tests.helpers import PROJECT_ROOT, wait_for


def _promote_models(app_db: str, weights_dir: str, count: int) -> list[str]:
    """Promote `count` models one after the other; their paths, oldest first."""
    storage = DuckDBStorage(app_db)
    model_storage = ModelStorage(weights_dir=weights_dir)
    names = []
    for index in range(count):
        model = train_model([(f"win {index} prize", True), ("lunch", False)], 0.1, 1.0)
        name = model_storage.save(model)
        model_storage.settle(name)
        current = storage.active_model()
        record = ModelRecord(name, "active", 0.9, 0.001, reason=f"model {index}")
        storage.promote_model(record, replacing=current.path if current else None)
        names.append(name)
    return names


@pytest.fixture
def three_models(app_db: str, project_env: dict[str, str]) -> list[str]:
    return _promote_models(app_db, project_env["SPAM_FILTER_WEIGHTS_DIR"], 3)


def _cli(project_env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "database.py", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=project_env,
    )


def test_rollback_returns_to_the_model_active_before(app_db, project_env, three_models):
    storage = DuckDBStorage(app_db)
    target, replaced = roll_back(storage, project_env["SPAM_FILTER_WEIGHTS_DIR"])
    assert (target.path, replaced.path) == (three_models[1], three_models[2])
    assert storage.active_model().path == three_models[1]
    # Twice undoes it: the previous active model is the one just rolled back from.
    roll_back(storage, project_env["SPAM_FILTER_WEIGHTS_DIR"])
    assert storage.active_model().path == three_models[2]
    statuses = [r.status for r in storage.model_history()]
    assert statuses.count("active") == 1


def test_rollback_to_a_named_model(app_db, project_env, three_models):
    storage = DuckDBStorage(app_db)
    roll_back(storage, project_env["SPAM_FILTER_WEIGHTS_DIR"], Path(three_models[0]).name)
    assert storage.active_model().path == three_models[0]


def test_rollback_refuses_what_cannot_be_served(app_db, project_env, three_models):
    storage = DuckDBStorage(app_db)
    weights_dir = project_env["SPAM_FILTER_WEIGHTS_DIR"]
    with pytest.raises(RollbackRefused, match="no retired model named"):
        roll_back(storage, weights_dir, "spam_model_nothing.json")
    (Path(weights_dir) / three_models[1]).unlink()
    with pytest.raises(RollbackRefused, match="cannot be loaded"):
        roll_back(storage, weights_dir)
    assert storage.active_model().path == three_models[2]


def test_only_the_last_retired_weights_are_kept(app_db, project_env):
    weights_dir = project_env["SPAM_FILTER_WEIGHTS_DIR"]
    paths = _promote_models(app_db, weights_dir, 8)
    deleted = prune_retired_weights(DuckDBStorage(app_db), weights_dir, keep=5)
    assert sorted(deleted) == sorted(Path(p).name for p in paths[:2])
    assert [(Path(weights_dir) / p).exists() for p in paths] == [False, False] + [True] * 6
    assert prune_retired_weights(DuckDBStorage(app_db), weights_dir, keep=5) == []


def test_the_command_line_lists_and_rolls_back(app_db, project_env, three_models):
    # A rejected model, as a retrain on unchanged data records one: a row without a file.
    DuckDBStorage(app_db).record_rejected_model(
        ModelRecord(None, "rejected", 0.9, 0.001, reason="better nowhere than the active model")
    )
    listing = _cli(project_env, "models")
    assert listing.returncode == 0, listing.stderr
    assert "rejected" in listing.stdout and "(no file: not promoted)" in listing.stdout
    names = [Path(p).name for p in three_models]
    lines = listing.stdout.splitlines()
    assert "active" in next(line for line in lines if names[2] in line)
    assert "inactive" in next(line for line in lines if names[0] in line)
    assert "model 1" in listing.stdout  # the reason of each model
    rolled = _cli(project_env, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert f"{names[1]} is active again, in place of {names[2]}" in rolled.stdout
    refused = _cli(project_env, "rollback", "nothing.json")
    assert refused.returncode == 1 and "no retired model named" in refused.stderr


def test_the_api_serves_a_rolled_back_model_within_seconds(
    make_app, app_db, project_env, three_models
):
    client = make_app(app_db).test_client()
    assert client.get("/api/health").json["model"] == Path(three_models[2]).name
    assert _cli(project_env, "rollback").returncode == 0
    assert wait_for(lambda: client.get("/api/health").json["model"] == Path(three_models[1]).name)


def test_the_rollback_job_takes_the_model_as_config(resources, app_db, project_env, three_models):
    job = defs.resolve_job_def("rollback_model_job")
    config = {"ops": {"rollback_model": {"config": {"model": Path(three_models[0]).name}}}}
    result = job.execute_in_process(run_config=config, resources=resources)
    assert result.success
    assert DuckDBStorage(app_db).active_model().path == three_models[0]
    # The catalog shows the change beside `model_file`'s last materialization.
    (observation,) = result.asset_observations_for_node("rollback_model")
    assert observation.asset_key == dg.AssetKey("model_file")
    assert observation.metadata["active_model"].value == three_models[0]
    assert observation.metadata["rolled_back_from"].value == three_models[2]
    refused = job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": {"model": "nothing.json"}}}},
        resources=resources,
        raise_on_error=False,
    )
    assert not refused.success
    assert "no retired model named" in refused.failure_data_for_node("rollback_model").error.message
