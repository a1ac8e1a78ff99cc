"""The retrain sensor: a run once enough new reports arrived, at most once per interval."""

import json
import time

import dagster as dg
import pytest

from spam_filter.definitions import defs
from spam_filter.reporter_keys import key_hash
from spam_filter.resources import ApplicationDatabase
from spam_filter.sensors import RetrainPolicy, retrain_on_reports_sensor
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import Report
from spam_filter_tests.helpers import spelled


@pytest.fixture
def storage(app_db: str) -> DuckDBStorage:
    return DuckDBStorage(app_db)


def _evaluate(app_db: str, cursor: str | None, policy: RetrainPolicy):
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"database": ApplicationDatabase(path=app_db), "retrain_policy": policy},
    )
    return retrain_on_reports_sensor(context)


def _report(storage: DuckDBStorage, reporter: int, count: int, start: int = 0) -> None:
    storage.record_reports(
        reporter, [Report(f"report {spelled(i)}", True) for i in range(start, start + count)]
    )


def test_the_sensor_is_on_by_default_and_targets_the_job():
    sensor = defs.resolve_sensor_def("retrain_on_reports_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "create_spam_model_job"


def test_a_run_is_requested_once_enough_reports_arrived(app_db, storage):
    reporter = storage.add_reporter("desk", key_hash("k"))
    policy = RetrainPolicy(reports=10, min_interval_seconds=0)
    _report(storage, reporter, 9)
    assert isinstance(_evaluate(app_db, None, policy), dg.SkipReason)
    _report(storage, reporter, 1, start=9)
    result = _evaluate(app_db, None, policy)
    assert [request.tags["reports"] for request in result.run_requests] == ["10"]
    # Counted from the cursor on: the same reports never ask twice.
    assert isinstance(_evaluate(app_db, result.cursor, policy), dg.SkipReason)
    _report(storage, reporter, 10, start=10)
    assert len(_evaluate(app_db, result.cursor, policy).run_requests) == 1


def test_a_new_inbox_counts_from_its_start_and_is_never_taken_for_a_repeat(app_db, storage):
    reporter = storage.add_reporter("desk", key_hash("k"))
    _report(storage, reporter, 10)
    # The cursor of an earlier inbox that had gone further.
    earlier = json.dumps({"sequence": 600, "requested_at": 0})
    result = _evaluate(app_db, earlier, RetrainPolicy(reports=10, min_interval_seconds=0))
    (request,) = result.run_requests
    # A run key would repeat the earlier inbox's request at 10, which Dagster drops unseen.
    assert request.run_key is None
    assert json.loads(result.cursor)["sequence"] == 10


def test_repeated_reports_do_not_count(app_db, storage):
    reporter = storage.add_reporter("desk", key_hash("k"))
    for _ in range(5):
        _report(storage, reporter, 4)
    assert isinstance(
        _evaluate(app_db, None, RetrainPolicy(reports=5, min_interval_seconds=0)), dg.SkipReason
    )


def test_at_most_one_run_per_interval(app_db, storage):
    reporter = storage.add_reporter("desk", key_hash("k"))
    policy = RetrainPolicy(reports=1, min_interval_seconds=3600)
    _report(storage, reporter, 5)
    recent = json.dumps({"sequence": 0, "requested_at": time.time() - 60})
    skipped = _evaluate(app_db, recent, policy)
    assert isinstance(skipped, dg.SkipReason)
    assert "requested 60 s ago" in skipped.skip_message
    long_ago = json.dumps({"sequence": 0, "requested_at": time.time() - 7200})
    assert len(_evaluate(app_db, long_ago, policy).run_requests) == 1


def test_the_policy_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SPAM_FILTER_RETRAIN_AFTER_REPORTS", "50")
    monkeypatch.setenv("SPAM_FILTER_RETRAIN_MIN_INTERVAL_SECONDS", "600")
    assert RetrainPolicy.from_environment() == RetrainPolicy(reports=50, min_interval_seconds=600)
    monkeypatch.delenv("SPAM_FILTER_RETRAIN_AFTER_REPORTS")
    assert RetrainPolicy.from_environment().reports == 500
