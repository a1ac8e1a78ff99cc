"""Resources: the weights store and the warehouse's one-run-at-a-time lock."""

import fcntl
import json
import subprocess
import sys

from spam_filter.resources import ModelStorage, Warehouse
from spam_filter.spam import train_model
from spam_filter_tests.conftest import add_sample_messages, materialize_all

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
    paths = {storage.save(model) for _ in range(20)}
    assert len(paths) == 20
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(
        p.rsplit("/", 1)[1] for p in paths
    )
    weights = json.loads(open(paths.pop()).read())
    assert {"spam_bow", "non_spam_bow", "percent_spam"} <= set(weights)


def test_a_run_waits_for_the_run_holding_the_warehouse(resources, app_db):
    add_sample_messages(app_db)
    warehouse = resources["warehouse_db"]
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
            "warehouse_db": Warehouse(
                database=warehouse.database,
                connection_config=warehouse.connection_config,
                run_lock_timeout_seconds=0.5,
            ),
        }
        blocked = materialize_all(impatient)
        assert not blocked.success
        assert not blocked.get_asset_materialization_events()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert materialize_all(resources).success
    # The run let go of the lock when it ended.
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
