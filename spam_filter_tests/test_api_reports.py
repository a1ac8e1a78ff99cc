"""`POST /api/report` through Flask's test client, on real DuckDB and SQLite files."""

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from spam_filter.reporter_keys import key_hash, new_key
from spam_filter.serving.database_watcher import EXTENSION_KEY
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import spelled, wait_for

URL = "/api/report"


@pytest.fixture
def storage(trained_db: str) -> DuckDBStorage:
    return DuckDBStorage(trained_db)


@pytest.fixture
def key(storage: DuckDBStorage) -> str:
    """The key of a reporter created before the app starts."""
    key = new_key()
    storage.add_reporter("honest", key_hash(key))
    return key


@pytest.fixture
def app(make_app: Callable[..., Flask], trained_db: str, key: str) -> Flask:
    return make_app(trained_db)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _post(client: FlaskClient, key: str | None, payload: object, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post(URL, json=payload, headers=headers, **kwargs)


def _stored(storage: DuckDBStorage) -> list[tuple]:
    storage.drain_reports()
    with storage.connection(read_only=True) as conn:
        return conn.execute(
            "SELECT body, spam, message_id FROM reports ORDER BY reported_at, body"
        ).fetchall()


def test_one_report_is_accepted_once_durable(client, key, storage):
    response = _post(client, key, {"text": "Your parcel has a £1.99 fee", "is_spam": True})
    assert response.status_code == 202
    assert response.json == {"success": True, "accepted": 1, "duplicates": 0}
    assert _stored(storage) == [("Your parcel has a £1.99 fee", True, None)]


def test_a_batch_counts_new_votes_and_repeats(client, key, storage):
    reports = [
        {"text": "win a prize now", "is_spam": True},
        {"text": "WIN a prize   now", "is_spam": True},  # the same message, normalised
        {"text": "lunch at noon?", "is_spam": False, "message_id": "m-1"},
    ]
    first = _post(client, key, {"reports": reports})
    assert first.status_code == 202
    assert first.json == {"success": True, "accepted": 2, "duplicates": 1}
    # A retried request changes nothing; a changed label replaces the reporter's earlier vote.
    again = _post(client, key, {"reports": reports})
    assert again.json == {"success": True, "accepted": 0, "duplicates": 3}
    flipped = _post(client, key, {"text": "lunch at noon?", "is_spam": True, "message_id": "m-1"})
    assert flipped.json == {"success": True, "accepted": 1, "duplicates": 0}
    assert sorted(_stored(storage)) == [
        ("lunch at noon?", True, "m-1"),
        ("win a prize now", True, None),
    ]


def test_the_watcher_checkpoints_the_inbox_that_requests_fill(client, key, storage):
    storage.inbox.create()
    empty_inbox_bytes = storage.inbox.path.stat().st_size
    for request in range(200):
        reports = [
            {"text": f"report {spelled(request * 10 + i)}", "is_spam": True} for i in range(10)
        ]
        assert _post(client, key, {"reports": reports}).status_code == 202
    # Requests leave the log for the app's watcher thread, which copies it within a few rounds.
    assert wait_for(lambda: storage.inbox.path.stat().st_size > 100 * empty_inbox_bytes)
    assert storage.drain_reports() == 2_000


def test_a_report_restarts_the_watcher_in_a_forked_worker(app, client, key):
    watcher = app.extensions[EXTENSION_KEY]
    watcher.stop()
    watcher._owner_pid = None  # as in a worker forked after the watcher's thread started
    response = _post(client, key, {"text": "first request of this worker", "is_spam": True})
    assert response.status_code == 202
    # Its thread keeps the keys fresh and checkpoints the inbox, whatever the worker serves.
    assert watcher._thread is not None and watcher._thread.is_alive()


def test_a_full_batch_of_sms_length_reports_fits_the_body_limit(client, key, storage):
    text = "Royal Mail: your parcel is on hold, pay the £1.99 fee at rm-redeliver.example " * 2
    reports = [{"text": f"{spelled(i)} {text[:140]}", "is_spam": True} for i in range(1000)]
    response = _post(client, key, {"reports": reports})
    assert response.status_code == 202, response.json
    assert response.json["accepted"] == 1000
    assert len(_stored(storage)) == 1000


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer sfr_not-a-real-key"],
    ids=["missing", "empty", "no key", "blank key", "basic", "unknown"],
)
def test_without_a_valid_key_answers_401_with_a_challenge(client, storage, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post(URL, json={"text": "x", "is_spam": True}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["success"] is False
    assert _stored(storage) == []


@pytest.mark.parametrize("padding", ["\u00a0", "\u0085", "\x1c"], ids=["nbsp", "nel", "fs"])
def test_a_key_with_characters_beyond_http_whitespace_is_not_that_key(client, key, padding):
    headers = {"Authorization": f"Bearer {key}{padding}"}
    response = client.post(URL, json={"text": "x", "is_spam": True}, headers=headers)
    assert response.status_code == 401
    # Spaces and tabs around it are HTTP's own padding.
    assert _post(client, key, {"text": "x", "is_spam": True}).status_code == 202
    headers = {"Authorization": f"Bearer \t{key} "}
    assert client.post(URL, json={"text": "y", "is_spam": True}, headers=headers).status_code == 202


BAD_REPORTS = {
    "is_spam a string": ({"text": "x", "is_spam": "true"}, '"is_spam"'),
    "is_spam a number": ({"text": "x", "is_spam": 1}, '"is_spam"'),
    "is_spam missing": ({"text": "x"}, '"is_spam"'),
    "empty text": ({"text": "", "is_spam": True}, '"text"'),
    "blank text": ({"text": "  \n ", "is_spam": True}, '"text"'),
    "text not a string": ({"text": ["x"], "is_spam": True}, '"text"'),
    "over-long text": ({"text": "x" * 2001, "is_spam": True}, "longer than 2000"),
    "unknown field": ({"text": "x", "is_spam": True, "label": "spam"}, "unknown fields: label"),
    "message_id a number": ({"text": "x", "is_spam": True, "message_id": 7}, '"message_id"'),
    "empty message_id": ({"text": "x", "is_spam": True, "message_id": ""}, '"message_id"'),
    "empty batch": ({"reports": []}, '"reports"'),
    "too many": ({"reports": [{"text": "x", "is_spam": True}] * 1001}, "1 to 1000"),
    "batch not a list": ({"reports": {"text": "x", "is_spam": True}}, '"reports"'),
    "both forms": ({"reports": [], "text": "x", "is_spam": True}, "not both"),
    "item not an object": ({"reports": ["spam"]}, "reports[0]"),
    "bad item": ({"reports": [{"text": "ok", "is_spam": True}, {"text": "x"}]}, "reports[1]"),
    "not an object": (["x"], "JSON object"),
}


@pytest.mark.parametrize(("payload", "fragment"), BAD_REPORTS.values(), ids=BAD_REPORTS)
def test_malformed_reports_answer_400_and_store_nothing(client, key, storage, payload, fragment):
    response = _post(client, key, payload)
    assert response.status_code == 400
    assert response.json["success"] is False
    assert fragment in response.json["error"]
    assert _stored(storage) == []


def test_a_repeated_key_in_a_report_is_refused(client, key):
    response = client.post(
        URL,
        data=b'{"text": "x", "is_spam": true, "is_spam": false}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "repeats a key" in response.json["error"]


def test_a_body_past_the_report_limit_answers_413(make_app, trained_db, key):
    client = make_app(trained_db, MAX_REPORT_BODY_BYTES=1000).test_client()
    response = _post(client, key, {"text": "x" * 1200, "is_spam": True})
    assert response.status_code == 413
    assert response.json["error"] == "request body exceeds 1000 bytes"


def test_past_the_rate_limit_answers_429_with_retry_after(make_app, trained_db, key, storage):
    client = make_app(trained_db, REPORT_RATE_PER_SECOND=1.0, REPORT_BURST=3.0).test_client()
    batch = {"reports": [{"text": f"message {spelled(i)}", "is_spam": True} for i in range(3)]}
    assert _post(client, key, batch).status_code == 202
    refused = _post(client, key, {"text": "one more", "is_spam": True})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "rate limit" in refused.json["error"]
    assert len(_stored(storage)) == 3


def test_a_batch_larger_than_the_burst_answers_400_not_a_429_that_never_clears(
    make_app, trained_db, key, storage
):
    client = make_app(trained_db, REPORT_RATE_PER_SECOND=1.0, REPORT_BURST=3.0).test_client()
    batch = {"reports": [{"text": f"message {spelled(i)}", "is_spam": True} for i in range(4)]}
    refused = _post(client, key, batch)
    assert refused.status_code == 400
    assert "burst of 3" in refused.json["error"]
    assert "Retry-After" not in refused.headers
    assert _stored(storage) == []
    # The key's bucket is untouched: a batch that fits still passes at once.
    assert _post(client, key, {"reports": batch["reports"][:3]}).status_code == 202


def test_each_reporter_has_its_own_bucket(make_app, trained_db, key, storage):
    other = new_key()
    storage.add_reporter("other", key_hash(other))
    client = make_app(trained_db, REPORT_RATE_PER_SECOND=1.0, REPORT_BURST=1.0).test_client()
    assert _post(client, key, {"text": "a", "is_spam": True}).status_code == 202
    assert _post(client, key, {"text": "b", "is_spam": True}).status_code == 429
    assert _post(client, other, {"text": "b", "is_spam": True}).status_code == 202


def test_keys_created_and_revoked_while_serving_take_effect(client, key, storage):
    late = new_key()
    storage.add_reporter("late", key_hash(late))
    assert wait_for(lambda: _post(client, late, {"text": "a", "is_spam": True}).status_code == 202)
    storage.revoke_reporter("honest")
    assert wait_for(lambda: _post(client, key, {"text": "b", "is_spam": True}).status_code == 401)
    assert _post(client, late, {"text": "c", "is_spam": False}).status_code == 202


def test_find_spam_is_unchanged_and_needs_no_key(client):
    response = client.post("/api/find_spam", json={"text": "you are the winner!"})
    assert response.status_code == 200
    assert response.json["is_spam"] is True


@pytest.mark.parametrize(
    "field, value",
    [("text", "spam\u0000with a NUL"), ("text", "half a pair \ud800"), ("message_id", "m\u0000")],
)
def test_text_a_database_cannot_store_is_refused(client, key, storage, field, value):
    report = {"text": "a fine text", "is_spam": True, field: value}
    response = _post(client, key, {"reports": [{"text": "first", "is_spam": True}, report]})
    assert response.status_code == 400
    assert "without NUL characters" in response.json["error"]
    assert _stored(storage) == []
