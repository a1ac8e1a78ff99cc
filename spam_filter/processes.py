"""Starting the API's server and stopping services as process groups, for the run command, the
tests and the benchmarks."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

# gunicorn's settings for the API: the workers' metric files, no control socket.
GUNICORN_CONFIG = "python:spam_filter.serving.gunicorn_config"


def gunicorn_command(bind: str, workers: int | str, app: str = "api:create_app()") -> list[str]:
    """The command line that serves `app` with gunicorn on `bind`, with the API's settings.

    The bind always goes on the command line: without it, gunicorn binds 0.0.0.0 when the
    environment has a PORT variable.
    """
    return [
        *(sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG),
        *("--workers", str(workers), "--bind", bind, app),
    ]


def stop_process_groups(
    processes: Iterable[subprocess.Popen], timeout_seconds: float = 15.0
) -> None:
    """SIGTERM each process's group at once, then SIGKILL any still up after `timeout_seconds`.

    Each process must lead its own group (started with `start_new_session=True`), so that the
    workers and children it started stop with it.
    """
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def stop_process_group(process: subprocess.Popen, timeout_seconds: float = 15.0) -> None:
    """`stop_process_groups` for one process."""
    stop_process_groups([process], timeout_seconds)


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        pass  # the group is gone already


# The arguments of the `dagster` command line that run the retraining job once.
RETRAIN_JOB_ARGUMENTS = (
    "job",
    "execute",
    "-m",
    "spam_filter.definitions",
    "-j",
    "create_spam_model_job",
)
