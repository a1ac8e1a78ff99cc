"""A project copied or moved elsewhere keeps serving its models.

`models.path` names a weights file relative to the weights folder; absolute paths inside the
folder are rewritten to names by `python database.py` and `make run`.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

import database
from spam_filter.serving.routes import TRAIN_HINT
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import ModelRecord
from spam_filter_tests.helpers import copy_trained_state, load_run_system

URL = "/api/find_spam"
SPAM = "you are the winner!"


def _row(path: str | None, status: str = "inactive", compared_with: str | None = None) -> tuple:
    return (path, status, 0.9, 0.01, compared_with)


def _insert(database_path: str, rows: list[tuple]) -> None:
    with DuckDBStorage(database_path).connection() as conn:
        conn.executemany(
            "INSERT INTO models (path, status, true_positive_rate, false_positive_rate, "
            "compared_with) VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def _paths(database_path: str) -> list[tuple[str | None, str | None]]:
    with DuckDBStorage(database_path).connection(read_only=True) as conn:
        return conn.execute("SELECT path, compared_with FROM models ORDER BY rowid").fetchall()


def test_absolute_paths_inside_the_weights_folder_become_names(app_db: str, tmp_path: Path):
    weights_dir = tmp_path / "weights"
    elsewhere = tmp_path / "elsewhere" / "spam_model_b.json"
    _insert(
        app_db,
        [
            _row(str(weights_dir / "spam_model_a.json")),
            _row(str(weights_dir / ".." / "weights" / "spam_model_b.json"), "active"),
            _row(str(elsewhere), compared_with=str(weights_dir / "spam_model_a.json")),
            _row("spam_model_c.json", compared_with=str(elsewhere)),
            _row("/etc/passwd"),
            _row(None, "rejected"),
        ],
    )
    storage = DuckDBStorage(app_db)
    assert storage.relativize_model_paths(weights_dir) == 2
    assert _paths(app_db) == [
        ("spam_model_a.json", None),
        ("spam_model_b.json", None),
        # Paths outside the folder stay as they are, for the API to refuse.
        (str(elsewhere), "spam_model_a.json"),
        ("spam_model_c.json", str(elsewhere)),
        ("/etc/passwd", None),
        (None, None),
    ]
    assert storage.active_model().path == "spam_model_b.json"
    # Running it again changes nothing.
    assert storage.relativize_model_paths(weights_dir) == 0
    assert len(_paths(app_db)) == 6


def _moved(source: Path, destination: Path) -> dict[str, str]:
    """Copy a project folder as `cp -a` does; the copy's database and weights folder."""
    shutil.copytree(source, destination, symlinks=True)
    return {"database": str(destination / "app.duckdb"), "weights": str(destination / "weights")}


@pytest.fixture
def old_project(tmp_path: Path, trained_state: dict[str, str]) -> dict[str, str]:
    """A trained project whose active row holds the absolute path of its weights file."""
    folder = tmp_path / "old"
    folder.mkdir()
    database_path = str(folder / "app.duckdb")
    model_file = copy_trained_state(trained_state, database_path, str(folder / "weights"))
    with DuckDBStorage(database_path).connection() as conn:
        conn.execute("UPDATE models SET path = ?", [str(model_file)])
    return {"folder": str(folder), "database": database_path, "model": model_file.name}


def test_a_moved_project_says_why_its_model_does_not_load(
    make_app: Callable[..., Flask], old_project: dict[str, str], tmp_path: Path
):
    moved = _moved(Path(old_project["folder"]), tmp_path / "new")
    client = make_app(moved["database"], WEIGHTS_DIR=moved["weights"]).test_client()
    response = client.post(URL, json={"text": SPAM})
    assert response.status_code == 503
    error = response.json["error"]
    assert error != TRAIN_HINT
    assert error.startswith("no model can be served: ")
    assert f"{old_project['folder']}/weights/{old_project['model']}" in error
    assert "does not load" in error and moved["weights"] in error
    assert client.get("/api/health").json["problem"] in error


def test_a_project_moved_after_database_py_serves_its_model(
    make_app: Callable[..., Flask],
    old_project: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
):
    monkeypatch.setenv("SPAM_FILTER_WEIGHTS_DIR", str(Path(old_project["folder"]) / "weights"))
    database.main(["--database", old_project["database"]])
    assert "1 weights path" in capsys.readouterr().out
    assert DuckDBStorage(old_project["database"]).active_model().path == old_project["model"]
    # Moved, then the old folder deleted: nothing points back at it.
    moved = _moved(Path(old_project["folder"]), tmp_path / "new")
    shutil.rmtree(old_project["folder"])
    client = make_app(moved["database"], WEIGHTS_DIR=moved["weights"]).test_client()
    body = client.post(URL, json={"text": SPAM}).json
    assert body["success"] is True and body["is_spam"] is True
    assert body["model"] == old_project["model"]


def test_make_run_retrains_when_the_active_model_does_not_load(
    trained_db: str, project_env: dict[str, str]
):
    run_system = load_run_system()
    storage = DuckDBStorage(trained_db)
    weights_dir = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    assert run_system.active_model_problem(storage, weights_dir) is None
    name = storage.active_model().path
    (weights_dir / name).unlink()
    problem = run_system.active_model_problem(storage, weights_dir)
    assert problem.startswith(f"the active model {name} does not load")
    assert "FileNotFoundError" in problem
    storage.promote_model(ModelRecord("/elsewhere/spam_model.json", "active", 0.9, 0.01), name)
    assert "UnsafeWeightsPath" in run_system.active_model_problem(storage, weights_dir)


def test_make_run_trains_when_no_model_is_active(app_db: str, project_env: dict[str, str]):
    problem = load_run_system().active_model_problem(
        DuckDBStorage(app_db), Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    )
    assert problem == "no active model"
