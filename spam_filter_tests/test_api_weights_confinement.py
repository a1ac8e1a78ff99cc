"""A `models` row may point only at a weights file inside the weights folder.

The database is shared with other processes, so the API does not trust a row to name a file it
should read: paths that leave the folder are refused, and the last good model keeps serving.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from spam_filter import weights
from spam_filter.resources import ModelStorage
from spam_filter.spam import train_model
from spam_filter_tests.helpers import OtherProcess, wait_for

URL = "/api/find_spam"
SPAM = "you are the winner!"


def _inverted_model_file(folder: Path) -> Path:
    """A valid weights file whose model calls obvious spam ham: served, it would show."""
    model = train_model(
        [(SPAM, False), ("you won a free prize, call now", False), ("lunch at noon", True)],
        alpha=0.1,
        false_positive_cost=1.0,
    )
    return folder / ModelStorage(weights_dir=str(folder)).save(model)


def _outside_model(tmp_path: Path) -> Path:
    return _inverted_model_file(tmp_path / "elsewhere")


def _link(weights_dir: Path, target: Path) -> str:
    link = weights_dir / "spam_model_link.json"
    link.symlink_to(target)
    return str(link)


def _hidden(weights_dir: Path, tmp_path: Path) -> str:
    hidden = weights_dir / ".spam_model_hidden.json"
    _outside_model(tmp_path).replace(hidden)
    return str(hidden)


def _not_json(weights_dir: Path, tmp_path: Path) -> str:
    text = weights_dir / "spam_model.txt"
    _outside_model(tmp_path).replace(text)
    return str(text)


# Each builds the path a row records, from the weights folder and the test's temporary folder.
ESCAPES: dict[str, Callable[[Path, Path], str]] = {
    "relative ../../etc/passwd": lambda w, t: "../../etc/passwd",
    "absolute /etc/passwd": lambda w, t: "/etc/passwd",
    "absolute path to a valid model elsewhere": lambda w, t: str(_outside_model(t)),
    "relative path up to a valid model": lambda w, t: os.path.relpath(_outside_model(t), w),
    "through the folder and back out": lambda w, t: f"{w}/../elsewhere/{_outside_model(t).name}",
    "symlink in the folder to a valid model elsewhere": lambda w, t: _link(w, _outside_model(t)),
    "symlink in the folder to /etc/passwd": lambda w, t: _link(w, Path("/etc/passwd")),
    "hidden file in the folder": _hidden,
    "non-json file in the folder": _not_json,
}


@pytest.fixture
def client(make_app: Callable[..., Flask], trained_db: str) -> FlaskClient:
    return make_app(trained_db).test_client()


def _check(client: FlaskClient) -> dict:
    response = client.post(URL, json={"text": SPAM})
    assert response.status_code == 200, response.json
    return response.json


@pytest.mark.parametrize("recorded_path", ESCAPES.values(), ids=ESCAPES)
def test_rows_pointing_outside_the_weights_folder_are_refused(
    client: FlaskClient,
    trained_db: str,
    trained_state: dict[str, str],
    project_env: dict[str, str],
    tmp_path: Path,
    other_process: OtherProcess,
    recorded_path: Callable[[Path, Path], str],
) -> None:
    old_name = Path(trained_state["model_path"]).name
    weights_dir = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    path = recorded_path(weights_dir, tmp_path)
    other_process.promote(trained_db, path)
    assert wait_for(lambda: client.get("/api/health").json["degraded"])
    health = client.get("/api/health")
    assert health.status_code == 200
    assert health.json["status"] == "degraded"
    assert health.json["model"] == old_name
    assert "UnsafeWeightsPath" in health.json["problem"]
    assert repr(path) in health.json["problem"]
    for _ in range(5):
        body = _check(client)
        assert (body["model"], body["is_spam"]) == (old_name, True)

    # A model inside the folder is taken again: the refusal was of that path, not of any change.
    good = _inverted_model_file(weights_dir)
    other_process.promote(trained_db, str(good))
    assert wait_for(lambda: _check(client)["model"] == good.name)
    assert _check(client)["is_spam"] is False
    assert wait_for(lambda: client.get("/api/health").json["status"] == "ok")


# --- weights.resolve -------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "spam_model_a.json").write_text("{}")
    (tmp_path / "outside.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "stored",
    ["spam_model_a.json", "./spam_model_a.json", "sub/../spam_model_a.json", "spam_model_a.json/"],
)
def test_resolve_accepts_names_inside(folder: Path, stored: str) -> None:
    assert weights.resolve(stored, folder) == folder.resolve() / "spam_model_a.json"


def test_resolve_accepts_absolute_paths_inside(folder: Path) -> None:
    path = folder / "spam_model_a.json"
    assert weights.resolve(str(path), folder) == path.resolve()
    assert weights.resolve(str(path), str(folder)) == path.resolve()


def test_resolve_names_a_file_that_does_not_exist_yet(folder: Path) -> None:
    # Confinement is about where, not whether: reading a missing file fails later, on its own.
    expected = folder.resolve() / "spam_model_new.json"
    assert weights.resolve("spam_model_new.json", folder) == expected


def test_resolve_follows_a_symlink_that_stays_inside(folder: Path) -> None:
    (folder / "alias.json").symlink_to(folder / "spam_model_a.json")
    assert weights.resolve("alias.json", folder) == folder.resolve() / "spam_model_a.json"


def test_resolve_works_through_a_symlinked_folder(folder: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked_weights"
    linked.symlink_to(folder)
    assert weights.resolve("spam_model_a.json", linked) == folder.resolve() / "spam_model_a.json"
    assert weights.resolve(str(folder / "spam_model_a.json"), linked) == (
        folder.resolve() / "spam_model_a.json"
    )


REFUSED = [
    "../outside.json",
    "../../etc/passwd",
    "/etc/passwd",
    "/etc/passwd.json",
    "../weights/../outside.json",
    "sub/spam_model_a.json",
    ".spam_model_a.json",
    ".lock",
    ".spam_model_x.json.partial",
    "spam_model_a.txt",
    "spam_model_a.JSON",
    "spam_model_a",
    "",
    ".",
    "..",
]


@pytest.mark.parametrize("stored", REFUSED)
def test_resolve_refuses_paths_out_of_the_folder_and_other_names(folder: Path, stored: str) -> None:
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve(stored, folder)


def test_resolve_refuses_absolute_paths_elsewhere(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve(str(tmp_path / "outside.json"), folder)
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve(f"{folder}/../outside.json", folder)


def test_resolve_refuses_a_symlink_out_of_the_folder(folder: Path, tmp_path: Path) -> None:
    (folder / "spam_model_link.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve("spam_model_link.json", folder)
    # A link to a folder outside, with a weights-like name below it.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "spam_model_b.json").write_text("{}")
    (folder / "sub").symlink_to(tmp_path / "other")
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve("sub/spam_model_b.json", folder)


def test_resolve_refuses_a_nul_byte(folder: Path) -> None:
    # The OS cannot name such a file; it is refused like any other path out of the folder.
    with pytest.raises(weights.UnsafeWeightsPath):
        weights.resolve("spam_model_a.json\x00.json", folder)
