"""Measure what the API's metrics cost per request, in CPU time, in one process.

Trains a model on spam.csv into a temporary folder, builds the API twice (metrics on, and off as
SPAM_FILTER_METRICS=off does), and calls each through its WSGI entry with the same find_spam
request, in turns, in prometheus-client's multiprocess mode as under gunicorn. Prints the CPU
time per request of each and the difference. Unlike req/s through gunicorn (bench_api.py,
targets a and a0), other work on the machine moves it little. Run:

    python bench/bench_metrics.py [--requests 5000] [--rounds 6]
"""

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

BODY = json.dumps(
    {
        "text": "WINNER!! As a valued network customer you have been selected to receive a £900 "
        "prize reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only."
    }
).encode()


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/find_spam",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
    }


def _start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    if not status.startswith("200"):
        raise SystemExit(f"the API answered {status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per turn (5000)")
    parser.add_argument("--rounds", type=int, default=6, help="turns of each app (6)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="spam_filter_bench_metrics_"))
    try:
        return _measure(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(args: argparse.Namespace, folder: Path) -> int:
    # prometheus-client picks its storage when first imported, so the folder comes first.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "metrics")
    (folder / "metrics").mkdir()
    import api
    from spam_filter import settings, weights
    from spam_filter.datasets import read_sms_spam_collection
    from spam_filter.serving import database_watcher
    from spam_filter.spam import train_model
    from spam_filter.storage.duckdb_storage import DuckDBStorage
    from spam_filter.storage.records import ModelRecord

    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    model = train_model(zip(frame["body"], frame["spam"], strict=True), 0.1, 8.0)
    name = weights.write(model.to_weights(), folder / "weights").name
    weights.settle(folder / "weights" / name)
    storage = DuckDBStorage(folder / "app.duckdb")
    storage.create_schema()
    storage.promote_model(ModelRecord(name, "active", 0.9, 0.01), replacing=None)
    config = {
        "DATABASE": str(folder / "app.duckdb"),
        "WEIGHTS_DIR": str(folder / "weights"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
    }
    apps = {on: api.create_app({**config, "METRICS": on}) for on in (True, False)}
    costs: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(args.rounds):
            for on, app in apps.items():
                started = time.process_time()
                for _ in range(args.requests):
                    for _chunk in app.wsgi_app(_environ(), _start_response):
                        pass
                costs[on].append((time.process_time() - started) / args.requests * 1e6)
    finally:
        for app in apps.values():
            app.extensions[database_watcher.EXTENSION_KEY].stop()
    with_metrics, without = statistics.median(costs[True]), statistics.median(costs[False])
    for on, label in ((True, "metrics on"), (False, "metrics off")):
        print(f"{label:<12} {' '.join(f'{c:6.1f}' for c in costs[on])}  µs of CPU per request")
    print(
        f"median {with_metrics:.1f} against {without:.1f} µs: the metrics cost "
        f"{with_metrics - without:.1f} µs per request through Flask (gunicorn's own work not "
        "counted)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
