"""gunicorn's settings for the API: the workers' metric files, no control socket, and with
`--preload`, the app's background thread kept out of the master's forks.

Serve with `gunicorn -c python:spam_filter.serving.gunicorn_config --bind ADDRESS
'api:create_app()'`, as the run command does. prometheus-client chooses where values go when it
is first imported, so nothing here imports it before the folder is set.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# gunicornc's control socket is not used, and every gunicorn of a user shares its default path
# (~/.gunicorn/gunicorn.ctl): a second server takes the socket over and deletes it when it stops.
control_socket_disable = True

# The metrics folder this server made, to remove when it stops.
_made_folder: list[str] = []


def _prepare_metrics_folder() -> str:
    """An empty folder for the workers' metric files, named in `PROMETHEUS_MULTIPROC_DIR`.

    The folder the variable names is emptied of earlier servers' files; without the variable, a
    temporary folder is made and removed when the server stops.
    """
    folder = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="spam_filter_metrics_")
        _made_folder.append(folder)
        os.environ[MULTIPROC_DIR_VARIABLE] = folder
    return folder


# Prepared as gunicorn reads these settings, before it loads the app: with `--preload` the master
# imports the app, and with it prometheus-client, before any server hook runs.
_metrics_folder = _prepare_metrics_folder()


def on_starting(server: Any) -> None:
    server.log.info("metrics of the workers in %s", _metrics_folder)


def pre_fork(server: Any, worker: Any) -> None:
    """With `--preload`, stop the app's background thread in the master before it forks.

    The master built the app, and so started the thread that refreshes the model and checkpoints
    the report inbox. A worker forked while that thread was inside SQLite would inherit SQLite's
    record of a lock that nothing in the worker can release. Workers run their own (`post_fork`).
    """
    watcher = _preloaded_watcher(server)
    if watcher is not None:
        watcher.stop()
        # The master serves nothing: what its watcher set (the model served) must not count.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def post_fork(server: Any, worker: Any) -> None:
    """With `--preload`, bring the worker's copy of the app up to date and keep it so."""
    watcher = _preloaded_watcher(server)
    if watcher is not None:
        # The master stopped checking at its first fork: a respawned worker's model may be old.
        watcher.refresh()
        watcher.ensure_running()


def _preloaded_watcher(server: Any) -> Any:
    """The database watcher of the app the master preloaded, or None without `--preload`."""
    if not server.cfg.preload_app:
        return None
    # Imported here: it imports prometheus-client, which must wait for the metrics folder.
    from spam_filter.serving.database_watcher import EXTENSION_KEY

    return getattr(server.app.wsgi(), "extensions", {}).get(EXTENSION_KEY)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges, so only live workers say which model they serve."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics folder, if this server made one."""
    for folder in _made_folder:
        shutil.rmtree(folder, ignore_errors=True)
