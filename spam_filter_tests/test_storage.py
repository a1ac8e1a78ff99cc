"""The DuckDB backend's own behaviour: its column types, its change marker, its file lock and its
report inbox. What every backend must do is in `test_storage_contract.py`."""

import time

import duckdb
import pytest

from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage, is_lock_conflict
from spam_filter.storage.records import (
    Report,
    ReportOutcome,
    StorageUnavailable,
)
from spam_filter_tests.helpers import model_record, spelled


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


def test_reports_are_accepted_while_another_process_holds_the_database(storage, other_process):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    other_process.hold_lock(str(storage.path), 2.0)
    try:
        assert storage.record_reports(alice, [Report("held", True)]) == ReportOutcome(1, 0)
    finally:
        other_process.wait_released()
    assert storage.drain_reports() == 1


def test_an_unwritable_inbox_stores_nothing_and_says_so(storage, tmp_path):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    broken = DuckDBStorage(tmp_path / "elsewhere" / "app.duckdb")
    broken.inbox.path.parent.mkdir()
    broken.inbox.path.mkdir()  # a folder where the inbox file should be
    with pytest.raises(StorageUnavailable):
        broken.record_reports(alice, [Report("lost?", True)])
