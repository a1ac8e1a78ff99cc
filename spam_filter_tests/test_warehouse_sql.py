"""Warehouse SQL counts and scores like the Python model; tables and views swap safely."""

from collections import Counter

import duckdb
import pytest

from spam_filter import evaluation, settings, warehouse
from spam_filter.assets.data import read_sms_spam_collection
from spam_filter.evaluation import score_table
from spam_filter.spam import count_tokens, train_model
from spam_filter.sql import UNNEST_BODY_WORDS, install_tokenizer
from spam_filter_tests.conftest import add_sample_messages, materialize_all

EDGE_TEXTS = ["", "   ", "?!...", "WINNER!! call 08452810075 £1000", "lunch at noon"]


@pytest.fixture(scope="module")
def sms() -> list[tuple[str, bool]]:
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    return list(zip(frame["body"], frame["spam"], strict=True))


def _warehouse_with(rows: list[tuple[bool, str | None]]) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose spam_dataset and spam_testing_dataframe tables hold `rows`."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA " + warehouse.SCHEMA)
    conn.execute(
        "CREATE TABLE " + warehouse.table("spam_dataset") + " (spam BOOLEAN, body VARCHAR)"
    )
    conn.executemany("INSERT INTO " + warehouse.table("spam_dataset") + " VALUES (?, ?)", rows)
    warehouse.replace_table(
        conn, "spam_testing_dataframe", "SELECT spam, body FROM " + warehouse.table("spam_dataset")
    )
    return conn


def test_unnested_words_count_like_python(sms):
    texts = [text for text, _ in sms] + EDGE_TEXTS
    conn = duckdb.connect()
    install_tokenizer(conn)
    conn.execute("CREATE TABLE m AS SELECT unnest($texts) AS body", {"texts": texts})
    counts = conn.execute(
        "SELECT word, count(*) FROM (SELECT " + UNNEST_BODY_WORDS + " AS word FROM m) "
        "WHERE word <> '' GROUP BY word"
    ).fetchall()
    assert Counter(dict(counts)) == count_tokens(texts)


# A batch of 7 rows makes the scoring run over many rowid ranges, the last one partial; spam.csv's
# duplicate messages check that identical texts scored once still count once per copy.
@pytest.mark.parametrize("batch_rows", [evaluation._SCORE_BATCH_ROWS, 7])
def test_score_table_decides_every_message_like_python(sms, batch_rows, monkeypatch):
    monkeypatch.setattr(evaluation, "_SCORE_BATCH_ROWS", batch_rows)
    model = train_model(sms[:4000], alpha=0.1, false_positive_cost=8.0)
    # Texts without any token, with only unknown words, and a null body keep the prior alone.
    rows = [(spam, text) for text, spam in sms[4000:]] + [
        (False, text) for text in [*EDGE_TEXTS, "zzqx unknownword", None]
    ]
    conn = _warehouse_with(rows)
    reports = []
    score = score_table(
        conn, "spam_testing_dataframe", model, lambda done, total: reports.append((done, total))
    )
    assert reports[-1] == (len(rows), len(rows))
    assert len(reports) == -(-len(rows) // batch_rows)
    flagged = [(spam, text is not None and model.is_spam(text)) for spam, text in rows]
    if model.prior_log_odds > 0:
        flagged[-1] = (False, True)
    assert score.messages == len(rows)
    assert score.true_positives == sum(spam and hit for spam, hit in flagged)
    assert score.false_positives == sum(not spam and hit for spam, hit in flagged)
    assert score.false_negatives == sum(spam and not hit for spam, hit in flagged)


def test_replace_view_replaces_a_table_left_by_an_earlier_version():
    conn = _warehouse_with([(True, "win cash"), (False, "lunch")])
    warehouse.replace_view(
        conn, "spam_testing_dataframe", "SELECT spam, body FROM public.spam_dataset WHERE spam"
    )
    warehouse.replace_view(
        conn, "spam_testing_dataframe", "SELECT spam, body FROM public.spam_dataset"
    )
    kind = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?",
        ["spam_testing_dataframe"],
    ).fetchone()[0]
    assert kind == "VIEW"
    assert warehouse.row_count(conn, "spam_testing_dataframe") == 2


def test_a_run_over_assets_of_another_kind_gives_the_same_model(resources, app_db):
    add_sample_messages(app_db)
    first = materialize_all(resources)
    assert first.success
    # Flip each SQL-built asset between table and view, as another version of the pipeline may
    # have left them, and run again.
    path = resources["warehouse_db"].database
    with duckdb.connect(path) as conn:
        kinds = dict(
            conn.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
        assert kinds["spam_dataset"] == kinds["spam_training_dataframe"] == "VIEW"
        assert kinds["spam_testing_dataframe"] == "BASE TABLE"
        for statement in (
            "CREATE TABLE public.spam_dataset_copy AS SELECT * FROM public.spam_dataset",
            "CREATE TABLE public.spam_training_dataframe_copy AS "
            "SELECT * FROM public.spam_training_dataframe",
            "CREATE TABLE public.spam_testing_dataframe_copy AS "
            "SELECT * FROM public.spam_testing_dataframe",
        ):
            conn.execute(statement)
        conn.execute("DROP VIEW public.spam_training_dataframe")
        conn.execute("DROP VIEW public.spam_dataset")
        conn.execute("ALTER TABLE public.spam_dataset_copy RENAME TO spam_dataset")
        conn.execute(
            "ALTER TABLE public.spam_training_dataframe_copy RENAME TO spam_training_dataframe"
        )
        conn.execute("DROP TABLE public.spam_testing_dataframe")
        conn.execute(
            "CREATE VIEW public.spam_testing_dataframe AS "
            "SELECT * FROM public.spam_testing_dataframe_copy"
        )
    second = materialize_all(resources)
    assert second.success

    def score(result):
        return result.asset_materializations_for_node("model_score")[0].metadata

    for key in ("true_positive_rate", "false_positive_rate", "test_messages", "vocabulary_size"):
        assert score(second)[key].value == score(first)[key].value
