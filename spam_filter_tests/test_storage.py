"""The DuckDB backend's own behaviour: its column types, its change marker, its file lock and its
report inbox. What every backend must do is in `test_storage_contract.py`."""

import gc
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage, is_lock_conflict
from spam_filter.storage.records import (
    Report,
    ReportOutcome,
    StorageUnavailable,
)
from spam_filter_tests.helpers import child_exit_code, fork_checking, model_record, spelled


@pytest.fixture
def storage(app_db: str) -> DuckDBStorage:
    return DuckDBStorage(app_db)


def test_create_schema_is_idempotent_and_keeps_rows(storage):
    storage.insert_messages([(True, "win cash"), (False, "lunch?")])
    storage.create_schema()
    assert storage.message_count() == 2
    with storage.connection(read_only=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
        ).fetchall()
    assert {("messages", "spam", "BOOLEAN"), ("messages", "body", "VARCHAR")} <= set(columns)
    assert {
        ("models", "path", "VARCHAR"),
        ("models", "status", "VARCHAR"),
        ("models", "true_positive_rate", "FLOAT"),
        ("models", "false_positive_rate", "FLOAT"),
    } <= set(columns)
    with storage.connection(read_only=True) as conn:
        tables = {name for (name,) in conn.execute("SHOW TABLES").fetchall()}
    assert tables == {"messages", "models", "reporters", "reports", "report_inbox_progress"}


def test_change_marker_moves_with_every_commit(storage):
    before = storage.change_marker()
    assert storage.change_marker() == before
    storage.promote_model(model_record("a.json"), replacing=None)
    assert storage.change_marker() != before


def test_connect_waits_for_another_process_holding_the_lock(app_db, other_process):
    other_process.hold_lock(app_db, 1.5)
    try:
        started = time.monotonic()
        with DuckDBStorage(app_db, lock_timeout_seconds=30).connection(read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
        assert time.monotonic() - started > 0.5
    finally:
        other_process.wait_released()


def test_connect_gives_up_after_its_timeout(app_db, other_process):
    other_process.hold_lock(app_db, 2.0)
    try:
        with pytest.raises(duckdb.Error) as error:
            DuckDBStorage(app_db, lock_timeout_seconds=0.3).connect(read_only=True)
        assert is_lock_conflict(error.value)
    finally:
        other_process.wait_released()


# --- reporters and reports -------------------------------------------------------------------


def test_moving_reports_again_changes_nothing(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.record_reports(alice, [Report(f"message {spelled(i)}", i % 2 == 0) for i in range(50)])
    assert storage.drain_reports() == 50
    assert storage.drain_reports() == 0
    storage.record_reports(alice, [Report(f"message {spelled(1)}", True)])
    assert storage.drain_reports() == 1
    with storage.connection(read_only=True) as conn:
        assert conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE spam) FROM reports"
        ).fetchone() == (50, 26)


def _remove_inbox(storage: DuckDBStorage) -> None:
    storage.inbox.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(storage.inbox.path) + suffix).unlink(missing_ok=True)


def _stored_reports(storage: DuckDBStorage) -> list[tuple[int, str]]:
    with storage.connection(read_only=True) as conn:
        return conn.execute("SELECT reporter_id, body FROM reports ORDER BY body").fetchall()


def test_a_new_inbox_is_moved_from_its_start(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.record_reports(alice, [Report(f"first {spelled(i)}", True) for i in range(3)])
    assert storage.drain_reports() == 3
    # The inbox file is gone (deleted, or a project copied without it): a new one numbers its
    # votes from 1 again, under the 3 already moved.
    _remove_inbox(storage)
    storage.record_reports(alice, [Report(f"second {spelled(i)}", True) for i in range(2)])
    assert storage.drain_reports() == 2
    assert len(_stored_reports(storage)) == 5


def test_an_inbox_that_outlived_its_database_is_refused(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.record_reports(alice, [Report("alice's vote", True)])
    # The database file is replaced, the inbox beside it kept; reporter ids start again.
    storage.path.unlink()
    storage.create_schema()
    carol = storage.add_reporter("carol", key_hash("key-c"))
    assert carol == alice
    with pytest.raises(StorageUnavailable, match="holds votes for another database"):
        storage.drain_reports()
    assert _stored_reports(storage) == []
    # Moved aside, the next report starts a new inbox, which is moved.
    _remove_inbox(storage)
    storage.record_reports(carol, [Report("carol's vote", True)])
    assert storage.drain_reports() == 1
    assert _stored_reports(storage) == [(carol, "carol's vote")]


def _three_votes_moved_before_the_ids(storage: DuckDBStorage) -> int:
    """Three votes moved, then both files as they were before either had an id; the reporter."""
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.record_reports(alice, [Report(f"vote {spelled(i)}", True) for i in range(3)])
    assert storage.drain_reports() == 3
    storage.inbox.close()
    with sqlite3.connect(storage.inbox.path) as inbox:
        inbox.execute("DROP TABLE identity")
    with storage.connection() as conn:
        conn.execute("ALTER TABLE report_inbox_progress DROP COLUMN inbox_id")
        conn.execute("ALTER TABLE report_inbox_progress DROP COLUMN database_id")
    storage.create_schema()
    return alice


def test_an_inbox_and_a_database_from_before_their_ids_keep_their_progress(storage):
    alice = _three_votes_moved_before_the_ids(storage)
    storage.record_reports(alice, [Report("vote four", True)])
    # Only the new vote is moved: the old progress counts in the same inbox.
    assert storage.drain_reports() == 1


def test_a_new_inbox_after_an_upgrade_with_nothing_to_move_is_told_apart(storage):
    alice = _three_votes_moved_before_the_ids(storage)
    assert storage.drain_reports() == 0  # names the inbox the progress counts in
    _remove_inbox(storage)
    storage.record_reports(alice, [Report(f"new inbox {spelled(i)}", True) for i in range(2)])
    assert storage.drain_reports() == 2


def test_reports_are_accepted_while_another_process_holds_the_database(storage, other_process):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    other_process.hold_lock(str(storage.path), 2.0)
    try:
        assert storage.record_reports(alice, [Report("held", True)]) == ReportOutcome(1, 0)
    finally:
        other_process.wait_released()
    assert storage.drain_reports() == 1


def _record_requests(storage: DuckDBStorage, reporter: int, requests: int) -> None:
    """Requests of ten new reports each: a few megabytes of write-ahead log."""
    for request in range(requests):
        storage.record_reports(
            reporter, [Report(f"message {spelled(request * 10 + i)}", True) for i in range(10)]
        )


@pytest.mark.parametrize("serving", [False, True])
def test_an_api_process_leaves_inbox_checkpoints_to_its_background_thread(app_db, serving):
    storage = DuckDBStorage(app_db, serving=serving)
    storage.create_schema()
    alice = storage.add_reporter("alice", key_hash("key-a"))
    empty_inbox_bytes = storage.inbox.path.stat().st_size
    _record_requests(storage, alice, 200)
    # Past SQLite's 1,000 log pages a commit copies the log into the file, unless serving.
    grown = storage.inbox.path.stat().st_size > empty_inbox_bytes
    assert grown is not serving
    storage.checkpoint_report_inbox()
    assert storage.inbox.path.stat().st_size > 100 * empty_inbox_bytes
    assert storage.drain_reports() == 2_000


@pytest.fixture
def inbox_writer(storage: DuckDBStorage) -> Iterator[sqlite3.Connection]:
    """Another connection to the report inbox, holding its write lock until it commits."""
    storage.inbox.create()
    writer = sqlite3.connect(storage.inbox.path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    yield writer
    writer.close()


def test_a_report_waits_for_another_writer_of_the_inbox(storage, inbox_writer):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    release = threading.Timer(0.3, inbox_writer.execute, ("COMMIT",))
    release.start()
    try:
        stored = storage.record_reports(alice, [Report("after the other writer", True)])
    finally:
        release.join()
    assert stored == ReportOutcome(1, 0)
    assert storage.drain_reports() == 1


def test_a_report_gives_up_when_the_inbox_stays_locked(storage, inbox_writer):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.inbox.busy_timeout_seconds = 0.3
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="cannot be written"):
        storage.record_reports(alice, [Report("never stored", True)])
    # After the inbox's own timeout, not the 5 s its first connection was opened with.
    assert time.monotonic() - started < 3.0
    inbox_writer.execute("ROLLBACK")
    assert storage.drain_reports() == 0


def test_a_child_forked_while_a_thread_holds_the_inbox_can_still_report(storage):
    """A thread holding the inbox's lock at a fork, as code on another thread may be when a
    process forks: the child must not inherit the lock held for good."""
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.inbox.create()
    held, release = threading.Event(), threading.Event()

    def hold_the_inbox() -> None:
        # Waiting on an event rather than inside SQLite, whose own state a fork would copy too.
        with storage.inbox._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_inbox)
    holder.start()
    assert held.wait(5)
    child = fork_checking(
        lambda: (
            storage.record_reports(alice, [Report("sent by the child", True)])
            == ReportOutcome(1, 0)
        )
    )
    release.set()
    holder.join()
    exit_code = child_exit_code(child)
    if exit_code is None:
        pytest.fail("the forked child hung on a lock that a thread held at the fork")
    assert exit_code == 0
    assert storage.drain_reports() == 1


def _descriptors_of(path: Path) -> int:
    """How many of this process's open files are `path`."""
    folder = Path("/proc/self/fd")
    return sum(1 for fd in folder.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_a_forked_child_leaves_the_connections_it_inherited_to_the_parent(storage):
    """SQLite warns against using a connection across a fork, closing included: the child opens
    its own and keeps the inherited ones referenced rather than let them be closed."""
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.record_reports(alice, [Report("before the fork", True)])
    inherited = _descriptors_of(storage.inbox.path)
    assert inherited > 0

    def child_keeps_them() -> bool:
        storage.record_reports(alice, [Report("from the child", True)])
        storage.inbox.close()
        gc.collect()
        return _descriptors_of(storage.inbox.path) >= inherited

    assert child_exit_code(fork_checking(child_keeps_them)) == 0
    assert storage.drain_reports() == 2


def test_an_unwritable_inbox_stores_nothing_and_says_so(storage, tmp_path):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    broken = DuckDBStorage(tmp_path / "elsewhere" / "app.duckdb")
    broken.inbox.path.parent.mkdir()
    broken.inbox.path.mkdir()  # a folder where the inbox file should be
    with pytest.raises(StorageUnavailable):
        broken.record_reports(alice, [Report("lost?", True)])
