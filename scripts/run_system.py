"""Run the whole system: bootstrap the data, train a first model if none is active, then serve the
API (gunicorn) and the Dagster UI with its schedule daemon until Ctrl-C stops both.

Run through `make run`, which creates the virtual environment first. Running it again reuses the
database, the messages and the active model that exist.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import sample_data  # noqa: E402
from spam_filter import settings, weights  # noqa: E402
from spam_filter.processes import (  # noqa: E402
    RETRAIN_JOB_ARGUMENTS,
    gunicorn_command,
    stop_process_groups,
)
from spam_filter.spam import load_model  # noqa: E402
from spam_filter.storage.base import ApplicationStorage  # noqa: E402
from spam_filter.storage.factory import open_storage  # noqa: E402

# One retrain at a time: two runs would only take turns on the warehouse file's lock.
DAGSTER_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""
BIN = Path(sys.executable).parent
# Loopback unless told otherwise: the API has no authentication, so reaching it from other machines
# is a choice to make explicitly (SPAM_FILTER_API_BIND=0.0.0.0:5000, behind a proxy or firewall).
DEFAULT_API_BIND = "127.0.0.1:5000"
DEFAULT_UI_HOST = "127.0.0.1"


def _dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    if not (home / "history").exists():
        # Create Dagster's storage once, now: two processes that find it missing at the same
        # moment (two `dagster job execute`) race to create its tables, and one of them fails.
        subprocess.run(
            [BIN / "dagster", "instance", "migrate"],
            cwd=PROJECT_ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return home


def active_model_problem(storage: ApplicationStorage, weights_dir: Path) -> str | None:
    """Why the API would have no model to serve, or None when the active model loads."""
    record = storage.active_model()
    if record is None:
        return "no active model"
    try:
        load_model(weights.resolve(record.path, weights_dir))
    except Exception as error:
        return f"the active model {record.path} does not load ({type(error).__name__}: {error})"
    return None


def _bootstrap() -> None:
    storage = open_storage()
    storage.create_schema()
    weights_dir = settings.weights_dir()
    if renamed := storage.relativize_model_paths(weights_dir):
        print(f"{renamed} weights path(s) rewritten relative to {weights_dir}", flush=True)
    if storage.message_count() == 0:
        print("messages is empty: inserting 10,000 sample messages", flush=True)
        sample_data.insert_sample_messages(storage, 10_000)
    if problem := active_model_problem(storage, weights_dir):
        print(f"{problem}: running create_spam_model_job once", flush=True)
        subprocess.run(
            [BIN / "dagster", *RETRAIN_JOB_ARGUMENTS],
            cwd=PROJECT_ROOT,
            check=True,
        )


def api_bind(environ: Mapping[str, str] = os.environ) -> str:
    """The address gunicorn serves the API on: `SPAM_FILTER_API_BIND`, else loopback."""
    return environ.get("SPAM_FILTER_API_BIND") or DEFAULT_API_BIND


def ui_host(environ: Mapping[str, str] = os.environ) -> str:
    """The host the Dagster UI listens on: `SPAM_FILTER_UI_HOST`, else loopback."""
    return environ.get("SPAM_FILTER_UI_HOST") or DEFAULT_UI_HOST


def api_command(bind: str, workers: str) -> list[str]:
    """The gunicorn command line that serves the API on `bind`."""
    return gunicorn_command(bind, workers)


def _start(command: list[str]) -> subprocess.Popen:
    # A session of its own per service, so stopping a service stops all of its processes, and
    # default signal handling, without which `dagster dev` ignores SIGTERM.
    return subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True, restore_signals=True)


def main() -> int:
    # Handle Ctrl-C and SIGTERM here even when started with them ignored (as background jobs of a
    # non-interactive shell are): the services then start with default handling, as exec resets
    # caught signals but keeps ignored ones, and `dagster dev` would otherwise never stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    home = _dagster_home()
    _bootstrap()
    bind = api_bind()
    workers = os.environ.get("SPAM_FILTER_API_WORKERS", "2")
    host = ui_host()
    ui_port = os.environ.get("SPAM_FILTER_UI_PORT", "3000")
    services: list[subprocess.Popen] = []
    try:
        services.append(_start(api_command(bind, workers)))
        services.append(_start([BIN / "dagster", "dev", "--host", host, "--port", ui_port]))
    except BaseException:
        stop_process_groups(services, timeout_seconds=20)
        raise
    print(
        f"\nAPI on http://{bind}/api/find_spam, Dagster UI on http://{host}:{ui_port} "
        f"(DAGSTER_HOME={home}, database {settings.database_path()}). Ctrl-C stops both.\n",
        flush=True,
    )
    try:
        while all(service.poll() is None for service in services):
            time.sleep(0.5)
        print("a service stopped on its own; stopping the other", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("\nstopping the API and the Dagster UI", flush=True)
        return 0
    finally:
        stop_process_groups(services, timeout_seconds=20)


if __name__ == "__main__":
    sys.exit(main())
