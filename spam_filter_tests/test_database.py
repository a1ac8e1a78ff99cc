"""The application database: schema, messages, and the one-transaction promotion."""

import subprocess
import sys
import time

import duckdb
import pytest

import database
from spam_filter.evaluation import Score, promotion_decision


def _record(path: str, tpr: float = 0.9, fpr: float = 0.01) -> database.ModelRecord:
    return database.ModelRecord(
        path=path,
        status="active",
        true_positive_rate=tpr,
        false_positive_rate=fpr,
        seed=0,
        reason="test",
    )


def _active_paths(path: str) -> list[str]:
    with database.connection(path, read_only=True) as conn:
        rows = conn.execute("SELECT path FROM models WHERE status = 'active'").fetchall()
    return [p for (p,) in rows]


def test_create_schema_is_idempotent_and_keeps_rows(app_db):
    with database.connection(app_db) as conn:
        database.insert_messages(conn, [(True, "win cash"), (False, "lunch?")])
        database.create_schema(conn)
        assert database.message_count(conn) == 2
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


def test_describe_counts_rows_exactly(app_db):
    with database.connection(app_db) as conn:
        database.insert_messages(conn, [(True, "a"), (False, "b"), (False, "c")])
        conn.execute("DELETE FROM messages WHERE body = 'a'")
        assert "messages (2 rows)" in database.describe(conn)


def test_database_script_creates_and_prints_the_tables(project_env):
    result = subprocess.run(
        [sys.executable, "database.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=database.settings.PROJECT_ROOT,
        env={**project_env, "PATH": ""},
    )
    assert "messages" in result.stdout and "models" in result.stdout
    assert "true_positive_rate" in result.stdout


def test_first_promotion_makes_the_model_active(app_db):
    with database.connection(app_db) as conn:
        database.promote_model(conn, _record("a.json"), replacing=None)
        assert database.active_model(conn).path == "a.json"


def test_promotion_leaves_exactly_one_active_model(app_db):
    with database.connection(app_db) as conn:
        database.promote_model(conn, _record("a.json"), replacing=None)
        database.promote_model(conn, _record("b.json"), replacing="a.json")
        database.promote_model(conn, _record("c.json"), replacing="b.json")
    assert _active_paths(app_db) == ["c.json"]


def test_failure_between_retiring_and_inserting_keeps_the_previous_model(app_db):
    with database.connection(app_db) as conn:
        database.promote_model(conn, _record("a.json"), replacing=None)
        # The UPDATE that retires a.json succeeds; the INSERT then violates the rate's CHECK.
        with pytest.raises(duckdb.ConstraintException):
            database.promote_model(conn, _record("bad.json", tpr=1.5), replacing="a.json")
    assert _active_paths(app_db) == ["a.json"]


def test_promotion_refuses_when_another_run_promoted_meanwhile(app_db):
    with database.connection(app_db) as conn:
        database.promote_model(conn, _record("a.json"), replacing=None)
        database.promote_model(conn, _record("b.json"), replacing="a.json")
        with pytest.raises(database.ActiveModelChanged):
            database.promote_model(conn, _record("c.json"), replacing="a.json")
    assert _active_paths(app_db) == ["b.json"]


def test_rejected_models_are_recorded_without_changing_the_active_one(app_db):
    with database.connection(app_db) as conn:
        database.promote_model(conn, _record("a.json"), replacing=None)
        database.record_rejected_model(conn, _record("b.json"))
        statuses = {r.path: r.status for r in database.model_history(conn)}
    assert statuses == {"a.json": "active", "b.json": "rejected"}


@pytest.mark.parametrize(
    ("challenger", "active", "promoted"),
    [
        (Score(90, 1, 99, 10), None, True),  # first model
        (Score(95, 1, 99, 5), Score(90, 2, 98, 10), True),  # better on both rates
        (Score(90, 1, 99, 10), Score(90, 1, 99, 10), True),  # equal
        (Score(85, 1, 99, 15), Score(90, 1, 99, 10), False),  # catches less spam
        (Score(95, 3, 97, 5), Score(90, 1, 99, 10), False),  # flags more legitimate messages
    ],
)
def test_promotion_rule(challenger, active, promoted):
    decision, reason = promotion_decision(challenger, active)
    assert decision is promoted
    assert reason


def test_connect_waits_for_another_process_holding_the_lock(app_db, other_process):
    other_process.hold_lock(app_db, 1.5)
    try:
        started = time.monotonic()
        with database.connection(app_db, read_only=True, timeout=30) as conn:
            assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
        assert time.monotonic() - started > 0.5
    finally:
        other_process.wait_released()


def test_connect_gives_up_after_its_timeout(app_db, other_process):
    other_process.hold_lock(app_db, 2.0)
    try:
        with pytest.raises(duckdb.Error) as error:
            database.connect(app_db, read_only=True, timeout=0.3)
        assert database.is_lock_conflict(error.value)
    finally:
        other_process.wait_released()
