"""The spam-checking HTTP API.

Each process keeps the active model in memory and a background thread swaps in a newly promoted
one, so answering a request never touches the database: DuckDB lets one process write or several
read, and a request path that opened it would fail whenever the pipeline writes.

`python api.py` serves on 127.0.0.1:5000 for development; production serves `api:create_app()`
with gunicorn (see README).
"""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

import database
from spam_filter import settings, weights
from spam_filter.spam import SpamModel, load_model

TRAIN_HINT = (
    "no active model yet: train one with `dagster job execute -m spam_filter -j "
    "create_spam_model_job` or materialize all assets in the Dagster UI"
)


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory and where it came from."""

    model: SpamModel
    path: str
    loaded_at: datetime
    # Every answer carries the name: derive it once, not per request.
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", Path(self.path).name)


def _files_signature(database_path: str) -> tuple:
    """Identity, size and modification time of the database file and its write-ahead log.

    A commit by any process changes one of them, so an unchanged signature means nobody promoted
    anything since the last check.
    """
    signature = []
    for path in (database_path, database_path + ".wal"):
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


class ActiveModelWatcher:
    """Keeps the active model in memory and swaps in a newly promoted one.

    A daemon thread checks every `refresh_seconds`. When the database file and its write-ahead log
    are unchanged since a successful check, the check ends there; otherwise, and at least every
    `full_check_seconds`, it reads the `models` table with a short read-only connection. While the
    database or the weights file is locked, missing or corrupt, the last good model keeps serving
    and the problem is logged once, not on every check.

    Skipping the connection matters for latency: opening DuckDB takes tens of milliseconds and
    releases and retakes the GIL many times, and each time it waits behind the thread serving
    requests, so a check every 2 s halved a worker's throughput under load.
    """

    def __init__(
        self,
        database_path: str,
        weights_dir: str,
        refresh_seconds: float,
        logger: logging.Logger,
        full_check_seconds: float = 30.0,
    ):
        self.database_path = database_path
        self.weights_dir = weights_dir
        self.refresh_seconds = refresh_seconds
        self.full_check_seconds = full_check_seconds
        self.logger = logger
        self.loaded: LoadedModel | None = None
        self.problem: str | None = None
        self.last_checked_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._start_lock = threading.Lock()
        # (files signature, monotonic time) of the last check that found the active model loaded.
        self._verified: tuple[tuple, float] | None = None

    def refresh(self) -> None:
        """Check the active model once and load it if it changed."""
        signature = _files_signature(self.database_path)
        verified = self._verified
        if (
            verified is not None
            and verified[0] == signature
            and time.monotonic() - verified[1] < self.full_check_seconds
        ):
            self.last_checked_at = datetime.now(UTC)
            return
        checked_at = time.monotonic()
        try:
            # A read-only open waits briefly while the pipeline holds the file, then gives up
            # until the next check; requests never wait for this.
            with database.connection(
                self.database_path, read_only=True, timeout=min(self.refresh_seconds, 2.0)
            ) as conn:
                record = database.active_model(conn)
            if record is None:
                self._report("no active model recorded in the database yet")
            elif self.loaded is None or record.path != self.loaded.path:
                # The row is not trusted to point outside the weights folder.
                model = load_model(weights.resolve(record.path, self.weights_dir))
                self.loaded = LoadedModel(model, record.path, datetime.now(UTC))
                self.logger.info("serving model %s", record.path)
                self._report(None)
            else:
                self._report(None)
        except Exception as error:  # keep serving the last good model whatever went wrong
            self._report(f"cannot refresh the model: {type(error).__name__}: {error}")
        self._verified = (signature, checked_at) if self.problem is None else None
        self.last_checked_at = datetime.now(UTC)

    def _report(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is None:
            self.logger.info("model refresh recovered")
        else:
            self.logger.warning("%s; still serving %s", problem, self.model_name or "no model")
        self.problem = problem

    @property
    def model_name(self) -> str | None:
        loaded = self.loaded
        return loaded.name if loaded else None

    def current(self) -> LoadedModel | None:
        """The model to answer with; restarts the watcher in a forked worker."""
        if self._owner_pid != os.getpid():
            with self._start_lock:
                if self._owner_pid != os.getpid():
                    self.start()
        return self.loaded

    def start(self) -> None:
        self._owner_pid = os.getpid()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def health(self) -> dict[str, Any]:
        loaded = self.loaded
        checked = self.last_checked_at
        stale = checked is None or (
            (datetime.now(UTC) - checked).total_seconds() > 3 * self.refresh_seconds + 5
        )
        degraded = self.problem is not None or stale
        status = "no_model" if loaded is None else ("degraded" if degraded else "ok")
        return {
            "success": loaded is not None,
            "status": status,
            "model": loaded.name if loaded else None,
            "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
            "last_checked_at": checked.isoformat() if checked else None,
            "stale": stale,
            "degraded": degraded,
            "problem": self.problem,
        }


# A request nests two levels. Far deeper documents are refused at one depth on every Python
# version, rather than wherever the version's JSON parser runs out of recursion.
MAX_JSON_DEPTH = 64


class BadRequest(Exception):
    """The request cannot be answered as sent; the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str, status: int):
    return jsonify(success=False, error=message), status


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused if a key repeats.

    Parsers disagree on which of two values for one key wins (the first, the last, an error), so a
    proxy or a log reader could see another message than the one checked here.
    """
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BadRequest("request body repeats a key within an object")
    return obj


def _read_body(max_bytes: int) -> bytes:
    """The whole request body: a 413 past `max_bytes`, a 400 if it ends before its Content-Length.

    werkzeug stops reading a streamed (chunked) body at its limit without saying the body went on,
    so the limit given to it is one byte more: a body that fills it is too long. gunicorn ends the
    body early, without an error, when the client closes before sending all it announced; half a
    body must not be answered as if it were the whole.
    """
    data = get_input_stream(request.environ, max_content_length=max_bytes + 1).read()
    if len(data) > max_bytes:
        raise RequestEntityTooLarge()
    if request.content_length is not None and len(data) < request.content_length:
        raise BadRequest("request body is shorter than its Content-Length")
    return data


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


def _parse_texts(app: Flask) -> tuple[list[str], bool]:
    """The texts to check and whether the caller sent a batch (`texts`) rather than `text`."""
    if not request.is_json:
        raise BadRequest("Content-Type must be application/json")
    body = _read_body(app.config["MAX_CONTENT_LENGTH"])
    try:
        payload = json.loads(body, object_pairs_hook=_object_without_repeated_keys)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if _deeper_than(payload, MAX_JSON_DEPTH):
        raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(payload, dict):
        raise BadRequest('request body must be a JSON object such as {"text": "..."}')
    if ("text" in payload) == ("texts" in payload):
        raise BadRequest('send either "text" (a string) or "texts" (a list of strings)')
    if "text" in payload:
        if not isinstance(payload["text"], str):
            raise BadRequest('"text" must be a string')
        return [payload["text"]], False
    texts = payload["texts"]
    limit = app.config["MAX_BATCH_TEXTS"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest('"texts" must be a list of strings')
    if not 1 <= len(texts) <= limit:
        raise BadRequest(f'"texts" must hold between 1 and {limit} strings')
    return texts, True


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then environment overrides, then `test_config`."""
    app = Flask(__name__)
    app.config.from_mapping(
        DATABASE=str(settings.database_path()),
        WEIGHTS_DIR=str(settings.weights_dir()),
        MODEL_REFRESH_SECONDS=float(os.environ.get("SPAM_FILTER_MODEL_REFRESH_SECONDS", "2")),
        MODEL_FULL_CHECK_SECONDS=float(
            os.environ.get("SPAM_FILTER_MODEL_FULL_CHECK_SECONDS", "30")
        ),
        MAX_CONTENT_LENGTH=int(os.environ.get("SPAM_FILTER_MAX_BODY_BYTES", str(64 * 1024))),
        MAX_BATCH_TEXTS=int(os.environ.get("SPAM_FILTER_MAX_BATCH_TEXTS", "1000")),
    )
    if test_config:
        app.config.from_mapping(test_config)
    app.logger.setLevel(logging.INFO)

    watcher = ActiveModelWatcher(
        app.config["DATABASE"],
        app.config["WEIGHTS_DIR"],
        app.config["MODEL_REFRESH_SECONDS"],
        app.logger,
        full_check_seconds=app.config["MODEL_FULL_CHECK_SECONDS"],
    )
    watcher.refresh()
    watcher.start()
    app.extensions["model_watcher"] = watcher

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return _error(error.message, error.status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        return _error(f"request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes", 413)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        response, status = _error(error.description or error.name, error.code or 500)
        # Keep what the exception says beside the body, such as a 405's Allow header.
        for header, value in error.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response, status

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        app.logger.exception("unexpected error")
        return _error("internal error", 500)

    # No automatic OPTIONS answer: it would be an empty HTML page; OPTIONS gets a JSON 405.
    @app.post("/api/find_spam", provide_automatic_options=False)
    def find_spam():
        """Tell whether each sent message is spam, using the active model."""
        texts, batch = _parse_texts(app)
        loaded = watcher.current()
        if loaded is None:
            return _error(TRAIN_HINT, 503)
        results = [
            {"is_spam": spam, "spam_probability": probability}
            for spam, probability in map(loaded.model.verdict, texts)
        ]
        if batch:
            return jsonify(success=True, results=results, model=loaded.name)
        return jsonify(success=True, model=loaded.name, **results[0])

    @app.get("/api/health", provide_automatic_options=False)
    def health():
        """Report which model is served, since when, and whether refreshing it works."""
        report = watcher.health()
        return jsonify(report), 200 if report["success"] else 503

    return app


def main() -> None:
    host = os.environ.get("SPAM_FILTER_API_HOST", "127.0.0.1")
    port = int(os.environ.get("SPAM_FILTER_API_PORT", "5000"))
    create_app().run(host=host, port=port)


if __name__ == "__main__":
    main()
