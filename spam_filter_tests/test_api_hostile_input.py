"""Hostile input to the API through Flask's test client: generated JSON, raw bytes, odd headers.

Whatever arrives, the answer is never a 5xx, is always a JSON object with a boolean `success`, and
a 200 has the documented shape. Generated requests with a known meaning get exactly the status
the contract gives them.
"""

import io
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from spam_filter.serving.request_parsing import MAX_JSON_DEPTH
from spam_filter_tests import hostile

# Large enough that 100,000-digit numbers and 100,000 brackets reach the JSON parser.
ROOMY_BODY_BYTES = 2 * 1024 * 1024


@pytest.fixture
def client(make_app: Callable[..., Flask], trained_db: str) -> FlaskClient:
    """An app with the default body limit, serving the trained model."""
    return make_app(trained_db).test_client()


@pytest.fixture
def roomy_client(make_app: Callable[..., Flask], trained_db: str) -> FlaskClient:
    """An app whose body limit lets huge inputs through to the parser."""
    return make_app(trained_db, MAX_CONTENT_LENGTH=ROOMY_BODY_BYTES).test_client()


def _post(client: FlaskClient, body: bytes, content_type: str | None) -> TestResponse:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.post(hostile.URL, data=body, headers=headers)


def _assert_contract(response: TestResponse) -> None:
    problems = hostile.contract_problems(
        response.status_code, response.content_type, response.get_data()
    )
    assert not problems, problems


@settings(hostile.BOUNDED, max_examples=200)
@given(
    payload=hostile.payloads,
    encoding=hostile.encodings,
    content_type=hostile.json_content_types,
)
def test_generated_json_gets_the_contracted_status(
    client: FlaskClient, payload: object, encoding: str, content_type: str
) -> None:
    body = hostile.encode(payload, encoding)
    response = _post(client, body, content_type)
    _assert_contract(response)
    assert response.status_code == hostile.expected_status(payload, body), (
        response.json,
        body[:300],
    )
    if response.status_code == 200 and "texts" in payload:
        assert len(response.json["results"]) == len(payload["texts"])


@settings(hostile.BOUNDED, max_examples=150)
@given(payload=hostile.payloads, content_type=hostile.other_content_types)
def test_anything_not_sent_as_json_is_refused_unread(
    client: FlaskClient, payload: object, content_type: str | None
) -> None:
    response = _post(client, hostile.encode(payload, "utf-8"), content_type)
    _assert_contract(response)
    assert response.status_code == 400
    assert "Content-Type" in response.json["error"]


@pytest.mark.parametrize("roomy", [False, True], ids=["64 KiB limit", "2 MiB limit"])
@settings(hostile.BOUNDED, max_examples=150)
@given(body=hostile.raw_bodies, content_type=hostile.json_content_types)
def test_raw_bytes_never_break_the_contract(
    client: FlaskClient, roomy_client: FlaskClient, roomy: bool, body: bytes, content_type: str
) -> None:
    response = _post(roomy_client if roomy else client, body, content_type)
    _assert_contract(response)
    limit = ROOMY_BODY_BYTES if roomy else hostile.MAX_BODY_BYTES
    assert response.status_code in ({413} if len(body) > limit else {200, 400}), response.json


@settings(hostile.BOUNDED, max_examples=100)
@given(documents=hostile.repeated_key_documents())
def test_a_repeated_key_is_refused_at_any_depth(
    client: FlaskClient, documents: tuple[bytes, bytes]
) -> None:
    with_repeat, without = documents
    refused = _post(client, with_repeat, "application/json")
    assert refused.status_code == 400, (refused.json, with_repeat[:300])
    assert refused.json == {
        "success": False,
        "error": "request body repeats a key within an object",
    }
    # The same request without the repeat is fine: the repeat alone is refused.
    accepted = _post(client, without, "application/json")
    assert accepted.status_code == 200, (accepted.json, without[:300])


def _nested(depth: int, value: str = "1") -> bytes:
    return ("[" * depth + value + "]" * depth).encode()


EXTREME_BODIES = {
    "100,000-digit integer": (b'{"text": "hi", "n": ' + b"7" * 100_000 + b"}", 400, "JSON"),
    "4,300-digit integer": (b'{"text": "hi", "n": ' + b"7" * 4_300 + b"}", 200, None),
    "100,000-digit float": (b'{"text": "hi", "n": 0.' + b"3" * 100_000 + b"}", 200, None),
    "1e999999 as text": (b'{"text": 1e999999}', 400, '"text" must be a string'),
    "1e999999 beside text": (b'{"text": "hi", "n": 1e999999, "m": -1e999999}', 200, None),
    "NaN as text": (b'{"text": NaN}', 400, '"text" must be a string'),
    "100,000 open brackets": (b"[" * 100_000, 400, "not valid JSON"),
    "100,000 open objects": (b'{"a":' * 100_000, 400, "not valid JSON"),
    "100,000 nested lists, closed": (_nested(100_000), 400, "not valid JSON"),
    # Refused either by the limit or by the parser, whichever the Python version reaches first.
    "nesting of 5,000 levels": (b'{"text": "hi", "x": ' + _nested(5_000) + b"}", 400, None),
    "nesting one level past the limit": (
        b'{"text": "hi", "x": ' + _nested(MAX_JSON_DEPTH) + b"}",
        400,
        f"nests deeper than {MAX_JSON_DEPTH} levels",
    ),
    "nesting at the limit": (
        b'{"text": "hi", "x": ' + _nested(MAX_JSON_DEPTH - 1) + b"}",
        200,
        None,
    ),
    "batch nested at the limit": (
        b'{"texts": ["hi"], "x": ' + _nested(MAX_JSON_DEPTH - 2, "{}") + b"}",
        200,
        None,
    ),
    "escaped lone surrogate": (b'{"text": "\\ud800 you won \\udfff"}', 200, None),
    "escaped NUL": (b'{"text": "a\\u0000b"}', 200, None),
    "raw NUL in a string": (b'{"text": "a\x00b"}', 400, "not valid JSON"),
    "raw NUL between tokens": (b'{"text":\x00"hi"}', 400, "not valid JSON"),
    "invalid UTF-8 byte": (b'{"text": "\xff"}', 400, "not valid JSON"),
    "overlong UTF-8": (b'{"text": "\xc0\xaf"}', 400, "not valid JSON"),
    # json.loads decodes bytes with "surrogatepass": the same lone surrogate as the escape above.
    "UTF-8 encoded surrogate": (b'{"text": "\xed\xa0\x80"}', 200, None),
    "truncated UTF-8": (b'{"text": "\xe2\x82"}', 400, "not valid JSON"),
    "UTF-8 byte order mark": (b'\xef\xbb\xbf{"text": "hi"}', 200, None),
    "UTF-16 body": ('{"text": "مرحبا 🙂"}'.encode("utf-16-le"), 200, None),
    "emoji and right-to-left text": (
        json.dumps({"texts": ["🙂💥👩‍👩‍👧‍👦", "\u202eniw uoy\u202c", "שלום"]}).encode(),
        200,
        None,
    ),
    "two documents": (b'{"text": "hi"} {"text": "again"}', 400, "not valid JSON"),
    "repeated text": (b'{"text": "hi", "text": 5}', 400, "repeats a key"),
    "repeated text, second escaped": (b'{"text": "hi", "t\\u0065xt": "x"}', 400, "repeats a key"),
    "repeated key deep inside": (
        b'{"text": "hi", "x": [[{"a": {"b": 1, "b": 2}}]]}',
        400,
        "repeats a key",
    ),
    "1.5 MB text": (json.dumps({"text": "win " * 375_000}).encode(), 200, None),
    "text past the limit": (json.dumps({"text": "a" * ROOMY_BODY_BYTES}).encode(), 413, "exceeds"),
}


@pytest.mark.parametrize(
    ("body", "status", "fragment"), EXTREME_BODIES.values(), ids=EXTREME_BODIES
)
def test_extreme_bodies(
    roomy_client: FlaskClient, body: bytes, status: int, fragment: str | None
) -> None:
    response = _post(roomy_client, body, "application/json")
    _assert_contract(response)
    assert response.status_code == status, response.json
    if fragment is not None:
        assert fragment in response.json["error"]


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"text": "hi", "n": ' + b"7" * 100_000 + b"}"], ids=["[", "digits"]
)
def test_extreme_bodies_stop_at_the_default_limit(client: FlaskClient, body: bytes) -> None:
    response = _post(client, body, "application/json")
    assert response.status_code == 413
    assert response.json == {"success": False, "error": "request body exceeds 65536 bytes"}


@settings(hostile.BOUNDED, max_examples=100)
@given(texts=st.lists(hostile.texts, min_size=1, max_size=3))
def test_any_text_in_a_batch_scores_as_it_does_alone(
    roomy_client: FlaskClient, texts: list[str]
) -> None:
    batch = roomy_client.post(hostile.URL, json={"texts": texts})
    _assert_contract(batch)
    assert batch.status_code == 200
    for text, result in zip(texts, batch.json["results"], strict=True):
        single = roomy_client.post(hostile.URL, json={"text": text})
        assert single.status_code == 200
        assert {k: single.json[k] for k in result} == result


def _as_gunicorn_passes(
    client: FlaskClient, body: bytes, headers: dict[str, str], **environ: object
) -> TestResponse:
    """POST `body` as gunicorn hands it over: a stream that ends where the body ends."""
    return client.post(
        hostile.URL,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", **headers},
        environ_overrides={"wsgi.input_terminated": True, **environ},
    )


def _streamed(client: FlaskClient, body: bytes) -> TestResponse:
    """POST `body` chunked: no Content-Length to refuse it by."""
    return _as_gunicorn_passes(client, body, {"Transfer-Encoding": "chunked"})


def test_streamed_body_past_the_limit_is_refused_not_cut(client: FlaskClient) -> None:
    # Cut at the limit, this body would be valid JSON asking about "hi".
    padded = b'{"text": "hi"}' + b" " * hostile.MAX_BODY_BYTES
    response = _streamed(client, padded)
    assert response.status_code == 413
    assert response.json == {"success": False, "error": "request body exceeds 65536 bytes"}


def test_streamed_body_at_the_limit_is_read_whole(client: FlaskClient) -> None:
    body = b'{"text": "hi"}'
    response = _streamed(client, body + b" " * (hostile.MAX_BODY_BYTES - len(body)))
    assert response.status_code == 200
    assert response.json["success"] is True


def test_body_shorter_than_its_content_length_is_refused(client: FlaskClient) -> None:
    # What gunicorn hands over when the client closes early: the bytes that came, no error.
    response = _as_gunicorn_passes(client, b'{"text": "hi"}', {}, CONTENT_LENGTH="1000")
    assert response.status_code == 400
    assert response.json == {
        "success": False,
        "error": "request body is shorter than its Content-Length",
    }
