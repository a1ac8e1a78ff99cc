"""Real gunicorn servers for the tests: on a free local port, stopped by process group."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from spam_filter.processes import gunicorn_command, stop_process_group
from spam_filter_tests.helpers import PROJECT_ROOT, copy_trained_state, spelled

WORKERS = 2
REFRESH_SECONDS = 1
PAYLOAD = json.dumps({"text": "WINNER! you are the winner of a £1000 cash prize, call 09061701461"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, str | None, bytes]:
    """One request on its own connection: status, Content-Type and raw body of the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    """A JSON request; the answer's status and decoded JSON body."""
    status, _, data = send(port, method, path, body, {"Content-Type": "application/json"})
    return status, json.loads(data)


@contextmanager
def service(
    command: list[str],
    env: dict[str, str],
    probe: Callable[[], object],
    name: str,
    seconds: float,
    log: Path | None = None,
) -> Iterator[subprocess.Popen]:
    """Start `command` in a session of its own, its output to `log` if given; yield once
    `probe()` stops raising OSError, and stop the whole group afterwards."""
    output = log.open("w") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        start_new_session=True,
        restore_signals=True,
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                probe()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{name} did not start within {seconds} s"
                assert process.poll() is None, f"{name} exited"
                time.sleep(0.2)
        yield process
    finally:
        stop_process_group(process)


def server_env(tmp_path: Path, trained_state: dict[str, str], **overrides: str) -> dict[str, str]:
    """Environment for a server on copies of the trained database and weights in `tmp_path`."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "SPAM_FILTER_DATABASE": str(tmp_path / "app.duckdb"),
        "SPAM_FILTER_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "SPAM_FILTER_WEIGHTS_DIR": str(tmp_path / "weights"),
        "SPAM_FILTER_STORAGE_DIR": str(tmp_path / "storage"),
        "SPAM_FILTER_MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        # In the test's folder: a server killed with SIGKILL cannot remove a folder it made.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **overrides,
    }
    Path(env["DAGSTER_HOME"]).mkdir(exist_ok=True)
    copy_trained_state(trained_state, env["SPAM_FILTER_DATABASE"], env["SPAM_FILTER_WEIGHTS_DIR"])
    return env


@dataclass
class Server:
    """A gunicorn serving the API in a session of its own, and the files it reads."""

    port: int
    env: dict[str, str]
    log: Path
    workers: int = WORKERS
    # The server's working directory: another "host" runs from a folder of its own.
    cwd: Path = PROJECT_ROOT
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        return self.env["SPAM_FILTER_DATABASE"]

    def start(self) -> None:
        """Start gunicorn (appending to the log) and return once it answers health with a 200."""
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                gunicorn_command(f"127.0.0.1:{self.port}", self.workers),
                cwd=self.cwd,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if request(self.port, "GET", "/api/health")[0] == 200:
                    return
            except (OSError, ValueError, http.client.HTTPException):
                pass
            assert time.monotonic() < deadline, f"gunicorn did not answer within {seconds} s"
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """The workers: the master's children."""
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def wait_workers(self, seconds: float = 30) -> list[int]:
        """The workers once there are as many as configured."""
        deadline = time.monotonic() + seconds
        while len(pids := self.worker_pids()) != self.workers:
            assert time.monotonic() < deadline, f"workers {pids} after {seconds} s"
            time.sleep(0.05)
        return pids

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crash or an OOM kill of the group."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_server(port: int) -> Samples:
    """A server's `/metrics`, parsed."""
    status, content_type, body = send(port, "GET", "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, body[:200])
    return parse_metrics(body.decode())


@contextmanager
def running_server(
    tmp_path: Path, trained_state: dict[str, str], **env_overrides: str
) -> Iterator[Server]:
    """A started `Server`; stopped at the end, and its log must hold no traceback or timeout."""
    server = Server(
        free_port(), server_env(tmp_path, trained_state, **env_overrides), tmp_path / "gunicorn.log"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
    text = server.log.read_text()
    assert "Traceback" not in text and "WORKER TIMEOUT" not in text, text


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


def load(
    port: int, stop: threading.Event, deadline: float, max_requests: int, payload: str = PAYLOAD
) -> list[Answer]:
    """Send requests one after another until stopped, past the deadline, or at the count."""
    answers: list[Answer] = []
    while not stop.is_set() and time.monotonic() < deadline and len(answers) < max_requests:
        started = time.monotonic()
        try:
            status, body = request(port, "POST", "/api/find_spam", payload)
            answers.append(Answer(started, status, body, None))
        except (OSError, ValueError, http.client.HTTPException) as error:
            answers.append(Answer(started, None, None, repr(error)))
            # Back off as a client would: a refused connection fails in microseconds, and a
            # server that is down must not use up the request budget.
            time.sleep(0.02)
    return answers


def summary(answers: list[Answer]) -> str:
    failures = [a for a in answers if a.failed]
    models = sorted({a.body["model"] for a in answers if a.body and "model" in a.body})
    return (
        f"{len(answers)} requests, {len(failures)} failures, models {models}, "
        f"first failures {[(a.status, a.body, a.error) for a in failures[:3]]}"
    )


@dataclass
class ReportLoad:
    """What a report-sending client saw: the votes acknowledged with a 202, and the failures."""

    acknowledged: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[int | None, str]] = field(default_factory=list)
    requests: int = 0


def report_load(
    port: int,
    keys: list[str],
    client: int,
    stop: threading.Event,
    deadline: float,
    max_requests: int,
    batch: int = 20,
    pause: float = 0.0,
) -> ReportLoad:
    """Send batches of new reports, each from the next key and `pause` seconds after the last
    answer, until stopped, the deadline or the count; every text is distinct, so each
    acknowledged report is one new vote to find later."""
    seen = ReportLoad()
    while not stop.is_set() and time.monotonic() < deadline and seen.requests < max_requests:
        key = keys[seen.requests % len(keys)]
        texts = [
            f"client {spelled(client)} request {spelled(seen.requests)} report {spelled(i)}: "
            "your parcel fee is due"
            for i in range(batch)
        ]
        body = json.dumps({"reports": [{"text": text, "is_spam": True} for text in texts]})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        seen.requests += 1
        try:
            status, _, data = send(port, "POST", "/api/report", body, headers)
        except (OSError, http.client.HTTPException) as error:
            seen.failures.append((None, repr(error)))
            time.sleep(0.02)  # as a client would back off from a refused connection
            continue
        if status == 202 and json.loads(data).get("accepted") == batch:
            seen.acknowledged.extend((key, text) for text in texts)
        else:
            seen.failures.append((status, data.decode(errors="replace")[:200]))
        time.sleep(pause)
    return seen
