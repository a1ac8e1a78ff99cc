"""Sample messages: labelled, seeded, and inserted as one transaction."""

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import duckdb
import psycopg
import pytest
from tqdm import tqdm

import sample_data
from spam_filter import constants, faults, settings
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.spam import tokenize, train_model
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.postgres_storage import PostgresStorage
from spam_filter.tokenizer_sql import install_tokenizer


def _messages(path: str) -> list[tuple[bool, str]]:
    with DuckDBStorage(path).connection(read_only=True) as conn:
        return conn.execute("SELECT spam, body FROM messages ORDER BY created_at").fetchall()


def test_messages_follow_their_labels(app_db):
    sample_data.insert_sample_messages(DuckDBStorage(app_db), 2_000, seed=3, progress=False)
    rows = _messages(app_db)
    assert len(rows) == 2_000
    spam_share = sum(spam for spam, _ in rows) / len(rows)
    assert 0.25 < spam_share < 0.35
    # Built from each class's own words: a model of the real collection tells them apart.
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    model = train_model(list(zip(frame["body"], frame["spam"], strict=True)), 0.1, 8.0)
    flagged = [(spam, model.is_spam(body)) for spam, body in rows]
    spam_total = sum(spam for spam, _ in flagged)
    assert sum(spam and hit for spam, hit in flagged) / spam_total > 0.9
    assert sum(hit and not spam for spam, hit in flagged) / (len(rows) - spam_total) < 0.02


def test_messages_are_mostly_distinct_and_the_vocabulary_keeps_growing(app_db):
    storage = DuckDBStorage(app_db)
    vocabulary = []
    for _ in range(2):
        sample_data.insert_sample_messages(storage, 20_000, progress=False)
        with storage.connection(read_only=True) as conn:
            install_tokenizer(conn)
            distinct, words = conn.execute(
                "SELECT count(DISTINCT body), "
                "(SELECT count(DISTINCT word) FROM (SELECT unnest(spam_tokens(body)) AS word "
                "FROM messages)) FROM messages"
            ).fetchone()
        vocabulary.append(words)
    # A second run continues the row numbers: new messages, not the first run's again.
    assert distinct / 40_000 > 0.98
    # Heaps' law: twice the messages bring about 2 ** 0.6 times the words, far past spam.csv's.
    assert vocabulary[0] > 20_000
    assert 1.3 < vocabulary[1] / vocabulary[0] < 1.7


def test_same_seed_gives_same_messages(project_env, tmp_path):
    paths = [str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")]
    for path in paths:
        storage = DuckDBStorage(path)
        storage.create_schema()
        sample_data.insert_sample_messages(storage, 500, seed=7, progress=False)
    assert _messages(paths[0]) == _messages(paths[1])


# tqdm's count of rows inserted so far, uncommitted: after one, two and four chunks.
@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_a_run_killed_mid_insert_adds_no_rows(app_db, chunks):
    shown = tqdm.format_sizeof(chunks * sample_data._CHUNK_ROWS) + "/5.00M"
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


def test_the_command_fills_a_postgresql_database_and_continues_its_rows(postgres_url, capsys):
    sample_data.main(["--database", postgres_url, "--count", "300", "--seed", "5"])
    sample_data.main(["--database", postgres_url, "--count", "300", "--seed", "5"])
    assert "messages now holds 600 rows" in capsys.readouterr().out
    with psycopg.connect(postgres_url) as conn:
        rows, distinct, synthetic = conn.execute(
            "SELECT count(*), count(DISTINCT body), count(*) FILTER (WHERE synthetic) FROM messages"
        ).fetchone()
    # The second run continued the row numbers, as on DuckDB: new messages, all marked synthetic.
    assert (rows, synthetic) == (600, 600)
    assert distinct > 590


@pytest.mark.parametrize(
    "arguments", [["--count", "-5"], ["--spam-share", "2"], ["--spam-share", "nan"]]
)
def test_bad_values_are_refused_before_the_database_is_touched(project_env, arguments):
    result = subprocess.run(
        [sys.executable, "sample_data.py", *arguments],
        cwd=settings.PROJECT_ROOT,
        env={**os.environ, **project_env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--spam-share between 0 and 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(project_env["SPAM_FILTER_DATABASE"])


def test_two_runs_at_once_on_postgresql_add_different_messages(postgres_url):
    storage = PostgresStorage(postgres_url)
    storage.create_schema()
    with ThreadPoolExecutor(2) as pool:
        added = list(
            pool.map(
                lambda _: sample_data.insert_sample_messages(storage, 300, seed=5, progress=False),
                range(2),
            )
        )
    assert added == [300, 300]
    with psycopg.connect(postgres_url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT body) FROM messages"
        ).fetchone()
    # The second continued after the first's rows: the same seed, other row numbers.
    assert rows == 600 and distinct > 590


def test_a_bulk_append_the_server_refuses_ends_in_one_line_and_adds_nothing(postgres_url, capsys):
    storage = PostgresStorage(postgres_url)
    storage.create_schema()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_messages() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no new messages today'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_messages()"
        )
    assert sample_data.main(["--database", postgres_url, "--count", "50"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "no new messages today" in error and "Traceback" not in error
    assert storage.message_count() == 0


def test_messages_carry_no_words_of_the_held_out_collection(app_db):
    """Sample rows train beside the gold set, which is spam.csv's held-out split: words only the
    held-out messages have must not reach the model through them."""
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    with duckdb.connect() as conn:
        conn.register("collection", frame)
        training = conn.execute(
            sample_data.TRAINING_SPLIT_OF_COLLECTION,
            {"seed": constants.SPLIT_SEED, "test_size": constants.TEST_SIZE},
        ).fetchall()
    seen = {word for _, body in training for word in tokenize(sample_data.clean_text(body))}
    held_out_only = {
        word
        for body in frame["body"]
        for word in tokenize(sample_data.clean_text(body))
        if word.isalpha() and len(word) > 3 and word not in seen
    }
    storage = DuckDBStorage(app_db)
    sample_data.insert_sample_messages(storage, 20_000, seed=0, progress=False)
    with storage.connection(read_only=True) as conn:
        bodies = conn.execute("SELECT body FROM messages").fetchall()
    generated = {word for (body,) in bodies for word in tokenize(body)}
    # A few coincide by chance (typos, made-up names): 25 of 1,216 here; drawn from all of
    # spam.csv, 1,125 did.
    assert len(held_out_only) > 1000
    assert len(generated & held_out_only) < 0.05 * len(held_out_only)


def test_a_count_past_the_most_one_call_adds_is_refused_before_anything_is_written(app_db):
    result = subprocess.run(
        [sys.executable, "sample_data.py", "--count", str(10**23)],
        cwd=settings.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--count must be 0 to 1,000,000,000" in result.stderr
    assert "Traceback" not in result.stderr
