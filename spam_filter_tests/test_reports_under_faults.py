"""Reports under load, beside a retrain, through killed workers and a killed server: every report
acknowledged with a 202 is stored, exactly once."""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from spam_filter.processes import stop_process_group
from spam_filter.reporter_keys import key_hash, new_key
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import JOB_COMMAND, PROJECT_ROOT, wait_for
from spam_filter_tests.servers import ReportLoad, Server, free_port, report_load, server_env

pytestmark = pytest.mark.slow

CLIENTS = 3
REPORTERS = 8


@pytest.fixture
def keys() -> list[str]:
    return [new_key() for _ in range(REPORTERS)]


@pytest.fixture
def server(tmp_path: Path, trained_state: dict[str, str], keys: list[str]) -> Iterator[Server]:
    """A server started after the reporters were created, so every worker knows their keys."""
    # The per-key rate limit has tests of its own; here it must not refuse the load.
    env = server_env(tmp_path, trained_state, SPAM_FILTER_REPORT_RATE="1000000")
    storage = DuckDBStorage(env["SPAM_FILTER_DATABASE"])
    for index, key in enumerate(keys):
        storage.add_reporter(f"reporter {index}", key_hash(key))
    server = Server(free_port(), env, tmp_path / "gunicorn.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _start_load(server: Server, keys: list[str], seconds: float):
    stop = threading.Event()
    pool = ThreadPoolExecutor(CLIENTS)
    deadline = time.monotonic() + seconds
    futures = [
        pool.submit(report_load, server.port, keys, client, stop, deadline, 5_000, pause=0.01)
        for client in range(CLIENTS)
    ]
    return pool, futures, stop


def _finish_load(pool, futures, stop) -> ReportLoad:
    stop.set()
    total = ReportLoad()
    for future in futures:
        seen = future.result()
        total.acknowledged += seen.acknowledged
        total.failures += seen.failures
        total.requests += seen.requests
    pool.shutdown()
    return total


def _stored_votes(server: Server, keys: list[str]) -> list[tuple[str, str]]:
    """Every stored (key, text) vote of the load, as many times as it is stored."""
    storage = DuckDBStorage(server.database)
    storage.drain_reports()
    names = {key: f"reporter {index}" for index, key in enumerate(keys)}
    key_by_id = {
        reporter.reporter_id: key
        for key, reporter in ((k, storage.reporter_keys().get(key_hash(k))) for k in keys)
        if reporter is not None and reporter.name == names[key]
    }
    with storage.connection(read_only=True) as conn:
        rows = conn.execute(
            "SELECT reporter_id, body FROM reports WHERE body LIKE 'client %'"
        ).fetchall()
    return [(key_by_id[reporter_id], body) for reporter_id, body in rows]


def test_reports_keep_being_accepted_while_a_retrain_runs(server, keys, tmp_path):
    # The load stops by itself after 150 s; the job, slowed down by it on 2 cores, gets 120 s.
    pool, futures, stop = _start_load(server, keys, seconds=150)
    try:
        time.sleep(1.0)
        with (tmp_path / "job.log").open("w") as log:
            job = subprocess.Popen(
                JOB_COMMAND,
                cwd=PROJECT_ROOT,
                env=server.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            job_returncode = job.wait(timeout=120)
        finally:
            stop_process_group(job)
        time.sleep(1.0)
    finally:
        load = _finish_load(pool, futures, stop)
    stored = _stored_votes(server, keys)
    print(
        f"\nreports beside a retrain: {load.requests} requests, "
        f"{len(load.acknowledged)} reports acknowledged, {len(load.failures)} failures, "
        f"{len(stored)} stored"
    )
    assert job_returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
    assert load.failures == []
    assert len(load.acknowledged) > 1_000
    assert sorted(stored) == sorted(load.acknowledged)


def test_killed_workers_and_a_killed_server_lose_no_acknowledged_report(server, keys):
    pool, futures, stop = _start_load(server, keys, seconds=60)
    try:
        time.sleep(1.0)
        for _ in range(2):
            workers = server.wait_workers()
            victim = min(workers, key=lambda pid: psutil.Process(pid).create_time())
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda dead=victim: dead not in server.worker_pids(), 10)
            server.wait_workers()
            time.sleep(1.0)
        server.kill()
        time.sleep(0.5)
        server.start()
        time.sleep(2.0)
    finally:
        load = _finish_load(pool, futures, stop)
    stored = _stored_votes(server, keys)
    print(
        f"\nreports through 2 worker kills and a server kill: {load.requests} requests, "
        f"{len(load.acknowledged)} acknowledged, {len(load.failures)} failed, {len(stored)} stored"
    )
    # A failed request may have been stored (killed after its commit, before its answer); an
    # acknowledged one must be, and no vote is stored twice: the primary key is (reporter, the
    # message's key), which the project derives from the text; this catches a derivation that
    # differs between the inbox and the table.
    assert len(stored) == len(set(stored))
    assert set(load.acknowledged) <= set(stored)
    assert all(status is None or status < 500 for status, _ in load.failures), load.failures[:3]
    assert len(load.acknowledged) > 500
