"""gunicorn's settings for the API: the workers' metric files, and no control socket.

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


def on_starting(server: Any) -> None:
    """Give the workers an empty folder for their metric files before the first one starts.

    The folder `PROMETHEUS_MULTIPROC_DIR` names is emptied of earlier servers' files; without
    the variable, a temporary folder is made and removed when the server stops.
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
    server.log.info("metrics of the workers in %s", folder)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges, so only live workers say which model they serve."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics folder, if this server made one."""
    for folder in _made_folder:
        shutil.rmtree(folder, ignore_errors=True)
