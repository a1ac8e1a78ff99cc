"""Warehouse SQL counts and scores like the Python model; tables and views swap safely."""

from collections import Counter

import duckdb
import pytest

from spam_filter import learning, scoring, settings, tables
from spam_filter.assets import training
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.scoring import score_test_split
from spam_filter.spam import count_tokens, train_model
from spam_filter.tokenizer_sql import install_tokenizer
from spam_filter.warehouse_memory import (
    STREAMING_BYTES_PER_THREAD,
    memory_capped,
    memory_limit_bytes,
    release_memory,
)
from spam_filter_tests.helpers import add_sample_messages, materialize_all

EDGE_TEXTS = ["", "   ", "?!...", "WINNER!! call 08452810075 £1000", "lunch at noon"]


@pytest.fixture(scope="module")
def sms() -> list[tuple[str, bool]]:
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    return list(zip(frame["body"], frame["spam"], strict=True))


def _warehouse_with(
    rows: list[tuple[bool, str | None]], group: str = "gold", reporter: int | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose spam_dataset and spam_testing_dataframe tables hold `rows`."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA public")
    conn.execute("CREATE TABLE public.spam_dataset (spam BOOLEAN, body VARCHAR)")
    conn.executemany("INSERT INTO public.spam_dataset VALUES (?, ?)", rows)
    conn.execute(
        "CREATE TABLE public.spam_testing_dataframe AS "
        "SELECT spam, body, $group AS metric_group, $reporter::INTEGER AS reporter_id "
        "FROM public.spam_dataset",
        {"group": group, "reporter": reporter},
    )
    return conn


# With chunks of 1,000 messages (not the one chunk DuckDB's default cap holds) the count takes
# several statements, whose rows for one word and fold must add up.
@pytest.mark.parametrize("messages_per_chunk", [None, 1000])
def test_unnested_words_count_like_python(sms, messages_per_chunk, monkeypatch):
    if messages_per_chunk is not None:
        monkeypatch.setattr(learning, "messages_per_count_chunk", lambda conn: messages_per_chunk)
    texts = [text for text, _ in sms] + EDGE_TEXTS
    conn = duckdb.connect()
    install_tokenizer(conn)
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_training_dataframe AS "
        "SELECT i % 2 = 0 AS spam, texts[i + 1] AS body, 'sms_spam_collection' AS source, "
        "false AS synthetic, NULL::INTEGER AS reporter_id, false AS capped, 1.0::DOUBLE AS weight "
        "FROM range(len($texts)) AS r(i), (SELECT $texts AS texts)",
        {"texts": texts},
    )
    learning.count_training_words(conn, report_weight=1.0)
    counts, spam_rows, rows = learning.class_counts(conn, left_out=[])
    assert Counter(counts.spam_words) == count_tokens(texts[0::2])
    assert Counter(counts.ham_words) == count_tokens(texts[1::2])
    assert (spam_rows, rows) == (len(texts[0::2]), len(texts))
    (rows_counted,) = conn.execute("SELECT count(*) FROM training_word_counts").fetchone()
    (groups,) = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT fold, contributor, word FROM training_word_counts)"
    ).fetchone()
    assert (rows_counted > groups) == (messages_per_chunk is not None)


def test_the_vocabulary_keeps_the_most_frequent_words(sms):
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_training_dataframe AS "
        "SELECT spam, body, 'sms_spam_collection' AS source, false AS synthetic, "
        "NULL::INTEGER AS reporter_id, false AS capped, 1.0::DOUBLE AS weight "
        "FROM (SELECT unnest($labels) AS spam, unnest($texts) AS body)",
        {"labels": [spam for _, spam in sms], "texts": [text for text, _ in sms]},
    )
    everything = count_tokens(text for text, _ in sms)
    kept = 500
    assert learning.count_training_words(conn, 1.0, kept) == len(everything) - kept
    counts, _, rows = learning.class_counts(conn, left_out=[])
    words = set(counts.spam_words) | set(counts.ham_words)
    # Ties at the cut go to the word that sorts first, as the SQL orders them.
    ranked = sorted(everything.items(), key=lambda item: (-item[1], item[0]))
    assert words == {word for word, _ in ranked[:kept]}
    assert rows == len(sms)
    # Under the bound, nothing is dropped.
    assert learning.count_training_words(conn, 1.0, len(everything)) == 0


# A batch of 7 rows makes the scoring run over many rowid ranges, the last one partial; spam.csv's
# duplicate messages check that identical texts scored once still count once per copy.
@pytest.mark.parametrize("batch_rows", [scoring.SCORE_BATCH_ROWS, 7])
def test_scoring_decides_every_message_like_python(sms, batch_rows, monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", batch_rows)
    model = train_model(sms[:4000], alpha=0.1, false_positive_cost=8.0)
    # Texts without any token, with only unknown words, and a null body keep the prior alone.
    rows = [(spam, text) for text, spam in sms[4000:]] + [
        (False, text) for text in [*EDGE_TEXTS, "zzqx unknownword", None]
    ]
    conn = _warehouse_with(rows)
    reports = []
    score = score_test_split(conn, model, lambda done, total: reports.append((done, total))).gold
    assert reports[-1] == (len(rows), len(rows))
    assert len(reports) == -(-len(rows) // batch_rows)
    flagged = [(spam, text is not None and model.is_spam(text)) for spam, text in rows]
    if model.prior_log_odds > 0:
        flagged[-1] = (False, True)
    assert score.messages == len(rows)
    assert score.true_positives == sum(spam and hit for spam, hit in flagged)
    assert score.false_positives == sum(not spam and hit for spam, hit in flagged)
    assert score.false_negatives == sum(spam and not hit for spam, hit in flagged)


def _kind(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    return conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()[0]


def test_making_room_drops_only_an_object_of_the_other_kind():
    conn = _warehouse_with([(True, "win cash"), (False, "lunch")])
    conn.execute("CREATE VIEW public.spam_training_dataframe AS SELECT * FROM public.spam_dataset")
    # The testing split is a table and the training split a view, as the pipeline writes them.
    tables.make_room_for(conn, "spam_testing_dataframe")
    tables.make_room_for(conn, "spam_training_dataframe")
    assert tables.row_count(conn, "spam_testing_dataframe") == 2
    assert _kind(conn, "spam_training_dataframe") == "VIEW"
    # A table where the pipeline writes a view, and the other way round, are dropped.
    tables.make_room_for(conn, "spam_dataset")
    assert conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'spam_dataset'"
    ).fetchone() == (0,)
    conn.execute("DROP TABLE public.spam_testing_dataframe")
    conn.execute("CREATE VIEW public.spam_testing_dataframe AS SELECT 1 AS spam")
    tables.make_room_for(conn, "spam_testing_dataframe")
    assert conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'spam_testing_dataframe'"
    ).fetchone() == (0,)


def test_a_run_over_assets_of_another_kind_gives_the_same_model(resources, app_db):
    add_sample_messages(app_db)
    first = materialize_all(resources)
    assert first.success
    # Flip each SQL-built asset between table and view, as another version of the pipeline may
    # have left them, and run again.
    path = resources["warehouse"].database
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

    def metadata(result, asset):
        events = result.get_asset_materialization_events()
        return next(
            e for e in events if e.asset_key.to_user_string() == asset
        ).materialization.metadata

    for key in ("true_positive_rate", "false_positive_rate", "test_messages"):
        assert (
            metadata(second, "model_score")[key].value == metadata(first, "model_score")[key].value
        )
    for key in ("training_messages", "vocabulary_size"):
        assert metadata(second, "spam_model")[key].value == metadata(first, "spam_model")[key].value


def test_scores_are_kept_apart_by_group_and_left_out_reporters_are_not_scored(sms):
    model = train_model(sms[:4000], alpha=0.1, false_positive_cost=8.0)
    rows = [(spam, text) for text, spam in sms[4000:4100]]
    conn = _warehouse_with(rows, group="user", reporter=7)
    scores = score_test_split(conn, model)
    assert scores.user.messages == 100 and scores.gold.messages == scores.synthetic.messages == 0
    assert score_test_split(conn, model, left_out_reporters=[7]).user.messages == 0
    assert score_test_split(conn, model, left_out_reporters=[8]).user.messages == 100


def _training_split(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    """A warehouse whose training split holds (spam, body, source, reporter_id, capped[, weight])
    rows; the weight is 1 where it is left out."""
    conn = duckdb.connect()
    install_tokenizer(conn)
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_training_dataframe (spam BOOLEAN, body VARCHAR, "
        "source VARCHAR, synthetic BOOLEAN, reporter_id INTEGER, capped BOOLEAN, "
        "weight DOUBLE DEFAULT 1.0)"
    )
    conn.executemany(
        "INSERT INTO public.spam_training_dataframe VALUES (?, ?, ?, false, ?, ?, ?)",
        [row if len(row) == 6 else (*row, 1.0) for row in rows],
    )
    return conn


def test_reports_weigh_as_configured_and_count_per_reporter():
    conn = _training_split(
        [
            (True, "win cash", "sms_spam_collection", None, False),
            (True, "win now", "reports", 3, False),
            (False, "lunch now", "reports", None, False),  # several reporters agree on it
            (True, "free gift", "reports", 3, True),  # over reporter 3's share
        ]
    )
    learning.count_training_words(conn, report_weight=4.0)
    everyone, _, _ = learning.class_counts(conn, left_out=[])
    assert everyone.spam_words == {"win": 5.0, "cash": 1.0, "now": 4.0}
    assert everyone.ham_words == {"lunch": 4.0, "now": 4.0}
    assert (everyone.spam_messages, everyone.ham_messages) == (5.0, 4.0)
    # The capped message is out of the model, but part of what the impact check weighs.
    assert "free" not in everyone.spam_words
    with_capped, _, _ = learning.class_counts(conn, left_out=[], with_capped=True)
    assert with_capped.spam_words["free"] == 4.0
    reporter = learning.reporter_counts(conn)[3]
    assert reporter.spam_words == {"win": 4.0, "now": 4.0, "free": 4.0, "gift": 4.0}
    assert reporter.ham_words == {}
    without, spam_rows, rows = learning.class_counts(conn, left_out=[3])
    assert without.spam_words == {"win": 1.0, "cash": 1.0} and (spam_rows, rows) == (1, 2)


def test_a_broadcasts_copies_count_and_calibrate_as_one_message():
    spam = [(True, f"win a cash prize {i}", "sms_spam_collection", None, False) for i in range(200)]
    ham = [
        (False, f"see you at lunch {i}", "sms_spam_collection", None, False) for i in range(3000)
    ]
    # A legitimate text in prize words, sent ten times: ten of the highest out-of-fold scores.
    copies = [(False, "win a cash prize", "sms_spam_collection", None, False)] * 10

    def threshold(copy_weight: float) -> float:
        conn = _training_split(spam + ham + [(*copy, copy_weight) for copy in copies])
        learning.count_training_words(conn, report_weight=1.0)
        counts, _, _ = learning.class_counts(conn, left_out=[])
        assert counts.ham_words["prize"] == pytest.approx(10 * copy_weight)
        # The class shares still count every copy: each is a message someone receives.
        assert counts.ham_messages == 3010
        return learning.calibrate_threshold(conn, [], 0.1, 0.002, 0.0075, -100.0).score

    # Counted per copy they fill the 0.2% budget (6 of 3,010 messages), and the threshold stays
    # at their score; as one message they are under it, and the threshold falls below them.
    assert threshold(0.1) < threshold(1.0) - 1


def test_a_budget_needs_enough_messages_counting_a_broadcast_once():
    spam = [(True, f"win a cash prize {i}", "sms_spam_collection", None, False) for i in range(200)]
    # 3,000 legitimate rows, but 300 texts sent ten times each: 0.6 message at a 0.2% budget.
    ham = [
        (False, f"see you at lunch {i // 10}", "sms_spam_collection", None, False, 0.1)
        for i in range(3000)
    ]
    conn = _training_split(spam + ham)
    learning.count_training_words(conn, report_weight=1.0)
    threshold = learning.calibrate_threshold(conn, [], 0.1, 0.002, 0.0075, -100.0)
    assert (threshold.score, threshold.reason) == (-100.0, "the false-positive cost")


def _collection_split(texts: list[str], seed: int) -> duckdb.DuckDBPyConnection:
    """A warehouse whose dataset is `texts` from the collection (spam), split with `seed`."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_dataset AS SELECT true AS spam, unnest($texts) AS body, "
        "'sms_spam_collection' AS source, false AS synthetic, NULL::INTEGER AS reporter_id, "
        "false AS capped",
        {"texts": texts},
    )
    training._split(conn, training.SpamModelConfig(seed=seed, test_size=0.5))
    return conn


def _training_weights(conn: duckdb.DuckDBPyConnection) -> dict[str, float]:
    return dict(conn.execute("SELECT body, weight FROM public.spam_training_dataframe").fetchall())


def test_a_broadcasts_copies_in_the_training_split_share_one_weight():
    copies = [f"claim your prize {i}" for i in range(40)]
    weights = _training_weights(_collection_split([*copies, "see you at lunch"], seed=0))
    trained_copies = [weights[text] for text in copies if text in weights]
    # The copies the test split holds take no share of the broadcast's weight.
    assert 10 < len(trained_copies) < 30 and sum(trained_copies) == pytest.approx(1.0)


def test_a_held_out_text_never_links_two_training_texts_into_one_broadcast():
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
    linking = " ".join(words)
    # Each 0.7 similar to the linking text, 0.4 to each other: one broadcast only through it.
    first, second = " ".join(words[:-3]), " ".join(words[3:])
    for seed in range(100):
        conn = _collection_split([linking, first, second], seed)
        weights = _training_weights(conn)
        if linking not in weights and first in weights and second in weights:
            assert weights == {first: 1.0, second: 1.0}
            return
    pytest.fail("no seed held out the linking text alone")


def test_no_copy_of_a_gold_text_is_trained_on():
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_dataset AS "
        "SELECT i % 2 = 0 AS spam, 'verified message ' || i AS body, 'gold' AS source, "
        "false AS synthetic, NULL::INTEGER AS reporter_id, false AS capped FROM range(40) AS r(i)"
    )
    # The same texts reported with the opposite label, and in the product's messages.
    conn.execute(
        "INSERT INTO public.spam_dataset "
        "SELECT NOT spam, body, 'reports', false, 5, false FROM public.spam_dataset "
        "UNION ALL SELECT spam, body, 'messages', false, NULL, false FROM public.spam_dataset "
        "UNION ALL SELECT false, 'another message ' || i, 'messages', false, NULL, false "
        "FROM range(100) AS r(i)"
    )
    training._split(conn, training.SpamModelConfig())
    trained_on = [
        body
        for (body,) in conn.execute("SELECT body FROM public.spam_training_dataframe").fetchall()
    ]
    assert trained_on and not [body for body in trained_on if body.startswith("verified")]


def test_the_vocabulary_is_chosen_by_the_messages_the_model_learns_from():
    conn = _training_split(
        [
            (True, "win cash", "sms_spam_collection", None, False),
            (False, "lunch at noon", "sms_spam_collection", None, False),
        ]
        # A flood of junk over reporter 9's share, each junk word more frequent than any other.
        + [(True, "junk1 junk2 junk3 junk4 junk5", "reports", 9, True)] * 50
    )
    learning.count_training_words(conn, report_weight=1.0, max_vocabulary=5)
    counts, _, _ = learning.class_counts(conn, left_out=[])
    assert set(counts.spam_words) | set(counts.ham_words) == {"win", "cash", "lunch", "at", "noon"}


@pytest.mark.parametrize("batch_rows", [scoring.SCORE_BATCH_ROWS, 7])
def test_two_models_scored_in_one_pass_match_each_scored_alone(sms, batch_rows, monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", batch_rows)
    first = train_model(sms[:2000], alpha=0.1, false_positive_cost=8.0)
    second = train_model(sms[2000:4000], alpha=1.0, false_positive_cost=1.0)
    rows = [(spam, text) for text, spam in sms[4000:4300]] + [(False, t) for t in EDGE_TEXTS]
    conn = _warehouse_with(rows, group="user", reporter=7)
    both = scoring.score_models(conn, [first, second])
    assert both == [score_test_split(conn, first), score_test_split(conn, second)]
    assert both[0] != both[1]
    assert all(s.user.messages == 0 for s in scoring.score_models(conn, [first, second], None, [7]))


def test_the_test_split_scores_a_bounded_sample_of_user_messages_and_the_curated_sets_whole():
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA public")
    conn.execute(
        "CREATE TABLE public.spam_dataset AS "
        "SELECT i % 2 = 0 AS spam, 'message ' || i AS body, "
        "CASE WHEN i < 1000 THEN 'sms_spam_collection' WHEN i < 1100 THEN 'gold' "
        "ELSE 'messages' END AS source, false AS synthetic, NULL::INTEGER AS reporter_id, "
        "false AS capped FROM range(21100) AS r(i)"
    )
    config = training.SpamModelConfig(max_test_messages=1500)
    scored_share = training._split(conn, config)
    assert scored_share == pytest.approx(1500 / 20000)
    groups = dict(
        conn.execute(
            "SELECT metric_group, count(*) FROM public.spam_testing_dataframe GROUP BY ALL"
        ).fetchall()
    )
    unbounded = training._split(conn, training.SpamModelConfig(max_test_messages=0))
    whole = dict(
        conn.execute(
            "SELECT metric_group, count(*) FROM public.spam_testing_dataframe GROUP BY ALL"
        ).fetchall()
    )
    assert unbounded == config.test_size
    assert groups["gold"] == whole["gold"]  # the SMS collection's held-out share and all of gold
    assert 1300 < groups["user"] < 1700 and 5400 < whole["user"] < 6600
    # The sample is held out all the same: training sees none of the unscored held-out messages.
    (training_rows,) = conn.execute(
        "SELECT count(*) FROM public.spam_training_dataframe"
    ).fetchone()
    assert training_rows + whole["gold"] + whole["user"] == 21100


def _buffered_megabytes(conn: duckdb.DuckDBPyConnection) -> float:
    (used,) = conn.execute("SELECT sum(memory_usage_bytes) / 1e6 FROM duckdb_memory()").fetchone()
    return used


def test_released_memory_keeps_the_cap_and_the_tables(tmp_path):
    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"), config={"memory_limit": "256MB"})
    conn.execute(
        "CREATE TEMP TABLE texts AS SELECT repeat('spam ', 20) || range AS body FROM range(400000)"
    )
    (cap,) = conn.execute("SELECT current_setting('memory_limit')").fetchone()
    assert _buffered_megabytes(conn) > 20

    release_memory(conn)

    assert _buffered_megabytes(conn) < 5
    assert conn.execute("SELECT current_setting('memory_limit')").fetchone() == (cap,)
    assert conn.execute("SELECT count(DISTINCT body) FROM texts").fetchone() == (400_000,)


# DuckDB shows 256MB as `244.1 MiB`: the middle of what that covers, 244.15 MiB, reads back.
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("256MB", int(244.15 * 2**20)),
        ("100KB", int(97.65 * 2**10)),
        ("2.5GB", int(2.35 * 2**30)),
        ("5TB", int(4.55 * 2**40)),
        ("1GB", int(953.65 * 2**20)),
    ],
)
def test_the_memory_cap_reads_back_in_bytes(setting, expected):
    conn = duckdb.connect(config={"memory_limit": setting})
    assert memory_limit_bytes(conn) == expected


def test_a_smaller_cap_counts_in_more_chunks():
    small = duckdb.connect(config={"memory_limit": "64MB"})
    large = duckdb.connect(config={"memory_limit": "256MB"})
    assert learning.messages_per_count_chunk(large) == pytest.approx(
        4 * learning.messages_per_count_chunk(small), rel=0.01
    )


def _settings(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    (value,) = conn.execute("SELECT current_setting($name)", {"name": name}).fetchone()
    return value


def test_a_capped_block_holds_duckdb_to_the_lower_cap_and_gives_back_its_own(tmp_path):
    conn = duckdb.connect(str(tmp_path / "large.duckdb"), config={"memory_limit": "256MB"})
    small = duckdb.connect(str(tmp_path / "small.duckdb"), config={"memory_limit": "16MB"})
    in_memory = duckdb.connect(config={"memory_limit": "256MB"})
    with pytest.raises(RuntimeError), memory_capped(conn, 32 * 10**6):
        with memory_capped(small, 32 * 10**6), memory_capped(in_memory, 32 * 10**6):
            assert _settings(conn, "memory_limit") == "30.5 MiB"
            assert _settings(small, "memory_limit") == "15.2 MiB"
            # Left alone: it would spill into the working directory.
            assert _settings(in_memory, "memory_limit") == "244.1 MiB"
        raise RuntimeError("the block fails")
    assert _settings(conn, "memory_limit") == "244.1 MiB"
    assert _settings(small, "memory_limit") == "15.2 MiB"


def test_the_streaming_cap_grows_with_duckdbs_threads(tmp_path):
    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"), config={"threads": 3})
    with memory_capped(conn):
        assert memory_limit_bytes(conn) == pytest.approx(3 * STREAMING_BYTES_PER_THREAD, rel=0.01)


def test_scoring_builds_its_join_on_the_vocabulary_and_leaves_the_optimizer_as_it_was(sms):
    model = train_model(sms[:4000], alpha=0.1, false_positive_cost=8.0)
    conn = _warehouse_with([(spam, text) for text, spam in sms[4000:]])
    install_tokenizer(conn)
    scoring._store_log_odds(conn, [model])
    params = {"first_prior": 0.0, "second_prior": 0.0, "first": 0, "stop": 10**6, "left_out": []}
    with scoring._join_sides_as_written(conn):
        plan = conn.sql(scoring.SCORE_TEST_SPLIT_BATCH, params=params).explain()
    # A LEFT join builds its hash table on the right side, the model's words; DuckDB's own choice
    # (a RIGHT join) builds it on every token of the batch.
    assert "Join Type: LEFT" in plan
    assert "Join Type: RIGHT" not in plan
    assert _settings(conn, "disabled_optimizers") == ""
    conn.execute("SET disabled_optimizers = 'top_n'")
    with pytest.raises(RuntimeError), scoring._join_sides_as_written(conn):
        raise RuntimeError("the statement fails")
    assert _settings(conn, "disabled_optimizers") == "top_n"
