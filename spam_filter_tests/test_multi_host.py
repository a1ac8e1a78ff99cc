"""The API on many hosts, with real processes: two gunicorn servers, each in a working folder of
its own with no file shared (two "hosts"), one PostgreSQL, reporters sending to both, and a
retrain run from a third folder (the pipeline's host).

Every worker of both hosts serves the new model within 5 s of its commit; every report
acknowledged with a 202 is stored exactly once; and PostgreSQL killed mid-load and restarted
loses nothing acknowledged and fails no `find_spam` request, while health says degraded and
reports get a 503 with Retry-After.
"""

import http.client
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spam_filter.processes import stop_process_group
from spam_filter.reporter_keys import key_hash, new_key
from spam_filter.storage.postgres_storage import PostgresStorage
from spam_filter_tests.helpers import (
    JOB_COMMAND,
    PROJECT_ROOT,
    add_sample_messages_to_postgres,
    project_paths,
    promote_weak_model_in_row,
    wait_for,
)
from spam_filter_tests.postgres_server import PostgresServer
from spam_filter_tests.servers import (
    Answer,
    ReportLoad,
    Server,
    free_port,
    load,
    report_load,
    request,
    summary,
)

pytestmark = pytest.mark.slow

REPORTERS = 6
REPORT_CLIENTS_PER_HOST = 2
# The API's default: each process polls PostgreSQL every 2 s.
REFRESH_SECONDS = "2"
SWAP_BOUND_SECONDS = 5.0


def _host_env(folder: Path, url: str) -> dict[str, str]:
    """A host's environment: every local path in its own folder, the database on the server."""
    folder.mkdir(parents=True)
    return {
        **os.environ,
        **project_paths(folder),
        "PYTHONPATH": str(PROJECT_ROOT),
        "SPAM_FILTER_DATABASE_URL": url,
        "SPAM_FILTER_MODEL_REFRESH_SECONDS": REFRESH_SECONDS,
        "SPAM_FILTER_REPORT_RATE": "1000000",
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }


class _Traffic:
    """find_spam and report load on every host, on threads, until `finish`."""

    def __init__(self, hosts: list[Server], keys: list[str], seconds: float) -> None:
        self.stop = threading.Event()
        deadline = time.monotonic() + seconds
        self.pool = ThreadPoolExecutor(len(hosts) * (1 + REPORT_CLIENTS_PER_HOST))
        self.checks = [
            self.pool.submit(load, host.port, self.stop, deadline, 200_000) for host in hosts
        ]
        self.reports = [
            self.pool.submit(
                report_load, host.port, keys, client, self.stop, deadline, 10_000, 20, 0.01
            )
            for client, host in enumerate(
                host for host in hosts for _ in range(REPORT_CLIENTS_PER_HOST)
            )
        ]

    def finish(self) -> tuple[list[list[Answer]], ReportLoad]:
        self.stop.set()
        answers = [future.result() for future in self.checks]
        total = ReportLoad()
        for future in self.reports:
            seen = future.result()
            total.acknowledged += seen.acknowledged
            total.failures += seen.failures
            total.requests += seen.requests
        self.pool.shutdown()
        return answers, total


def _stored_votes(url: str, keys: list[str]) -> list[tuple[str, str]]:
    """Every stored (key, text) vote of the load, as many times as it is stored."""
    storage = PostgresStorage(url)
    by_hash = storage.reporter_keys()
    key_by_id = {by_hash[key_hash(key)].reporter_id: key for key in keys}
    with storage.connection(read_only=True) as conn:
        rows = conn.execute(
            "SELECT reporter_id, body FROM reports WHERE body LIKE 'client %'"
        ).fetchall()
    return [(key_by_id[reporter_id], body) for reporter_id, body in rows]


def _report_once(port: int, key: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        body = json.dumps({"text": "outage probe", "is_spam": True})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        conn.request("POST", "/api/report", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        conn.close()


def _health_of_all(hosts, status: str) -> bool:
    """Whether every host's /api/health says `status`."""
    return all(request(h.port, "GET", "/api/health")[1]["status"] == status for h in hosts)


def test_two_hosts_one_postgres_one_retrain_and_a_killed_server(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url
    add_sample_messages_to_postgres(url)
    weak = promote_weak_model_in_row(url)
    keys = [new_key() for _ in range(REPORTERS)]
    storage = PostgresStorage(url)
    for index, key in enumerate(keys):
        storage.add_reporter(f"reporter {index}", key_hash(key))

    hosts = []
    try:
        for name in ("host-a", "host-b"):
            env = _host_env(tmp_path / name, url)
            host = Server(free_port(), env, tmp_path / name / "gunicorn.log", cwd=tmp_path / name)
            host.start()
            hosts.append(host)
        assert all(request(h.port, "GET", "/api/health")[1]["model"] == weak for h in hosts)

        traffic = _Traffic(hosts, keys, seconds=240)
        try:
            # One retrain, from a third folder, while both hosts take reports and checks.
            time.sleep(1.0)
            pipeline_env = _host_env(tmp_path / "pipeline", url)
            Path(pipeline_env["DAGSTER_HOME"]).mkdir()
            with (tmp_path / "job.log").open("w") as log:
                job = subprocess.Popen(
                    JOB_COMMAND,
                    cwd=tmp_path / "pipeline",
                    env=pipeline_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                # The commit is seen from here within 0.05 s of happening.
                while True:
                    finished = job.poll() is not None
                    new_model = storage.active_model().path
                    if new_model != weak:
                        committed_at = time.monotonic()
                        break
                    assert not finished, (tmp_path / "job.log").read_text()[-3000:]
                    time.sleep(0.05)
                served = {}
                for host in hosts:
                    assert wait_for(
                        lambda h=host: (
                            request(h.port, "GET", "/api/health")[1]["model"] == new_model
                        ),
                        SWAP_BOUND_SECONDS,
                        0.02,
                    ), f"{host.port} still serves the old model after {SWAP_BOUND_SECONDS} s"
                    served[host.port] = time.monotonic() - committed_at
                assert job.wait(timeout=180) == 0, (tmp_path / "job.log").read_text()[-3000:]
            finally:
                stop_process_group(job)
            print(f"\nnew model {new_model} served by each host after {served} s of its commit")

            # PostgreSQL dies mid-load, stays down a few seconds, and comes back.
            time.sleep(2.0)
            postgres.kill()
            killed_at = time.monotonic()
            assert wait_for(lambda: _health_of_all(hosts, "degraded"), 10, 0.1), (
                "health did not say degraded while PostgreSQL was down"
            )
            for host in hosts:
                status, retry_after = _report_once(host.port, keys[0])
                assert (status, retry_after) == (503, "5")
            time.sleep(max(0.0, 4.0 - (time.monotonic() - killed_at)))
            postgres.start()
            down_seconds = time.monotonic() - killed_at
            assert wait_for(lambda: _health_of_all(hosts, "ok"), 15, 0.1), (
                "health did not recover after PostgreSQL restarted"
            )
            time.sleep(3.0)  # reports flow again
        finally:
            answers, reports = traffic.finish()
    finally:
        for host in hosts:
            host.stop()

    stored = _stored_votes(url, keys)
    checks = [answer for host_answers in answers for answer in host_answers]
    print(
        f"find_spam: {len(checks)} requests, {sum(a.failed for a in checks)} failed; reports: "
        f"{reports.requests} requests, {len(reports.acknowledged)} acknowledged, "
        f"{len(reports.failures)} refused (PostgreSQL down {down_seconds:.1f} s), "
        f"{len(stored)} stored"
    )
    for host_answers in answers:
        assert not any(a.failed for a in host_answers), summary(host_answers)
        # Every worker of each host swapped, not only the one that answered the health check.
        late = [a for a in host_answers if a.started > committed_at + SWAP_BOUND_SECONDS]
        assert len(late) > 100, summary(host_answers)
        assert all(a.body["model"] == new_model for a in late), summary(late)
    # Every acknowledged vote is stored, once (the key the project derives from each text must
    # agree wherever a vote is written); a refused one may be stored (answered 503 after its
    # commit when the server died in between).
    assert len(stored) == len(set(stored))
    assert set(reports.acknowledged) <= set(stored)
    assert all(status in {None, 503} for status, _ in reports.failures), reports.failures[:3]
    assert reports.failures, "no report was refused while PostgreSQL was down"
    assert len(reports.acknowledged) > 1_000
    for host in hosts:
        text = host.log.read_text()
        assert "Traceback" not in text and "WORKER TIMEOUT" not in text, text[-3000:]
