"""Reading and validating request bodies: every way a body can be wrong becomes an
`InvalidRequest` with a message for the client."""

import json
from typing import Any

from flask import Request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from spam_filter.reporter_keys import key_hash
from spam_filter.serving import read_deadlines
from spam_filter.storage.records import Report

# A request nests two levels. Far deeper documents are refused at one depth on every Python
# version, rather than wherever the version's JSON parser runs out of recursion.
MAX_JSON_DEPTH = 64
# What each way a body can break off says.
_BROKEN_BODY = {
    ParseException: "request body is not valid chunked encoding",
    NoMoreData: "request body ended before its last chunk",
    ClientDisconnected: "request body ended before its Content-Length",
}


class InvalidRequest(Exception):
    """The request cannot be answered as sent; the message says why."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused if a key repeats.

    Parsers disagree on which of two values for one key wins (the first, the last, an error), so a
    proxy or a log reader could see another message than the one checked here.
    """
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InvalidRequest("request body repeats a key within an object")
    return obj


def read_body(request: Request, max_bytes: int, read_seconds: float | None = None) -> bytes:
    """The whole request body: a 413 past `max_bytes`, a 400 if it ends before its Content-Length,
    a 408 if under gunicorn it has not all arrived within `read_seconds`.

    werkzeug stops reading a streamed (chunked) body at its limit without saying the body went on,
    so the limit given to it is one byte more: a body that fills it is too long. gunicorn ends the
    body early, without an error, when the client closes before sending all it announced; half a
    body must not be answered as if it were the whole. A client that stops sending, or sends a
    byte now and then, but keeps the connection open would hold a worker's thread for as long as
    it liked: a socket timeout bounds each read, and a deadline (`read_deadlines`) the whole body.
    """
    too_large = InvalidRequest(f"request body exceeds {max_bytes} bytes", 413)
    sock = request.environ.get("gunicorn.socket") if read_seconds else None
    previous = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(read_seconds)
    try:
        with read_deadlines.bounded(sock, read_seconds or 0.0) as deadline:
            data = get_input_stream(request.environ, max_content_length=max_bytes + 1).read()
    except RequestEntityTooLarge:  # a Content-Length past the limit: refused before reading
        raise too_large from None
    # gunicorn parses a chunked body as the app reads it, so its framing errors come from here;
    # werkzeug turns a read's timeout into ClientDisconnected, raised while handling it.
    except (ParseException, NoMoreData, ClientDisconnected) as error:
        if deadline.expired or isinstance(error.__context__, TimeoutError):
            raise _late(read_seconds) from None
        raise InvalidRequest(
            next(say for kind, say in _BROKEN_BODY.items() if isinstance(error, kind))
        ) from None
    finally:
        if sock is not None:
            sock.settimeout(previous)
    if deadline.expired:
        raise _late(read_seconds)
    if len(data) > max_bytes:
        raise too_large
    if request.content_length is not None and len(data) < request.content_length:
        raise InvalidRequest("request body is shorter than its Content-Length")
    return data


def _late(read_seconds: float) -> InvalidRequest:
    return InvalidRequest(f"request body did not arrive within {read_seconds:g} s", 408)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels deep in `value`."""
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_object(
    request: Request, max_bytes: int, read_seconds: float | None = None
) -> dict[str, Any]:
    """The body as a JSON object, refused unless it is one, sent as JSON, and within limits."""
    if not request.is_json:
        raise InvalidRequest("Content-Type must be application/json")
    body = read_body(request, max_bytes, read_seconds)
    try:
        payload = json.loads(body, object_pairs_hook=_object_without_repeated_keys)
    except (ValueError, RecursionError):
        raise InvalidRequest("request body is not valid JSON") from None
    if _deeper_than(payload, MAX_JSON_DEPTH):
        raise InvalidRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(payload, dict):
        raise InvalidRequest('request body must be a JSON object such as {"text": "..."}')
    return payload


def texts_to_check(payload: dict[str, Any], max_texts: int) -> tuple[list[str], bool]:
    """The texts of a `find_spam` request, and whether they came as a batch (`texts`)."""
    if ("text" in payload) == ("texts" in payload):
        raise InvalidRequest('send either "text" (a string) or "texts" (a list of strings)')
    if "text" in payload:
        if not isinstance(payload["text"], str):
            raise InvalidRequest('"text" must be a string')
        return [payload["text"]], False
    texts = payload["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest('"texts" must be a list of strings')
    if not 1 <= len(texts) <= max_texts:
        raise InvalidRequest(f'"texts" must hold between 1 and {max_texts} strings')
    return texts, True


def explain_requested(payload: dict[str, Any]) -> bool:
    """Whether a `find_spam` request asks for explanations (`"explain": true`); off by default."""
    explain = payload.get("explain", False)
    if not isinstance(explain, bool):
        raise InvalidRequest('"explain" must be true or false')
    return explain


_REPORT_FIELDS = {"text", "is_spam", "message_id"}


def presented_key_hash(request: Request) -> str:
    """The hash of the Bearer key the request carries; a 401 when it carries none."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    # HTTP's optional whitespace is spaces and tabs; str.strip() would take other characters too.
    key = key.strip(" \t")
    if scheme.lower() != "bearer" or not key:
        raise InvalidRequest(
            "send a reporter key as `Authorization: Bearer <key>`",
            401,
            {"WWW-Authenticate": 'Bearer realm="spam-filter"'},
        )
    return key_hash(key)


def reports_to_record(
    payload: dict[str, Any], max_reports: int, max_text_characters: int
) -> list[Report]:
    """The reports of a `report` request: one report object, or `{"reports": [...]}`."""
    if "reports" in payload:
        if set(payload) != {"reports"}:
            raise InvalidRequest('send either one report or {"reports": [...]}, not both')
        reports = payload["reports"]
        if not isinstance(reports, list) or not 1 <= len(reports) <= max_reports:
            raise InvalidRequest(f'"reports" must be a list of 1 to {max_reports} reports')
        return [
            _report(item, max_text_characters, f"reports[{index}]")
            for index, item in enumerate(reports)
        ]
    return [_report(payload, max_text_characters, "the report")]


def _report(item: Any, max_text_characters: int, where: str) -> Report:
    if not isinstance(item, dict):
        raise InvalidRequest(
            f'{where} must be an object such as {{"text": "...", "is_spam": true}}'
        )
    unknown = set(item) - _REPORT_FIELDS
    if unknown:
        raise InvalidRequest(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    text, is_spam, message_id = item.get("text"), item.get("is_spam"), item.get("message_id")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f'{where} needs "text": a non-empty string')
    if len(text) > max_text_characters:
        raise InvalidRequest(f'{where}: "text" is longer than {max_text_characters} characters')
    if not isinstance(is_spam, bool):
        raise InvalidRequest(f'{where} needs "is_spam": true or false')
    if message_id is not None and (
        not isinstance(message_id, str) or not 1 <= len(message_id) <= 200
    ):
        raise InvalidRequest(f'{where}: "message_id" must be a string of 1 to 200 characters')
    if not _storable(text) or (message_id is not None and not _storable(message_id)):
        raise InvalidRequest(
            f'{where}: "text" and "message_id" must be Unicode text without NUL characters'
        )
    return Report(text, is_spam, message_id)


def _storable(value: str) -> bool:
    """Whether every backend stores the string as sent: PostgreSQL's text holds no NUL, and no
    database takes half a surrogate pair (which a JSON escape such as \\ud800 can produce)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
