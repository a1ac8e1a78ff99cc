"""End to end: a real gunicorn server under load while other processes promote models."""

import json
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
from spam_filter.resources import ModelStorage
from spam_filter.spam import train_model
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import (
    JOB_COMMAND,
    PROJECT_ROOT,
    SWAP_DEADLINE_SECONDS,
    OtherProcess,
    promote_weak_model,
    wait_for,
)
from spam_filter_tests.servers import (
    Server,
    load,
    request,
    running_server,
    scrape_server,
    summary,
)

LOAD_THREADS = 3
FIND_WINNER = json.dumps({"text": "you are the winner"})


@pytest.fixture
def server(tmp_path: Path, trained_state: dict[str, str]) -> Iterator[Server]:
    """gunicorn with two workers on a free local port, serving a copy of the trained database."""
    with running_server(tmp_path, trained_state) as running:
        yield running


def _inverted_model_path(weights_dir: str) -> str:
    model = train_model(
        [("you are the winner", False), ("cash prize call now", False), ("see you at lunch", True)],
        alpha=0.1,
        false_positive_cost=1.0,
    )
    return ModelStorage(weights_dir=weights_dir).save(model)


def test_hot_swap_under_load(
    server: Server, trained_state: dict[str, str], other_process: OtherProcess
) -> None:
    old_name = Path(trained_state["model_path"]).name
    new_path = _inverted_model_path(server.env["SPAM_FILTER_WEIGHTS_DIR"])
    stop = threading.Event()
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        futures = [
            pool.submit(load, server.port, stop, time.monotonic() + 30, 20_000)
            for _ in range(LOAD_THREADS)
        ]
        time.sleep(1.0)
        other_process.promote(server.database, new_path)
        promoted_at = time.monotonic()
        # Keep loading for a while past the deadline, so both workers show what they serve then.
        time.sleep(SWAP_DEADLINE_SECONDS + 1.5)
        stop.set()
        answers = sorted((a for f in futures for a in f.result()), key=lambda a: a.started)
    print(f"\nhot swap under load: {summary(answers)}")
    assert not [a for a in answers if a.failed], summary(answers)
    before = [a for a in answers if a.started < promoted_at]
    late = [a for a in answers if a.started > promoted_at + SWAP_DEADLINE_SECONDS]
    assert before and all(a.body["model"] == old_name for a in before)
    assert all(a.body["is_spam"] is True for a in before)
    assert len(late) > 20
    assert all(a.body["model"] == Path(new_path).name for a in late), summary(late)
    assert all(a.body["is_spam"] is False for a in late)


def test_no_failures_while_the_real_job_promotes(server: Server, tmp_path: Path) -> None:
    old_path = promote_weak_model(server.database, server.env["SPAM_FILTER_WEIGHTS_DIR"])
    assert wait_for(
        lambda: request(server.port, "GET", "/api/health")[1]["model"] == Path(old_path).name
    )
    stop = threading.Event()
    job_log = tmp_path / "job.log"
    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        # Each client stops by itself after 45 s or 20,000 requests, whatever happens here.
        futures = [
            pool.submit(load, server.port, stop, started + 45, 20_000) for _ in range(LOAD_THREADS)
        ]
        with job_log.open("w") as log_file:
            job = subprocess.Popen(
                JOB_COMMAND,
                cwd=PROJECT_ROOT,
                env=server.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            returncode = job.wait(timeout=40)
        finally:
            stop_process_group(job)
        job_done_at = time.monotonic()
        # About 20 s of load in all, and at least the swap deadline and a margin after the job.
        time.sleep(max(started + 20 - job_done_at, SWAP_DEADLINE_SECONDS + 1.5))
        stop.set()
        answers = sorted((a for f in futures for a in f.result()), key=lambda a: a.started)
    elapsed = time.monotonic() - started
    print(
        f"\nload during the real job ({elapsed:.1f} s, job {job_done_at - started:.1f} s): "
        f"{summary(answers)}"
    )
    assert returncode == 0, job_log.read_text()[-5000:]
    new_path = DuckDBStorage(server.database).active_model().path
    assert new_path != old_path
    assert not [a for a in answers if a.failed], summary(answers)
    late = [a for a in answers if a.started > job_done_at + SWAP_DEADLINE_SECONDS]
    assert len(late) > 20
    assert all(a.body["model"] == Path(new_path).name for a in late), summary(late)


def _served_gauges(port: int) -> dict[str, float]:
    return {
        dict(labels)["model"]: value
        for (name, labels), value in scrape_server(port).items()
        if name == "spam_filter_model_served"
    }


def _all_serve(port: int, name: str) -> bool:
    return all(
        request(port, "POST", "/api/find_spam", FIND_WINNER)[1]["model"] == name for _ in range(20)
    )


def test_a_preloaded_master_forks_its_workers_with_no_thread_inside_the_database(
    tmp_path: Path, trained_state: dict[str, str], other_process: OtherProcess
) -> None:
    first = Path(trained_state["model_path"]).name
    # Long enough for a respawned worker's first requests to come before its thread's first
    # check: those requests show whether the worker was brought up to date when it started.
    refresh_seconds = 2
    with running_server(
        tmp_path,
        trained_state,
        GUNICORN_CMD_ARGS="--preload",
        SPAM_FILTER_MODEL_REFRESH_SECONDS=str(refresh_seconds),
    ) as server:
        server.wait_workers()
        # The thread that refreshes and checkpoints the report inbox runs only in the workers:
        # forking beside it could copy SQLite's lock records mid-operation. Had the master kept
        # it, it would have opened the inbox by now.
        time.sleep(2.5 * refresh_seconds)
        master = psutil.Process(server.process.pid)
        assert not [f.path for f in master.open_files() if "report-inbox" in f.path]
        assert all(
            any("report-inbox" in f.path for f in psutil.Process(worker).open_files())
            for worker in server.worker_pids()
        )
        # Each worker says what it serves, though it inherited the model rather than loaded it.
        assert _served_gauges(server.port) == {first: 1.0}
        new_path = _inverted_model_path(server.env["SPAM_FILTER_WEIGHTS_DIR"])
        other_process.promote(server.database, new_path)
        # Every worker picks the new model up: each runs its own watcher.
        assert wait_for(lambda: _all_serve(server.port, Path(new_path).name), seconds=20)
        # Only the workers' gauges count: the master's said it served the first model.
        assert _served_gauges(server.port) == {first: 0.0, Path(new_path).name: 1.0}
        # A worker started now is forked from a master that stopped checking at the first model:
        # it must answer with the new one from its first request.
        old_workers = set(server.worker_pids())
        for worker in old_workers:
            os.kill(worker, signal.SIGKILL)
        assert wait_for(lambda: not old_workers & set(server.wait_workers()), seconds=30)
        assert _all_serve(server.port, Path(new_path).name)
