"""The API's routes, and the handlers that make every error a JSON answer."""

from dataclasses import asdict

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from spam_filter.serving import metrics
from spam_filter.serving.database_watcher import NO_ACTIVE_MODEL, current_watcher
from spam_filter.serving.rate_limits import current_buckets, retry_after_header
from spam_filter.serving.request_parsing import (
    InvalidRequest,
    explain_requested,
    json_object,
    presented_key_hash,
    reports_to_record,
    texts_to_check,
)
from spam_filter.storage.records import ReporterKey, StorageUnavailable

TRAIN_HINT = (
    "no active model yet: train one with `make retrain` (which runs `dagster job execute -m "
    "spam_filter.definitions -j create_spam_model_job`) or materialize all assets in the Dagster UI"
)

# How many tokens an explanation lists: enough to see why, few enough to read.
EXPLAINED_TOKENS = 10

blueprint = Blueprint("api", __name__, url_prefix="/api")


def error_answer(message: str, status: int) -> ResponseReturnValue:
    return jsonify(success=False, error=message), status


# No automatic OPTIONS answer: it would be an empty HTML page; OPTIONS gets a JSON 405.
@blueprint.post("/find_spam", provide_automatic_options=False)
def find_spam() -> ResponseReturnValue:
    """Tell whether each sent message is spam, using the active model."""
    payload = json_object(
        request, current_app.config["MAX_CONTENT_LENGTH"], current_app.config["BODY_READ_SECONDS"]
    )
    texts, batch = texts_to_check(payload, current_app.config["MAX_BATCH_TEXTS"])
    explain = explain_requested(payload)
    watcher = current_watcher()
    loaded = watcher.current()
    if loaded is None:
        return error_answer(no_model_message(watcher.problem), 503)
    results = [
        {"is_spam": spam, "spam_probability": probability}
        for spam, probability in map(loaded.model.verdict, texts)
    ]
    metrics.count_verdicts(sum(result["is_spam"] for result in results), len(results))
    if explain:
        for result, text in zip(results, texts, strict=True):
            result["explanation"] = asdict(loaded.model.explain(text, EXPLAINED_TOKENS))
    if batch:
        return jsonify(success=True, results=results, model=loaded.name)
    return jsonify(success=True, model=loaded.name, **results[0])


@blueprint.post("/report", provide_automatic_options=False)
def report() -> ResponseReturnValue:
    """Record users' reports of spam and not-spam; 202 once they are on disk."""
    reporter = _authenticated_reporter()
    config = current_app.config
    payload = json_object(request, config["MAX_REPORT_BODY_BYTES"], config["BODY_READ_SECONDS"])
    reports = reports_to_record(
        payload, config["MAX_REPORTS_PER_REQUEST"], config["MAX_REPORT_TEXT_CHARACTERS"]
    )
    buckets = current_buckets()
    if len(reports) > buckets.burst:
        # The bucket never holds this many: retrying later would never succeed.
        raise InvalidRequest(
            f"{len(reports)} reports in one request exceed the rate limit's burst of "
            f"{buckets.burst:g}; send them in smaller batches"
        )
    wait = buckets.take(reporter.reporter_id, len(reports))
    if wait:
        metrics.count_reports("refused", len(reports))
        raise InvalidRequest(
            f"reporter {reporter.name!r} is over its rate limit of {buckets.rate:g} "
            f"report{'' if buckets.rate == 1 else 's'} a second; retry later",
            429,
            {"Retry-After": retry_after_header(wait)},
        )
    try:
        outcome = current_watcher().storage.record_reports(reporter.reporter_id, reports)
    except StorageUnavailable as error:
        buckets.give_back(reporter.reporter_id, len(reports))
        metrics.count_reports("refused", len(reports))
        current_app.logger.warning("reports not stored: %s", error)
        raise InvalidRequest(
            "reports cannot be stored right now; nothing was stored, retry later",
            503,
            {"Retry-After": retry_after_header(config["REPORT_RETRY_AFTER_SECONDS"])},
        ) from error
    metrics.count_reports("accepted", outcome.accepted)
    metrics.count_reports("duplicate", outcome.duplicates)
    return jsonify(success=True, accepted=outcome.accepted, duplicates=outcome.duplicates), 202


def _authenticated_reporter() -> ReporterKey:
    """The reporter whose key the request carries; a 401 for a missing, unknown or revoked key."""
    presented = presented_key_hash(request)
    watcher = current_watcher()
    # The keys (and the inbox's checkpoints) are kept by the watcher's thread.
    watcher.ensure_running()
    # Looked up by the SHA-256 of what was presented, never by the key itself: how long the
    # lookup takes depends on that hash alone, which tells a guesser nothing about a real key.
    reporter = watcher.reporter_keys.get(presented)
    if reporter is None and not watcher.keys_read:
        # A process that started while the database could not be read knows no key yet: an
        # unknown key is not yet a wrong one.
        raise InvalidRequest(
            "the reporters' keys cannot be read yet; retry later",
            503,
            {"Retry-After": retry_after_header(current_app.config["REPORT_RETRY_AFTER_SECONDS"])},
        )
    if reporter is None:
        raise InvalidRequest(
            "unknown or revoked reporter key",
            401,
            {"WWW-Authenticate": 'Bearer realm="spam-filter", error="invalid_token"'},
        )
    return reporter


def no_model_message(problem: str | None) -> str:
    """Why no model answers: none trained yet (how to train one), or what stops the recorded one."""
    if problem is None or problem == NO_ACTIVE_MODEL:
        return TRAIN_HINT
    return f"no model can be served: {problem}"


@blueprint.get("/health", provide_automatic_options=False)
def health() -> ResponseReturnValue:
    """Report which model is served, since when, and whether refreshing it works."""
    report = current_watcher().health()
    return jsonify(report), 200 if report["success"] else 503


@blueprint.app_errorhandler(InvalidRequest)
def invalid_request(error: InvalidRequest) -> ResponseReturnValue:
    """Say what is wrong with the request."""
    response, status = error_answer(error.message, error.status)
    response.headers.update(error.headers)
    return response, status


@blueprint.app_errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
    """Say how large a body may be."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return error_answer(f"request body exceeds {limit} bytes", 413)


@blueprint.app_errorhandler(HTTPException)
def http_error(error: HTTPException) -> ResponseReturnValue:
    """Any other HTTP error (404, 405, ...) as JSON, keeping its headers such as a 405's Allow."""
    response, status = error_answer(error.description or error.name, error.code or 500)
    for header, value in error.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value
    return response, status


@blueprint.app_errorhandler(Exception)
def unexpected_error(error: Exception) -> ResponseReturnValue:
    """Log the failure and answer without leaking it."""
    current_app.logger.exception("unexpected error")
    return error_answer("internal error", 500)
