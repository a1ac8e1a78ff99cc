"""End to end: a real gunicorn server under load while other processes promote models."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import database
from spam_filter.resources import ModelStorage
from spam_filter.spam import train_model
from spam_filter_tests.conftest import PROJECT_ROOT, OtherProcess

WORKERS = 2
LOAD_THREADS = 3
REFRESH_SECONDS = 1
SWAP_DEADLINE_SECONDS = 5.0
PAYLOAD = json.dumps({"text": "WINNER! you are the winner of a £1000 cash prize, call 09061701461"})


@dataclass(frozen=True)
class Server:
    """A running gunicorn serving the API, and the files it reads."""

    port: int
    env: dict[str, str]
    log: Path

    @property
    def database(self) -> str:
        return self.env["SPAM_FILTER_DATABASE"]


@dataclass(frozen=True)
class Answer:
    """One request of the load: when it started and what came back."""

    started: float
    status: int | None
    body: dict | None
    error: str | None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status != 200 or self.body.get("success") is not True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def server(tmp_path: Path, trained_state: dict[str, str]) -> Iterator[Server]:
    """gunicorn with two workers on a free local port, serving a copy of the trained database."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "SPAM_FILTER_DATABASE": str(tmp_path / "app.duckdb"),
        "SPAM_FILTER_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "SPAM_FILTER_WEIGHTS_DIR": str(tmp_path / "weights"),
        "SPAM_FILTER_STORAGE_DIR": str(tmp_path / "storage"),
        "SPAM_FILTER_MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    Path(env["DAGSTER_HOME"]).mkdir()
    shutil.copyfile(trained_state["database"], env["SPAM_FILTER_DATABASE"])
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS)]
            + ["--bind", f"127.0.0.1:{port}", "api:create_app()"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if _request(port, "GET", "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.2)
        yield Server(port, env, log)
    finally:
        _stop_group(process)
    text = log.read_text()
    assert "Traceback" not in text and "WORKER TIMEOUT" not in text, text


def _load(port: int, stop: threading.Event, deadline: float, max_requests: int) -> list[Answer]:
    """Send requests one after another until stopped, past the deadline, or at the count."""
    answers: list[Answer] = []
    while not stop.is_set() and time.monotonic() < deadline and len(answers) < max_requests:
        started = time.monotonic()
        try:
            status, body = _request(port, "POST", "/api/find_spam", PAYLOAD)
            answers.append(Answer(started, status, body, None))
        except (OSError, ValueError, http.client.HTTPException) as error:
            answers.append(Answer(started, None, None, repr(error)))
    return answers


def _summary(answers: list[Answer]) -> str:
    failures = [a for a in answers if a.failed]
    models = sorted({a.body["model"] for a in answers if a.body and "model" in a.body})
    return (
        f"{len(answers)} requests, {len(failures)} failures, models {models}, "
        f"first failures {[(a.status, a.body, a.error) for a in failures[:3]]}"
    )


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
            pool.submit(_load, server.port, stop, time.monotonic() + 30, 20_000)
            for _ in range(LOAD_THREADS)
        ]
        time.sleep(1.0)
        other_process.promote(server.database, new_path)
        promoted_at = time.monotonic()
        # Keep loading for a while past the deadline, so both workers show what they serve then.
        time.sleep(SWAP_DEADLINE_SECONDS + 1.5)
        stop.set()
        answers = sorted((a for f in futures for a in f.result()), key=lambda a: a.started)
    print(f"\nhot swap under load: {_summary(answers)}")
    assert not [a for a in answers if a.failed], _summary(answers)
    before = [a for a in answers if a.started < promoted_at]
    late = [a for a in answers if a.started > promoted_at + SWAP_DEADLINE_SECONDS]
    assert before and all(a.body["model"] == old_name for a in before)
    assert all(a.body["is_spam"] is True for a in before)
    assert len(late) > 20
    assert all(a.body["model"] == Path(new_path).name for a in late), _summary(late)
    assert all(a.body["is_spam"] is False for a in late)


def test_no_failures_while_the_real_job_promotes(server: Server, tmp_path: Path) -> None:
    with database.connection(server.database, read_only=True) as conn:
        old_path = database.active_model(conn).path
    stop = threading.Event()
    job_log = tmp_path / "job.log"
    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        # Each client stops by itself after 45 s or 20,000 requests, whatever happens here.
        futures = [
            pool.submit(_load, server.port, stop, started + 45, 20_000) for _ in range(LOAD_THREADS)
        ]
        with job_log.open("w") as log_file:
            job = subprocess.Popen(
                [Path(sys.executable).parent / "dagster", "job", "execute"]
                + ["-m", "spam_filter", "-j", "create_spam_model_job"],
                cwd=PROJECT_ROOT,
                env=server.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            returncode = job.wait(timeout=40)
        finally:
            _stop_group(job)
        job_done_at = time.monotonic()
        # About 20 s of load in all, and at least the swap deadline and a margin after the job.
        time.sleep(max(started + 20 - job_done_at, SWAP_DEADLINE_SECONDS + 1.5))
        stop.set()
        answers = sorted((a for f in futures for a in f.result()), key=lambda a: a.started)
    elapsed = time.monotonic() - started
    print(
        f"\nload during the real job ({elapsed:.1f} s, job {job_done_at - started:.1f} s): "
        f"{_summary(answers)}"
    )
    assert returncode == 0, job_log.read_text()[-5000:]
    with database.connection(server.database, read_only=True) as conn:
        new_path = database.active_model(conn).path
    assert new_path != old_path
    assert not [a for a in answers if a.failed], _summary(answers)
    late = [a for a in answers if a.started > job_done_at + SWAP_DEADLINE_SECONDS]
    assert len(late) > 20
    assert all(a.body["model"] == Path(new_path).name for a in late), _summary(late)
