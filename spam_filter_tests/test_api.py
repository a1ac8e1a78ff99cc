"""The HTTP API through Flask's test client, on real DuckDB files and real weights files."""

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from spam_filter.resources import ModelStorage
from spam_filter.serving import database_watcher
from spam_filter.serving.database_watcher import EXTENSION_KEY
from spam_filter.serving.routes import EXPLAINED_TOKENS, TRAIN_HINT
from spam_filter.spam import SpamModel, train_model
from spam_filter_tests.helpers import (
    APP_REFRESH_SECONDS,
    SWAP_DEADLINE_SECONDS,
    OtherProcess,
    child_exit_code,
    fork_checking,
    wait_for,
)

URL = "/api/find_spam"
SPAM = "you are the winner!"
HAM = "Hi, the meeting moved to 3pm, see you soon"


@pytest.fixture
def app(make_app: Callable[..., Flask], trained_db: str) -> Flask:
    """An app serving the session's trained model."""
    return make_app(trained_db)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _inverted_model() -> SpamModel:
    """A model that calls the obvious spam ham, so its answers tell which model served them."""
    return train_model(
        [
            (SPAM, False),
            ("you won a free prize, call now", False),
            (HAM, True),
            ("lunch at the usual place", True),
        ],
        alpha=0.1,
        false_positive_cost=1.0,
    )


def _check(client: FlaskClient, text: str = SPAM) -> dict:
    response = client.post(URL, json={"text": text})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["success"] is True
    return response.json


def _health(client: FlaskClient) -> dict:
    return client.get("/api/health").json


# --- answers ---------------------------------------------------------------------------------


def test_obvious_spam_is_spam(client: FlaskClient, trained_state: dict[str, str]) -> None:
    body = _check(client, SPAM)
    assert body["is_spam"] is True
    assert body["spam_probability"] > 0.5
    assert body["model"] == Path(trained_state["model_path"]).name
    assert set(body) == {"success", "is_spam", "spam_probability", "model"}


def test_ordinary_message_is_not_spam(client: FlaskClient) -> None:
    body = _check(client, HAM)
    assert body["is_spam"] is False
    assert body["spam_probability"] < 0.5


def test_empty_text_gets_the_prior_answer(client: FlaskClient) -> None:
    body = _check(client, "")
    assert body["is_spam"] is False
    assert 0 < body["spam_probability"] < 0.5


def test_batch_answers_in_the_order_sent(client: FlaskClient) -> None:
    texts = [SPAM, HAM, "URGENT: claim your £500 gift voucher, call 09061701461", "ok talk later"]
    response = client.post(URL, json={"texts": texts})
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert [r["is_spam"] for r in body["results"]] == [True, False, True, False]
    for text, result in zip(texts, body["results"], strict=True):
        single = _check(client, text)
        assert result == {k: single[k] for k in ("is_spam", "spam_probability")}
        assert body["model"] == single["model"]


def test_batch_accepts_the_maximum_count(client: FlaskClient) -> None:
    response = client.post(URL, json={"texts": [SPAM, HAM] * 500})
    assert response.status_code == 200
    assert len(response.json["results"]) == 1000
    assert response.json["results"][998]["is_spam"] is True
    assert response.json["results"][999]["is_spam"] is False


def test_explain_lists_what_moved_the_verdict(client: FlaskClient) -> None:
    text = "WINNER! you won a £1000 cash prize, call 09061701461 now"
    plain = _check(client, text)
    body = client.post(URL, json={"text": text, "explain": True}).json
    assert {k: body[k] for k in plain} == plain
    explanation = body["explanation"]
    assert set(explanation) == {"log_odds", "prior_log_odds", "tokens"}
    assert 1 / (1 + math.exp(-explanation["log_odds"])) == pytest.approx(plain["spam_probability"])
    assert explanation["prior_log_odds"] < 0  # the cost-adjusted prior leans towards not spam
    tokens = explanation["tokens"]
    assert 0 < len(tokens) <= EXPLAINED_TOKENS
    assert all(set(item) == {"token", "count", "log_odds"} for item in tokens)
    sizes = [abs(item["log_odds"]) for item in tokens]
    assert sizes == sorted(sizes, reverse=True)
    assert tokens[0]["log_odds"] > 0


def test_explain_works_for_a_batch(client: FlaskClient) -> None:
    texts = [SPAM, HAM, ""]
    body = client.post(URL, json={"texts": texts, "explain": True}).json
    for text, result in zip(texts, body["results"], strict=True):
        single = client.post(URL, json={"text": text, "explain": True}).json
        assert result == {k: single[k] for k in ("is_spam", "spam_probability", "explanation")}
    assert body["results"][2]["explanation"]["tokens"] == []


def test_explain_false_answers_as_without_it(client: FlaskClient) -> None:
    body = client.post(URL, json={"text": SPAM, "explain": False}).json
    assert body == _check(client, SPAM)
    assert "explanation" not in body


# --- error contract --------------------------------------------------------------------------


def _post(data: bytes | str, content_type: str | None = "application/json") -> Callable:
    def send(client: FlaskClient):
        headers = {"Content-Type": content_type} if content_type else {}
        return client.post(URL, data=data, headers=headers)

    return send


def _json(payload: object) -> Callable:
    return lambda client: client.post(URL, json=payload)


ERROR_CASES = {
    "invalid json": (_post("{not json"), 400, "not valid JSON"),
    "truncated json": (_post('{"text": "hi"'), 400, "not valid JSON"),
    "empty body": (_post(""), 400, "not valid JSON"),
    "invalid utf-8": (_post(b'{"text": "\xff\xfe"}'), 400, "not valid JSON"),
    "deeply nested json": (_post("[" * 30_000 + "]" * 30_000), 400, "not valid JSON"),
    "text/plain": (_post('{"text": "hi"}', "text/plain"), 400, "Content-Type"),
    "form encoded": (
        _post("text=hi", "application/x-www-form-urlencoded"),
        400,
        "Content-Type",
    ),
    "no content type": (_post('{"text": "hi"}', None), 400, "Content-Type"),
    "missing text": (_json({}), 400, '"text"'),
    "other key only": (_json({"message": "hi"}), 400, '"text"'),
    "text and texts": (_json({"text": "hi", "texts": ["hi"]}), 400, '"text"'),
    "text is a number": (_json({"text": 5}), 400, '"text" must be a string'),
    "text is null": (_json({"text": None}), 400, '"text" must be a string'),
    "text is a list": (_json({"text": ["hi"]}), 400, '"text" must be a string'),
    "text is an object": (_json({"text": {"a": 1}}), 400, '"text" must be a string'),
    "body is a list": (_json(["hi"]), 400, "JSON object"),
    "body is a string": (_json("hi"), 400, "JSON object"),
    "body is null": (_post("null"), 400, "JSON object"),
    "texts is a string": (_json({"texts": "hi"}), 400, "list of strings"),
    "texts holds a number": (_json({"texts": ["hi", 3]}), 400, "list of strings"),
    "texts is empty": (_json({"texts": []}), 400, "between 1 and 1000"),
    "texts over the limit": (_json({"texts": ["hi"] * 1001}), 400, "between 1 and 1000"),
    "explain is a string": (_json({"text": "hi", "explain": "yes"}), 400, '"explain" must be'),
    "explain is a number": (_json({"texts": ["hi"], "explain": 1}), 400, '"explain" must be'),
    "explain is null": (_json({"text": "hi", "explain": None}), 400, '"explain" must be'),
    "body over 64 KiB": (
        _post(json.dumps({"text": "a" * (64 * 1024)})),
        413,
        "exceeds 65536 bytes",
    ),
    "GET find_spam": (lambda c: c.get(URL), 405, "not allowed"),
    "PUT find_spam": (lambda c: c.put(URL, json={"text": "hi"}), 405, "not allowed"),
    "DELETE find_spam": (lambda c: c.delete(URL), 405, "not allowed"),
    "OPTIONS find_spam": (lambda c: c.options(URL), 405, "not allowed"),
    "POST health": (lambda c: c.post("/api/health", json={}), 405, "not allowed"),
    "unknown path": (lambda c: c.post("/api/nothing", json={"text": "hi"}), 404, "not found"),
    "root": (lambda c: c.get("/"), 404, "not found"),
    "path below find_spam": (lambda c: c.post(URL + "/x", json={"text": "hi"}), 404, "not found"),
    "doubled slash": (lambda c: c.post("/api//find_spam", json={"text": "hi"}), 404, "not found"),
}


@pytest.mark.parametrize(("send", "status", "fragment"), ERROR_CASES.values(), ids=ERROR_CASES)
def test_error_contract(client: FlaskClient, send: Callable, status: int, fragment: str) -> None:
    response = send(client)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    assert fragment.lower() in body["error"].lower()


def test_wrong_method_says_which_are_allowed(client: FlaskClient) -> None:
    response = client.get(URL)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_body_limit_is_configurable(make_app: Callable[..., Flask], trained_db: str) -> None:
    client = make_app(trained_db, MAX_CONTENT_LENGTH=200).test_client()
    assert client.post(URL, json={"text": "a" * 150}).status_code == 200
    response = client.post(URL, json={"text": "a" * 250})
    assert response.status_code == 413
    assert response.json == {"success": False, "error": "request body exceeds 200 bytes"}


def test_batch_limit_is_configurable(make_app: Callable[..., Flask], trained_db: str) -> None:
    client = make_app(trained_db, MAX_BATCH_TEXTS=2).test_client()
    assert client.post(URL, json={"texts": ["a", "b"]}).status_code == 200
    response = client.post(URL, json={"texts": ["a", "b", "c"]})
    assert response.status_code == 400
    assert response.json == {
        "success": False,
        "error": '"texts" must hold between 1 and 2 strings',
    }


def test_no_active_model_answers_503_with_how_to_train(
    make_app: Callable[..., Flask], app_db: str
) -> None:
    client = make_app(app_db).test_client()
    response = client.post(URL, json={"text": SPAM})
    assert response.status_code == 503
    assert response.json == {"success": False, "error": TRAIN_HINT}
    assert "dagster job execute -m spam_filter.definitions -j create_spam_model_job" in TRAIN_HINT
    batch = client.post(URL, json={"texts": [SPAM]})
    assert batch.status_code == 503
    assert batch.json["success"] is False


def test_no_database_file_answers_503(make_app: Callable[..., Flask], project_env: dict) -> None:
    client = make_app(project_env["SPAM_FILTER_DATABASE"]).test_client()
    response = client.post(URL, json={"text": SPAM})
    assert response.status_code == 503
    assert response.json["success"] is False
    health = client.get("/api/health")
    assert health.status_code == 503
    assert health.json["status"] == "no_model"
    assert "cannot refresh" in health.json["problem"]


# --- health ----------------------------------------------------------------------------------


def test_health_ok(client: FlaskClient, trained_state: dict[str, str]) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert body["status"] == "ok"
    assert body["model"] == Path(trained_state["model_path"]).name
    loaded_at = datetime.fromisoformat(body["loaded_at"])
    assert timedelta(0) <= datetime.now(UTC) - loaded_at < timedelta(minutes=1)
    assert body["stale"] is False
    assert body["degraded"] is False
    assert body["problem"] is None


def test_health_no_model(make_app: Callable[..., Flask], app_db: str) -> None:
    response = make_app(app_db).test_client().get("/api/health")
    assert response.status_code == 503
    body = response.json
    assert body["success"] is False
    assert body["status"] == "no_model"
    assert body["model"] is None
    assert body["loaded_at"] is None
    assert "no active model" in body["problem"]


def test_health_stale_when_checks_stop(app: Flask, client: FlaskClient) -> None:
    watcher = app.extensions[EXTENSION_KEY]
    watcher.stop()
    # Stands in for minutes without a check; waiting out the real threshold would take 5.6 s.
    watcher.last_checked_at = datetime.now(UTC) - timedelta(minutes=1)
    body = _health(client)
    assert body["stale"] is True
    assert body["degraded"] is True
    assert body["status"] == "degraded"
    assert _check(client)["is_spam"] is True


def test_a_fork_resumes_only_the_watchers_stopped_for_it(
    make_app: Callable[..., Flask], trained_db: str
) -> None:
    """What a preloading gunicorn does around its forks (see gunicorn_config): a watcher stopped
    on purpose, as when its app was torn down, stays stopped in the child."""
    kept = make_app(trained_db).extensions[EXTENSION_KEY]
    torn_down = make_app(trained_db).extensions[EXTENSION_KEY]
    torn_down.stop()
    try:
        assert database_watcher.stop_before_fork()
        assert not kept.running_here()

        def only_the_stopped_one_resumes() -> bool:
            database_watcher.resume_after_fork()
            return kept.running_here() and not torn_down.running_here()

        assert child_exit_code(fork_checking(only_the_stopped_one_resumes)) == 0
    finally:
        database_watcher._STOPPED_FOR_FORKS.clear()


# --- hot swap --------------------------------------------------------------------------------


def test_hot_swap_serves_the_new_model_without_failing(
    client: FlaskClient,
    trained_db: str,
    trained_state: dict[str, str],
    project_env: dict[str, str],
    other_process: OtherProcess,
) -> None:
    old_name = Path(trained_state["model_path"]).name
    before = _check(client)
    assert before["is_spam"] is True
    assert before["model"] == old_name
    new_path = ModelStorage(weights_dir=project_env["SPAM_FILTER_WEIGHTS_DIR"]).save(
        _inverted_model()
    )
    answers: list[dict] = []
    other_process.promote(trained_db, new_path)
    promoted_at = time.monotonic()
    swapped_at = None
    while time.monotonic() - promoted_at < SWAP_DEADLINE_SECONDS + 1:
        body = _check(client)
        answers.append(body)
        # The model and its answer swap together: never the new name with the old verdict.
        assert body["is_spam"] is (body["model"] == old_name)
        if body["model"] == Path(new_path).name:
            swapped_at = swapped_at or time.monotonic()
            if time.monotonic() - swapped_at > 0.5:
                break
        else:
            assert swapped_at is None, "went back to the old model after the swap"
    assert swapped_at is not None, "the new model was never served"
    assert swapped_at - promoted_at < SWAP_DEADLINE_SECONDS
    assert all(a["success"] for a in answers)
    assert _health(client)["model"] == Path(new_path).name
    assert _health(client)["status"] == "ok"


def test_first_model_is_picked_up_without_restart(
    make_app: Callable[..., Flask],
    app_db: str,
    project_env: dict[str, str],
    other_process: OtherProcess,
) -> None:
    client = make_app(app_db).test_client()
    assert client.post(URL, json={"text": SPAM}).status_code == 503
    path = ModelStorage(weights_dir=project_env["SPAM_FILTER_WEIGHTS_DIR"]).save(_inverted_model())
    other_process.promote(app_db, path)
    assert wait_for(lambda: client.post(URL, json={"text": SPAM}).status_code == 200)
    assert _check(client)["model"] == Path(path).name
    assert wait_for(lambda: _health(client)["status"] == "ok")


# --- degraded: locked database, missing or corrupt weights ------------------------------------


def test_locked_database_keeps_serving_and_reports_degraded(
    make_app: Callable[..., Flask],
    trained_db: str,
    trained_state: dict[str, str],
    other_process: OtherProcess,
) -> None:
    # A lock without writes leaves the files alone: only the periodic full check sees it.
    client = make_app(trained_db, MODEL_FULL_CHECK_SECONDS=0.5).test_client()
    old_name = Path(trained_state["model_path"]).name
    other_process.hold_lock(trained_db, 3.0)
    try:
        degraded = None
        slowest = 0.0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            started = time.monotonic()
            body = _check(client)
            slowest = max(slowest, time.monotonic() - started)
            assert body["model"] == old_name
            assert body["is_spam"] is True
            health = _health(client)
            if health["degraded"]:
                degraded = health
        assert degraded is not None, "health never reported the locked database"
        assert degraded["status"] == "degraded"
        assert degraded["model"] == old_name
        assert "lock" in degraded["problem"].lower()
        # Requests never wait on the database, even while the watcher retries its lock.
        assert slowest < 0.25
    finally:
        other_process.wait_released()
    assert wait_for(lambda: _health(client)["status"] == "ok")


BAD_WEIGHTS = {
    "missing file": (None, "FileNotFoundError"),
    "truncated json": (b'{"spam_bow": {"a": 0.5', "not valid JSON"),
    "not utf-8": (b"\xff\xfe\x00garbage", "not valid JSON"),
    "wrong keys": (b'{"spam_bow": {"a": 0.5}}', "malformed weights"),
    "zero probability": (
        b'{"spam_bow": {"a": 0}, "non_spam_bow": {"a": 0.5}, "percent_spam": 0.3}',
        "malformed weights",
    ),
    "percent_spam out of range": (
        b'{"spam_bow": {"a": 0.5}, "non_spam_bow": {"a": 0.5}, "percent_spam": 1.5}',
        "percent_spam",
    ),
    "empty file": (b"", "not valid JSON"),
}


@pytest.mark.parametrize(("content", "problem"), BAD_WEIGHTS.values(), ids=BAD_WEIGHTS)
def test_bad_weights_keep_the_last_good_model(
    client: FlaskClient,
    trained_db: str,
    trained_state: dict[str, str],
    project_env: dict[str, str],
    other_process: OtherProcess,
    caplog: pytest.LogCaptureFixture,
    content: bytes | None,
    problem: str,
) -> None:
    caplog.set_level(logging.INFO, logger="api")
    old_name = Path(trained_state["model_path"]).name
    bad_path = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"]) / "spam_model_bad.json"
    bad_path.parent.mkdir(parents=True, exist_ok=True)
    if content is not None:
        bad_path.write_bytes(content)
    other_process.promote(trained_db, str(bad_path))
    assert wait_for(lambda: _health(client)["degraded"])
    health = _health(client)
    assert health["status"] == "degraded"
    assert health["model"] == old_name
    assert problem in health["problem"]
    if content is None:
        assert bad_path.name in health["problem"]
    # Several more checks fail the same way; the problem is still logged once.
    time.sleep(APP_REFRESH_SECONDS * 6)
    for _ in range(20):
        body = _check(client)
        assert body["model"] == old_name
        assert body["is_spam"] is True
    warnings = [r for r in caplog.records if "cannot refresh the model" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert old_name in warnings[0].getMessage()

    # Once the promoted file is readable, it is served and health recovers.
    good = ModelStorage(weights_dir=str(bad_path.parent)).save(_inverted_model())
    (bad_path.parent / good).replace(bad_path)
    assert wait_for(lambda: _check(client)["model"] == bad_path.name)
    assert _check(client)["is_spam"] is False
    assert wait_for(lambda: _health(client)["status"] == "ok")
    assert any("model refresh recovered" in r.getMessage() for r in caplog.records)


def test_unchanged_database_is_not_opened(
    app: Flask, client: FlaskClient, trained_db: str, other_process: OtherProcess
) -> None:
    # Were the watcher opening the database, the lock held here would make health degraded.
    other_process.hold_lock(trained_db, 1.5)
    try:
        first_check = _health(client)["last_checked_at"]
        time.sleep(1.0)
        health = _health(client)
        assert health["status"] == "ok"
        assert health["last_checked_at"] > first_check
        assert _check(client)["is_spam"] is True
    finally:
        other_process.wait_released()
