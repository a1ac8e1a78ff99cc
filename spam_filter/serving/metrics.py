"""The API's Prometheus metrics: requests, latency, verdicts, reports and the model served.

Under gunicorn each worker writes its values to files in `PROMETHEUS_MULTIPROC_DIR`, which
`spam_filter.serving.gunicorn_config` prepares before any worker starts (prometheus-client picks
its storage when first imported), and GET /metrics adds up every worker's files. Without that
variable (the development server, tests) /metrics shows the process's own values.
"""

import functools
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from flask.typing import ResponseReturnValue

# prometheus-client opens a file in the folder for the first metric defined below. gunicorn's
# settings prepare the folder before any app is loaded, except one named only with gunicorn's `-e`:
# gunicorn sets that after reading its settings, then imports a `--preload`ed app at once.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

EXTENSION_KEY = "metrics"
# Answers take about a millisecond; the buckets resolve that and show the slow tail.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "spam_filter_requests",
    "HTTP requests answered, by endpoint and status.",
    ["endpoint", "status"],
)
LATENCY = Histogram(
    "spam_filter_request_duration_seconds",
    "Time from receiving a request to starting its answer, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
VERDICTS = Counter("spam_filter_verdicts", "Messages checked, by verdict.", ["verdict"])
# Counted by the reports endpoint, in reports: "accepted" (a new or changed vote), "duplicate" (a
# vote already given), or "refused" (over the rate limit, or not stored). Requests refused before
# their reports are read (401, 400, 413) show in the requests counter by status.
REPORT_OUTCOMES = ("accepted", "duplicate", "refused")
REPORTS = Counter("spam_filter_reports", "User reports, by outcome.", ["outcome"])
MODEL_SERVED = Gauge(
    "spam_filter_model_served",
    "1 for the weights file a worker serves, 0 for one it served before.",
    ["model"],
    multiprocess_mode="livemax",
)
MODEL_AGE = Gauge(
    "spam_filter_model_age_seconds",
    "Seconds since the served model was promoted, as of the scrape.",
    multiprocess_mode="livemostrecent",
)
MODEL_REFRESH_FAILURES = Counter(
    "spam_filter_model_refresh_failures",
    "Checks for a newly promoted model that failed: database unreadable, weights file refused.",
)
REPORT_INBOX_CHECKPOINT_FAILURES = Counter(
    "spam_filter_report_inbox_checkpoint_failures",
    "Background copies of the report inbox's write-ahead log that failed (SQLite inbox only).",
)
# Looked up once: `labels()` costs as much as the increment itself.
_SPAM = VERDICTS.labels("spam")
_NOT_SPAM = VERDICTS.labels("not_spam")
_REPORTS = {outcome: REPORTS.labels(outcome) for outcome in REPORT_OUTCOMES}

# When the model this process serves was promoted (a Unix time), for its age at each scrape.
_served_model: dict[str, float] = {}

blueprint = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Count `app`'s requests and serve GET /metrics, unless the METRICS setting is off."""
    if not app.config["METRICS"]:
        return
    app.extensions[EXTENSION_KEY] = app.config["PROMETHEUS_MULTIPROC_DIR"]
    app.register_blueprint(blueprint)
    app.wsgi_app = RequestCounter(app.wsgi_app, app)


@blueprint.get("/metrics", provide_automatic_options=False)
def metrics_page() -> ResponseReturnValue:
    """Every metric in Prometheus' text format, added up over the server's workers."""
    promoted_at = _served_model.get("promoted_at")
    if promoted_at is not None:
        MODEL_AGE.set(max(time.time() - promoted_at, 0.0))
    folder = current_app.extensions[EXTENSION_KEY]
    registry = REGISTRY
    if folder:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def count_reports(outcome: str, reports: int) -> None:
    """Count `reports` reports of one outcome (see REPORT_OUTCOMES)."""
    if reports:
        _REPORTS[outcome].inc(reports)


def count_verdicts(spam: int, total: int) -> None:
    """Count the verdicts of one answer, when the app counts anything."""
    if EXTENSION_KEY in current_app.extensions:
        if spam:
            _SPAM.inc(spam)
        if total > spam:
            _NOT_SPAM.inc(total - spam)


def model_served(previous: str | None, name: str, promoted_at: datetime | None) -> None:
    """Record that this process now serves the weights file `name` instead of `previous`.

    A naive `promoted_at` is local time, as DuckDB's `current_timestamp` stores it.
    """
    if previous is not None and previous != name:
        MODEL_SERVED.labels(previous).set(0)
    MODEL_SERVED.labels(name).set(1)
    if promoted_at is None:
        _served_model.pop("promoted_at", None)
    else:
        _served_model["promoted_at"] = promoted_at.timestamp()


class RequestCounter:
    """WSGI middleware around the app: counts each answer by route and status, and times it.

    Around the app rather than in Flask's request hooks, which cost as much again as the counting.
    The route label is the path of a route without variables (all of this API's); any other path
    is `unmatched`, since a label per path sent would grow without bound.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app
        self._routes: frozenset[str] | None = None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        if self._routes is None:  # every blueprint is registered by the first request
            self._routes = frozenset(
                rule.rule for rule in self.app.url_map.iter_rules() if not rule.arguments
            )
        path = environ.get("PATH_INFO", "")
        endpoint = path if path in self._routes else "unmatched"

        def counting_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            requests, latency = _request_metrics(endpoint, status[:3])
            requests.inc()
            latency.observe(time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, counting_start_response)


@functools.cache
def _request_metrics(endpoint: str, status: str) -> tuple[Counter, Histogram]:
    """The counter and the histogram of one endpoint and status, looked up once per process."""
    return REQUESTS.labels(endpoint, status), LATENCY.labels(endpoint)
