"""The throw-away PostgreSQL the suite starts: it must not outlive a test run that is killed."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from spam_filter_tests.helpers import PROJECT_ROOT, wait_for

# Starts a server, says where it is, then waits to be killed.
START_AND_WAIT = """
import sys
from spam_filter_tests.postgres_server import start_postgres
server = start_postgres(sys.argv[1])
print(server.pid, server.data_dir.parent, flush=True)
sys.stdin.readline()
"""


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_test_run_killed_with_sigkill_leaves_no_server_running(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", START_AND_WAIT, str(tmp_path)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pid, root = None, None
    try:
        pid_text, root = starter.stdout.readline().split()
        pid = int(pid_text)
        assert not _stopped(pid)
        starter.kill()  # no cleanup code of the test run gets to run
        starter.wait()
        assert wait_for(lambda: _stopped(pid), seconds=30), f"postgres {pid} still runs"
    finally:
        starter.kill()
        starter.wait()
        if pid is not None and not _stopped(pid):
            os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: _stopped(pid), seconds=10)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
