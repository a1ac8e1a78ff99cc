"""Scoring a model on the warehouse's test split, in SQL, by who labelled each message."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import duckdb
import pandas as pd

from spam_filter.spam import SpamModel
from spam_filter.tokenizer_sql import install_tokenizer
from spam_filter.warehouse_memory import release_memory


@dataclass(frozen=True)
class Score:
    """A confusion matrix and the rates the promotion rule and the UI use."""

    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    @property
    def messages(self) -> int:
        return (
            self.true_positives + self.false_positives + self.true_negatives + self.false_negatives
        )

    @property
    def true_positive_rate(self) -> float:
        spam = self.true_positives + self.false_negatives
        return self.true_positives / spam if spam else 0.0

    @property
    def false_positive_rate(self) -> float:
        ham = self.false_positives + self.true_negatives
        return self.false_positives / ham if ham else 0.0

    @property
    def accuracy(self) -> float:
        return (self.true_positives + self.true_negatives) / self.messages if self.messages else 0.0

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "true_positive_rate": self.true_positive_rate,
            "false_positive_rate": self.false_positive_rate,
            "accuracy": self.accuracy,
            "precision": self.precision,
        }

    def confusion_markdown(self) -> str:
        return (
            "| | predicted spam | predicted not spam |\n|---|---|---|\n"
            f"| **spam** | {self.true_positives} | {self.false_negatives} |\n"
            f"| **not spam** | {self.false_positives} | {self.true_negatives} |"
        )


# Who labelled a test message: the gold set decides promotion, user reports show what the product
# sees, and synthetic sample rows are only reported.
METRIC_GROUPS = ("gold", "user", "synthetic")


@dataclass(frozen=True)
class SplitScores:
    """A model's scores on the test split, one per metric group."""

    gold: Score
    user: Score
    synthetic: Score

    def as_metadata(self, prefix: str = "") -> dict[str, float]:
        """Rates and counts for the UI, as `<prefix><group>_<rate>`."""
        return {
            f"{prefix}{group}_{name}": value
            for group in METRIC_GROUPS
            if getattr(self, group).messages
            for name, value in (
                ("true_positive_rate", getattr(self, group).true_positive_rate),
                ("false_positive_rate", getattr(self, group).false_positive_rate),
                ("messages", getattr(self, group).messages),
            )
        }


# Messages are scored a batch of rowids at a time: the per-message sums are the only state that
# grows with the number of messages, and batches keep it bounded: 200,000 realistic messages took
# about 70 MB of DuckDB's memory.
SCORE_BATCH_ROWS = 200_000
# The optimizer that picks which side of a join DuckDB builds its hash table on.
_SIDE_SWAPPING_OPTIMIZER = "build_side_probe_side"

# The log-odds of up to two models side by side: a word one model lacks is NULL in its column.
STORE_LOG_ODDS = """
    CREATE OR REPLACE TEMP TABLE model_log_odds AS
    SELECT
        word,
        first_model.log_odds AS first_log_odds,
        second_model.log_odds AS second_log_odds
    FROM first_log_odds_frame AS first_model
    FULL OUTER JOIN second_log_odds_frame AS second_model USING (word)
"""
DROP_LOG_ODDS = "DROP TABLE model_log_odds"
TEST_SPLIT_ROWID_END = "SELECT coalesce(max(rowid) + 1, 0) FROM public.spam_testing_dataframe"

# Both models in one pass, each message tokenized once, with no join back to the messages:
# splitting always yields at least one piece (an empty text gives [''], a null one is given ['']),
# so every message keeps a row, and pieces outside a vocabulary (the empty ones included) add
# nothing to its sum: a message without any vocabulary word keeps the prior alone. The null case is
# handled on the list, not with coalesce(body, ''), which would make DuckDB tokenize every row
# instead of every distinct value of a dictionary column. Messages of reporters left out of the
# run are left out of its scores too.
SCORE_TEST_SPLIT_BATCH = """
    WITH decisions AS (
        SELECT
            any_value(spam) AS spam,
            any_value(metric_group) AS metric_group,
            $first_prior + coalesce(sum(first_log_odds), 0) > 0 AS first_flagged,
            $second_prior + coalesce(sum(second_log_odds), 0) > 0 AS second_flagged
        FROM (
            SELECT
                rowid AS message_id,
                spam,
                metric_group,
                unnest(coalesce(string_split(spam_token_text(body), ' '), [''])) AS word
            FROM public.spam_testing_dataframe
            WHERE rowid >= $first AND rowid < $stop
                AND (reporter_id IS NULL OR NOT list_contains($left_out::INTEGER[], reporter_id))
        ) LEFT JOIN model_log_odds USING (word)
        GROUP BY message_id
    )
    SELECT
        metric_group,
        count(*) FILTER (WHERE spam AND first_flagged),
        count(*) FILTER (WHERE NOT spam AND first_flagged),
        count(*) FILTER (WHERE NOT spam AND NOT first_flagged),
        count(*) FILTER (WHERE spam AND NOT first_flagged),
        count(*) FILTER (WHERE spam AND second_flagged),
        count(*) FILTER (WHERE NOT spam AND second_flagged),
        count(*) FILTER (WHERE NOT spam AND NOT second_flagged),
        count(*) FILTER (WHERE spam AND NOT second_flagged)
    FROM decisions
    GROUP BY metric_group
"""


def score_test_split(
    conn: duckdb.DuckDBPyConnection,
    model: SpamModel,
    progress: Callable[[int, int], None] | None = None,
    left_out_reporters: list[int] | None = None,
) -> SplitScores:
    """Score one model on the warehouse's `spam_testing_dataframe` table; see `score_models`."""
    (scores,) = score_models(conn, [model], progress, left_out_reporters)
    return scores


def score_models(
    conn: duckdb.DuckDBPyConnection,
    models: Sequence[SpamModel],
    progress: Callable[[int, int], None] | None = None,
    left_out_reporters: list[int] | None = None,
) -> list[SplitScores]:
    """Score one or two models on every message of `spam_testing_dataframe`, inside DuckDB.

    Joins each message's tokens to the models' per-word log-odds, which is the same sum
    `SpamModel.score` computes in Python, so no message is ever held in Python; each message is
    tokenized once for both models. `progress`, if given, is called with (rows scored, rows in
    all) after each batch. Messages that only a reporter in `left_out_reporters` supports are not
    scored.
    """
    if not 1 <= len(models) <= 2:
        raise ValueError(f"scores one or two models at a time, not {len(models)}")
    install_tokenizer(conn)
    _store_log_odds(conn, models)
    priors = [model.prior_log_odds for model in models] + [0.0]
    (stop,) = conn.execute(TEST_SPLIT_ROWID_END).fetchone()
    totals = {group: [0] * 8 for group in METRIC_GROUPS}
    with _join_sides_as_written(conn):
        for first in range(0, stop, SCORE_BATCH_ROWS):
            rows = conn.execute(
                SCORE_TEST_SPLIT_BATCH,
                {
                    "first_prior": priors[0],
                    "second_prior": priors[1],
                    "first": first,
                    "stop": first + SCORE_BATCH_ROWS,
                    "left_out": left_out_reporters or [],
                },
            ).fetchall()
            for group, *counts in rows:
                totals[group] = [a + int(b) for a, b in zip(totals[group], counts, strict=True)]
            # Each batch reads its messages once: cached, they would fill DuckDB's whole cap beside
            # the models that Python holds. (Under the streaming cap instead, 30M ran out of
            # memory here.)
            release_memory(conn)
            if progress is not None:
                progress(min(first + SCORE_BATCH_ROWS, stop), stop)
    conn.execute(DROP_LOG_ODDS)
    return [
        SplitScores(*(Score(*totals[group][4 * index : 4 * index + 4]) for group in METRIC_GROUPS))
        for index in range(len(models))
    ]


@contextmanager
def _join_sides_as_written(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Keep DuckDB from swapping a join's sides for the statements run inside.

    DuckDB estimates an unnest at one row per message, so in the scoring batch it would build its
    hash table on the tokens (ten times the messages, with their group and label) rather than on
    the vocabulary: a batch of 200,000 messages then took about 220 MB instead of 70. The setting
    is global to the database, like the memory cap (see `warehouse_memory`), and is restored when
    the block ends.
    """
    (disabled,) = conn.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    conn.execute(
        "SET disabled_optimizers = $optimizers",
        {"optimizers": ",".join(filter(None, [disabled, _SIDE_SWAPPING_OPTIMIZER]))},
    )
    try:
        yield
    finally:
        conn.execute("SET disabled_optimizers = $optimizers", {"optimizers": disabled})


def _store_log_odds(conn: duckdb.DuckDBPyConnection, models: Sequence[SpamModel]) -> None:
    frames = [
        pd.DataFrame({"word": list(model.log_odds), "log_odds": list(model.log_odds.values())})
        for model in models
    ]
    if len(frames) == 1:
        frames.append(pd.DataFrame({"word": pd.Series(dtype=str), "log_odds": []}))
    conn.register("first_log_odds_frame", frames[0])
    conn.register("second_log_odds_frame", frames[1])
    try:
        conn.execute(STORE_LOG_ODDS)
    finally:
        conn.unregister("first_log_odds_frame")
        conn.unregister("second_log_odds_frame")
