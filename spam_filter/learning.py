"""How the model learns in the warehouse: weighted word counts, per-reporter counts for the impact
check, and the decision threshold calibrated out of fold.

Naive Bayes counts are additive, so one pass over the training tokens, grouped by fold,
contributor and word, yields everything: the model (all counts), the model without a reporter
(all counts minus that reporter's), and the model without a fold (all counts minus that fold's),
which scores the fold's messages as if it had never seen them. The threshold is then placed where
those out-of-fold scores flag only a budgeted share of legitimate messages.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from spam_filter.spam import SpamModel, smoothed_bags_of_words
from spam_filter.tokenizer_sql import install_tokenizer
from spam_filter.warehouse_memory import memory_limit_bytes, release_memory

FOLDS = 5
_FOLD_SEED = 7919
MESSAGES_PER_BUDGETED_FALSE_POSITIVE = 5
# Rows fetched into Python at a time from results as long as the vocabulary.
_FETCH_BATCH_ROWS = 50_000
# Training messages counted in one statement, per MiB of the warehouse's memory cap (2M at the
# default 256 MB): at 1.4M a chunk stayed under 128 MB of DuckDB memory on realistic traffic, and
# 2M overflowed 64 MB.
COUNTED_MESSAGES_PER_MIB = 8_192

# A reporter's messages count towards it only where it alone supports their label (contributor);
# every other message is contributor 0. A message over its reporter's share (capped) counts as
# the negated reporter id: out of the model, but part of what the impact check weighs. Reports
# weigh `report_weight` training messages each.
#
# The messages are counted a chunk at a time, chunks drawn by the same hash as the folds: one
# aggregate over tens of millions of mostly distinct messages outgrows the warehouse's memory cap
# (30M did at 256 MB), while a chunk's stays the size of its own vocabulary. So a word may have a
# row per chunk for one fold and contributor; every query below sums them.
CREATE_TRAINING_WORD_COUNTS = """
    CREATE OR REPLACE TEMP TABLE training_word_counts (
        fold UBIGINT, contributor INTEGER, word VARCHAR, spam_count DOUBLE, ham_count DOUBLE
    )
"""

COUNT_TRAINING_WORDS_CHUNK = """
    INSERT INTO training_word_counts
    SELECT
        fold, contributor, word,
        coalesce(sum(weight) FILTER (WHERE spam), 0) AS spam_count,
        coalesce(sum(weight) FILTER (WHERE NOT spam), 0) AS ham_count
    FROM (
        SELECT fold, contributor, weight, spam, unnest(string_split(spam_token_text(body), ' '))
            AS word
        FROM (
            SELECT
                hash(body, $fold_seed) AS body_hash,
                body_hash % $folds AS fold,
                CASE WHEN capped THEN -reporter_id ELSE coalesce(reporter_id, 0) END AS contributor,
                CASE WHEN source = 'reports' THEN $report_weight ELSE weight END AS weight,
                spam,
                body
            FROM public.spam_training_dataframe
        )
        WHERE body_hash // $folds % $chunks = $chunk
    )
    WHERE word <> ''
    GROUP BY fold, contributor, word
"""

TRAINING_ROWS = "SELECT coalesce(sum(rows), 0) FROM training_message_counts"

# Messages count whole here, a broadcast's copies as well: they weigh what the class priors and
# the false-positive cost see, how much of the traffic is spam, which every copy is part of.
# Only the word counts split a broadcast's weight, as its copies are one choice of words.
COUNT_TRAINING_MESSAGES = """
    CREATE OR REPLACE TEMP TABLE training_message_counts AS
    SELECT
        hash(body, $fold_seed) % $folds AS fold,
        CASE WHEN capped THEN -reporter_id ELSE coalesce(reporter_id, 0) END AS contributor,
        coalesce(sum(weight) FILTER (WHERE spam), 0) AS spam_messages,
        coalesce(sum(weight) FILTER (WHERE NOT spam), 0) AS ham_messages,
        count(*) FILTER (WHERE spam) AS spam_rows,
        count(*) AS rows
    FROM (
        SELECT body, reporter_id, capped, spam,
            CASE WHEN source = 'reports' THEN $report_weight ELSE 1.0 END AS weight
        FROM public.spam_training_dataframe
    )
    GROUP BY fold, contributor
"""

VOCABULARY_SIZE = "SELECT count(DISTINCT word) FROM training_word_counts"

# Keeps the counts of the `max_vocabulary` most frequent words, ties broken by the word, so that
# the model, the threshold and the impact check all see one bounded vocabulary. Frequency counts
# only the messages the model may learn from: messages over a reporter's share would otherwise
# choose its words (a capped flood of junk words pushed the real ones out).
DROP_RAREST_WORDS = """
    DELETE FROM training_word_counts
    WHERE word IN (
        SELECT word
        FROM training_word_counts
        GROUP BY word
        ORDER BY coalesce(sum(spam_count + ham_count) FILTER (WHERE contributor >= 0), 0) DESC,
            word
        OFFSET $max_vocabulary
    )
"""

# The model's counts: every message but the capped ones and the left-out reporters' own; with
# $with_capped, the capped ones too (the world the impact check weighs reporters in).
WORD_TOTALS = """
    SELECT word, sum(spam_count), sum(ham_count)
    FROM training_word_counts
    WHERE (contributor >= 0 OR $with_capped)
        AND NOT list_contains($left_out::INTEGER[], abs(contributor))
    GROUP BY word
    HAVING sum(spam_count) + sum(ham_count) > 0
"""

MESSAGE_TOTALS = """
    SELECT
        coalesce(sum(spam_messages), 0), coalesce(sum(ham_messages), 0),
        coalesce(sum(spam_rows), 0), coalesce(sum(rows), 0)
    FROM training_message_counts
    WHERE (contributor >= 0 OR $with_capped)
        AND NOT list_contains($left_out::INTEGER[], abs(contributor))
"""

# Each reporter's counts over every message it alone supports, capped or not.
REPORTER_WORD_COUNTS = """
    SELECT abs(contributor), word, sum(spam_count), sum(ham_count)
    FROM training_word_counts
    WHERE contributor <> 0
    GROUP BY abs(contributor), word
"""

REPORTER_MESSAGE_COUNTS = """
    SELECT abs(contributor), sum(spam_messages), sum(ham_messages), sum(rows)
    FROM training_message_counts
    WHERE contributor <> 0
    GROUP BY abs(contributor)
"""

# Legitimate training messages to calibrate on, by who labelled them: the SMS collection, or the
# product's users. Sample data is left out, and a seeded top-N keeps each group bounded.
CALIBRATION_MESSAGES = """
    CREATE OR REPLACE TEMP TABLE calibration_messages AS
    SELECT row_number() OVER () AS message_id, fold, calibration_group, body, weight
    FROM (
        SELECT
            hash(body, $fold_seed) % $folds AS fold,
            CASE WHEN source = 'sms_spam_collection' THEN 'collection' ELSE 'user' END
                AS calibration_group,
            body,
            weight::DOUBLE AS weight
        FROM public.spam_training_dataframe
        WHERE NOT spam AND NOT synthetic AND NOT capped
            AND (reporter_id IS NULL OR NOT list_contains($left_out::INTEGER[], reporter_id))
        QUALIFY row_number() OVER (
            PARTITION BY calibration_group ORDER BY hash(body, $fold_seed, 'calibration')
        ) <= $per_group
    )
"""

CALIBRATION_TOKENS = """
    CREATE OR REPLACE TEMP TABLE calibration_tokens AS
    SELECT message_id, fold, word
    FROM (
        SELECT message_id, fold, unnest(string_split(spam_token_text(body), ' ')) AS word
        FROM calibration_messages
    )
    WHERE word <> ''
"""

# Each fold's model is every count but the fold's own: its log-odds for the calibration words,
# smoothed over the vocabulary that remains without the fold.
LEAVE_ONE_FOLD_OUT_LOG_ODDS = """
    CREATE OR REPLACE TEMP TABLE fold_log_odds AS
    WITH kept AS (
        SELECT fold, word, sum(spam_count) AS spam_count, sum(ham_count) AS ham_count
        FROM training_word_counts
        WHERE contributor >= 0 AND NOT list_contains($left_out::INTEGER[], contributor)
        GROUP BY fold, word
    ),
    words AS (
        SELECT word, sum(spam_count) AS spam_count, sum(ham_count) AS ham_count
        FROM kept
        GROUP BY word
    ),
    remaining AS (
        SELECT
            folds.fold, words.word,
            words.spam_count - coalesce(kept.spam_count, 0) AS spam_count,
            words.ham_count - coalesce(kept.ham_count, 0) AS ham_count
        FROM words
        CROSS JOIN (SELECT range AS fold FROM range($folds)) AS folds
        LEFT JOIN kept ON kept.word = words.word AND kept.fold = folds.fold
    ),
    fold_totals AS (
        SELECT
            fold, sum(spam_count) AS spam_total, sum(ham_count) AS ham_total,
            count(*) FILTER (WHERE spam_count + ham_count > 1e-9) AS vocabulary
        FROM remaining
        GROUP BY fold
    )
    SELECT
        remaining.fold, remaining.word,
        ln((remaining.spam_count + $alpha) / (spam_total + $alpha * vocabulary))
            - ln((remaining.ham_count + $alpha) / (ham_total + $alpha * vocabulary)) AS log_odds
    FROM remaining
    JOIN fold_totals USING (fold)
    WHERE remaining.spam_count + remaining.ham_count > 1e-9
        AND remaining.word IN (SELECT DISTINCT word FROM calibration_tokens)
"""

# The score of each calibration message without its class prior, and per group the score past
# which less than a budgeted share of the group's weight lies (the highest score whose weight at
# or above it reaches that share): each copy of a broadcast weighs its share
# (`spam_filter.broadcasts`), so a text the collection repeats is one message here as it is in
# the counts, not several of the few highest scores that the budget rests on.
OUT_OF_FOLD_QUANTILES = """
    WITH scores AS (
        SELECT
            calibration_messages.message_id,
            any_value(calibration_group) AS calibration_group,
            any_value(weight) AS weight,
            coalesce(sum(fold_log_odds.log_odds), 0) AS score
        FROM calibration_messages
        LEFT JOIN calibration_tokens USING (message_id)
        LEFT JOIN fold_log_odds
            ON fold_log_odds.fold = calibration_messages.fold
            AND fold_log_odds.word = calibration_tokens.word
        GROUP BY calibration_messages.message_id
    ),
    ranked AS (
        SELECT
            calibration_group,
            score,
            sum(weight) OVER (
                PARTITION BY calibration_group ORDER BY score DESC, message_id
                ROWS UNBOUNDED PRECEDING
            ) AS weight_from_top,
            sum(weight) OVER (PARTITION BY calibration_group) AS group_weight
        FROM scores
    )
    SELECT
        calibration_group,
        count(*),
        any_value(group_weight),
        coalesce(
            max(score) FILTER (WHERE weight_from_top >= $collection_budget * group_weight),
            min(score)
        ),
        coalesce(
            max(score) FILTER (WHERE weight_from_top >= $user_budget * group_weight), min(score)
        )
    FROM ranked
    GROUP BY calibration_group
"""

DROP_LEARNING_TABLES = (
    "DROP TABLE IF EXISTS training_word_counts",
    "DROP TABLE IF EXISTS training_message_counts",
    "DROP TABLE IF EXISTS calibration_messages",
    "DROP TABLE IF EXISTS calibration_tokens",
    "DROP TABLE IF EXISTS fold_log_odds",
)


@dataclass(frozen=True)
class ClassCounts:
    """Weighted token counts per word, and weighted message counts, of a set of messages."""

    spam_words: dict[str, float]
    ham_words: dict[str, float]
    spam_messages: float
    ham_messages: float


@dataclass(frozen=True)
class Threshold:
    """Where the model calls spam, on the word-sum score, and what placed it there."""

    score: float
    reason: str
    calibration_messages: dict[str, int]


def count_training_words(
    conn: duckdb.DuckDBPyConnection, report_weight: float, max_vocabulary: int = 0
) -> int:
    """Count the training split by fold, contributor and word into temporary tables, a chunk of
    messages at a time with each message tokenized once; then keep the `max_vocabulary` most
    frequent words (0 keeps all). Returns how many words were dropped."""
    install_tokenizer(conn)
    params = {"fold_seed": _FOLD_SEED, "folds": FOLDS, "report_weight": report_weight}
    conn.execute(COUNT_TRAINING_MESSAGES, params)
    (rows,) = conn.execute(TRAINING_ROWS).fetchone()
    chunks = max(1, math.ceil(rows / messages_per_count_chunk(conn)))
    conn.execute(CREATE_TRAINING_WORD_COUNTS)
    for chunk in range(chunks):
        conn.execute(COUNT_TRAINING_WORDS_CHUNK, {**params, "chunks": chunks, "chunk": chunk})
    (vocabulary,) = conn.execute(VOCABULARY_SIZE).fetchone()
    dropped = 0
    if 0 < max_vocabulary < vocabulary:
        conn.execute(DROP_RAREST_WORDS, {"max_vocabulary": max_vocabulary})
        dropped = vocabulary - max_vocabulary
    # What comes next builds dictionaries in Python (the impact check's, the model's).
    release_memory(conn)
    return dropped


def messages_per_count_chunk(conn: duckdb.DuckDBPyConnection) -> int:
    """How many training messages one counting statement takes, in the warehouse's memory cap."""
    return max(1, memory_limit_bytes(conn) * COUNTED_MESSAGES_PER_MIB // 2**20)


def class_counts(
    conn: duckdb.DuckDBPyConnection, left_out: list[int], with_capped: bool = False
) -> tuple[ClassCounts, int, int]:
    """The counts of every training message but the left-out reporters' own and, unless
    `with_capped`, those over a reporter's share; and the unweighted (spam, all) training rows
    they came from."""
    spam_words, ham_words = {}, {}
    params = {"left_out": left_out, "with_capped": with_capped}
    for word, spam, ham in _rows(conn.execute(WORD_TOTALS, params)):
        if spam:
            spam_words[word] = spam
        if ham:
            ham_words[word] = ham
    spam_messages, ham_messages, spam_rows, rows = message_totals(conn, left_out, with_capped)
    counts = ClassCounts(spam_words, ham_words, spam_messages, ham_messages)
    return counts, spam_rows, rows


def message_totals(
    conn: duckdb.DuckDBPyConnection, left_out: list[int], with_capped: bool = False
) -> tuple[float, float, int, int]:
    """The weighted (spam, non-spam) messages that `class_counts` counts, and the unweighted
    (spam, all) training rows."""
    params = {"left_out": left_out, "with_capped": with_capped}
    spam_messages, ham_messages, spam_rows, rows = conn.execute(MESSAGE_TOTALS, params).fetchone()
    return spam_messages, ham_messages, int(spam_rows), int(rows)


def reporter_counts(conn: duckdb.DuckDBPyConnection) -> dict[int, ClassCounts]:
    """Each reporter's counts over the messages only it supports."""
    counts: dict[int, ClassCounts] = {}
    words: dict[int, tuple[dict, dict]] = {}
    for reporter, word, spam, ham in _rows(conn.execute(REPORTER_WORD_COUNTS)):
        spam_words, ham_words = words.setdefault(reporter, ({}, {}))
        if spam:
            spam_words[word] = spam
        if ham:
            ham_words[word] = ham
    for reporter, spam, ham, _ in conn.execute(REPORTER_MESSAGE_COUNTS).fetchall():
        spam_words, ham_words = words.get(reporter, ({}, {}))
        counts[reporter] = ClassCounts(spam_words, ham_words, spam, ham)
    return counts


def calibrate_threshold(
    conn: duckdb.DuckDBPyConnection,
    left_out: list[int],
    alpha: float,
    collection_budget: float,
    user_budget: float,
    cost_floor: float,
    per_group: int = 100_000,
) -> Threshold:
    """The word-sum score past which the model calls spam.

    The larger of: the score that out-of-fold models exceed on `collection_budget` of the SMS
    collection's legitimate messages (a broadcast's copies counting as one message), the same for
    `user_budget` of the users' legitimate messages, and `cost_floor`, the threshold a fixed
    false-positive cost would set.
    """
    params = {"fold_seed": _FOLD_SEED, "folds": FOLDS, "left_out": left_out}
    conn.execute(CALIBRATION_MESSAGES, {**params, "per_group": per_group})
    conn.execute(CALIBRATION_TOKENS)
    conn.execute(
        LEAVE_ONE_FOLD_OUT_LOG_ODDS, {"folds": FOLDS, "left_out": left_out, "alpha": alpha}
    )
    quantiles = conn.execute(
        OUT_OF_FOLD_QUANTILES,
        {"collection_budget": collection_budget, "user_budget": user_budget},
    ).fetchall()
    candidates = [(cost_floor, "the false-positive cost")]
    for group, _, weight, collection_quantile, user_quantile in quantiles:
        if group == "collection":
            quantile, budget = collection_quantile, collection_budget
        else:
            quantile, budget = user_quantile, user_budget
        # A budget rests on the few highest scores: it takes enough messages for those to be a
        # rate rather than one or two messages.
        if weight * budget >= MESSAGES_PER_BUDGETED_FALSE_POSITIVE:
            candidates.append(
                (quantile, f"a {budget:.2%} budget on the {group} legitimate messages, out of fold")
            )
    score, reason = max(candidates)
    return Threshold(score, reason, {group: messages for group, messages, *_ in quantiles})


@dataclass(frozen=True)
class LearnedModel:
    """A model learned from the warehouse's training split, and what it was learned from."""

    model: SpamModel
    threshold: Threshold
    training_spam: int
    training_messages: int


def learn(
    conn: duckdb.DuckDBPyConnection,
    left_out: list[int],
    alpha: float,
    false_positive_cost: float,
    collection_budget: float,
    user_budget: float,
) -> LearnedModel:
    """The model from the counts (see `count_training_words`) of all but the left-out reporters:
    smoothed bags of words, and the threshold calibrated out of fold, folded into the prior.

    Raises:
        ValueError: The training split lacks spam or non-spam messages.
    """
    spam_messages, ham_messages, _, _ = message_totals(conn, left_out)
    if not spam_messages or not ham_messages:
        raise ValueError("the training split needs both spam and non-spam messages")
    cost_floor = cost_threshold(spam_messages, ham_messages, false_positive_cost)
    threshold = calibrate_threshold(
        conn, left_out, alpha, collection_budget, user_budget, cost_floor
    )
    # The model's dictionaries are as large as the vocabulary: DuckDB's cached buffers go first,
    # rather than sit beside them.
    release_memory(conn)
    counts, training_spam, training_messages = class_counts(conn, left_out)
    spam_bow, non_spam_bow = smoothed_bags_of_words(counts.spam_words, counts.ham_words, alpha)
    # The raw counts are as large as the bags: let them go before the model adds its log-odds.
    del counts
    model = SpamModel(spam_bow, non_spam_bow, 1.0 / (1.0 + math.exp(threshold.score)))
    return LearnedModel(model, threshold, training_spam, training_messages)


def _rows(result: duckdb.DuckDBPyConnection) -> Iterator[tuple]:
    """A result's rows a batch at a time: a vocabulary's worth of tuples is never held at once."""
    while batch := result.fetchmany(_FETCH_BATCH_ROWS):
        yield from batch


def drop_learning_tables(conn: duckdb.DuckDBPyConnection) -> None:
    for statement in DROP_LEARNING_TABLES:
        conn.execute(statement)


def cost_threshold(spam_messages: float, ham_messages: float, false_positive_cost: float) -> float:
    """The word-sum score a fixed false-positive cost calls spam past: the Bayes decision when
    hiding one legitimate message costs as much as `false_positive_cost` missed spams."""
    return math.log(false_positive_cost) - math.log(spam_messages / ham_messages)
