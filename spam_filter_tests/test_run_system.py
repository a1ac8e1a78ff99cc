"""The run command (`make run`): taken ports, a service that dies, and stopping every process."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from spam_filter.processes import group_alive, stop_process_group
from spam_filter_tests.helpers import (
    PROJECT_ROOT,
    copy_trained_state,
    load_run_system,
    project_paths,
    wait_for,
)
from spam_filter_tests.servers import free_port, request, send

RUN_SYSTEM = PROJECT_ROOT / "scripts" / "run_system.py"


@contextmanager
def _listening(host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """A socket listening on `host`, as another program holding the port; yields the port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as holder:
        holder.bind((host, port))
        holder.listen()
        yield holder.getsockname()[1]


def _run_system(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    """The run command, expected to stop at once with an error, its output as text."""
    return subprocess.run(
        [sys.executable, str(RUN_SYSTEM), *arguments],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start_run_system(env: dict[str, str], stdout: object, stderr: object) -> subprocess.Popen:
    """The run command in a session of its own, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, str(RUN_SYSTEM)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        restore_signals=True,
    )


def _environment(tmp_path: Path, api_port: int, ui_port: int) -> dict[str, str]:
    return {
        **os.environ,
        **project_paths(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "SPAM_FILTER_API_BIND": f"127.0.0.1:{api_port}",
        "SPAM_FILTER_UI_PORT": str(ui_port),
    }


@pytest.mark.parametrize(
    ("taken", "service", "variable"),
    [
        ("api", "the API (gunicorn)", "SPAM_FILTER_API_BIND"),
        ("ui", "the Dagster UI (dagster dev)", "SPAM_FILTER_UI_PORT"),
    ],
)
def test_a_taken_port_is_named_before_anything_starts(
    tmp_path: Path, taken: str, service: str, variable: str
) -> None:
    with _listening() as port:
        api_port, ui_port = (port, free_port()) if taken == "api" else (free_port(), port)
        env = _environment(tmp_path, api_port, ui_port)
        started = time.monotonic()
        result = _run_system(env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{service} cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
    assert f"set {variable} to another" in result.stderr
    # Nothing was bootstrapped or started: the answer comes before any of it.
    assert not Path(env["SPAM_FILTER_DATABASE"]).exists()
    assert not Path(env["DAGSTER_HOME"]).exists()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SPAM_FILTER_REPORT_RATE",
            "0",
            "SPAM_FILTER_REPORT_RATE must be a number above 0, not '0'",
        ),
        (
            "SPAM_FILTER_MODEL_REFRESH_SECONDS",
            "nan",
            "SPAM_FILTER_MODEL_REFRESH_SECONDS must be a number above 0, not 'nan'",
        ),
        (
            "SPAM_FILTER_MAX_BODY_BYTES",
            "1.5",
            "SPAM_FILTER_MAX_BODY_BYTES must be a whole number of at least 1, not '1.5'",
        ),
        (
            "SPAM_FILTER_RETRAIN_AFTER_REPORTS",
            "x",
            "SPAM_FILTER_RETRAIN_AFTER_REPORTS must be a whole number of at least 1, not 'x'",
        ),
        (
            "SPAM_FILTER_API_WORKERS",
            "0",
            "SPAM_FILTER_API_WORKERS must be a whole number of at least 1, not '0'",
        ),
        ("SPAM_FILTER_UI_PORT", "70000", "SPAM_FILTER_UI_PORT must be a port number"),
        (
            "SPAM_FILTER_WAREHOUSE_MEMORY",
            "lots",
            "SPAM_FILTER_WAREHOUSE_MEMORY must be a size DuckDB reads, such as 256MB or 1GB, "
            "not 'lots'",
        ),
    ],
)
def test_a_setting_no_server_could_run_with_is_named_before_anything_starts(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = {**_environment(tmp_path, free_port(), free_port()), variable: value}
    result = _run_system(env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not Path(env["SPAM_FILTER_DATABASE"]).exists()
    assert not Path(env["DAGSTER_HOME"]).exists()


def test_a_port_held_on_every_interface_is_taken_for_loopback_too() -> None:
    run_system = load_run_system()
    with _listening("0.0.0.0") as port:
        api, ui = run_system.services(
            {"SPAM_FILTER_API_BIND": f"127.0.0.1:{port}", "SPAM_FILTER_UI_PORT": str(port)}
        )
        problems = run_system.port_problems([api, ui])
    assert len(problems) == 2
    assert "SPAM_FILTER_API_BIND" in problems[0] and "SPAM_FILTER_UI_PORT" in problems[1]
    free = {"SPAM_FILTER_API_BIND": "127.0.0.1:0", "SPAM_FILTER_UI_PORT": "0"}
    assert run_system.port_problems(run_system.services(free)) == []


def test_a_database_that_cannot_be_used_is_one_line_before_dagster_starts(tmp_path: Path) -> None:
    env = {
        **_environment(tmp_path, free_port(), free_port()),
        "SPAM_FILTER_DATABASE_URL": f"postgresql://desk:S3cret@127.0.0.1:{free_port()}/none",
    }
    for arguments in ([], ["retrain"]):
        result = _run_system(env, *arguments)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("error: cannot connect") and result.stderr.count("\n") == 1
        assert "S3cret" not in result.stdout + result.stderr
    assert not Path(env["DAGSTER_HOME"]).exists()


def test_a_host_the_machine_lacks_names_the_host_variable() -> None:
    run_system = load_run_system()
    # 192.0.2.1 is set aside for documentation: no machine has it.
    api, ui = run_system.services(
        {"SPAM_FILTER_API_BIND": "192.0.2.1:0", "SPAM_FILTER_UI_HOST": "192.0.2.1"}
    )
    problems = run_system.port_problems([api, ui])
    assert problems[0].endswith("Set SPAM_FILTER_API_BIND to another address.")
    assert problems[1].endswith("Set SPAM_FILTER_UI_HOST to another host.")


@pytest.mark.slow
def test_ctrl_c_while_the_first_model_trains_stops_the_run_as_failed(tmp_path: Path) -> None:
    env = _environment(tmp_path, free_port(), free_port())
    err = tmp_path / "err.log"
    with err.open("w") as err_file:
        process = _start_run_system(env, subprocess.DEVNULL, err_file)
    try:
        assert wait_for(lambda: "STEP_START" in err.read_text(), 120, 0.2), err.read_text()
        # As a terminal's Ctrl-C: to the whole foreground group, the job included.
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        stop_process_group(process)
    text = err.read_text()
    assert text.endswith("\ninterrupted\n")
    assert "run_system.py" not in text  # no traceback of the run command's own
    # The job had time to record its run as ended (killed at once, it stayed "started").
    runs = subprocess.run(
        [sys.executable, "-c", RUN_STATUSES],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert runs == ["FAILURE"]


# A job that ignores SIGINT, run by the run command's `_run_job` with its signal handling.
STUBBORN_JOB_RUNNER = """
import signal, sys
from spam_filter_tests.helpers import load_run_system

run_system = load_run_system()
run_system.JOB_STOP_SECONDS = 1
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
job = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
run_system._run_job([sys.executable, "-c", job])
"""


def test_a_sigterm_while_a_stopped_job_gets_its_time_still_ends_the_job() -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_JOB_RUNNER],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: psutil.Process(runner.pid).children(), 30, 0.05)
        (job,) = psutil.Process(runner.pid).children()
        runner.send_signal(signal.SIGINT)
        time.sleep(0.3)
        runner.send_signal(signal.SIGTERM)  # a stop asked for while the job gets its time
        runner.wait(timeout=30)
        # The job was killed once its time was up, not left running without its parent.
        assert not job.is_running() or job.status() == psutil.STATUS_ZOMBIE
    finally:
        stop_process_group(runner)


RUN_STATUSES = """
import dagster as dg
for run in dg.DagsterInstance.get().get_runs():
    print(run.status.value)
"""


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("[::1]:5001", ("::1", 5001)),
        ("localhost", ("localhost", 8000)),
        ("[::1]", ("::1", 8000)),
        (":5002", ("0.0.0.0", 5002)),
        ("unix:/tmp/api.sock", None),
    ],
)
def test_the_api_address_is_read_as_gunicorn_reads_it(bind: str, expected: object) -> None:
    (api, _ui) = load_run_system().services({"SPAM_FILTER_API_BIND": bind})
    assert api.host_and_port == expected


def _command(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


@contextmanager
def _running(tmp_path: Path, trained_state: dict[str, str]) -> Iterator[tuple]:
    """The run command on a copy of the trained state, once the API and the UI answer."""
    api_port, ui_port = free_port(), free_port()
    env = _environment(tmp_path, api_port, ui_port)
    copy_trained_state(trained_state, env["SPAM_FILTER_DATABASE"], env["SPAM_FILTER_WEIGHTS_DIR"])
    log = tmp_path / "run.log"
    with log.open("w") as log_file:
        process = _start_run_system(env, log_file, subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return (
                    request(api_port, "GET", "/api/health")[0] == 200
                    and send(ui_port, "GET", "/server_info")[0] == 200
                )
            except (OSError, ValueError):
                return False

        assert wait_for(up, 180, 0.5), log.read_text()
        # Each service leads its own process group: the API's first, then the UI's.
        children = psutil.Process(process.pid).children()
        groups = sorted((c.pid for c in children), key=lambda pid: "gunicorn" not in _command(pid))
        assert len(groups) == 2
        yield process, groups, log, api_port
    finally:
        stop_process_group(process)


@pytest.mark.slow
def test_ctrl_c_reports_the_stop_once_every_process_is_gone(
    tmp_path: Path, trained_state: dict[str, str]
) -> None:
    with _running(tmp_path, trained_state) as (process, groups, log, _):
        assert all(group_alive(group) for group in groups)
        process.send_signal(signal.SIGINT)
        # A second Ctrl-C while the services stop does not cut the stop short.
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        # The moment it returns, nothing of either service is left.
        assert not [group for group in groups if group_alive(group)]
    text = log.read_text()
    assert "stopping the API and the Dagster UI" in text
    assert (
        "stopped the API (gunicorn) and the Dagster UI (dagster dev): no process of either is left"
        in text
    )
    assert "killed" not in text


@pytest.mark.slow
def test_a_service_that_dies_is_named(tmp_path: Path, trained_state: dict[str, str]) -> None:
    with _running(tmp_path, trained_state) as (process, groups, log, api_port):
        api_group = groups[0]
        os.killpg(api_group, signal.SIGKILL)
        assert process.wait(timeout=60) == 1
        assert not [group for group in groups if group_alive(group)]
    text = log.read_text()
    assert f"the API (gunicorn) on 127.0.0.1:{api_port} stopped on its own (exit code -9" in text
    assert "stopping the Dagster UI (dagster dev)" in text


@pytest.mark.slow
def test_a_run_command_killed_with_sigkill_leaves_no_service_running(
    tmp_path: Path, trained_state: dict[str, str]
) -> None:
    with _running(tmp_path, trained_state) as (process, groups, _, _):
        try:
            process.kill()
            process.wait(timeout=10)
            # Both services stop by themselves, as after Ctrl-C; gunicorn waits for its workers.
            assert wait_for(lambda: not any(group_alive(group) for group in groups), 60, 0.2)
        finally:
            for group in groups:  # what the run command left, if it did
                if group_alive(group):
                    os.killpg(group, signal.SIGKILL)
