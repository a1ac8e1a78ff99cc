"""Concurrent writers: sample data beside a retrain, and two retrains launched at once.

Everything here is a real process on real files: `sample_data.py`, the `dagster` CLI, and
`dagster dev` taking launches through its GraphQL API as the UI's "Materialize" button does.
Afterwards the database opens, every row is there, and exactly one model is active.
"""

import codecs
import fcntl
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spam_filter import faults
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import (
    BIN,
    PROJECT_ROOT,
    add_sample_messages,
    load_recorded,
    start_job,
    wait_for,
)
from spam_filter_tests.servers import free_port, service

INITIAL_MESSAGES = 2_000
INSERTED_MESSAGES = 1_000_000
INSERTED_LABEL = "1.00M"  # as tqdm shows it
# The run trains on the newest of them only, so that it stays short; the inserted messages are
# newer than the first ones, so the number copied still tells whether the run saw the insert.
TRAINED_MESSAGES = 10_000


@pytest.fixture
def env(project_env: dict[str, str], app_db: str, tmp_path: Path) -> dict[str, str]:
    add_sample_messages(app_db, INITIAL_MESSAGES)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, **project_env, "DAGSTER_HOME": str(home)}


def _consistent_state(db: str) -> tuple[int, list[str]]:
    """(messages, active model paths), after reading every row of both tables."""
    storage = DuckDBStorage(db)
    with storage.connection(read_only=True) as conn:
        (messages, characters) = conn.execute(
            "SELECT count(*), sum(length(body)) FROM messages"
        ).fetchone()
    assert characters > 0
    history = storage.model_history()
    active = [record.path for record in history if record.status == "active"]
    for path in active:
        assert load_recorded(path).vocabulary_size > 0
    return messages, active


def _copied_user_messages(env: dict[str, str]) -> int:
    with DuckDBStorage(env["SPAM_FILTER_WAREHOUSE"]).connection(read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM public.user_messages").fetchone()[0]


def _start_sample_data(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "sample_data.py", "--count", str(INSERTED_MESSAGES)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class _Output:
    """Collects a process's output on a thread; `wait_for` blocks until a text appears."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # os.read returns what the pipe holds; a text stream's read(n) would wait for n characters.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        descriptor = self.process.stdout.fileno()
        for chunk in iter(lambda: os.read(descriptor, 4096), b""):
            with self._changed:
                self.text += decoder.decode(chunk)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: text in self.text, timeout)
        assert found, f"{text!r} never appeared in:\n{self.text[-3000:]}"

    def finish(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return code


@pytest.fixture
def watched() -> Iterator[Callable[[subprocess.Popen], _Output]]:
    """Collects a started process's output; kills it at the end if a failed test left it waiting."""
    processes: list[subprocess.Popen] = []

    def watch(process: subprocess.Popen) -> _Output:
        processes.append(process)
        return _Output(process)

    yield watch
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("first", ["sample_data", "job"])
def test_sample_data_beside_a_retrain_both_finish_with_all_or_none_of_the_rows(
    env: dict[str, str],
    app_db: str,
    first: str,
    tmp_path: Path,
    watched: Callable[[subprocess.Popen], _Output],
) -> None:
    run_config = tmp_path / "run_config.json"
    run_config.write_text(
        json.dumps({"ops": {"user_messages": {"config": {"max_messages": TRAINED_MESSAGES}}}})
    )
    if first == "sample_data":
        # The insert holds its open transaction until the run has said that it waits for it.
        release = tmp_path / "release-insert"
        hold = f"sample_data_inserted:{release}"
        inserting = watched(_start_sample_data({**env, faults.HOLD_AT_VARIABLE: hold}))
        inserting.wait_for(f"/{INSERTED_LABEL}")  # the transaction is open and holds the database
        job = watched(start_job(env, run_config))
        job.wait_for(f"waiting for another process to release {app_db}")
        assert inserting.process.poll() is None
        release.touch()
    else:
        job = watched(start_job(env, run_config))
        job.wait_for('Started execution of step "sms_spam_examples"')
        inserting = watched(_start_sample_data(env))
    assert inserting.finish() == 0, inserting.text[-3000:]
    assert job.finish() == 0, job.text[-3000:]
    assert "RUN_SUCCESS" in job.text

    messages, active = _consistent_state(app_db)
    assert messages == INITIAL_MESSAGES + INSERTED_MESSAGES
    assert len(active) == 1
    # The run read a snapshot: the first messages alone, or the newest of the inserted ones
    # (that no partial insert is ever seen is pinned by sample_data's kill tests). When the run
    # waited for the insert's commit, it read the inserted ones.
    copied = _copied_user_messages(env)
    if first == "sample_data":
        assert copied == TRAINED_MESSAGES
    else:
        assert copied in {INITIAL_MESSAGES, TRAINED_MESSAGES}


def test_two_retrains_from_the_cli_at_once_take_turns(
    env: dict[str, str], app_db: str, watched: Callable[[subprocess.Popen], _Output]
) -> None:
    # As `make run` does: Dagster's own storage exists before any two runs can start together
    # (two processes creating it at once race on its tables, a Dagster limitation).
    subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    runs = [watched(start_job(env)) for _ in range(2)]
    codes = [run.finish() for run in runs]
    assert codes == [0, 0], "\n".join(run.text[-3000:] for run in runs)
    assert any("waiting for another run to release" in run.text for run in runs)
    _, active = _consistent_state(app_db)
    assert len(active) == 1
    assert len(DuckDBStorage(app_db).model_history()) == 2


_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
_STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
_MESSAGES = """
query Messages($id: ID!) {
  logsForRun(runId: $id) { ... on EventConnection { events { ... on MessageEvent { message } } } }
}
"""


def _graphql(url: str, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


@pytest.fixture
def dagster_dev(env: dict[str, str]) -> Iterator[str]:
    """`dagster dev` on a free port with no limit on concurrent runs; yields its GraphQL URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    command = [str(BIN / "dagster"), "dev", "--host", "127.0.0.1", "--port", str(port)]
    with service(command, env, lambda: _graphql(url, "{ version }", {}), "dagster dev", 90):
        yield url


def _messages(url: str, run_id: str) -> list[str]:
    events = _graphql(url, _MESSAGES, {"id": run_id})["logsForRun"]["events"]
    return [event.get("message", "") for event in events]


def test_two_launches_from_the_ui_both_wait_then_both_succeed(
    dagster_dev: str, app_db: str, env: dict[str, str]
) -> None:
    params = {
        "selector": {
            "repositoryLocationName": "spam_filter",
            "repositoryName": "__repository__",
            "jobName": "create_spam_model_job",
        },
        "runConfigData": {},
    }
    # A run in progress holds the warehouse (this test stands in for it), so both launches are
    # going at once whatever the daemon's pace; then they have only each other to wait for.
    with open(env["SPAM_FILTER_WAREHOUSE"] + ".run-lock", "a") as run_in_progress:
        fcntl.flock(run_in_progress, fcntl.LOCK_EX)
        run_ids = []
        for _ in range(2):
            launched = _graphql(dagster_dev, _LAUNCH, {"params": params})["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_ids.append(launched["run"]["runId"])
        both_wait = wait_for(
            lambda: all(
                any("waiting for another run to release" in m for m in _messages(dagster_dev, r))
                for r in run_ids
            ),
            seconds=120,
            interval=0.5,
        )
        assert both_wait, "both runs did not start and wait within 120 s"
        fcntl.flock(run_in_progress, fcntl.LOCK_UN)

    def statuses() -> list[str]:
        return [
            _graphql(dagster_dev, _STATUS, {"id": run_id})["runOrError"]["status"]
            for run_id in run_ids
        ]

    ended = wait_for(
        lambda: all(s in {"SUCCESS", "FAILURE", "CANCELED"} for s in statuses()),
        seconds=240,
        interval=0.5,
    )
    assert ended, "the runs did not end within 240 s"
    assert statuses() == ["SUCCESS", "SUCCESS"]
    _, active = _consistent_state(app_db)
    assert len(active) == 1
    assert len(DuckDBStorage(app_db).model_history()) == 2
