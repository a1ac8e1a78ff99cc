"""GET /metrics: Prometheus' text format, through the test client and a real two-worker gunicorn."""

import json
import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.mmap_dict import MmapedDict

from spam_filter.serving.database_watcher import EXTENSION_KEY
from spam_filter_tests.helpers import OtherProcess, wait_for
from spam_filter_tests.servers import (
    Samples,
    parse_metrics,
    request,
    running_server,
    scrape_server,
    send,
)

URL = "/api/find_spam"
SPAM = "WINNER! you won a £1000 cash prize, call 09061701461 now"
HAM = "are we still on for lunch tomorrow?"


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return parse_metrics(response.get_data(as_text=True))


@pytest.fixture
def client(make_app: Callable[..., Flask], trained_db: str) -> FlaskClient:
    return make_app(trained_db).test_client()


def test_requests_latency_and_verdicts_are_counted(client: FlaskClient) -> None:
    before = _scrape(client)
    assert client.post(URL, json={"text": SPAM}).status_code == 200
    assert client.post(URL, json={"texts": [SPAM, HAM, HAM], "explain": True}).status_code == 200
    assert client.post(URL, json={"text": 5}).status_code == 400
    assert client.get("/nowhere/42").status_code == 404
    after = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "spam_filter_requests_total"
    assert delta(requests, endpoint="/api/find_spam", status="200") == 2
    assert delta(requests, endpoint="/api/find_spam", status="400") == 1
    # Paths that match no route share one label, whatever was asked.
    assert delta(requests, endpoint="unmatched", status="404") == 1
    assert delta(requests, endpoint="/metrics", status="200") == 1  # the first scrape
    latency = "spam_filter_request_duration_seconds"
    assert delta(latency + "_count", endpoint="/api/find_spam") == 3
    assert delta(latency + "_bucket", endpoint="/api/find_spam", le="+Inf") == 3
    assert delta(latency + "_sum", endpoint="/api/find_spam") > 0
    assert delta("spam_filter_verdicts_total", verdict="spam") == 2
    assert delta("spam_filter_verdicts_total", verdict="not_spam") == 2


def test_reports_and_the_served_model_are_shown(
    client: FlaskClient, trained_state: dict[str, str]
) -> None:
    samples = _scrape(client)
    # Counted by the reports endpoint; shown from the start.
    for outcome in ("accepted", "refused"):
        assert ("spam_filter_reports_total", (("outcome", outcome),)) in samples
    name = Path(trained_state["model_path"]).name
    assert _value(samples, "spam_filter_model_served", model=name) == 1
    # Trained by this session's fixture: minutes old at most.
    assert 0 <= _value(samples, "spam_filter_model_age_seconds") < 3600


def test_refresh_failures_are_counted(
    client: FlaskClient, trained_db: str, project_env: dict[str, str], other_process: OtherProcess
) -> None:
    before = _value(_scrape(client), "spam_filter_model_refresh_failures_total")
    missing = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"]) / "spam_model_missing.json"
    other_process.promote(trained_db, str(missing))
    assert wait_for(
        lambda: _value(_scrape(client), "spam_filter_model_refresh_failures_total") >= before + 2
    )


def test_metrics_can_be_switched_off(make_app: Callable[..., Flask], trained_db: str) -> None:
    counting = make_app(trained_db).test_client()
    quiet = make_app(trained_db, METRICS=False).test_client()
    before = _scrape(counting)
    assert quiet.post(URL, json={"text": SPAM}).status_code == 200
    response = quiet.get("/metrics")
    assert response.status_code == 404
    assert response.json["success"] is False
    after = _scrape(counting)
    for name, labels in [
        ("spam_filter_verdicts_total", {"verdict": "spam"}),
        ("spam_filter_requests_total", {"endpoint": "/api/find_spam", "status": "200"}),
    ]:
        assert _value(after, name, **labels) == _value(before, name, **labels)


@pytest.mark.slow
def test_metrics_add_up_over_the_workers_of_a_real_gunicorn(
    tmp_path: Path, trained_state: dict[str, str]
) -> None:
    # Without the variable, as `make run` starts it: the server makes the folder and removes it.
    with running_server(tmp_path, trained_state, PROMETHEUS_MULTIPROC_DIR="") as server:
        workers = server.wait_workers()
        log = server.log.read_text()
        folder = Path(re.search(r"metrics of the workers in (\S+)", log).group(1))
        # Each worker loads the model as it starts and writes its own files.
        gauges = {f"gauge_livemax_{pid}.db" for pid in workers}
        assert wait_for(lambda: gauges <= set(os.listdir(folder)), 30), os.listdir(folder)
        # The scrapes below add up more than one worker's counts only if both answered some:
        # requests go 8 at a time (one connection each) until both have.
        sent, deadline = 0, time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            while True:
                statuses = list(
                    pool.map(
                        lambda _: request(server.port, "POST", URL, json.dumps({"text": SPAM}))[0],
                        range(40),
                    )
                )
                assert statuses == [200] * 40
                sent += 40
                answered = {pid: _answered_by(folder, pid) for pid in workers}
                if all(answered.values()) or time.monotonic() > deadline:
                    break
        assert all(answered.values()), answered
        assert sum(answered.values()) == sent
        # Whichever worker answers a scrape, it adds up every worker's counts.
        name = Path(trained_state["model_path"]).name
        for _ in range(6):
            samples = scrape_server(server.port)
            assert _value(samples, "spam_filter_requests_total", endpoint=URL, status="200") == sent
            assert _value(samples, "spam_filter_verdicts_total", verdict="spam") == sent
            assert _value(samples, "spam_filter_model_served", model=name) == 1

        # A killed worker's counts stay; its gauges go with it.
        victim = max(workers, key=answered.get)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: f"gauge_livemax_{victim}.db" not in os.listdir(folder), 30)
        server.wait_workers()
        samples = scrape_server(server.port)
        assert _value(samples, "spam_filter_requests_total", endpoint=URL, status="200") == sent
        assert _value(samples, "spam_filter_model_served", model=name) == 1
        # No control socket: two servers on one machine would share its default path.
        assert "Control socket" not in server.log.read_text()
    assert not folder.exists()


def _answered_by(folder: Path, pid: int) -> float:
    """The find_spam requests worker `pid` counted, from its own file in the metrics folder."""
    values = MmapedDict.read_all_values_from_file(str(folder / f"counter_{pid}.db"))
    return sum(
        value
        for key, value, *_ in values
        if json.loads(key)[1] == "spam_filter_requests_total"
        and json.loads(key)[2].get("endpoint") == URL
    )


def test_a_failing_inbox_checkpoint_degrades_health_and_is_counted(client: FlaskClient) -> None:
    watcher = client.application.extensions[EXTENSION_KEY]
    watcher.storage.inbox.create()
    watcher.stop()  # and closes the inbox, which leaves its file alone
    inbox = watcher.storage.inbox.path
    aside = inbox.with_name("inbox_aside")
    inbox.rename(aside)
    inbox.mkdir()  # a folder where the inbox's file was: SQLite cannot open it
    before = _value(_scrape(client), "spam_filter_report_inbox_checkpoint_failures_total")
    watcher.start()
    try:
        assert wait_for(lambda: client.get("/api/health").json["status"] == "degraded")
        health = client.get("/api/health").json
        assert "cannot checkpoint the report inbox" in health["problem"]
        assert client.post(URL, json={"text": SPAM}).json["is_spam"] is True
        assert (
            _value(_scrape(client), "spam_filter_report_inbox_checkpoint_failures_total")
            >= before + 1
        )
    finally:
        inbox.rmdir()
        aside.rename(inbox)
    assert wait_for(lambda: client.get("/api/health").json["status"] == "ok")


def test_a_server_keeps_its_temporary_metrics_folder_until_it_stops(
    tmp_path: Path, trained_state: dict[str, str]
) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR the server makes a folder; a worker that exits normally
    runs the exit handlers it inherited, and must not remove the folder from under the others."""
    log = tmp_path / "gunicorn.log"
    with running_server(tmp_path, trained_state, PROMETHEUS_MULTIPROC_DIR="") as server:
        folder = Path(re.search(r"metrics of the workers in (\S+)", log.read_text())[1])
        assert folder.name.startswith("spam_filter_metrics_")
        stopping = server.worker_pids()[0]
        os.kill(stopping, signal.SIGTERM)
        assert wait_for(lambda: stopping not in server.worker_pids(), seconds=30)
        server.wait_workers()
        assert folder.is_dir()
        status, _, scrape = send(server.port, "GET", "/metrics")
        assert status == 200 and "spam_filter_model_served{" in scrape.decode()
    assert not folder.exists()


@pytest.mark.slow
def test_a_preloaded_server_writes_its_metrics_to_a_folder_named_with_gunicorns_e(
    tmp_path: Path, trained_state: dict[str, str]
) -> None:
    """gunicorn sets what `-e` names only after reading its settings, and then imports a
    preloaded app at once: the folder must exist before prometheus-client writes to it."""
    folder = tmp_path / "metrics" / "named"
    with running_server(
        tmp_path,
        trained_state,
        PROMETHEUS_MULTIPROC_DIR="",
        GUNICORN_CMD_ARGS=f"--preload -e PROMETHEUS_MULTIPROC_DIR={folder}",
    ) as server:
        workers = server.wait_workers()
        gauges = {f"gauge_livemax_{pid}.db" for pid in workers}
        assert wait_for(lambda: gauges <= set(os.listdir(folder)), 30), os.listdir(folder)
        sent = 10
        for _ in range(sent):
            assert request(server.port, "POST", URL, json.dumps({"text": SPAM}))[0] == 200
        samples = scrape_server(server.port)
        assert _value(samples, "spam_filter_requests_total", endpoint=URL, status="200") == sent
    # A folder the server was given is the user's: it stays.
    assert folder.is_dir()
