"""Checks on the training data: the blocking ones stop the run before a model is trained on it."""

import dagster as dg
import duckdb

from spam_filter import constants
from spam_filter.assets.ingestion import spam_dataset, user_messages
from spam_filter.resources import ApplicationDatabase, Warehouse

COUNT_CLASSES = """
    SELECT count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam)
    FROM public.spam_dataset
"""

# The dataset leaves bad rows out; the sources show how many it had to. Blank is as the dataset
# defines it: empty, or only spaces.
COUNT_BLANK_SOURCE_MESSAGES = """
    SELECT count(*)
    FROM (
        SELECT body FROM public.sms_spam_examples
        UNION ALL
        SELECT body FROM public.gold_examples
        UNION ALL
        SELECT body FROM public.user_messages
    )
    WHERE body IS NULL OR body = '' OR (starts_with(body, ' ') AND trim(body) = '')
"""

COUNT_UNLABELLED_SOURCE_MESSAGES = """
    SELECT count(*)
    FROM (
        SELECT spam FROM public.sms_spam_examples
        UNION ALL
        SELECT spam FROM public.gold_examples
        UNION ALL
        SELECT spam FROM public.user_messages
    )
    WHERE spam IS NULL
"""

LABEL_TYPE = """
    SELECT data_type
    FROM information_schema.columns
    WHERE table_schema = 'public' AND table_name = 'spam_dataset' AND column_name = 'spam'
"""


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_has_both_classes(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Both spam and non-spam messages are present: else there is nothing to learn."""
    with warehouse.get_streaming_connection() as conn:
        spam, non_spam = conn.execute(COUNT_CLASSES).fetchone()
    return dg.AssetCheckResult(
        passed=spam > 0 and non_spam > 0, metadata={"spam": spam, "non_spam": non_spam}
    )


@dg.asset_check(asset=spam_dataset)
def check_spam_dataset_text_present(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No source message is null or blank."""
    # Such messages are left out of the dataset: a few bad rows warn rather than stop a retrain.
    with warehouse.get_streaming_connection() as conn:
        (blank,) = conn.execute(COUNT_BLANK_SOURCE_MESSAGES).fetchone()
    return dg.AssetCheckResult(
        passed=blank == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"blank_messages_left_out": blank},
    )


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_labels_boolean(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Labels are booleans, and every source message has one."""
    # A label of another type is an error; a missing one only warns, as such messages are left
    # out of the dataset.
    with warehouse.get_streaming_connection() as conn:
        (label_type,) = conn.execute(LABEL_TYPE).fetchone()
        (missing,) = conn.execute(COUNT_UNLABELLED_SOURCE_MESSAGES).fetchone()
    return dg.AssetCheckResult(
        passed=label_type == "BOOLEAN" and missing == 0,
        severity=(
            dg.AssetCheckSeverity.ERROR if label_type != "BOOLEAN" else dg.AssetCheckSeverity.WARN
        ),
        metadata={"label_type": label_type, "unlabelled_messages_left_out": missing},
    )


# Only what a run trains on: messages over a reporter's share are kept out of it.
REPORTER_SHARES = """
    SELECT
        reporter_id,
        count(*) / (SELECT count(*) FROM public.user_messages WHERE NOT capped) AS share
    FROM public.user_messages
    WHERE reporter_id IS NOT NULL AND NOT capped
    GROUP BY reporter_id
    ORDER BY share DESC, reporter_id
    LIMIT 1
"""

LABEL_BALANCE = """
    SELECT count(*), count(*) FILTER (WHERE spam) FROM public.user_messages WHERE NOT capped
"""

CONTRIBUTING_REPORTERS = """
    SELECT DISTINCT reporter_id
    FROM public.user_messages
    WHERE reporter_id IS NOT NULL AND NOT capped
"""


# The share the run capped reporters at; a table from before it was recorded means the default.
REPORTER_SHARE_SETTING = "SELECT max_reporter_share FROM public.user_messages_settings"


@dg.asset_check(asset=user_messages)
def check_user_messages_reporter_share(
    warehouse: Warehouse, database: ApplicationDatabase
) -> dg.AssetCheckResult:
    """No reporter alone stands behind more than the share `user_messages` allowed."""
    with warehouse.get_connection() as conn:
        largest = conn.execute(REPORTER_SHARES).fetchall()
        try:
            (max_share,) = conn.execute(REPORTER_SHARE_SETTING).fetchone()
        except duckdb.CatalogException:
            max_share = constants.MAX_REPORTER_SHARE
    reporter_id, share = largest[0] if largest else (None, 0.0)
    names = {reporter.reporter_id: reporter.name for reporter in database.storage().reporters()}
    return dg.AssetCheckResult(
        passed=share <= max_share + 1e-9,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "largest_reporter": names.get(reporter_id, "none"),
            "largest_share": float(share),
            "max_reporter_share": float(max_share),
        },
    )


@dg.asset_check(asset=user_messages)
def check_user_messages_label_balance(warehouse: Warehouse) -> dg.AssetCheckResult:
    """The user messages hold both labels, neither below 1%: one-sided reports teach one side."""
    with warehouse.get_connection() as conn:
        messages, spam = conn.execute(LABEL_BALANCE).fetchone()
    share = spam / messages if messages else 0.0
    return dg.AssetCheckResult(
        passed=messages == 0 or 0.01 <= share <= 0.99,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"user_messages": messages, "spam_share": share},
    )


@dg.asset_check(asset=user_messages)
def check_user_messages_flagged_reporters(
    warehouse: Warehouse, database: ApplicationDatabase
) -> dg.AssetCheckResult:
    """No reporter that a retrain flagged for making the model worse contributes messages."""
    with warehouse.get_connection() as conn:
        contributing = {row[0] for row in conn.execute(CONTRIBUTING_REPORTERS).fetchall()}
    flagged = [
        reporter
        for reporter in database.storage().reporters()
        if reporter.status == "flagged" and reporter.reporter_id in contributing
    ]
    return dg.AssetCheckResult(
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "flagged_reporters": ", ".join(r.name for r in flagged) or "none",
            "reasons": dg.MetadataValue.md(
                "\n".join(f"- **{r.name}**: {r.flag_reason}" for r in flagged) or "none"
            ),
        },
    )
