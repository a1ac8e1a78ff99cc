"""Training: split the dataset, count words per class, and build the model from the counts."""

import dagster as dg
import duckdb

from spam_filter import constants, tables
from spam_filter.assets.ingestion import spam_dataset
from spam_filter.resources import Warehouse
from spam_filter.spam import SpamModel, TrainedModel, decision_prior, smoothed_bags_of_words
from spam_filter.tokenizer_sql import install_tokenizer

GROUP = "training"
PICKLE_IO_MANAGER = "pickle_io_manager"
TOP_WORDS = 15

# The training split is a view, which cannot hold parameters, so the seed and the test share live
# in a one-row table that both splits read.
WRITE_SPLIT_SETTINGS = """
    CREATE OR REPLACE TABLE public.spam_split_settings AS
    SELECT $seed::INTEGER AS seed, $test_size::DOUBLE AS test_size
"""

# A message goes to the test split when the hash of its text and the seed falls under test_size:
# deterministic, needs no shuffle in memory, and keeps duplicate texts on one side.
CREATE_TRAINING_VIEW = """
    CREATE OR REPLACE VIEW public.spam_training_dataframe AS
    SELECT spam, body
    FROM public.spam_dataset, public.spam_split_settings AS split
    WHERE hash(body, split.seed) % 1000000 >= split.test_size * 1000000
"""

# The test split stays a table: scoring numbers its messages by rowid, which a view lacks.
CREATE_TESTING_TABLE = """
    CREATE OR REPLACE TABLE public.spam_testing_dataframe AS
    SELECT spam, body
    FROM public.spam_dataset, public.spam_split_settings AS split
    WHERE hash(body, split.seed) % 1000000 < split.test_size * 1000000
"""

COUNT_TRAINING_WORDS = """
    SELECT word, count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam)
    FROM (
        SELECT spam, unnest(string_split(spam_token_text(body), ' ')) AS word
        FROM public.spam_training_dataframe
    )
    WHERE word <> ''
    GROUP BY word
"""

COUNT_TRAINING_MESSAGES = """
    SELECT count(*) FILTER (WHERE spam), count(*) FROM public.spam_training_dataframe
"""

COUNT_TESTING_MESSAGES = """
    SELECT count(*) FILTER (WHERE spam), count(*) FROM public.spam_testing_dataframe
"""


class SpamModelConfig(dg.Config):
    """How the dataset is split, and how the model is smoothed and decides."""

    alpha: float = constants.ALPHA
    """Additive smoothing: the count every vocabulary word gets in both classes."""
    test_size: float = constants.TEST_SIZE
    """Share of messages held out for scoring."""
    seed: int = constants.SPLIT_SEED
    """Seed of the hash that assigns each message to the training or the testing split."""
    false_positive_cost: float = constants.FALSE_POSITIVE_COST
    """Missed spams that one hidden legitimate message is worth; raises the bar for calling spam."""


@dg.multi_asset(
    name="spam_model",
    group_name=GROUP,
    deps=[spam_dataset],
    outs={
        "spam_model": dg.AssetOut(io_manager_key=PICKLE_IO_MANAGER),
        "spam_bag_of_words": dg.AssetOut(io_manager_key=PICKLE_IO_MANAGER),
        "non_spam_bag_of_words": dg.AssetOut(io_manager_key=PICKLE_IO_MANAGER),
        "spam_training_dataframe": dg.AssetOut(kinds={"duckdb"}),
        "spam_testing_dataframe": dg.AssetOut(kinds={"duckdb"}),
    },
)
def spam_model(context: dg.AssetExecutionContext, config: SpamModelConfig, warehouse: Warehouse):
    """Split the dataset, count words per class, and train the model from the smoothed counts."""
    if not 0 < config.test_size < 1:
        raise dg.Failure(f"test_size must lie between 0 and 1, not {config.test_size}")
    with warehouse.get_connection() as conn:
        _split(conn, config)
        context.log.info("split the dataset; counting words of the training messages")
        install_tokenizer(conn)
        counts = conn.execute(COUNT_TRAINING_WORDS).fetchall()
        train_spam, train_total = conn.execute(COUNT_TRAINING_MESSAGES).fetchone()
        test_spam, test_total = conn.execute(COUNT_TESTING_MESSAGES).fetchone()
        previews = {
            name: tables.preview(conn, name)
            for name in ("spam_training_dataframe", "spam_testing_dataframe")
        }
    spam_counts = {word: spam for word, spam, _ in counts if spam}
    non_spam_counts = {word: ham for word, _, ham in counts if ham}
    trained = _train(spam_counts, non_spam_counts, train_spam, train_total, config)
    context.log.info(
        f"trained on {train_total:,} messages ({train_spam:,} spam); "
        f"vocabulary {trained.model.vocabulary_size:,}"
    )
    yield dg.Output(trained, "spam_model", metadata=_model_metadata(trained))
    bag_metadata = {"vocabulary_size": trained.model.vocabulary_size, "alpha": config.alpha}
    yield dg.Output(
        dict(trained.model.spam_bow),
        "spam_bag_of_words",
        metadata={**bag_metadata, "spam_words": sum(spam_counts.values())},
    )
    yield dg.Output(
        dict(trained.model.non_spam_bow),
        "non_spam_bag_of_words",
        metadata={**bag_metadata, "non_spam_words": sum(non_spam_counts.values())},
    )
    for name, spam_rows, rows in (
        ("spam_training_dataframe", train_spam, train_total),
        ("spam_testing_dataframe", test_spam, test_total),
    ):
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                "row_count": rows,
                "spam_count": spam_rows,
                "seed": config.seed,
                "test_size": config.test_size,
                "preview": dg.MetadataValue.md(previews[name]),
            },
        )


def _split(conn: duckdb.DuckDBPyConnection, config: SpamModelConfig) -> None:
    conn.execute(WRITE_SPLIT_SETTINGS, {"seed": config.seed, "test_size": config.test_size})
    tables.make_room_for(conn, "spam_training_dataframe")
    conn.execute(CREATE_TRAINING_VIEW)
    tables.make_room_for(conn, "spam_testing_dataframe")
    conn.execute(CREATE_TESTING_TABLE)


def _train(
    spam_counts: dict[str, int],
    non_spam_counts: dict[str, int],
    training_spam: int,
    training_messages: int,
    config: SpamModelConfig,
) -> TrainedModel:
    """The model from word counts: smoothed bags of words and the cost-discounted prior."""
    spam_bow, non_spam_bow = smoothed_bags_of_words(spam_counts, non_spam_counts, config.alpha)
    try:
        prior = decision_prior(training_spam, training_messages, config.false_positive_cost)
    except ValueError as error:
        raise dg.Failure(f"cannot train: {error}") from None
    return TrainedModel(
        model=SpamModel(spam_bow, non_spam_bow, prior),
        training_messages=training_messages,
        training_spam=training_spam,
        alpha=config.alpha,
        false_positive_cost=config.false_positive_cost,
        seed=config.seed,
        test_size=config.test_size,
    )


def _model_metadata(trained: TrainedModel) -> dict:
    top_words = trained.top_spam_words(TOP_WORDS)
    return {
        "training_messages": trained.training_messages,
        "training_spam": trained.training_spam,
        "spam_share": trained.spam_share,
        "decision_prior": trained.model.percent_spam,
        "vocabulary_size": trained.model.vocabulary_size,
        "alpha": trained.alpha,
        "false_positive_cost": trained.false_positive_cost,
        "most_spam_indicative_words": dg.MetadataValue.md(
            "| word | log-odds |\n|---|---|\n"
            + "\n".join(f"| `{word}` | {odds:.2f} |" for word, odds in top_words)
        ),
    }
