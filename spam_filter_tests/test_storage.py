"""The application storage: schema, messages, and the one-transaction promotion."""

import time

import duckdb
import pytest

from spam_filter.storage.duckdb_storage import DuckDBStorage, is_lock_conflict
from spam_filter.storage.records import ActiveModelChanged, ModelRecord


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
