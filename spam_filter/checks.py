"""Checks on the training set: the blocking ones stop the run before a model is trained on it."""

import dagster as dg

from spam_filter.assets.ingestion import spam_dataset
from spam_filter.resources import Warehouse

COUNT_CLASSES = """
    SELECT count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam)
    FROM public.spam_dataset
"""

# The dataset leaves bad rows out; the sources show how many it had to.
COUNT_BLANK_SOURCE_MESSAGES = """
    SELECT count(*)
    FROM (
        SELECT body FROM public.sms_spam_examples
        UNION ALL
        SELECT body FROM public.user_messages
    )
    WHERE body IS NULL OR trim(body) = ''
"""

COUNT_UNLABELLED_SOURCE_MESSAGES = """
    SELECT count(*)
    FROM (
        SELECT spam FROM public.sms_spam_examples
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
    with warehouse.get_connection() as conn:
        spam, non_spam = conn.execute(COUNT_CLASSES).fetchone()
    return dg.AssetCheckResult(
        passed=spam > 0 and non_spam > 0, metadata={"spam": spam, "non_spam": non_spam}
    )


@dg.asset_check(asset=spam_dataset)
def check_spam_dataset_text_present(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No source message is null or blank; any such are left out of the dataset, so a few bad
    rows warn rather than stop the monthly retrain."""
    with warehouse.get_connection() as conn:
        (blank,) = conn.execute(COUNT_BLANK_SOURCE_MESSAGES).fetchone()
    return dg.AssetCheckResult(
        passed=blank == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"blank_messages_left_out": blank},
    )


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_labels_boolean(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Labels are booleans (an error otherwise); a missing label only warns, since unlabelled
    messages are left out of the dataset."""
    with warehouse.get_connection() as conn:
        (label_type,) = conn.execute(LABEL_TYPE).fetchone()
        (missing,) = conn.execute(COUNT_UNLABELLED_SOURCE_MESSAGES).fetchone()
    return dg.AssetCheckResult(
        passed=label_type == "BOOLEAN" and missing == 0,
        severity=(
            dg.AssetCheckSeverity.ERROR if label_type != "BOOLEAN" else dg.AssetCheckSeverity.WARN
        ),
        metadata={"label_type": label_type, "unlabelled_messages_left_out": missing},
    )
