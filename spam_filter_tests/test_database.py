"""`python database.py`: the command line that bootstraps the application database."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.factory import open_storage
from spam_filter.storage.postgres_storage import PostgresStorage, redacted
from spam_filter.storage.records import Report
from spam_filter_tests.helpers import PROJECT_ROOT, as_in_a_terminal, wait_for


def test_database_script_creates_and_prints_the_tables(project_env):
    result = subprocess.run(
        [sys.executable, "database.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env={**project_env, "PATH": ""},
    )
    assert "messages" in result.stdout and "models" in result.stdout
    assert "true_positive_rate" in result.stdout


def test_database_script_keeps_existing_rows(project_env):
    run = {"capture_output": True, "text": True, "check": True, "cwd": PROJECT_ROOT}
    subprocess.run([sys.executable, "database.py"], env=project_env, **run)
    subprocess.run([sys.executable, "sample_data.py", "--count", "3"], env=project_env, **run)
    again = subprocess.run([sys.executable, "database.py"], env=project_env, **run)
    assert "messages (3 rows)" in again.stdout


def _cli(project_env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "database.py", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=project_env,
    )


def test_add_reporter_prints_a_new_key_alone_on_the_last_line(project_env):
    first = _cli(project_env, "add-reporter", "support-desk")
    second = _cli(project_env, "add-reporter", "moderators")
    assert first.returncode == second.returncode == 0
    keys = [run.stdout.splitlines()[-1] for run in (first, second)]
    assert all(key.startswith("sfr_") and len(key) > 40 and " " not in key for key in keys)
    assert keys[0] != keys[1]
    stored = DuckDBStorage(project_env["SPAM_FILTER_DATABASE"]).reporter_keys()
    # Only the hash is stored, and it is the hash of the printed key.
    assert set(stored) == {key_hash(key) for key in keys}
    assert not any(key in stored for key in keys)


@pytest.mark.parametrize("name", ["", "   ", "desk\nfront", "x" * 101])
def test_a_reporter_name_must_be_printable_and_short(project_env, name):
    refused = _cli(project_env, "add-reporter", name)
    assert refused.returncode == 2
    assert "printable characters" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _cli(project_env, "reporters").stdout.startswith("no reporters yet")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("not a database", "not a valid DuckDB database file"),
        ("mysql://127.0.0.1/spam", "unsupported database URL scheme 'mysql'"),
        ("postgresql://desk:hunter2@[bad/spam", "URL is malformed"),
    ],
    ids=["a file that is not DuckDB", "another URL scheme", "a malformed URL"],
)
def test_a_database_that_cannot_be_used_gets_one_line(project_env, tmp_path, location, message):
    if location == "not a database":
        location = str(tmp_path / "garbage.duckdb")
        Path(location).write_bytes(b"garbage" * 1000)
    for command in ([], ["reporters"], ["revoke-reporter", "desk"], ["models"]):
        result = _cli(project_env, "--database", location, *command)
        assert result.returncode == 1, command
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert message in result.stderr
        # A URL's password never shows; another scheme is never taken for a file's path.
        assert "hunter2" not in result.stderr + result.stdout
    assert not (PROJECT_ROOT / "mysql:").exists()


def test_a_reporter_name_is_taken_once(project_env):
    assert _cli(project_env, "add-reporter", "desk").returncode == 0
    again = _cli(project_env, "add-reporter", "desk")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert again.stdout == ""


def test_reporters_lists_report_counts_and_status(project_env):
    key = _cli(project_env, "add-reporter", "desk").stdout.splitlines()[-1]
    _cli(project_env, "add-reporter", "moderators")
    storage = DuckDBStorage(project_env["SPAM_FILTER_DATABASE"])
    reporter = storage.reporter_keys()[key_hash(key)]
    storage.record_reports(reporter.reporter_id, [Report("a", True), Report("b", False)])
    assert _cli(project_env, "revoke-reporter", "moderators").returncode == 0
    listing = _cli(project_env, "reporters").stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in listing[1:]}
    assert rows == {"desk": ["2", "active"], "moderators": ["0", "revoked"]}


def test_revoking_an_unknown_reporter_fails(project_env):
    _cli(project_env, "add-reporter", "desk")
    unknown = _cli(project_env, "revoke-reporter", "nobody")
    assert unknown.returncode == 1
    assert "no active reporter named 'nobody'" in unknown.stderr


def test_revoke_takes_a_stored_name_exactly_as_listed(project_env):
    storage = DuckDBStorage(project_env["SPAM_FILTER_DATABASE"])
    storage.create_schema()
    storage.add_reporter("desk ", key_hash("key of 'desk '"))
    storage.add_reporter("desk", key_hash("key of 'desk'"))
    assert _cli(project_env, "revoke-reporter", "desk ").returncode == 0
    # Only the reporter named so lost its key.
    assert [reporter.name for reporter in storage.reporter_keys().values()] == ["desk"]


def test_a_postgresql_url_naming_several_hosts_is_taken():
    storage = open_storage("postgresql://desk@db1:5432,db2:5432/spam")
    assert isinstance(storage, PostgresStorage)


def test_ctrl_c_while_waiting_for_the_database_is_one_line(project_env, other_process, tmp_path):
    database = project_env["SPAM_FILTER_DATABASE"]
    DuckDBStorage(database).create_schema()
    other_process.hold_lock(database, 8)
    err = tmp_path / "err.log"
    try:
        with err.open("w") as err_file:
            waiting = subprocess.Popen(
                [sys.executable, "database.py", "reporters"],
                cwd=PROJECT_ROOT,
                env=project_env,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                preexec_fn=as_in_a_terminal,
            )
        assert wait_for(lambda: "waiting" in err.read_text(), 30, 0.1), err.read_text()
        waiting.send_signal(signal.SIGINT)
        assert waiting.wait(timeout=30) == 130
    finally:
        other_process.wait_released()
    assert err.read_text().endswith("\ninterrupted\n") and "Traceback" not in err.read_text()


def test_a_reader_that_stops_reading_ends_a_command_quietly():
    # The last of the output is still in Python's buffer when the reader has gone: it meets the
    # closed pipe as the command ends.
    script = (
        "import sys\n"
        "from spam_filter.command_line import run_command_line\n"
        "def work():\n"
        "    print('first line', flush=True)\n"
        "    sys.stdin.read()\n"
        "    print('x' * 100)\n"
        "    return 0\n"
        "sys.exit(run_command_line(work))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    command = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stdout.readline() == b"first line\n"
    command.stdout.close()
    command.stdin.close()
    assert command.wait(timeout=30) == 1
    assert command.stderr.read() == b""


def test_ctrl_c_during_a_long_insert_is_one_line(project_env, tmp_path):
    err = tmp_path / "err.log"
    with err.open("w") as err_file:
        inserting = subprocess.Popen(
            [sys.executable, "sample_data.py", "--count", "5000000"],
            cwd=PROJECT_ROOT,
            env=project_env,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            preexec_fn=as_in_a_terminal,
        )
    try:
        # Its progress shows once the inserts run: DuckDB is inside a statement.
        assert wait_for(lambda: "msg" in err.read_text(), 60, 0.1), err.read_text()
        inserting.send_signal(signal.SIGINT)
        assert inserting.wait(timeout=60) == 130
    finally:
        if inserting.poll() is None:
            inserting.kill()
    assert err.read_text().endswith("\ninterrupted\n") and "Traceback" not in err.read_text()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://desk:S3cret@127.0.0.1:5432/spam_filter",
        "postgresql://desk@127.0.0.1:5432/spam_filter?sslmode=prefer&password=S3cret",
        "postgresql:///spam_filter?host=127.0.0.1&Password=S3cret",
        "postgresql://desk:S3cret@127.0.0.1:notaport/spam_filter",
        "postgresql://desk:S3cret@db1:5432,db2:5432/spam_filter",
    ],
)
def test_a_postgresql_password_is_never_shown(url):
    shown = PostgresStorage(url).__repr__() + redacted(url)
    assert "S3cret" not in shown and "***" in shown
    assert redacted("postgresql:///spam_filter?host=db") == "postgresql:///spam_filter?host=db"


def test_a_postgresql_port_that_is_not_a_number_is_one_line(project_env):
    result = _cli(
        project_env, "--database", "postgresql://desk:S3cret@127.0.0.1:notaport/spam_filter"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "S3cret" not in result.stdout + result.stderr
