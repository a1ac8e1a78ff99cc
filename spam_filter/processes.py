"""Starting the API's server and stopping services as process groups, for the run command, the
tests and the benchmarks."""

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

# How long what is left of a group may go on stopping by itself once its leader has exited.
ORPHAN_GRACE_SECONDS = 1.0
# gunicorn's settings for the API (see the module).
GUNICORN_CONFIG = "python:spam_filter.serving.gunicorn_config"
# Requests each API worker answers at once, each in a thread of its own (see the settings).
THREADS_PER_WORKER = 2


def gunicorn_command(bind: str, workers: int | str, app: str = "api:create_app()") -> list[str]:
    """The command line that serves `app` with gunicorn on `bind`, with the API's settings.

    The bind always goes on the command line: without it, gunicorn binds 0.0.0.0 when the
    environment has a PORT variable.
    """
    return [
        *(sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG),
        *("--workers", str(workers), "--bind", bind, app),
    ]


_PR_SET_PDEATHSIG = 1


def stop_with_parent(signal_number: int) -> Callable[[], None] | None:
    """A pre-exec step (`preexec_fn`) asking Linux to send the child `signal_number` when the
    process starting it dies: one killed with SIGKILL, which no cleanup code sees, then leaves
    nothing of it running. None where Linux's `prctl` is missing.

    Linux ties the request to the thread that starts the child: start from a thread that outlives
    it. Runs after a switch of user (`user=` of `Popen`), which would clear it.
    """
    if sys.platform != "linux":
        return None
    parent_pid = os.getpid()
    # Looked up here: the forked child should do as little as it can before exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask() -> None:
        prctl(_PR_SET_PDEATHSIG, signal_number)
        if os.getppid() != parent_pid:  # the parent died before the request was made
            os._exit(1)

    return ask


def stop_process_groups(
    processes: Iterable[subprocess.Popen], timeout_seconds: float = 15.0
) -> list[subprocess.Popen]:
    """SIGTERM each process's group at once, SIGKILL any group still up after `timeout_seconds`,
    and return once no process of any group is left; returns the processes whose group was killed.

    Each process must lead its own group (started with `start_new_session=True`), so that the
    workers and children it started stop with it. A leader can exit before its children do, so
    the whole group is waited for, not only the leader.
    """
    processes = list(processes)
    for process in processes:
        if process.poll() is None or group_alive(process.pid):
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    _wait_groups(processes, deadline)
    killed = [process for process in processes if _still_up(process)]
    for process in killed:
        _signal_group(process, signal.SIGKILL)
    # Killed processes need a moment for the kernel to take them down.
    _wait_groups(killed, time.monotonic() + 10)
    return killed


def stop_process_group(process: subprocess.Popen, timeout_seconds: float = 15.0) -> None:
    """`stop_process_groups` for one process."""
    stop_process_groups([process], timeout_seconds)


def group_alive(group: int) -> bool:
    """Whether a process of the process group `group` is still running (zombies aside: they hold
    nothing but their exit status)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: any member, zombies included, counts
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue  # it ended meanwhile
        # The command name, in parentheses, may hold spaces: the fields follow its last ")".
        state, _parent, process_group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(process_group) == group and state != "Z":
            return True
    return False


def _still_up(process: subprocess.Popen) -> bool:
    return process.poll() is None or group_alive(process.pid)


def _wait_groups(processes: list[subprocess.Popen], deadline: float) -> None:
    """Wait until every group is gone or the deadline passes.

    A process that joined a group after its SIGTERM never got one (`dagster dev` restarts its
    code server while shutting down, and the new one waits for a heartbeat that never comes), so
    what is left of a group a moment after its leader exited gets a SIGTERM of its own.
    """
    leader_gone_at: dict[int, float] = {}
    orphans_signalled: set[int] = set()
    while time.monotonic() < deadline:
        up = [process for process in processes if _still_up(process)]
        if not up:
            return
        now = time.monotonic()
        for process in up:
            if process.poll() is None:
                continue
            gone_at = leader_gone_at.setdefault(process.pid, now)
            if now - gone_at >= ORPHAN_GRACE_SECONDS and process.pid not in orphans_signalled:
                orphans_signalled.add(process.pid)
                _signal_group(process, signal.SIGTERM)
        time.sleep(0.05)


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


@contextmanager
def signal_ignored(signal_number: int) -> Iterator[None]:
    """Ignore `signal_number` for the block (in the main thread): a second Ctrl-C must not cut
    short the cleanup that the first one started."""
    previous = signal.signal(signal_number, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal_number, previous)
