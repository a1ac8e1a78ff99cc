"""Ingestion: the public SMS collection, the curated gold set, and the product's own messages and
reports, into the one dataset the model learns and is judged on."""

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from spam_filter import constants, settings, tables
from spam_filter.datasets import read_gold_messages, read_sms_spam_collection
from spam_filter.reporter_keys import text_key
from spam_filter.resources import ApplicationDatabase, Warehouse
from spam_filter.tunables import INT32_MAX, INT32_MIN, Tunables
from spam_filter.warehouse_memory import memory_capped

GROUP = "ingestion"

# What the reports, collection and gold assets write, for a run that materializes what follows
# them alone.
CREATE_SMS_SPAM_EXAMPLES_IF_MISSING = """
    CREATE TABLE IF NOT EXISTS public.sms_spam_examples (spam BOOLEAN, body VARCHAR)
"""
SELECT_SMS_SPAM_EXAMPLES = "SELECT spam, body FROM public.sms_spam_examples"
CREATE_USER_REPORTS_IF_MISSING = """
    CREATE TABLE IF NOT EXISTS public.user_reports (
        reporter_id INTEGER, text_key VARCHAR, body VARCHAR, spam BOOLEAN, reported_at TIMESTAMP
    )
"""
CREATE_GOLD_EXAMPLES_IF_MISSING = """
    CREATE TABLE IF NOT EXISTS public.gold_examples (spam BOOLEAN, body VARCHAR)
"""

CREATE_GOLD_EXAMPLES = """
    CREATE OR REPLACE TABLE public.gold_examples AS
    SELECT spam::BOOLEAN AS spam, body::VARCHAR AS body FROM gold_frame
"""

# Each reporter's latest vote on each message (a message is its text as the model sees it).
COLLECT_REPORT_VOTES = """
    CREATE OR REPLACE TEMP TABLE report_votes AS
    SELECT
        reporter_id, text_key,
        arg_max(spam, reported_at) AS spam, arg_max(body, reported_at) AS body
    FROM public.user_reports
    GROUP BY reporter_id, text_key
"""

COUNT_REPORT_VOTES = """
    CREATE OR REPLACE TEMP TABLE report_tallies AS
    SELECT
        text_key,
        count(*) FILTER (WHERE spam) AS spam_votes,
        count(*) FILTER (WHERE NOT spam) AS ham_votes
    FROM report_votes
    GROUP BY text_key
"""

# The share this run capped reporters at, for the check on `user_messages` to judge by.
WRITE_REPORTER_SHARE = """
    CREATE OR REPLACE TABLE public.user_messages_settings AS
    SELECT $max_share::DOUBLE AS max_reporter_share
"""

# A message's label is the majority of its distinct reporters; ties are left out. A message with
# a single supporter belongs to that reporter.
LABEL_REPORTED_MESSAGES = """
    CREATE OR REPLACE TEMP TABLE labelled_reports AS
    SELECT
        report_votes.text_key, report_votes.spam, min(report_votes.body) AS body,
        greatest(spam_votes, ham_votes) AS supporters,
        CASE WHEN greatest(spam_votes, ham_votes) = 1 THEN min(report_votes.reporter_id) END
            AS reporter_id
    FROM report_tallies
    JOIN report_votes
        ON report_votes.text_key = report_tallies.text_key
        AND report_votes.spam = (spam_votes > ham_votes)
    WHERE spam_votes <> ham_votes
    GROUP BY report_votes.text_key, report_votes.spam, spam_votes, ham_votes
"""

# Per reporter, the labelled messages it alone supports and those others support with it; and the
# user messages no single reporter supports (the product's own, and the corroborated reports).
COUNT_REPORTER_SHARES = """
    SELECT
        report_votes.reporter_id,
        count(*) FILTER (WHERE labelled_reports.supporters = 1) AS alone,
        count(*) FILTER (WHERE labelled_reports.supporters > 1) AS corroborated
    FROM report_votes
    JOIN labelled_reports
        ON labelled_reports.text_key = report_votes.text_key
        AND labelled_reports.spam = report_votes.spam
    GROUP BY report_votes.reporter_id
    ORDER BY report_votes.reporter_id
"""
COUNT_UNOWNED_MESSAGES = """
    SELECT
        (SELECT count(*) FROM labelled_reports WHERE reporter_id IS NULL)
        + (SELECT count(*) FROM public.user_messages)
"""

# Each reporter keeps a seeded sample of $kept[i] of the messages it alone supports; the rest
# are marked capped (kept out of training and scoring, but weighed by the impact check).
INSERT_REPORTED_MESSAGES = """
    INSERT INTO public.user_messages
        (spam, body, source, synthetic, reporter_id, supporters, capped)
    WITH allowances AS (
        SELECT unnest($reporters::INTEGER[]) AS reporter_id, unnest($kept::BIGINT[]) AS kept
    )
    SELECT
        spam, body, 'reports', false, reporter_id, supporters,
        reporter_id IS NOT NULL AND rank > kept
    FROM (
        SELECT
            labelled_reports.*,
            row_number() OVER (PARTITION BY reporter_id ORDER BY hash(text_key, $seed)) AS rank
        FROM labelled_reports
    )
    LEFT JOIN allowances USING (reporter_id)
"""


def reporter_allowances(
    shares: Mapping[int, tuple[int, int]], unowned: int, max_share: float
) -> dict[int, int]:
    """How many of the messages each reporter alone supports it keeps, given `shares` (reporter:
    (alone, corroborated)) and the `unowned` user messages no single reporter supports.

    A reporter's share counts against the total the run trains on, which shrinks as others are
    capped too, so each allowance is worked out against the total the allowances themselves
    leave: starting from every message, the total is recomputed until it no longer moves. The
    totals only fall, so this ends, and at the end every capped reporter's kept and corroborated
    messages are at most `max_share` of that total (to within float rounding, which the small
    margin keeps from costing a message: 0.29 * 100 is 28.999999999999996).
    """
    if max_share >= 1:
        return {reporter: alone for reporter, (alone, _) in shares.items()}
    total = unowned + sum(alone for alone, _ in shares.values())
    while True:
        kept = {
            reporter: max(0, min(alone, math.floor(max_share * total - corroborated + 1e-9)))
            for reporter, (alone, corroborated) in shares.items()
        }
        kept_total = unowned + sum(kept.values())
        if kept_total == total:
            return kept
        total = kept_total


# How often each reporter's votes contradict what they can be checked against: the SMS
# collection's label for the same message, else the majority of the message's other reporters
# (a vote is unchecked when no one else voted or the others tie). Reporters in $left_out are
# left out of the count.
MEASURE_REPORTER_AGREEMENT = """
    WITH votes AS (
        SELECT * FROM report_votes WHERE NOT list_contains($left_out::INTEGER[], reporter_id)
    ),
    tallies AS (
        SELECT
            text_key,
            count(*) FILTER (WHERE spam) AS spam_votes,
            count(*) FILTER (WHERE NOT spam) AS ham_votes
        FROM votes
        GROUP BY text_key
    ),
    collection AS (
        SELECT text_key, bool_or(spam) AS spam FROM collection_keys GROUP BY text_key
    ),
    others AS (
        SELECT
            votes.reporter_id,
            votes.spam,
            collection.spam AS collection_spam,
            spam_votes - votes.spam::INTEGER AS other_spam,
            ham_votes - (NOT votes.spam)::INTEGER AS other_ham
        FROM votes
        JOIN tallies USING (text_key)
        LEFT JOIN collection USING (text_key)
    ),
    checked AS (
        SELECT
            reporter_id,
            CASE
                WHEN collection_spam IS NOT NULL THEN spam <> collection_spam
                WHEN other_spam <> other_ham THEN spam <> (other_spam > other_ham)
            END AS disagrees
        FROM others
    )
    SELECT
        reporter_id,
        count(disagrees) AS checked_votes,
        count(*) FILTER (WHERE disagrees) AS disagreements
    FROM checked
    GROUP BY reporter_id
    ORDER BY disagreements DESC, reporter_id
"""

DROP_LEFT_OUT_VOTES = (
    "DELETE FROM report_votes WHERE list_contains($left_out::INTEGER[], reporter_id)"
)

RECORD_LEFT_OUT_REPORTERS = """
    CREATE OR REPLACE TABLE public.reporters_left_out AS
    SELECT unnest($reporters::INTEGER[]) AS reporter_id, unnest($reasons::VARCHAR[]) AS reason
"""

ADD_CAPPED_COLUMN = "ALTER TABLE public.user_messages ADD COLUMN capped BOOLEAN DEFAULT false"

SUMMARISE_USER_MESSAGES = """
    SELECT
        count(*) FILTER (WHERE source = 'messages'),
        count(*) FILTER (WHERE source = 'reports' AND NOT capped),
        count(*) FILTER (WHERE capped),
        count(*) FILTER (WHERE spam AND NOT capped),
        count(*) FILTER (WHERE synthetic)
    FROM public.user_messages
"""

SUMMARISE_REPORTS = """
    SELECT count(*), count(DISTINCT reporter_id), count(DISTINCT text_key)
    FROM public.user_reports
"""

# Blank is empty or only spaces (what trim removes). Only a text that starts with a space can be
# blank and not empty, so the rest skip trim, which copies every text it reads.
CREATE_SPAM_DATASET = """
    CREATE OR REPLACE VIEW public.spam_dataset AS
    SELECT spam, body, source, synthetic, reporter_id, capped
    FROM (
        SELECT
            spam, body, 'sms_spam_collection' AS source, false AS synthetic,
            NULL::INTEGER AS reporter_id, false AS capped
        FROM public.sms_spam_examples
        UNION ALL
        SELECT spam, body, 'gold', false, NULL::INTEGER, false FROM public.gold_examples
        UNION ALL
        SELECT spam, body, source, synthetic, reporter_id, capped FROM public.user_messages
    )
    WHERE spam IS NOT NULL AND body <> '' AND (NOT starts_with(body, ' ') OR trim(body) <> '')
"""

COUNT_SPAM_DATASET_BY_SOURCE = """
    SELECT source, count(*), count(*) FILTER (WHERE spam)
    FROM public.spam_dataset
    GROUP BY source
"""


class UserMessagesConfig(Tunables):
    """Which of the product's messages and reports to train on."""

    max_messages: int = Field(0, ge=0)
    """Cap on rows of `messages` (0 = all): the newest when `created_at` exists, else a sample."""
    sample_seed: int = Field(0, ge=INT32_MIN, le=INT32_MAX)
    """Seed of that sample, and of which reports a reporter over its share keeps."""
    max_reporter_share: float = Field(constants.MAX_REPORTER_SHARE, gt=0, le=1)
    """The largest share of the user messages one reporter may contribute (1 = no cap)."""
    max_disagreement: float = Field(constants.MAX_DISAGREEMENT, ge=0, le=1)
    """Share of a reporter's checkable votes that may contradict the SMS collection's label or
    the other reporters' majority before its votes are left out of the run."""
    min_checked_votes: int = Field(constants.MIN_CHECKED_VOTES, ge=0)
    """Checkable votes a reporter needs before its disagreement counts."""


def _read_labelled_file(
    read: Callable[[str], pd.DataFrame], path: Path, variable: str
) -> pd.DataFrame:
    """`read(path)`, or a failure that names the file and the variable pointing at it."""
    try:
        return read(str(path))
    except (OSError, ValueError, KeyError) as error:  # pandas' parse errors are ValueErrors
        raise dg.Failure(
            f"cannot read {path} (set by {variable} or its default): {error}"
        ) from None


@dg.asset(group_name=GROUP, kinds={"pandas", "duckdb"})
def sms_spam_examples(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
    """The SMS Spam Collection (UCI): 5,572 text messages labelled spam or ham."""
    path = settings.spam_csv_path()
    examples = _read_labelled_file(read_sms_spam_collection, path, "SPAM_FILTER_SPAM_CSV")
    context.log.info(f"read {len(examples):,} messages from {path}")
    return dg.Output(
        examples,
        metadata={
            tables.ROW_COUNT: len(examples),
            "spam_count": int(examples["spam"].sum()),
            "preview": dg.MetadataValue.md(examples.head(5).to_markdown(index=False)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"duckdb"})
def gold_examples(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The product's curated gold.csv (`SPAM_FILTER_GOLD_CSV`), only ever used to judge models."""
    path = settings.gold_csv_path()
    gold = (
        _read_labelled_file(read_gold_messages, path, "SPAM_FILTER_GOLD_CSV")
        if path is not None
        else pd.DataFrame({"spam": pd.Series(dtype=bool), "body": pd.Series(dtype=str)})
    )
    context.log.info(f"read {len(gold):,} gold messages from {path or 'nowhere (unset)'}")
    with warehouse.get_connection() as conn:
        conn.execute(tables.CREATE_SCHEMA)
        conn.register("gold_frame", gold)
        try:
            conn.execute(CREATE_GOLD_EXAMPLES)
        finally:
            conn.unregister("gold_frame")
    return dg.MaterializeResult(
        metadata={
            tables.ROW_COUNT: len(gold),
            "spam_count": int(gold["spam"].sum()),
            "path": str(path) if path else "none",
        }
    )


@dg.asset(group_name=GROUP, kinds={"duckdb"})
def user_reports(
    context: dg.AssetExecutionContext, database: ApplicationDatabase, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Every vote of the product's reporters whose keys are not revoked."""
    storage = database.storage(on_wait=context.log.info)
    storage.create_schema()
    with warehouse.get_connection() as conn:
        conn.execute(tables.CREATE_SCHEMA)
        storage.copy_reports_into(conn)
        votes, reporters, messages = conn.execute(SUMMARISE_REPORTS).fetchone()
    context.log.info(f"copied {votes:,} votes of {reporters:,} reporters on {messages:,} messages")
    return dg.MaterializeResult(
        metadata={"votes": votes, "reporters": reporters, "messages_voted_on": messages}
    )


@dg.asset(group_name=GROUP, deps=[user_reports, sms_spam_examples], kinds={"duckdb"})
def user_messages(
    context: dg.AssetExecutionContext,
    config: UserMessagesConfig,
    database: ApplicationDatabase,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """The product's own labelled messages, and the messages its reporters agree on."""
    storage = database.storage(on_wait=context.log.info)
    storage.create_schema()  # brings an older database's tables up to date
    with warehouse.get_connection() as conn:
        conn.execute(tables.CREATE_SCHEMA)
        # Copying, adding a column and summing stream: DuckDB would otherwise keep its whole cap
        # of the blocks they wrote and read. Only labelling the reports needs more.
        with memory_capped(conn):
            storage.copy_messages_into(conn, config.max_messages, config.sample_seed)
            conn.execute(ADD_CAPPED_COLUMN)
        _add_reported_messages(conn, config)
        with memory_capped(conn):
            from_messages, from_reports, capped, spam, synthetic = conn.execute(
                SUMMARISE_USER_MESSAGES
            ).fetchone()
            preview = tables.preview(conn, "user_messages")
    context.log.info(
        f"{from_messages:,} user messages from `messages` ({synthetic:,} synthetic) and "
        f"{from_reports:,} from reports ({capped:,} more over their reporters' share)"
    )
    return dg.MaterializeResult(
        metadata={
            tables.ROW_COUNT: from_messages + from_reports + capped,
            "from_messages": from_messages,
            "from_reports": from_reports,
            "over_reporter_share": capped,
            "synthetic": synthetic,
            "spam_count": spam,
            "messages_limited": config.max_messages > 0,
            "preview": dg.MetadataValue.md(preview),
        }
    )


def _add_reported_messages(conn: duckdb.DuckDBPyConnection, config: UserMessagesConfig) -> None:
    """Leave out outvoted reporters, label the reported messages, and cap each reporter's share."""
    conn.execute(CREATE_USER_REPORTS_IF_MISSING)
    conn.execute(CREATE_SMS_SPAM_EXAMPLES_IF_MISSING)
    conn.execute(COLLECT_REPORT_VOTES)
    left_out = _outvoted_reporters(conn, config)
    conn.execute(DROP_LEFT_OUT_VOTES, {"left_out": list(left_out)})
    conn.execute(
        RECORD_LEFT_OUT_REPORTERS,
        {"reporters": list(left_out), "reasons": list(left_out.values())},
    )
    conn.execute(COUNT_REPORT_VOTES)
    conn.execute(LABEL_REPORTED_MESSAGES)
    shares = {
        reporter: (alone, corroborated)
        for reporter, alone, corroborated in conn.execute(COUNT_REPORTER_SHARES).fetchall()
    }
    (unowned,) = conn.execute(COUNT_UNOWNED_MESSAGES).fetchone()
    kept = reporter_allowances(shares, unowned, config.max_reporter_share)
    conn.execute(
        INSERT_REPORTED_MESSAGES,
        {"reporters": list(kept), "kept": list(kept.values()), "seed": config.sample_seed},
    )
    conn.execute(WRITE_REPORTER_SHARE, {"max_share": config.max_reporter_share})


def _outvoted_reporters(
    conn: duckdb.DuckDBPyConnection, config: UserMessagesConfig
) -> dict[int, str]:
    """Reporters whose checkable votes mostly contradict the collection or the other reporters.

    The worst is left out first and the others are counted again without it: a key that flips
    every message others report makes each of them look outvoted too, until it is gone.
    """
    # The collection's messages as reports name them, so that a report contradicting it shows.
    collection = conn.execute(SELECT_SMS_SPAM_EXAMPLES).df()
    collection["text_key"] = collection["body"].map(text_key)
    conn.register("collection_keys", collection)
    left_out: dict[int, str] = {}
    try:
        while True:
            rows = conn.execute(MEASURE_REPORTER_AGREEMENT, {"left_out": list(left_out)}).fetchall()
            outvoted = [
                (reporter, checked, wrong)
                for reporter, checked, wrong in rows
                if checked >= config.min_checked_votes and wrong > config.max_disagreement * checked
            ]
            if not outvoted:
                return left_out
            reporter, checked, wrong = outvoted[0]
            left_out[reporter] = (
                f"{wrong:,} of its {checked:,} checkable votes contradict the collection's "
                "labels or the other reporters' majority"
            )
    finally:
        conn.unregister("collection_keys")


@dg.asset(
    group_name=GROUP,
    deps=[sms_spam_examples, gold_examples, user_messages],
    kinds={"duckdb"},
)
def spam_dataset(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Every labelled message: the SMS collection, the gold set and the product's messages."""
    with warehouse.get_streaming_connection() as conn:
        # A view, not a copy: the sources are tables this run's upstream steps wrote.
        tables.make_room_for(conn, "spam_dataset")
        conn.execute(CREATE_GOLD_EXAMPLES_IF_MISSING)
        conn.execute(CREATE_SPAM_DATASET)
        counts = {
            source: (rows, spam)
            for source, rows, spam in conn.execute(COUNT_SPAM_DATASET_BY_SOURCE).fetchall()
        }
        preview = tables.preview(conn, "spam_dataset")
    total = sum(rows for rows, _ in counts.values())
    spam = sum(spam for _, spam in counts.values())
    context.log.info(f"spam_dataset holds {total:,} messages ({spam:,} spam)")
    return dg.MaterializeResult(
        metadata={
            tables.ROW_COUNT: total,
            "spam_count": spam,
            "sms_collection_rows": counts.get("sms_spam_collection", (0, 0))[0],
            "gold_rows": counts.get("gold", (0, 0))[0],
            "user_message_rows": counts.get("messages", (0, 0))[0],
            "reported_message_rows": counts.get("reports", (0, 0))[0],
            "preview": dg.MetadataValue.md(preview),
        }
    )
