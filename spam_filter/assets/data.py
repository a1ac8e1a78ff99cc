"""Data assets: the public SMS collection, the product's own messages, and their union."""

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from spam_filter import settings, warehouse
from spam_filter.resources import ApplicationDatabase
from spam_filter.sql import identifier

# The `source` labels spam_dataset's SQL gives each row.
_SMS_COLLECTION = "sms_spam_collection"
_USER_MESSAGES = "user_messages"


def read_sms_spam_collection(path: str) -> pd.DataFrame:
    """Read spam.csv into (spam, body) rows.

    The file is Latin-1, and 50 messages that contain commas were split over the three unnamed
    trailing columns; joining those back restores the whole message.
    """
    raw = pd.read_csv(path, encoding="latin-1", dtype=str, keep_default_na=False)
    body = raw.iloc[:, 1:].apply(lambda parts: ",".join(p for p in parts if p), axis=1)
    return pd.DataFrame({"spam": raw["v1"].str.strip().eq("spam"), "body": body})


@dg.asset(kinds={"pandas", "duckdb"})
def sms_spam_examples(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
    """The SMS Spam Collection (UCI): 5,572 text messages labelled spam or ham."""
    examples = read_sms_spam_collection(str(settings.spam_csv_path()))
    context.log.info(f"read {len(examples):,} messages from {settings.spam_csv_path()}")
    return dg.Output(
        examples,
        metadata={
            "row_count": len(examples),
            "spam_count": int(examples["spam"].sum()),
            "preview": dg.MetadataValue.md(examples.head(5).to_markdown(index=False)),
        },
    )


class UserMessagesConfig(dg.Config):
    """How many of the product's messages to train on."""

    max_messages: int = 0
    """Cap on user messages (0 = all): the newest when `created_at` exists, else a seeded sample."""
    sample_seed: int = 0


@dg.asset(kinds={"duckdb"})
def user_messages(
    context: dg.AssetExecutionContext,
    config: UserMessagesConfig,
    database: ApplicationDatabase,
    warehouse_db: DuckDBResource,
) -> dg.MaterializeResult:
    """The product's own labelled messages, copied from the application database."""
    target = warehouse.table("user_messages")
    with warehouse_db.get_connection() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS " + identifier(warehouse.SCHEMA))
        # The copy happens inside DuckDB; the application file is attached read-only and only for
        # the copy, so the API's watcher and other writers are kept waiting as little as possible.
        database.attach_read_only(conn, "app", on_wait=context.log.info)
        try:
            has_created_at = conn.execute(
                "SELECT count(*) FROM duckdb_columns() WHERE database_name = 'app' "
                "AND table_name = 'messages' AND column_name = 'created_at'"
            ).fetchone()[0]
            select = "SELECT spam, body FROM app.messages"
            cap = config.max_messages
            if cap > 0 and has_created_at:
                query, params = select + " ORDER BY created_at DESC LIMIT $cap", {"cap": cap}
            elif cap > 0:
                # A top-N by a seeded hash: a deterministic sample that holds only N rows.
                query = select + " ORDER BY hash(spam, body, $seed) LIMIT $cap"
                params = {"cap": cap, "seed": config.sample_seed}
            else:
                query, params = select, {}
            conn.execute("CREATE OR REPLACE TABLE " + target + " AS " + query, params)
        finally:
            conn.execute("DETACH app")
        rows = warehouse.row_count(conn, "user_messages")
        context.log.info(f"copied {rows:,} user messages into the warehouse")
        return dg.MaterializeResult(
            metadata={
                "row_count": rows,
                "capped": config.max_messages > 0,
                "preview": dg.MetadataValue.md(warehouse.preview(conn, "user_messages")),
            }
        )


@dg.asset(deps=[sms_spam_examples, user_messages], kinds={"duckdb"})
def spam_dataset(
    context: dg.AssetExecutionContext, warehouse_db: DuckDBResource
) -> dg.MaterializeResult:
    """Every labelled message to learn from: the SMS collection plus the product's messages."""
    with warehouse_db.get_connection() as conn:
        # A view, not a copy: both sources are tables written by this run's upstream steps, and
        # copying ten million messages once more cost seconds.
        warehouse.replace_view(
            conn,
            "spam_dataset",
            "SELECT spam, body, source FROM ("
            "  SELECT spam, body, 'sms_spam_collection' AS source FROM "
            + warehouse.table("sms_spam_examples")
            + "  UNION ALL"
            "  SELECT spam, body, 'user_messages' AS source FROM "
            + warehouse.table("user_messages")
            + ") WHERE spam IS NOT NULL AND body IS NOT NULL AND trim(body) <> ''",
        )
        counts = dict(
            conn.execute(
                "SELECT source, count(*) FROM " + warehouse.table("spam_dataset") + " GROUP BY 1"
            ).fetchall()
        )
        spam_rows = conn.execute(
            "SELECT count(*) FILTER (WHERE spam) FROM " + warehouse.table("spam_dataset")
        ).fetchone()[0]
        total = sum(counts.values())
        context.log.info(f"spam_dataset holds {total:,} messages ({spam_rows:,} spam)")
        return dg.MaterializeResult(
            metadata={
                "row_count": total,
                "spam_count": spam_rows,
                "sms_collection_rows": counts.get(_SMS_COLLECTION, 0),
                "user_message_rows": counts.get(_USER_MESSAGES, 0),
                "preview": dg.MetadataValue.md(warehouse.preview(conn, "spam_dataset")),
            }
        )
