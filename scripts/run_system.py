"""Run the whole system: bootstrap the data, train a first model if none is active, then serve the
API (gunicorn) and the Dagster UI with its schedule daemon until Ctrl-C stops both.

Run through `make run`, which creates the virtual environment first. Running it again reuses the
database, the messages and the active model that exist. `make retrain` runs it as
`run_system.py retrain`: the retraining job once, into the Dagster instance the UI shows.
"""

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from spam_filter import settings  # noqa: E402
from spam_filter.command_line import run_command_line  # noqa: E402
from spam_filter.processes import (  # noqa: E402
    RETRAIN_JOB_ARGUMENTS,
    group_alive,
    gunicorn_command,
    signal_ignored,
    stop_process_groups,
    stop_with_parent,
)
from spam_filter.storage.base import ApplicationStorage  # noqa: E402
from spam_filter.storage.factory import STORAGE_ERRORS, open_storage  # noqa: E402

# One retrain at a time: two runs would only take turns on the warehouse file's lock.
DAGSTER_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""
# With the application database on PostgreSQL, Dagster's runs, event logs, schedules, sensors and
# their cursors live on the same server (dagster-postgres). The URL stays in the environment: the
# file names the variable, never the password.
DAGSTER_POSTGRES_YAML = """\
storage:
  postgres:
    postgres_url:
      env: SPAM_FILTER_DATABASE_URL
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
DEFAULT_UI_PORT = "3000"
# How long the services get to stop after SIGTERM before they are killed.
STOP_TIMEOUT_SECONDS = 20.0
# How long a job stopped by Ctrl-C gets to record its run as stopped, before a SIGINT, then a kill.
JOB_STOP_SECONDS = 15.0


def dagster_yaml(database_url: str | None) -> str:
    """The dagster.yaml `make run` writes: Dagster's storage on PostgreSQL when the application
    database is there, else in files under DAGSTER_HOME."""
    return DAGSTER_POSTGRES_YAML if database_url else DAGSTER_YAML


def write_dagster_yaml(home: Path, database_url: str | None) -> None:
    """Write the dagster.yaml for this mode, unless the file is one written by hand."""
    config = home / "dagster.yaml"
    wanted = dagster_yaml(database_url)
    if not config.exists() or config.read_text() in {DAGSTER_YAML, DAGSTER_POSTGRES_YAML}:
        config.write_text(wanted)


def _dagster_home() -> Path:
    # Dagster wants an absolute path and expands `~`: the folder made here must be the one it reads.
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home = home.expanduser().resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    database_url = settings.database_url()
    write_dagster_yaml(home, database_url)
    # On PostgreSQL, migrating is cheap and idempotent, and the server may be new to this home.
    if database_url or not (home / "history").exists():
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
        storage.load_model(record.path, weights_dir)
    except Exception as error:
        return f"the active model {record.path} does not load ({type(error).__name__}: {error})"
    return None


def _open_database() -> ApplicationStorage:
    """The application database with its tables, opened before Dagster's instance is: a wrong
    URL or password is then one line, not the instance's retries and tracebacks."""
    storage = open_storage()
    storage.create_schema()
    return storage


def _bootstrap(storage: ApplicationStorage) -> None:
    weights_dir = settings.weights_dir()
    if renamed := storage.relativize_model_paths(weights_dir):
        print(f"{renamed} weights path(s) rewritten relative to {weights_dir}", flush=True)
    # The first model learns from real data only: the SMS collection and what users reported.
    if problem := active_model_problem(storage, weights_dir):
        print(f"{problem}: running create_spam_model_job once", flush=True)
        command = [BIN / "dagster", *RETRAIN_JOB_ARGUMENTS]
        if returncode := _run_job(command):
            raise subprocess.CalledProcessError(returncode, command)


def _run_job(command: list) -> int:
    """Run the job's command to its end. Stopped early, it gets time to record its run as
    stopped: killed at once, the run would stay "started" in the UI's history for good."""
    # Should this process die without a word (SIGKILL), the job is interrupted, not orphaned.
    job = subprocess.Popen(command, cwd=PROJECT_ROOT, preexec_fn=stop_with_parent(signal.SIGINT))
    try:
        return job.wait()
    except BaseException as error:
        # A Ctrl-C in the terminal reached the job too; a SIGTERM, or a SIGINT sent to this
        # process alone, is passed on after the first wait.
        waits = [None, signal.SIGINT] if isinstance(error, KeyboardInterrupt) else [signal.SIGINT]
        with signal_ignored(signal.SIGINT), signal_ignored(signal.SIGTERM):
            try:
                for signal_number in waits:
                    if signal_number is not None:
                        job.send_signal(signal_number)
                    try:
                        job.wait(timeout=JOB_STOP_SECONDS)
                        break
                    except subprocess.TimeoutExpired:
                        pass
            finally:
                if job.poll() is None:
                    job.kill()
                    job.wait()
        raise


def api_bind(environ: Mapping[str, str] = os.environ) -> str:
    """The address gunicorn serves the API on: `SPAM_FILTER_API_BIND`, else loopback."""
    return environ.get("SPAM_FILTER_API_BIND") or DEFAULT_API_BIND


def ui_host(environ: Mapping[str, str] = os.environ) -> str:
    """The host the Dagster UI listens on: `SPAM_FILTER_UI_HOST`, else loopback."""
    return environ.get("SPAM_FILTER_UI_HOST") or DEFAULT_UI_HOST


def api_command(bind: str, workers: str) -> list[str]:
    """The gunicorn command line that serves the API on `bind`."""
    return gunicorn_command(bind, workers)


@dataclass(frozen=True)
class Service:
    """A server the run command starts, and the variable that moves it to another address."""

    name: str
    address: str
    variable: str
    command: tuple[str, ...]
    host_variable: str = ""
    """The variable that moves it to another host, when not `variable` itself."""

    @property
    def host_and_port(self) -> tuple[str, int] | None:
        """Where the service listens on TCP, as gunicorn reads an address; None for a Unix socket
        or an inherited file descriptor."""
        if self.address.startswith(("unix:", "fd://")):
            return None
        host, colon, port = self.address.rpartition(":")
        if not colon or "]" in port:  # a host alone: gunicorn's default port
            host, port = self.address, "8000"
        return host.strip("[]") or "0.0.0.0", int(port)


def services(environ: Mapping[str, str] = os.environ) -> list[Service]:
    """The API and the Dagster UI, on the addresses the environment gives.

    Raises:
        settings.SettingError: A worker count or a port that no server could start with.
    """
    bind = api_bind(environ)
    workers = environ.get("SPAM_FILTER_API_WORKERS") or "2"
    if not (workers.isdigit() and int(workers) >= 1):
        # gunicorn takes 0 and serves nothing, its port bound and every request left waiting.
        raise settings.SettingError(
            f"SPAM_FILTER_API_WORKERS must be a whole number of at least 1, not {workers!r}"
        )
    host = ui_host(environ)
    ui_port = environ.get("SPAM_FILTER_UI_PORT") or DEFAULT_UI_PORT
    if not (ui_port.isdigit() and int(ui_port) <= 65535):
        raise settings.SettingError(
            f"SPAM_FILTER_UI_PORT must be a port number (0 to 65535), not {ui_port!r}"
        )
    return [
        Service(
            "the API (gunicorn)", bind, "SPAM_FILTER_API_BIND", tuple(api_command(bind, workers))
        ),
        Service(
            "the Dagster UI (dagster dev)",
            f"[{host}]:{ui_port}" if ":" in host else f"{host}:{ui_port}",
            "SPAM_FILTER_UI_PORT",
            (str(BIN / "dagster"), "dev", "--host", host, "--port", ui_port),
            host_variable="SPAM_FILTER_UI_HOST",
        ),
    ]


def port_problems(to_start: list[Service]) -> list[str]:
    """What stops each service from listening where it is told to, saying which variable moves it.

    A service that cannot bind its port does not always exit (`dagster dev` keeps running with no
    UI), so ports are tried here first, the way the servers bind them (with SO_REUSEADDR, so a
    port that only has connections closing is free).
    """
    problems = []
    for service in to_start:
        try:
            address = service.host_and_port
        except ValueError:  # int() of what follows the last colon
            problems.append(f"{service.name}: {service.variable} has no port number in it")
            continue
        if address is None:
            continue
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OverflowError:
                problems.append(f"{service.name}: port {port} of {service.variable} is not 0-65535")
            except OSError as error:
                # A port in use, or a host this machine does not have (or cannot resolve).
                in_use = error.errno in (errno.EADDRINUSE, errno.EACCES)
                variable = service.variable if in_use else service.host_variable or service.variable
                advice = "Stop what holds it, or set" if in_use else "Set"
                what = "address" if variable.endswith("BIND") else "port" if in_use else "host"
                problems.append(
                    f"{service.name} cannot listen on {service.address}: "
                    f"{error.strerror or error}. {advice} {variable} to another {what}."
                )
    return problems


def _start(command: tuple[str, ...]) -> subprocess.Popen:
    # A session of its own per service, so stopping a service stops all of its processes, and
    # default signal handling, without which `dagster dev` ignores SIGTERM. A run command killed
    # with SIGKILL stops nothing itself: its services then get the SIGTERM from Linux.
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        restore_signals=True,
        preexec_fn=stop_with_parent(signal.SIGTERM),
    )


def _stop(running: dict[Service, subprocess.Popen]) -> None:
    """Stop every service and say so once none of their processes is left."""
    started = time.monotonic()
    killed = stop_process_groups(running.values(), timeout_seconds=STOP_TIMEOUT_SECONDS)
    for service, process in running.items():
        if process in killed:
            print(
                f"{service.name} was still up {STOP_TIMEOUT_SECONDS:g} s after SIGTERM: killed",
                file=sys.stderr,
            )
    elapsed = time.monotonic() - started
    left = [service.name for service, process in running.items() if group_alive(process.pid)]
    if left:
        print(f"{' and '.join(left)} still has processes after SIGKILL", file=sys.stderr)
        return
    names = " and ".join(service.name for service in running)
    print(f"stopped {names}: no process of either is left ({elapsed:.1f} s)", flush=True)


def _check_settings(serving: bool = True) -> None:
    """Read now what the code location (and, `serving`, the workers) read later, after a
    possibly long bootstrap, so that a bad value is one line before anything starts."""
    if serving:
        settings.api_config()
    settings.retrain_after_reports()
    settings.retrain_min_interval_seconds()
    settings.warehouse_memory_limit()


def serve() -> int:
    """Bootstrap, then serve until Ctrl-C, SIGTERM or a service stopping on its own."""
    _check_settings()
    to_start = services()
    # Before the bootstrap, which may train for a while: a taken port is known at once.
    problems = port_problems(to_start)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    storage = _open_database()
    home = _dagster_home()
    _bootstrap(storage)
    problems = port_problems(to_start)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    running: dict[Service, subprocess.Popen] = {}
    try:
        for service in to_start:
            running[service] = _start(service.command)
    except BaseException:
        _stop(running)
        raise
    api, ui = to_start
    print(
        f"\nAPI on http://{api.address}/api/find_spam, Dagster UI on http://{ui.address} "
        f"(DAGSTER_HOME={home}, database {open_storage()}). Ctrl-C stops both.\n",
        flush=True,
    )
    try:
        while True:
            for service, process in running.items():
                if process.poll() is not None:
                    others = " and ".join(s.name for s in running if s is not service)
                    print(
                        f"{service.name} on {service.address} stopped on its own (exit code "
                        f"{process.returncode}; its log is above); stopping {others}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
            time.sleep(0.5)
    except (KeyboardInterrupt, SystemExit):
        print("\nstopping the API and the Dagster UI", flush=True)
        return 0
    finally:
        # A second Ctrl-C would leave the stop half done.
        with signal_ignored(signal.SIGINT):
            _stop(running)


def retrain() -> int:
    """Run `create_spam_model_job` once, recorded in the Dagster instance the UI shows."""
    _check_settings(serving=False)
    _open_database()
    home = _dagster_home()
    print(f"retraining; the run is recorded in DAGSTER_HOME={home}, as the UI shows", flush=True)
    return _run_job([BIN / "dagster", *RETRAIN_JOB_ARGUMENTS])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "retrain"],
        default="serve",
        help="serve (the default): bootstrap and serve both; retrain: run the job once",
    )
    args = parser.parse_args(argv)
    # Handle Ctrl-C and SIGTERM here even when started with them ignored (as background jobs of a
    # non-interactive shell are): the services then start with default handling, as exec resets
    # caught signals but keeps ignored ones, and `dagster dev` would otherwise never stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command = retrain if args.command == "retrain" else serve
    return run_command_line(lambda: _run(command), (*STORAGE_ERRORS, settings.SettingError))


def _run(command: Callable[[], int]) -> int:
    """`command`, with a failed subprocess named in one line."""
    try:
        return command()
    except subprocess.CalledProcessError as error:
        shown = " ".join(
            Path(str(part)).name if i == 0 else str(part) for i, part in enumerate(error.cmd)
        )
        print(
            f"error: `{shown}` failed (exit code {error.returncode}); its output is above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
