"""The application storage: schema, messages, and the one-transaction promotion."""

import time

import duckdb
import pytest

from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage, is_lock_conflict
from spam_filter.storage.records import (
    ActiveModelChanged,
    ModelRecord,
    Report,
    ReporterExists,
    ReportOutcome,
    StorageUnavailable,
)
from spam_filter_tests.helpers import spelled


@pytest.fixture
def storage(app_db: str) -> DuckDBStorage:
    return DuckDBStorage(app_db)


def _record(path: str, tpr: float = 0.9, fpr: float = 0.01) -> ModelRecord:
    return ModelRecord(
        path=path,
        status="active",
        true_positive_rate=tpr,
        false_positive_rate=fpr,
        seed=0,
        reason="test",
    )


def _active_paths(storage: DuckDBStorage) -> list[str]:
    return [r.path for r in storage.model_history() if r.status == "active"]


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


def test_describe_counts_rows_exactly(storage):
    storage.insert_messages([(True, "a"), (False, "b"), (False, "c")])
    with storage.connection() as conn:
        conn.execute("DELETE FROM messages WHERE body = 'a'")
    assert "messages (2 rows)" in storage.describe()


def test_first_promotion_makes_the_model_active(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    assert storage.active_model().path == "a.json"


def test_promotion_leaves_exactly_one_active_model(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    storage.promote_model(_record("b.json"), replacing="a.json")
    storage.promote_model(_record("c.json"), replacing="b.json")
    assert _active_paths(storage) == ["c.json"]


def test_failure_between_retiring_and_inserting_keeps_the_previous_model(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    # The UPDATE that retires a.json succeeds; the INSERT then violates the rate's CHECK.
    with pytest.raises(duckdb.ConstraintException):
        storage.promote_model(_record("bad.json", tpr=1.5), replacing="a.json")
    assert _active_paths(storage) == ["a.json"]


def test_promotion_refuses_when_another_run_promoted_meanwhile(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    storage.promote_model(_record("b.json"), replacing="a.json")
    with pytest.raises(ActiveModelChanged):
        storage.promote_model(_record("c.json"), replacing="a.json")
    assert _active_paths(storage) == ["b.json"]


def test_rejected_models_are_recorded_without_changing_the_active_one(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    storage.record_rejected_model(_record("b.json"))
    statuses = {r.path: r.status for r in storage.model_history()}
    assert statuses == {"a.json": "active", "b.json": "rejected"}


def test_recorded_paths_are_every_row_with_a_file(storage):
    storage.promote_model(_record("a.json"), replacing=None)
    storage.promote_model(_record("b.json"), replacing="a.json")
    storage.record_rejected_model(_record(None))
    assert sorted(storage.recorded_model_paths()) == ["a.json", "b.json"]


def test_change_marker_moves_with_every_commit(storage):
    before = storage.change_marker()
    assert storage.change_marker() == before
    storage.promote_model(_record("a.json"), replacing=None)
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


def test_reporters_are_created_once_and_revoked(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.add_reporter("bob", key_hash("key-b"))
    with pytest.raises(ReporterExists):
        storage.add_reporter("alice", key_hash("key-c"))
    assert set(storage.reporter_keys()) == {key_hash("key-a"), key_hash("key-b")}
    assert storage.revoke_reporter("alice") is True
    assert storage.revoke_reporter("alice") is False
    assert storage.revoke_reporter("nobody") is False
    assert set(storage.reporter_keys()) == {key_hash("key-b")}
    statuses = {reporter.name: reporter.status for reporter in storage.reporters()}
    assert statuses == {"alice": "revoked", "bob": "active"}
    storage.flag_reporter(alice, "made the model worse")
    flagged = {reporter.name: reporter.flag_reason for reporter in storage.reporters()}
    assert flagged["alice"] == "made the model worse"


def test_one_vote_per_reporter_and_message(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    bob = storage.add_reporter("bob", key_hash("key-b"))
    assert storage.record_reports(
        alice, [Report("Win cash", True), Report("win  CASH", True), Report("hi", False, "m1")]
    ) == ReportOutcome(accepted=2, duplicates=1)
    # Another reporter's vote on the same message is a vote of its own.
    assert storage.record_reports(bob, [Report("Win cash", True)]) == ReportOutcome(1, 0)
    # A changed label replaces the reporter's earlier vote; the same label is a duplicate.
    assert storage.record_reports(alice, [Report("hi", True, "m1")]) == ReportOutcome(1, 0)
    assert storage.record_reports(alice, [Report("hi", True, "m1")]) == ReportOutcome(0, 1)
    assert storage.report_sequence() == 4
    assert storage.drain_reports() == 3
    with storage.connection(read_only=True) as conn:
        rows = conn.execute(
            "SELECT reporter_id, message_id, body, spam FROM reports ORDER BY reporter_id, body"
        ).fetchall()
    assert rows == [
        (alice, None, "Win cash", True),
        (alice, "m1", "hi", True),
        (bob, None, "Win cash", True),
    ]
    assert {r.name: r.reports for r in storage.reporters()} == {"alice": 2, "bob": 1}


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
