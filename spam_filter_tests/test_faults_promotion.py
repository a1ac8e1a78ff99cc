"""Crashes during promotion: a job process killed with SIGKILL at every point of `model_file`.

Each run is a real process, forked from one that imported Dagster and the code location once, so
a loop of runs costs the job's own work rather than the imports. After every crash exactly one
model is active and loads, and the next run succeeds and removes what the crash left behind.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spam_filter import faults
from spam_filter.processes import stop_process_group
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import (
    PROJECT_ROOT,
    add_sample_messages,
    load_recorded,
    promote_weak_model,
)

# How many times the loop passes every crash point.
ROUNDS = int(os.environ.get("SPAM_FILTER_FAULT_ROUNDS", "1"))

_RUNNER = """
import json
import os
import sys

from spam_filter.definitions import defs

job = defs.resolve_job_def("create_spam_model_job")
for line in sys.stdin:
    crash_at = line.strip()
    child = os.fork()
    if child == 0:
        os.environ.pop("SPAM_FILTER_CRASH_AT", None)
        if crash_at:
            os.environ["SPAM_FILTER_CRASH_AT"] = crash_at
        result = job.execute_in_process(raise_on_error=False)
        os._exit(0 if result.success else 1)
    _, status = os.waitpid(child, 0)
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    print(json.dumps({"signal": killed_by, "exit": exit_code}), flush=True)
"""


# Far above a run here (seconds), far below the run lock's own hour.
RUN_TIMEOUT_SECONDS = 300


class JobRunner:
    """Runs `create_spam_model_job`, each time in a fresh child process, optionally crashing it."""

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def run(self, crash_at: str = "") -> dict:
        started = time.monotonic()
        self._process.stdin.write(crash_at + "\n")
        self._process.stdin.flush()
        # A run that never ends (a lock a killed run kept) fails the test instead of hanging it.
        ready, _, _ = select.select([self._process.stdout], [], [], RUN_TIMEOUT_SECONDS)
        if not ready:
            stop_process_group(self._process)
            pytest.fail(
                f"the run (crash_at={crash_at or '-'}) did not end in {RUN_TIMEOUT_SECONDS} s"
            )
        outcome = json.loads(self._process.stdout.readline())
        print(f"run crash_at={crash_at or '-'}: {outcome} in {time.monotonic() - started:.2f} s")
        return outcome

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)


def _state(db: str) -> tuple[list[str], list[str]]:
    """(paths of active models, every recorded path)."""
    storage = DuckDBStorage(db)
    active = [record.path for record in storage.model_history() if record.status == "active"]
    return active, storage.recorded_model_paths()


def _weights_files(weights_dir: Path) -> set[str]:
    return {p.name for p in weights_dir.iterdir() if p.suffix == ".json"}


def _leftovers(weights_dir: Path, recorded: list[str]) -> set[str]:
    """Names in the folder besides its lock and the recorded files: markers, partial files..."""
    return {p.name for p in weights_dir.iterdir()} - {Path(r).name for r in recorded} - {".lock"}


@pytest.fixture
def runner(project_env: dict[str, str], app_db: str):
    add_sample_messages(app_db)
    job_runner = JobRunner(project_env)
    yield job_runner
    job_runner.close()


def test_a_job_killed_at_any_point_of_promotion_leaves_one_loadable_active_model(
    runner: JobRunner, project_env: dict[str, str], app_db: str
) -> None:
    weights_dir = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    assert runner.run() == {"signal": None, "exit": 0}
    injected = {point: 0 for point in faults.PROMOTION_POINTS}
    for _ in range(ROUNDS):
        for point in faults.PROMOTION_POINTS:
            promote_weak_model(app_db, str(weights_dir))
            (before,), recorded_before = _state(app_db)
            files_before = _weights_files(weights_dir)

            assert runner.run(crash_at=point) == {"signal": signal.SIGKILL, "exit": None}
            injected[point] += 1

            active, recorded = _state(app_db)
            assert len(active) == 1, f"after a crash at {point}: active models {active}"
            # The weights file of the active model is whole: the model loads from it.
            assert load_recorded(active[0]).vocabulary_size > 0
            new_files = _weights_files(weights_dir) - files_before
            assert len(new_files) == 1, f"the killed run wrote {new_files}"
            if point in {"switch_committed", "switch_closed"}:
                assert active == list(new_files)
                assert set(recorded) == set(recorded_before) | new_files
            else:
                # Nothing committed: the old model is active and the new file is an orphan that
                # no row points at, so nothing ever loads it.
                assert active == [before]
                assert sorted(recorded) == sorted(recorded_before)
                assert not new_files & set(recorded)

            # The next run succeeds, promotes its model and removes the crash's orphan.
            promote_weak_model(app_db, str(weights_dir))
            assert runner.run() == {"signal": None, "exit": 0}
            active, recorded = _state(app_db)
            assert len(active) == 1
            assert load_recorded(active[0]).vocabulary_size > 0
            # No file without a row (retired models' files beyond the last few are deleted on
            # purpose; their rows stay as history).
            assert _weights_files(weights_dir) <= set(recorded)
            assert _leftovers(weights_dir, recorded) == set()
    assert injected == {point: ROUNDS for point in faults.PROMOTION_POINTS}
