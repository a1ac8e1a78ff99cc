"""Ingestion: the public SMS collection, the curated gold set, and the product's own messages and
reports, into the one dataset the model learns and is judged on."""

import dagster as dg
import pandas as pd

from spam_filter import constants, settings, tables
from spam_filter.datasets import read_gold_messages, read_sms_spam_collection
from spam_filter.resources import ApplicationDatabase, Warehouse

GROUP = "ingestion"

# What the reports and gold assets write, for a run that materializes what follows them alone.
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

# Reports become messages defensively. Each reporter's latest vote on a message counts once; a
# message's label is the majority of its distinct reporters, and ties are left out. A message
# with a single supporter belongs to that reporter, and no reporter may contribute more than
# $max_share of the user messages: past it, a seeded sample of what it alone supports is kept.
INSERT_REPORTED_MESSAGES = """
    INSERT INTO public.user_messages (spam, body, source, synthetic, reporter_id, supporters)
    WITH latest AS (
        SELECT
            reporter_id, text_key,
            arg_max(spam, reported_at) AS spam, arg_max(body, reported_at) AS body
        FROM public.user_reports
        GROUP BY reporter_id, text_key
    ),
    tallies AS (
        SELECT
            text_key,
            count(*) FILTER (WHERE spam) AS spam_votes,
            count(*) FILTER (WHERE NOT spam) AS ham_votes
        FROM latest
        GROUP BY text_key
    ),
    labelled AS (
        SELECT
            latest.text_key, latest.spam, min(latest.body) AS body,
            greatest(spam_votes, ham_votes) AS supporters,
            CASE WHEN greatest(spam_votes, ham_votes) = 1 THEN min(latest.reporter_id) END
                AS reporter_id
        FROM tallies
        JOIN latest
            ON latest.text_key = tallies.text_key AND latest.spam = (spam_votes > ham_votes)
        WHERE spam_votes <> ham_votes
        GROUP BY latest.text_key, latest.spam, spam_votes, ham_votes
    ),
    shares AS (
        SELECT
            latest.reporter_id,
            count(*) FILTER (WHERE labelled.supporters = 1) AS alone,
            count(*) FILTER (WHERE labelled.supporters > 1) AS corroborated
        FROM latest
        JOIN labelled ON labelled.text_key = latest.text_key AND labelled.spam = latest.spam
        GROUP BY latest.reporter_id
    ),
    allowances AS (
        SELECT
            reporter_id,
            CASE WHEN $max_share >= 1 THEN alone ELSE greatest(0, least(alone, floor(
                ($max_share * (total.messages - alone) - corroborated) / (1 - $max_share)
            ))) END AS kept
        FROM shares,
            (SELECT (SELECT count(*) FROM labelled) + (SELECT count(*) FROM public.user_messages)
                AS messages) AS total
    )
    SELECT spam, body, 'reports', false, reporter_id, supporters
    FROM (
        SELECT
            labelled.*,
            row_number() OVER (PARTITION BY reporter_id ORDER BY hash(text_key, $seed)) AS rank
        FROM labelled
    )
    LEFT JOIN allowances USING (reporter_id)
    WHERE reporter_id IS NULL OR rank <= kept
"""

SUMMARISE_USER_MESSAGES = """
    SELECT
        count(*) FILTER (WHERE source = 'messages'),
        count(*) FILTER (WHERE source = 'reports'),
        count(*) FILTER (WHERE spam),
        count(*) FILTER (WHERE synthetic)
    FROM public.user_messages
"""

SUMMARISE_REPORTS = """
    SELECT count(*), count(DISTINCT reporter_id), count(DISTINCT text_key)
    FROM public.user_reports
"""

CREATE_SPAM_DATASET = """
    CREATE OR REPLACE VIEW public.spam_dataset AS
    SELECT spam, body, source, synthetic, reporter_id
    FROM (
        SELECT
            spam, body, 'sms_spam_collection' AS source, false AS synthetic,
            NULL::INTEGER AS reporter_id
        FROM public.sms_spam_examples
        UNION ALL
        SELECT spam, body, 'gold' AS source, false, NULL::INTEGER FROM public.gold_examples
        UNION ALL
        SELECT spam, body, source, synthetic, reporter_id FROM public.user_messages
    )
    WHERE spam IS NOT NULL AND body IS NOT NULL AND trim(body) <> ''
"""

COUNT_SPAM_DATASET_BY_SOURCE = """
    SELECT source, count(*), count(*) FILTER (WHERE spam)
    FROM public.spam_dataset
    GROUP BY source
"""


class UserMessagesConfig(dg.Config):
    """Which of the product's messages and reports to train on."""

    max_messages: int = 0
    """Cap on rows of `messages` (0 = all): the newest when `created_at` exists, else a sample."""
    sample_seed: int = 0
    """Seed of that sample, and of which reports a reporter over its share keeps."""
    max_reporter_share: float = constants.MAX_REPORTER_SHARE
    """The largest share of the user messages one reporter may contribute (1 = no cap)."""


@dg.asset(group_name=GROUP, kinds={"pandas", "duckdb"})
def sms_spam_examples(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
    """The SMS Spam Collection (UCI): 5,572 text messages labelled spam or ham."""
    path = settings.spam_csv_path()
    examples = read_sms_spam_collection(str(path))
    context.log.info(f"read {len(examples):,} messages from {path}")
    return dg.Output(
        examples,
        metadata={
            "row_count": len(examples),
            "spam_count": int(examples["spam"].sum()),
            "preview": dg.MetadataValue.md(examples.head(5).to_markdown(index=False)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"duckdb"})
def gold_examples(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The product's curated gold.csv (`SPAM_FILTER_GOLD_CSV`), only ever used to judge models."""
    path = settings.gold_csv_path()
    gold = (
        read_gold_messages(str(path))
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
        metadata={"row_count": len(gold), "spam_count": int(gold["spam"].sum()), "path": str(path)}
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


@dg.asset(group_name=GROUP, deps=[user_reports], kinds={"duckdb"})
def user_messages(
    context: dg.AssetExecutionContext,
    config: UserMessagesConfig,
    database: ApplicationDatabase,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """The product's own labelled messages, and the messages its reporters agree on."""
    if not 0 < config.max_reporter_share <= 1:
        raise dg.Failure(f"max_reporter_share must lie in (0, 1], not {config.max_reporter_share}")
    storage = database.storage(on_wait=context.log.info)
    storage.create_schema()  # brings an older database's tables up to date
    with warehouse.get_connection() as conn:
        conn.execute(tables.CREATE_SCHEMA)
        storage.copy_messages_into(conn, config.max_messages, config.sample_seed)
        conn.execute(CREATE_USER_REPORTS_IF_MISSING)
        conn.execute(
            INSERT_REPORTED_MESSAGES,
            {"max_share": config.max_reporter_share, "seed": config.sample_seed},
        )
        from_messages, from_reports, spam, synthetic = conn.execute(
            SUMMARISE_USER_MESSAGES
        ).fetchone()
        preview = tables.preview(conn, "user_messages")
    context.log.info(
        f"{from_messages:,} user messages from `messages` ({synthetic:,} synthetic) and "
        f"{from_reports:,} from reports"
    )
    return dg.MaterializeResult(
        metadata={
            "row_count": from_messages + from_reports,
            "from_messages": from_messages,
            "from_reports": from_reports,
            "synthetic": synthetic,
            "spam_count": spam,
            "capped": config.max_messages > 0,
            "preview": dg.MetadataValue.md(preview),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[sms_spam_examples, gold_examples, user_messages],
    kinds={"duckdb"},
)
def spam_dataset(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Every labelled message to learn from or judge by: the SMS collection, the gold set and the
    product's messages."""
    with warehouse.get_connection() as conn:
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
            "row_count": total,
            "spam_count": spam,
            "sms_collection_rows": counts.get("sms_spam_collection", (0, 0))[0],
            "gold_rows": counts.get("gold", (0, 0))[0],
            "user_message_rows": counts.get("messages", (0, 0))[0],
            "reported_message_rows": counts.get("reports", (0, 0))[0],
            "preview": dg.MetadataValue.md(preview),
        }
    )
