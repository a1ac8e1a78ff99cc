"""Sample messages: labelled, seeded, and inserted as one transaction."""

import os
import signal
import subprocess
import sys

import pytest

import sample_data
from spam_filter import faults, settings
from spam_filter.storage.duckdb_storage import DuckDBStorage


def _messages(path: str) -> list[tuple[bool, str]]:
    with DuckDBStorage(path).connection(read_only=True) as conn:
        return conn.execute("SELECT spam, body FROM messages ORDER BY created_at").fetchall()


def test_messages_follow_their_labels(app_db):
    sample_data.insert_sample_messages(DuckDBStorage(app_db), 1_000, seed=3, progress=False)
    rows = _messages(app_db)
    assert len(rows) == 1_000
    spam_share = sum(spam for spam, _ in rows) / len(rows)
    assert 0.25 < spam_share < 0.35
    spam_openers = tuple(sample_data.SPAM_OPENERS)
    assert all(body.startswith(spam_openers) == spam for spam, body in rows)


def test_template_parts_are_chosen_independently(app_db):
    sample_data.insert_sample_messages(DuckDBStorage(app_db), 20_000, progress=False)
    with DuckDBStorage(app_db).connection(read_only=True) as conn:
        distinct = dict(
            conn.execute("SELECT spam, count(DISTINCT body) FROM messages GROUP BY spam").fetchall()
        )
    combinations = len(sample_data.SPAM_OPENERS) * len(sample_data.SPAM_OFFERS)
    assert distinct[True] == combinations * len(sample_data.SPAM_CALLS)
    assert distinct[False] == (
        len(sample_data.HAM_OPENERS) * len(sample_data.HAM_TOPICS) * len(sample_data.HAM_CLOSERS)
    )


def test_same_seed_gives_same_messages(project_env, tmp_path):
    paths = [str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")]
    for path in paths:
        storage = DuckDBStorage(path)
        storage.create_schema()
        sample_data.insert_sample_messages(storage, 500, seed=7, progress=False)
    assert _messages(paths[0]) == _messages(paths[1])


# tqdm's count of rows inserted so far, uncommitted: after one, two and four chunks.
@pytest.mark.parametrize("shown", ["500k/5.00M", "1.00M/5.00M", "2.00M/5.00M"])
def test_a_run_killed_mid_insert_adds_no_rows(app_db, shown):
    sample_data.insert_sample_messages(DuckDBStorage(app_db), 10, progress=False)
    run = subprocess.Popen(
        [sys.executable, "sample_data.py", "--count", "5000000"],
        cwd=settings.PROJECT_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        progress = ""
        while shown not in progress:
            character = run.stderr.read(1)
            assert character, f"sample_data.py ended before it was killed: {progress}"
            progress += character
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL
    assert len(_messages(app_db)) == 10


@pytest.mark.parametrize(
    ("crash_at", "rows_kept"),
    [("sample_data_inserted", 0), ("sample_data_committed", 300_000)],
)
def test_a_run_killed_before_or_after_its_commit_adds_none_or_all(
    app_db, project_env, crash_at, rows_kept
):
    run = subprocess.run(
        [sys.executable, "sample_data.py", "--count", "300000"],
        cwd=settings.PROJECT_ROOT,
        env={**os.environ, faults.CRASH_AT_VARIABLE: crash_at},
        capture_output=True,
    )
    assert run.returncode == -signal.SIGKILL
    assert len(_messages(app_db)) == rows_kept


def test_command_line_counts_and_if_empty(project_env):
    command = [sys.executable, "sample_data.py", "--count", "300", "--seed", "1"]
    run = {"cwd": settings.PROJECT_ROOT, "capture_output": True, "text": True, "check": True}
    first = subprocess.run(command, **run)
    assert "inserted 300" in first.stdout
    second = subprocess.run([*command, "--if-empty"], **run)
    assert "nothing inserted" in second.stdout
    assert len(_messages(project_env["SPAM_FILTER_DATABASE"])) == 300
