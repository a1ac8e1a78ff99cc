"""Training: split the dataset, count words per class, and build the model from the counts."""

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from spam_filter import constants, learning, tables
from spam_filter.assets.ingestion import spam_dataset
from spam_filter.broadcasts import broadcast_weights
from spam_filter.reporter_impact import GoldSet, ReporterImpact, reporter_impacts
from spam_filter.resources import ApplicationDatabase, Warehouse
from spam_filter.spam import TrainedModel
from spam_filter.tunables import INT32_MAX, INT32_MIN, Tunables

GROUP = "training"
PICKLE_IO_MANAGER = "pickle_io_manager"
TOP_WORDS = 15

CREATE_REPORTERS_LEFT_OUT_IF_MISSING = """
    CREATE TABLE IF NOT EXISTS public.reporters_left_out (reporter_id INTEGER, reason VARCHAR)
"""

# The training split is a view, which cannot hold parameters, so the seed and the test share live
# in a one-row table that both splits read. `scored_share` (at most `test_size`) is the share of
# the product's messages that the test table keeps to score.
WRITE_SPLIT_SETTINGS = """
    CREATE OR REPLACE TABLE public.spam_split_settings AS
    SELECT
        $seed::INTEGER AS seed,
        $test_size::DOUBLE AS test_size,
        $scored_share::DOUBLE AS scored_share
"""

COUNT_USER_MESSAGES = """
    SELECT count(*) FROM public.spam_dataset WHERE source NOT IN ('sms_spam_collection', 'gold')
"""

# The curated gold texts, which no copy of may be trained on (see below).
WRITE_GOLD_BODIES = """
    CREATE OR REPLACE TABLE public.spam_gold_bodies AS
    SELECT DISTINCT body FROM public.spam_dataset WHERE source = 'gold'
"""

# A message goes to the test split when the hash of its text and the seed falls under test_size:
# deterministic, needs no shuffle in memory, and keeps duplicate texts on one side. The gold set
# only ever judges, so all of it is in the test split, and a copy of a gold text elsewhere (in
# the product's messages, in a report) is never trained on: gold would then judge a model on what
# it learned, with whatever label a reporter gave it.
# The SMS collection's training messages are kept in a small table with their weight in the word
# counts: the copies of one broadcast among them share one message's weight
# (`spam_filter.broadcasts`). They are grouped here, where the split is known, so that no held-out
# text takes a share or links two training texts into one broadcast. Every other message weighs 1
# (reports as `SpamModelConfig.report_weight` says).
COLLECTION_TRAINING_ROWS = """
    SELECT spam, body
    FROM public.spam_dataset, public.spam_split_settings AS split
    WHERE source = 'sms_spam_collection'
        AND hash(body, split.seed) % 1000000 >= split.test_size * 1000000
        AND body NOT IN (SELECT body FROM public.spam_gold_bodies)
"""

CREATE_COLLECTION_TRAINING = """
    CREATE OR REPLACE TABLE public.spam_collection_training (
        spam BOOLEAN, body VARCHAR, weight DOUBLE
    )
"""
WRITE_COLLECTION_TRAINING = """
    INSERT INTO public.spam_collection_training
    SELECT spam, body, weight FROM collection_training_frame
"""

CREATE_TRAINING_VIEW = """
    CREATE OR REPLACE VIEW public.spam_training_dataframe AS
    SELECT
        spam, body, 'sms_spam_collection' AS source, false AS synthetic,
        NULL::INTEGER AS reporter_id, false AS capped, weight
    FROM public.spam_collection_training
    UNION ALL
    SELECT spam, body, source, synthetic, reporter_id, capped, 1.0::DOUBLE
    FROM public.spam_dataset, public.spam_split_settings AS split
    WHERE source NOT IN ('gold', 'sms_spam_collection')
        AND hash(body, split.seed) % 1000000 >= split.test_size * 1000000
        AND body NOT IN (SELECT body FROM public.spam_gold_bodies)
"""

# The test split stays a table: scoring numbers its messages by rowid, which a view lacks. Each
# message is scored in the group of who labelled it: the curated sets, users, or sample data. The
# curated sets are kept whole; of the product's messages, those whose hash falls under the scored
# share: a seeded sample of the held-out ones, as large as the config allows, and all of them on
# smaller data. The rest are held out all the same: training never sees them.
CREATE_TESTING_TABLE = """
    CREATE OR REPLACE TABLE public.spam_testing_dataframe AS
    SELECT
        spam,
        body,
        CASE
            WHEN source IN ('sms_spam_collection', 'gold') THEN 'gold'
            WHEN synthetic THEN 'synthetic'
            ELSE 'user'
        END AS metric_group,
        reporter_id
    FROM public.spam_dataset, public.spam_split_settings AS split
    WHERE NOT capped AND (
        source = 'gold' OR hash(body, split.seed) % 1000000 < 1000000 * CASE
            WHEN source = 'sms_spam_collection' THEN split.test_size ELSE split.scored_share
        END
    )
"""

COUNT_TESTING_MESSAGES = """
    SELECT count(*) FILTER (WHERE spam), count(*) FROM public.spam_testing_dataframe
"""

# Reporters `user_messages` left out for contradicting what their votes could be checked against.
OUTVOTED_REPORTERS = "SELECT reporter_id, reason FROM public.reporters_left_out"

# The gold messages the impact check scores each reporter's effect on; a bounded seeded sample.
GOLD_TEST_MESSAGES = """
    SELECT spam, body
    FROM public.spam_testing_dataframe
    WHERE metric_group = 'gold'
    ORDER BY hash(body, 'impact')
    LIMIT 50000
"""


class SpamModelConfig(Tunables):
    """How the dataset is split, how reports weigh, and where the model calls spam."""

    alpha: float = Field(constants.ALPHA, gt=0, le=100)
    """Additive smoothing: the count every vocabulary word gets in both classes."""
    test_size: float = Field(constants.TEST_SIZE, gt=0, lt=1)
    """Share of messages held out for scoring."""
    seed: int = Field(constants.SPLIT_SEED, ge=INT32_MIN, le=INT32_MAX)
    """Seed of the hash that assigns each message to the training or the testing split."""
    false_positive_cost: float = Field(constants.FALSE_POSITIVE_COST, gt=0, le=10_000)
    """Missed spams that one hidden legitimate message is worth; the threshold never goes below
    the one this cost sets."""
    report_weight: float = Field(constants.REPORT_WEIGHT, ge=0, le=1_000)
    """How many training messages one message from users' reports counts as."""
    collection_false_positive_budget: float = Field(
        constants.COLLECTION_FALSE_POSITIVE_BUDGET, ge=0, lt=1
    )
    """Share of the SMS collection's legitimate training messages the threshold may flag (a
    broadcast's copies count as one message)."""
    user_false_positive_budget: float = Field(constants.USER_FALSE_POSITIVE_BUDGET, ge=0, lt=1)
    """Share of the users' legitimate training messages the threshold may flag."""
    impact_margin: float = Field(constants.IMPACT_MARGIN, ge=0)
    """Gold error cost a reporter's messages may add before the run leaves them out."""
    max_vocabulary: int = Field(constants.MAX_VOCABULARY, ge=0)
    """Words the model keeps, the most frequent in training (0 = all)."""
    max_test_messages: int = Field(constants.MAX_TEST_MESSAGES, ge=0)
    """About how many of the product's held-out messages are scored, a seeded sample (0 = all);
    the curated sets are always scored whole."""


@dg.multi_asset(
    name="spam_model",
    group_name=GROUP,
    deps=[spam_dataset],
    outs={
        "spam_model": dg.AssetOut(
            io_manager_key=PICKLE_IO_MANAGER,
            description="The trained model: its bags of words and its calibrated threshold.",
        ),
        "spam_bag_of_words": dg.AssetOut(
            io_manager_key=PICKLE_IO_MANAGER,
            description="P(word | spam) over the vocabulary, smoothed.",
        ),
        "non_spam_bag_of_words": dg.AssetOut(
            io_manager_key=PICKLE_IO_MANAGER,
            description="P(word | not spam) over the vocabulary, smoothed.",
        ),
        "spam_training_dataframe": dg.AssetOut(
            kinds={"duckdb"},
            description="The messages the model learns from: a view of the dataset's split.",
        ),
        "spam_testing_dataframe": dg.AssetOut(
            kinds={"duckdb"},
            description="The held-out messages and the gold set that models are scored on.",
        ),
    },
)
def spam_model(
    context: dg.AssetExecutionContext,
    config: SpamModelConfig,
    warehouse: Warehouse,
    database: ApplicationDatabase,
):
    """Split the dataset, leave out harmful reporters, and train the model and its threshold."""
    with warehouse.get_connection() as conn:
        scored_share = _split(conn, config)
        context.log.info("split the dataset; counting words of the training messages")
        disagreeing = _outvoted_reporters(conn)
        words_dropped = learning.count_training_words(
            conn, config.report_weight, config.max_vocabulary
        )
        if words_dropped:
            context.log.info(
                f"kept the {config.max_vocabulary:,} most frequent words, "
                f"dropped {words_dropped:,} rarer ones"
            )
        impacts = _reporter_impacts(conn, config, frozenset(disagreeing))
        left_out = sorted({i.reporter_id for i in impacts if i.left_out} | set(disagreeing))
        trained = _train(context, conn, config, left_out)
        test_spam, test_total = conn.execute(COUNT_TESTING_MESSAGES).fetchone()
        # The view's rows, with those the model left out (over a share, or a reporter's).
        _, _, training_spam, training_total = learning.message_totals(conn, [], with_capped=True)
        previews = {
            name: tables.preview(conn, name)
            for name in ("spam_training_dataframe", "spam_testing_dataframe")
        }
        learning.drop_learning_tables(conn)
    database.storage(on_wait=context.log.info).record_reporter_impacts(_flags(impacts, disagreeing))
    yield dg.Output(
        trained,
        "spam_model",
        metadata={**_model_metadata(trained, impacts), "rare_words_dropped": words_dropped},
    )
    bag_metadata = {"vocabulary_size": trained.model.vocabulary_size, "alpha": config.alpha}
    # The model's own dicts, not copies: each is as large as the vocabulary, and the IO manager
    # only pickles them.
    yield dg.Output(trained.model.spam_bow, "spam_bag_of_words", metadata=bag_metadata)
    yield dg.Output(trained.model.non_spam_bow, "non_spam_bag_of_words", metadata=bag_metadata)
    for name, spam_rows, rows, extra in (
        (
            "spam_training_dataframe",
            training_spam,
            training_total,
            {"messages_trained_on": trained.training_messages},
        ),
        (
            "spam_testing_dataframe",
            test_spam,
            test_total,
            {"scored_share_of_held_out_user_messages": scored_share / config.test_size},
        ),
    ):
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                tables.ROW_COUNT: rows,
                "spam_count": spam_rows,
                "seed": config.seed,
                "test_size": config.test_size,
                **extra,
                "preview": dg.MetadataValue.md(previews[name]),
            },
        )


def _split(conn: duckdb.DuckDBPyConnection, config: SpamModelConfig) -> float:
    """Write the split; returns the share of the product's messages the test table scores."""
    (user_rows,) = conn.execute(COUNT_USER_MESSAGES).fetchone()
    scored_share = config.test_size
    if config.max_test_messages > 0 and user_rows * config.test_size > config.max_test_messages:
        scored_share = config.max_test_messages / user_rows
    conn.execute(
        WRITE_SPLIT_SETTINGS,
        {"seed": config.seed, "test_size": config.test_size, "scored_share": scored_share},
    )
    conn.execute(WRITE_GOLD_BODIES)
    _write_collection_training(conn)
    tables.make_room_for(conn, "spam_training_dataframe")
    conn.execute(CREATE_TRAINING_VIEW)
    tables.make_room_for(conn, "spam_testing_dataframe")
    conn.execute(CREATE_TESTING_TABLE)
    return scored_share


def _write_collection_training(conn: duckdb.DuckDBPyConnection) -> None:
    """Write the collection's training messages with their weights (a few thousand rows)."""
    rows = conn.execute(COLLECTION_TRAINING_ROWS).fetchall()
    conn.execute(CREATE_COLLECTION_TRAINING)
    if not rows:
        return
    spam, bodies = zip(*rows, strict=True)
    frame = pd.DataFrame({"spam": spam, "body": bodies, "weight": broadcast_weights(bodies)})
    conn.register("collection_training_frame", frame)
    try:
        conn.execute(WRITE_COLLECTION_TRAINING)
    finally:
        conn.unregister("collection_training_frame")


def _outvoted_reporters(conn: duckdb.DuckDBPyConnection) -> dict[int, str]:
    """Reporters `user_messages` left out for being outvoted, with the reason."""
    conn.execute(CREATE_REPORTERS_LEFT_OUT_IF_MISSING)
    return dict(conn.execute(OUTVOTED_REPORTERS).fetchall())


def _reporter_impacts(
    conn: duckdb.DuckDBPyConnection, config: SpamModelConfig, already_left_out: frozenset[int]
) -> list[ReporterImpact]:
    """How each reporter's messages change the gold result, at the cost-set threshold."""
    reporters = learning.reporter_counts(conn)
    if not reporters:
        return []
    everyone, _, _ = learning.class_counts(conn, [], with_capped=True)
    if not everyone.spam_messages or not everyone.ham_messages:
        return []
    threshold = learning.cost_threshold(
        everyone.spam_messages, everyone.ham_messages, config.false_positive_cost
    )
    gold = GoldSet(conn.execute(GOLD_TEST_MESSAGES).fetchall())
    return reporter_impacts(
        gold,
        everyone,
        reporters,
        config.alpha,
        threshold,
        config.false_positive_cost,
        config.impact_margin,
        already_left_out,
    )


def _train(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    config: SpamModelConfig,
    left_out: list[int],
) -> TrainedModel:
    """The model from the counts of all but the left-out reporters, and its calibrated threshold."""
    context.log.info("counted the training messages; calibrating the threshold out of fold")
    try:
        learned = learning.learn(
            conn,
            left_out,
            config.alpha,
            config.false_positive_cost,
            config.collection_false_positive_budget,
            config.user_false_positive_budget,
        )
    except ValueError as error:
        raise dg.Failure(f"cannot train: {error}") from None
    context.log.info(
        f"trained on {learned.training_messages:,} messages ({learned.training_spam:,} spam), "
        f"vocabulary {learned.model.vocabulary_size:,}; threshold {learned.threshold.score:.3f}, "
        f"set by {learned.threshold.reason}"
    )
    return TrainedModel(
        model=learned.model,
        training_messages=learned.training_messages,
        training_spam=learned.training_spam,
        alpha=config.alpha,
        false_positive_cost=config.false_positive_cost,
        seed=config.seed,
        test_size=config.test_size,
        left_out_reporters=tuple(left_out),
        threshold_reason=learned.threshold.reason,
    )


def _flags(impacts: list[ReporterImpact], disagreeing: dict[int, str]) -> dict[int, str | None]:
    """Why each checked reporter was left out of this run, or None to clear an older flag."""
    flags: dict[int, str | None] = {
        impact.reporter_id: (
            f"left out of a run: its reports added {impact.harm:.1f} to the gold error cost"
            if impact.left_out
            else None
        )
        for impact in impacts
    }
    for reporter, reason in disagreeing.items():
        flags[reporter] = f"left out of a run: {reason}"
    return flags


def _model_metadata(trained: TrainedModel, impacts: list[ReporterImpact]) -> dict:
    top_words = trained.top_spam_words(TOP_WORDS)
    return {
        "training_messages": trained.training_messages,
        "training_spam": trained.training_spam,
        "spam_share": trained.spam_share,
        "decision_prior": trained.model.percent_spam,
        "threshold": trained.model.prior_log_odds * -1,
        "threshold_set_by": trained.threshold_reason,
        "vocabulary_size": trained.model.vocabulary_size,
        "alpha": trained.alpha,
        "false_positive_cost": trained.false_positive_cost,
        "reporters_checked": len(impacts),
        "reporters_left_out": len(trained.left_out_reporters),
        "reporter_impacts": dg.MetadataValue.md(
            "| reporter | messages | gold harm | left out |\n|---|---|---|---|\n"
            + "\n".join(
                f"| {i.reporter_id} | {i.messages:g} | {i.harm:g} | {i.left_out} |" for i in impacts
            )
        ),
        "most_spam_indicative_words": dg.MetadataValue.md(
            "| word | log-odds |\n|---|---|\n"
            + "\n".join(f"| `{word}` | {odds:.2f} |" for word, odds in top_words)
        ),
    }
