"""Resources: the weights store and the warehouse's one-run-at-a-time lock."""

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from spam_filter.definitions import build_resources
from spam_filter.file_locks import LockTimeout
from spam_filter.resources import ModelStorage, Warehouse
from spam_filter.spam import train_model
from spam_filter_tests.helpers import add_sample_messages, materialize_all

_HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_saved_weights_get_unique_names_and_the_three_keys(tmp_path):
    storage = ModelStorage(weights_dir=str(tmp_path / "weights"))
    model = train_model([("win cash now", True), ("lunch at noon", False)], 0.1, 1.0)
    saved_names = {storage.save(model) for _ in range(20)}
    assert len(saved_names) == 20
    # What `models.path` records: a bare name inside the weights folder.
    assert all(Path(name).name == name for name in saved_names)
    names = sorted(saved_names)
    # Each file stays marked pending until its fate is recorded.
    folder = tmp_path / "weights"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == names
    assert sorted(p.name for p in folder.glob(".*.pending")) == [f".{n}.pending" for n in names]
    for name in saved_names:
        storage.settle(name)
    assert sorted(p.name for p in folder.iterdir()) == names
    saved = json.loads((folder / names[0]).read_text())
    assert {"spam_bow", "non_spam_bow", "percent_spam"} <= set(saved)
    storage.discard(names[0])
    assert sorted(p.name for p in folder.iterdir()) == names[1:]


def _error_text(event: dg.DagsterEvent) -> str:
    """A failure event's error message and its causes' messages, outermost first."""
    messages, error = [], event.event_specific_data.error
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "".join(messages)


def test_a_run_waits_for_the_run_holding_the_warehouse(resources, app_db, capfd):
    add_sample_messages(app_db)
    warehouse = resources["warehouse"]
    lock_path = warehouse.database + ".run-lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, lock_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        impatient = {
            **resources,
            "warehouse": Warehouse(
                database=warehouse.database,
                connection_config=warehouse.connection_config,
                run_lock_timeout_seconds=0.5,
            ),
        }
        blocked = materialize_all(impatient)
        assert not blocked.success
        assert not blocked.get_asset_materialization_events()
        # It failed for the lock, not for any other reason.
        errors = [
            _error_text(event)
            for event in blocked.all_events
            if event.is_failure and event.event_specific_data is not None
        ]
        assert any(f"another run has held {lock_path}" in error for error in errors), errors
        # Said in the run's log (Dagster's console logger).
        assert f"waiting for another run to release {lock_path}" in capfd.readouterr().err
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert materialize_all(resources).success
    # The run let go of the lock when it ended.
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_cleanup_removes_only_what_crashed_runs_left(tmp_path):
    storage = ModelStorage(weights_dir=str(tmp_path / "weights"))
    folder = tmp_path / "weights"
    model = train_model([("win cash now", True), ("lunch at noon", False)], 0.1, 1.0)
    promoted = storage.save(model)
    storage.settle(promoted)
    committed_then_killed = storage.save(model)  # its row is in, its marker still there
    never_recorded = storage.save(model)  # the run died before its row
    (folder / f".{Path(never_recorded).name}.partial").write_text("{")
    # Files cleanup knows nothing about: another database's model in a shared folder, a model
    # copied in by hand, a note. None of them has a pending marker.
    foreign = [folder / "spam_model_20200101T000000000000Z_0123abcd.json", folder / "mine.json"]
    for path in [*foreign, folder / "README"]:
        path.write_text("{}")
    recorded = [promoted, committed_then_killed, str(folder / "moved_away.json")]

    with storage.exclusive():
        removed = storage.remove_orphans(recorded)

    assert set(removed) == {
        Path(never_recorded).name,
        f".{Path(never_recorded).name}.partial",
        f".{Path(never_recorded).name}.pending",
        f".{Path(committed_then_killed).name}.pending",
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".lock", "README", *(Path(p).name for p in [promoted, committed_then_killed, *foreign])]
    )
    with storage.exclusive():
        assert storage.remove_orphans(recorded) == []


def test_a_process_waiting_for_the_weights_folder_says_so_and_gives_up(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        storage = ModelStorage(weights_dir=str(folder), lock_timeout_seconds=0.5)
        said = []
        with pytest.raises(LockTimeout), storage.exclusive(on_wait=said.append):
            pass
        assert said == [f"waiting for another process to release {folder / '.lock'}"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with storage.exclusive():
        pass


def test_the_warehouse_memory_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPAM_FILTER_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SPAM_FILTER_WAREHOUSE_MEMORY", "96MB")
    warehouse = build_resources()["warehouse"]
    with warehouse.get_connection() as conn:
        (limit,) = conn.execute("SELECT current_setting('memory_limit')").fetchone()
    # DuckDB shows the cap in its own units: 96 MB is 91.5 MiB.
    assert limit == "91.5 MiB"
