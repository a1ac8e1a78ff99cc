"""Ingestion: the public SMS collection, the product's own messages, and their union."""

import dagster as dg
import pandas as pd

from spam_filter import settings, tables
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.resources import ApplicationDatabase, Warehouse

GROUP = "ingestion"

CREATE_SPAM_DATASET = """
    CREATE OR REPLACE VIEW public.spam_dataset AS
    SELECT spam, body, source
    FROM (
        SELECT spam, body, 'sms_spam_collection' AS source FROM public.sms_spam_examples
        UNION ALL
        SELECT spam, body, 'user_messages' AS source FROM public.user_messages
    )
    WHERE spam IS NOT NULL AND body IS NOT NULL AND trim(body) <> ''
"""

COUNT_SPAM_DATASET_BY_SOURCE = """
    SELECT source, count(*), count(*) FILTER (WHERE spam)
    FROM public.spam_dataset
    GROUP BY source
"""


class UserMessagesConfig(dg.Config):
    """How many of the product's messages to train on."""

    max_messages: int = 0
    """Cap on user messages (0 = all): the newest when `created_at` exists, else a seeded sample."""
    sample_seed: int = 0
    """Seed of that sample, when the messages have no `created_at`."""


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
def user_messages(
    context: dg.AssetExecutionContext,
    config: UserMessagesConfig,
    database: ApplicationDatabase,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """The product's own labelled messages, copied from the application database."""
    with warehouse.get_connection() as conn:
        conn.execute(tables.CREATE_SCHEMA)
        database.storage().copy_messages_into(
            conn, config.max_messages, config.sample_seed, on_wait=context.log.info
        )
        rows = tables.row_count(conn, "user_messages")
        context.log.info(f"copied {rows:,} user messages into the warehouse")
        return dg.MaterializeResult(
            metadata={
                "row_count": rows,
                "capped": config.max_messages > 0,
                "preview": dg.MetadataValue.md(tables.preview(conn, "user_messages")),
            }
        )


@dg.asset(group_name=GROUP, deps=[sms_spam_examples, user_messages], kinds={"duckdb"})
def spam_dataset(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Every labelled message to learn from: the SMS collection plus the product's messages."""
    with warehouse.get_connection() as conn:
        # A view, not a copy: both sources are tables this run's upstream steps wrote.
        tables.make_room_for(conn, "spam_dataset")
        conn.execute(CREATE_SPAM_DATASET)
        counts = {
            source: (rows, spam)
            for source, rows, spam in conn.execute(COUNT_SPAM_DATASET_BY_SOURCE).fetchall()
        }
        total = sum(rows for rows, _ in counts.values())
        spam = sum(spam for _, spam in counts.values())
        context.log.info(f"spam_dataset holds {total:,} messages ({spam:,} spam)")
        return dg.MaterializeResult(
            metadata={
                "row_count": total,
                "spam_count": spam,
                "sms_collection_rows": counts.get("sms_spam_collection", (0, 0))[0],
                "user_message_rows": counts.get("user_messages", (0, 0))[0],
                "preview": dg.MetadataValue.md(tables.preview(conn, "spam_dataset")),
            }
        )
