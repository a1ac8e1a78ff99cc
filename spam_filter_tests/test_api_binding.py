"""The API listens on loopback unless told otherwise: it has no authentication of its own."""

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from spam_filter_tests.helpers import PROJECT_ROOT, load_run_system
from spam_filter_tests.servers import free_port, send, stop_process_group


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback ones."""
    return [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET
        and not ipaddress.ip_address(address.address).is_loopback
    ]


@pytest.fixture
def start_dev_server(app_db: str) -> Iterator[Callable[[dict[str, str]], subprocess.Popen]]:
    """Start `python api.py` with extra environment; every one started is stopped at teardown."""
    processes: list[subprocess.Popen] = []

    def start(environ: dict[str, str]) -> subprocess.Popen:
        # Only what the test sets: no host from the environment the tests run in.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SPAM_FILTER_API_")}
        env = {**inherited, "PYTHONPATH": str(PROJECT_ROOT), **environ}
        process = subprocess.Popen(
            [sys.executable, "api.py"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        stop_process_group(process)


def _wait_listening(process: subprocess.Popen) -> set[tuple[str, int]]:
    deadline = time.monotonic() + 30
    while not (sockets := _listening(process.pid)):
        assert process.poll() is None, "python api.py exited"
        assert time.monotonic() < deadline, "python api.py did not listen within 30 s"
        time.sleep(0.1)
    return sockets


@pytest.mark.parametrize(
    # Flask reads an empty host as loopback too; a server that took it literally would listen on
    # every interface.
    "host",
    [None, ""],
    ids=["SPAM_FILTER_API_HOST unset", "SPAM_FILTER_API_HOST empty"],
)
def test_dev_server_listens_on_loopback_only(
    start_dev_server: Callable[[dict[str, str]], subprocess.Popen], host: str | None
) -> None:
    port = free_port()
    environ = {"SPAM_FILTER_API_PORT": str(port)}
    if host is not None:
        environ["SPAM_FILTER_API_HOST"] = host
    process = start_dev_server(environ)
    assert _wait_listening(process) == {("127.0.0.1", port)}
    # It serves there (a 503: this database has no model yet)...
    status, kind, _ = send(port, "GET", "/api/health")
    assert (status, kind) == (503, "application/json")
    # ...and nowhere else.
    for address in _other_addresses():
        # Refused, or dropped by a firewall: either way nothing answers there.
        with pytest.raises((ConnectionRefusedError, TimeoutError)):
            socket.create_connection((address, port), timeout=5).close()


def test_run_system_serves_on_loopback_unless_told_otherwise() -> None:
    run_system = load_run_system()
    bind = run_system.api_bind({})
    host, _, port = bind.rpartition(":")
    assert ipaddress.ip_address(host).is_loopback
    assert port == "5000"
    # Set but empty counts as not set, never as "every interface".
    assert run_system.api_bind({"SPAM_FILTER_API_BIND": ""}) == bind
    assert run_system.api_bind({"SPAM_FILTER_API_BIND": "0.0.0.0:8080"}) == "0.0.0.0:8080"
    # The bind always goes on the command line: without it, gunicorn binds 0.0.0.0 when the
    # environment has a PORT variable.
    command = run_system.api_command(bind, "2")
    assert command[command.index("--bind") + 1] == bind
    assert ipaddress.ip_address(run_system.ui_host({})).is_loopback
    assert run_system.ui_host({"SPAM_FILTER_UI_HOST": ""}) == run_system.ui_host({})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SPAM_FILTER_API_PORT", "abc", "SPAM_FILTER_API_PORT must be a port number"),
        ("SPAM_FILTER_MAX_BODY_BYTES", "abc", "SPAM_FILTER_MAX_BODY_BYTES must be a whole number"),
    ],
)
def test_the_dev_server_names_a_bad_setting_in_one_line(
    app_db: str, variable: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "api.py"],
        cwd=PROJECT_ROOT,
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
