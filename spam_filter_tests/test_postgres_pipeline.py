"""The pipeline and the API with the application database on a real PostgreSQL server: a run
promotes a model whose weights live in its row, the API serves it without a weights folder, a
run killed at any point of its promotion leaves one loadable model, and two runs on two
"machines" (separate working folders) take turns on the server's advisory lock."""

import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

import database
from spam_filter import faults, weights
from spam_filter.definitions import build_resources
from spam_filter.reporter_keys import key_hash
from spam_filter.rollback import prune_retired_weights
from spam_filter.spam import SpamModel
from spam_filter.storage.postgres_storage import PostgresStorage
from spam_filter.storage.records import Report, StorageUnavailable
from spam_filter_tests.helpers import (
    BIN,
    PROJECT_ROOT,
    SWAP_DEADLINE_SECONDS,
    add_sample_messages_to_postgres,
    load_run_system,
    materialize_all,
    project_paths,
    promote_weak_model_in_row,
    start_job,
    wait_for,
)
from spam_filter_tests.servers import free_port
from spam_filter_tests.test_faults_promotion import ROUNDS, JobRunner


@pytest.fixture
def pg_env(
    project_env: dict[str, str], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The project's paths in a temporary folder, and the application database on PostgreSQL
    with the sample messages."""
    monkeypatch.setenv("SPAM_FILTER_DATABASE_URL", postgres_url)
    add_sample_messages_to_postgres(postgres_url)
    return {**project_env, "SPAM_FILTER_DATABASE_URL": postgres_url}


def _loaded_active(url: str) -> SpamModel:
    record, text = PostgresStorage(url).active_model_weights()
    return SpamModel.from_weights(weights.from_json(text))


def _state(url: str) -> tuple[list[str], list[str]]:
    """(names of active models, names of every model row holding weights)."""
    storage = PostgresStorage(url)
    active = [r.path for r in storage.model_history() if r.status == "active"]
    with storage.connection(read_only=True) as conn:
        with_weights = conn.execute("SELECT path FROM models WHERE weights IS NOT NULL").fetchall()
    return active, [path for (path,) in with_weights]


def test_a_run_keeps_the_weights_in_the_row_and_the_api_serves_them(pg_env, make_app):
    url = pg_env["SPAM_FILTER_DATABASE_URL"]
    result = materialize_all(build_resources())
    assert result.success
    record = PostgresStorage(url).active_model()
    assert record is not None and record.path.startswith("spam_model_")
    assert _loaded_active(url).vocabulary_size > 0
    # No file anywhere: the weights folder was never made.
    assert not Path(pg_env["SPAM_FILTER_WEIGHTS_DIR"]).exists()
    copied = result.asset_materializations_for_node("user_messages")[0].metadata
    assert copied["from_messages"].value == 2_000

    app = make_app(url)
    client = app.test_client()
    answer = client.post("/api/find_spam", json={"text": "WINNER! claim your cash prize now"})
    assert answer.json["model"] == record.path and answer.json["is_spam"] is True
    assert client.get("/api/health").json["status"] == "ok"

    name = promote_weak_model_in_row(url)
    assert wait_for(
        lambda: client.post("/api/find_spam", json={"text": "hi"}).json["model"] == name,
        SWAP_DEADLINE_SECONDS,
    )


def test_a_run_killed_at_any_point_of_promotion_leaves_one_loadable_model(pg_env):
    url = pg_env["SPAM_FILTER_DATABASE_URL"]
    runner = JobRunner(pg_env)
    try:
        assert runner.run() == {"signal": None, "exit": 0}
        # Each run takes the run lock and, to promote, the promotion lock: a run that reaches
        # its crash point shows that the server released both from the run killed before it.
        # There is no file to clean up, so one run after the last crash checks recovery.
        for _ in range(ROUNDS):
            for point in faults.PROMOTION_POINTS:
                weak = promote_weak_model_in_row(url)
                _, rows_before = _state(url)

                assert runner.run(crash_at=point) == {"signal": signal.SIGKILL, "exit": None}

                active, rows = _state(url)
                assert len(active) == 1, f"after a crash at {point}: active models {active}"
                assert _loaded_active(url).vocabulary_size > 0
                new_rows = set(rows) - set(rows_before)
                if point in {"switch_committed", "switch_closed"}:
                    assert len(new_rows) == 1 and active == list(new_rows)
                else:
                    # Nothing committed: the row and its weights are both absent.
                    assert active == [weak] and new_rows == set()

        promote_weak_model_in_row(url)
        assert runner.run() == {"signal": None, "exit": 0}
        active, _ = _state(url)
        assert len(active) == 1 and _loaded_active(url).vocabulary_size > 0
        with PostgresStorage(url).connection(read_only=True) as conn:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks JOIN pg_database ON pg_database.oid = database "
                "WHERE locktype = 'advisory' AND datname = current_database()"
            )
            assert held.fetchone() == (0,)
    finally:
        runner.close()


def test_two_runs_on_two_machines_take_turns_on_the_advisory_lock(pg_env, tmp_path):
    # Two machines share nothing but the server: each has its own warehouse, storage and
    # Dagster home, so only the advisory lock can make their runs take turns. Their Dagster
    # homes hold the dagster.yaml `make run` writes, so the runs' history goes to the server too.
    url = pg_env["SPAM_FILTER_DATABASE_URL"]
    runs = []
    for machine in ("a", "b"):
        env = {
            **os.environ,
            **project_paths(tmp_path / machine),
            "SPAM_FILTER_DATABASE_URL": url,
            "DAGSTER_HOME": str(tmp_path / machine / "dagster_home"),
        }
        Path(env["DAGSTER_HOME"]).mkdir(parents=True)
        load_run_system().write_dagster_yaml(Path(env["DAGSTER_HOME"]), url)
        runs.append(env)
    # Dagster's tables are created once, before two processes could race to create them.
    subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        cwd=PROJECT_ROOT,
        env=runs[0],
        check=True,
        capture_output=True,
    )
    processes = [start_job(env) for env in runs]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(
        output[-3000:] for output in outputs
    )
    assert any("waiting for another run to release the run lock" in out for out in outputs)
    storage = PostgresStorage(url)
    history = storage.model_history()
    assert len(history) == 2
    assert [r.status for r in history].count("active") == 1
    with storage.connection(read_only=True) as conn:
        statuses = conn.execute("SELECT status FROM runs").fetchall()
    assert statuses == [("SUCCESS",), ("SUCCESS",)]


def test_make_run_puts_dagster_storage_on_postgres_when_the_url_is_set(postgres_url, tmp_path):
    run_system = load_run_system()
    home = tmp_path / "dagster_home"
    home.mkdir()
    run_system.write_dagster_yaml(home, None)
    assert "postgres" not in (home / "dagster.yaml").read_text()
    run_system.write_dagster_yaml(home, postgres_url)
    written = (home / "dagster.yaml").read_text()
    assert "env: SPAM_FILTER_DATABASE_URL" in written and postgres_url not in written
    env = {**os.environ, "DAGSTER_HOME": str(home), "SPAM_FILTER_DATABASE_URL": postgres_url}
    for command in (["instance", "migrate"], ["instance", "info"]):
        done = subprocess.run(
            [str(BIN / "dagster"), *command], cwd=PROJECT_ROOT, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"PostgresRunStorage" in done.stdout and b"PostgresEventLogStorage" in done.stdout
    with PostgresStorage(postgres_url).connection(read_only=True) as conn:
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= tables
    # A dagster.yaml written by hand is left alone.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run_system.write_dagster_yaml(home, None)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_the_database_command_line_works_on_postgres(postgres_url, capsys):
    assert database.main(["--database", postgres_url]) == 0
    printed = capsys.readouterr().out
    assert "messages (0 rows)" in printed and "reports (0 rows)" in printed
    # The password never reaches the output.
    assert urlsplit(postgres_url).password not in printed
    assert database.main(["--database", postgres_url, "add-reporter", "desk"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert PostgresStorage(postgres_url).reporter_keys()[key_hash(key)].name == "desk"
    assert database.main(["--database", postgres_url, "reporters"]) == 0
    assert "desk" in capsys.readouterr().out
    assert database.main(["--database", postgres_url, "revoke-reporter", "desk"]) == 0
    assert PostgresStorage(postgres_url).reporter_keys() == {}


def test_an_unreachable_server_stores_nothing_and_says_so(postgres):
    # A port where nothing listens: the same as a server that is down.
    unreachable = PostgresStorage(postgres.url.replace(f":{postgres.port}/", f":{free_port()}/"))
    with pytest.raises(StorageUnavailable) as error:
        unreachable.record_reports(1, [Report("lost?", True)])
    assert postgres.password not in str(error.value)
    with pytest.raises(StorageUnavailable):
        unreachable.active_model()


MAKE_THIS_DATABASE_READ_ONLY = """
    DO $$ BEGIN
        EXECUTE 'ALTER DATABASE ' || quote_ident(current_database())
            || ' SET default_transaction_read_only = on';
    END $$
"""


def test_a_read_only_server_stores_no_report_and_says_so(postgres_url, make_app):
    storage = PostgresStorage(postgres_url)
    storage.create_schema()
    key = "sfr_read-only test key"
    storage.add_reporter("desk", key_hash(key))
    # As a standby that a failover left the URL pointing at: reads work, writes are refused.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(MAKE_THIS_DATABASE_READ_ONLY)
    with pytest.raises(StorageUnavailable):
        PostgresStorage(postgres_url).record_reports(1, [Report("kept?", True)])
    client = make_app(postgres_url).test_client()
    response = client.post(
        "/api/report",
        json={"text": "kept?", "is_spam": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert response.json["success"] is False


def test_a_rollback_on_postgres_is_served_within_seconds_and_cleared_weights_refused(
    postgres_url, make_app, capsys
):
    PostgresStorage(postgres_url).create_schema()
    names = [promote_weak_model_in_row(postgres_url) for _ in range(3)]
    # make run finds the model it would serve in its row: it does not retrain for want of a file.
    storage = PostgresStorage(postgres_url)
    assert load_run_system().active_model_problem(storage, Path("/nonexistent")) is None
    client = make_app(postgres_url).test_client()
    assert client.get("/api/health").json["model"] == names[2]
    assert database.main(["--database", postgres_url, "rollback"]) == 0
    assert f"{names[1]} is active again, in place of {names[2]}" in capsys.readouterr().out
    assert wait_for(
        lambda: client.get("/api/health").json["model"] == names[1], SWAP_DEADLINE_SECONDS
    )
    # Keeping one retired model's weights clears the older one's row: it lists as deleted, and a
    # rollback to it is refused while the active model stays.
    assert prune_retired_weights(storage, "/nonexistent", keep=1) == [names[0]]
    assert database.main(["--database", postgres_url, "models"]) == 0
    listed = capsys.readouterr().out
    assert f"{names[0]} (weights deleted)" in listed and f"{names[2]} (" not in listed
    assert database.main(["--database", postgres_url, "rollback", names[0]]) == 1
    assert "holds no weights" in capsys.readouterr().err
    assert storage.active_model().path == names[1]
