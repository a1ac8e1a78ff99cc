"""gunicorn's settings for the API: threads in each worker, the workers' metric files, no control
socket, and with `--preload`, the app's background thread kept out of the master's forks.

Serve with `gunicorn -c python:spam_filter.serving.gunicorn_config --bind ADDRESS
'api:create_app()'`, as the run command does. prometheus-client chooses where values go when it
is first imported, so nothing here imports it before the folder is set.
"""

import atexit
import math
import os
import shutil
import socket
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from spam_filter.processes import THREADS_PER_WORKER
from spam_filter.settings import api_config

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The app's module that keeps the model fresh; the master has it only when it preloaded the app.
_WATCHER_MODULE = "spam_filter.serving.database_watcher"

# gunicornc's control socket is not used, and every gunicorn of a user shares its default path
# (~/.gunicorn/gunicorn.ctl): a second server takes the socket over and deletes it when it stops.
control_socket_disable = True

# Threads in each worker (gunicorn's gthread workers): a report request spends much of its time
# in the inbox's commit, outside Python's lock, and a sync worker's next `find_spam` waited behind
# it. With 1,000 reports a second beside a retrain, two threads took `find_spam`'s p99 from about
# 2.4 to about 1.9 times its p99 without reports, and the report capacity from about 5,200 to
# 4,000 a second (bench/bench_reports.py, README). A worker accepts no more connections than it
# has threads, and closes each after its answer, as a sync worker does: one with every thread
# busy leaves new connections to the others, and one killed loses only what it was answering.
threads = THREADS_PER_WORKER
worker_connections = THREADS_PER_WORKER
keepalive = 0

# "<pid>:<folder>" once this process prepared the folder the workers' metric files go to:
# gunicorn may read these settings again (a HUP with a settings file), and preparing the folder
# again would delete live workers' files. The pid keeps a process that inherits it from skipping.
_PREPARED_VARIABLE = "SPAM_FILTER_PREPARED_METRICS_DIR"
# Temporary folders made here, removed when the server stops.
_made_folders: list[str] = []


def _prepare_metrics_folder() -> str:
    """An empty folder for the workers' metric files, named in `PROMETHEUS_MULTIPROC_DIR`.

    The folder the variable names is emptied of earlier servers' files; without the variable, a
    temporary folder is made and removed when the server stops.
    """
    folder = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if folder and os.environ.get(_PREPARED_VARIABLE) == f"{os.getpid()}:{folder}":
        return folder
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="spam_filter_metrics_")
        _made_folders.append(folder)
        # A run that never starts the server (`--check-config`) has no `on_exit`.
        atexit.register(_remove_folder, folder, os.getpid())
        os.environ[MULTIPROC_DIR_VARIABLE] = folder
    os.environ[_PREPARED_VARIABLE] = f"{os.getpid()}:{folder}"
    return folder


def _remove_folder(folder: str, maker_pid: int) -> None:
    # Workers run exit handlers too, while the server still needs the folder.
    if os.getpid() == maker_pid:
        shutil.rmtree(folder, ignore_errors=True)


# Prepared as gunicorn reads these settings, before it loads the app: with `--preload` the master
# imports the app, and with it prometheus-client, before any server hook runs. (A folder given
# with gunicorn's `-e` is only known later: a preloaded app makes it as it loads, see
# `spam_filter.serving.metrics`, and `on_starting` empties it.)
_prepare_metrics_folder()


def on_starting(server: Any) -> None:
    """Prepare the folder that gunicorn's own settings (`-e`) named, if they changed it after this
    file was read, before the first worker starts."""
    server.log.info("metrics of the workers in %s", _prepare_metrics_folder())


def post_fork(server: Any, worker: Any) -> None:
    """Bound how long the worker's threads wait for each read of a request that stops arriving.

    A gthread worker keeps telling the master it is alive while one of its threads waits for a
    client, so gunicorn's own timeout never frees that thread; a client that sent part of its
    headers and then nothing would hold it for as long as it kept the connection open. The
    kernel's receive timeout on the worker's listening sockets (the master's, or its own with
    `--reuse-port`) is inherited by every connection they accept; gunicorn closes such a
    connection and logs a socket error. The body's deadline is the app's (`read_deadlines`).
    """
    seconds = api_config()["BODY_READ_SECONDS"]
    whole = int(seconds)
    # Rounded up: a positive time must not become the zero that means no timeout.
    micro = math.ceil((seconds - whole) * 1_000_000)
    timeout = struct.pack("ll", whole, micro)
    for listener in worker.sockets:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics folder, if this server made one (from the daemonised
    process too, whose pid is not the maker's)."""
    for folder in _made_folders:
        shutil.rmtree(folder, ignore_errors=True)


def pre_fork(server: Any, worker: Any) -> None:
    """With `--preload`, stop the app's background thread in the master before it forks.

    The master built the app, and so started the thread that refreshes the model and checkpoints
    the report inbox. A worker forked while that thread was inside SQLite would inherit SQLite's
    record of a lock that nothing in the worker can release. Workers run their own
    (`post_worker_init`). Without `--preload`, the master never imports the app.
    """
    watchers = sys.modules.get(_WATCHER_MODULE)
    if watchers is not None and watchers.stop_before_fork():
        # The master serves nothing: what its watcher set (the model served) must not count.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def post_worker_init(worker: Any) -> None:
    """With `--preload`, bring the worker's copy of the app up to date and keep it so: the master
    stopped checking at its first fork, so a worker started later would begin with an old model.
    Without it there is nothing to resume. Here rather than in `post_fork`, which runs before the
    worker handles signals: a stop asked for during the refresh would go unheard."""
    watchers = sys.modules.get(_WATCHER_MODULE)
    if watchers is not None:
        watchers.resume_after_fork()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges, so only live workers say which model they serve."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
