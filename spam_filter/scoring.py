"""Scoring a model on the warehouse's test split, in SQL, by who labelled each message."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import duckdb
import pandas as pd

from spam_filter.spam import SpamModel
from spam_filter.tokenizer_sql import install_tokenizer


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
# grows with the number of messages, and batches keep it bounded (about 40 MB each).
SCORE_BATCH_ROWS = 500_000

STORE_LOG_ODDS = "CREATE OR REPLACE TEMP TABLE model_log_odds AS SELECT * FROM model_log_odds_frame"
DROP_LOG_ODDS = "DROP TABLE model_log_odds"
TEST_SPLIT_ROWID_END = "SELECT coalesce(max(rowid) + 1, 0) FROM public.spam_testing_dataframe"

# One pass, with no join back to the messages: splitting always yields at least one piece (an
# empty text gives [''], a null one is given ['']), so every message keeps a row, and pieces outside
# the vocabulary (the empty ones included) add nothing: a message without any vocabulary word
# keeps the prior alone. The null case is handled on the list, not with coalesce(body, ''), which
# would make DuckDB tokenize every row instead of every distinct value of a dictionary column.
# Identical messages (a spam campaign, a canned reply) are scored once and counted `copies` times.
# Messages of reporters left out of the run are left out of its scores too.
SCORE_TEST_SPLIT_BATCH = """
    WITH messages AS (
        SELECT spam, body, metric_group, count(*) AS copies
        FROM public.spam_testing_dataframe
        WHERE rowid >= $first AND rowid < $stop
            AND (reporter_id IS NULL OR NOT list_contains($left_out::INTEGER[], reporter_id))
        GROUP BY spam, body, metric_group
    ),
    decisions AS (
        SELECT
            any_value(spam) AS spam,
            any_value(metric_group) AS metric_group,
            any_value(copies) AS copies,
            $prior_log_odds + coalesce(sum(log_odds), 0) > 0 AS flagged
        FROM (
            SELECT
                message_id,
                spam,
                metric_group,
                copies,
                unnest(coalesce(string_split(spam_token_text(body), ' '), [''])) AS word
            FROM (SELECT row_number() OVER () AS message_id, * FROM messages)
        ) LEFT JOIN model_log_odds USING (word)
        GROUP BY message_id
    )
    SELECT
        metric_group,
        coalesce(sum(copies) FILTER (WHERE spam AND flagged), 0),
        coalesce(sum(copies) FILTER (WHERE NOT spam AND flagged), 0),
        coalesce(sum(copies) FILTER (WHERE NOT spam AND NOT flagged), 0),
        coalesce(sum(copies) FILTER (WHERE spam AND NOT flagged), 0)
    FROM decisions
    GROUP BY metric_group
"""


def score_test_split(
    conn: duckdb.DuckDBPyConnection,
    model: SpamModel,
    progress: Callable[[int, int], None] | None = None,
    left_out_reporters: list[int] | None = None,
) -> SplitScores:
    """Score every message of the warehouse's `spam_testing_dataframe` table inside DuckDB.

    Joins each message's tokens to the model's per-word log-odds, which is the same sum
    `SpamModel.score` computes in Python, so no message is ever held in Python. `progress`, if
    given, is called with (rows scored, rows in all) after each batch. Messages that only a
    reporter in `left_out_reporters` supports are not scored.
    """
    install_tokenizer(conn)
    log_odds = pd.DataFrame(
        {"word": list(model.log_odds), "log_odds": list(model.log_odds.values())}
    )
    conn.register("model_log_odds_frame", log_odds)
    try:
        conn.execute(STORE_LOG_ODDS)
    finally:
        conn.unregister("model_log_odds_frame")
    (stop,) = conn.execute(TEST_SPLIT_ROWID_END).fetchone()
    totals = {group: [0, 0, 0, 0] for group in METRIC_GROUPS}
    for first in range(0, stop, SCORE_BATCH_ROWS):
        rows = conn.execute(
            SCORE_TEST_SPLIT_BATCH,
            {
                "prior_log_odds": model.prior_log_odds,
                "first": first,
                "stop": first + SCORE_BATCH_ROWS,
                "left_out": left_out_reporters or [],
            },
        ).fetchall()
        for group, *counts in rows:
            totals[group] = [a + int(b) for a, b in zip(totals[group], counts, strict=True)]
        if progress is not None:
            progress(min(first + SCORE_BATCH_ROWS, stop), stop)
    conn.execute(DROP_LOG_ODDS)
    return SplitScores(*(Score(*totals[group]) for group in METRIC_GROUPS))
