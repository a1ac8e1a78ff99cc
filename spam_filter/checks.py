"""Data checks on the training set; a failure stops the run before a model is trained on it."""

from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from spam_filter import warehouse
from spam_filter.assets.data import spam_dataset


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "check_spam_dataset_has_both_classes",
            asset=spam_dataset,
            blocking=True,
            description="Both spam and non-spam messages are present: else nothing to learn.",
        ),
        dg.AssetCheckSpec(
            "check_spam_dataset_text_present",
            asset=spam_dataset,
            blocking=True,
            description=(
                "No source message is null or blank (any such are left out of the dataset; a "
                "warning, so that a few bad rows do not stop the monthly retrain)."
            ),
        ),
        dg.AssetCheckSpec(
            "check_spam_dataset_labels_boolean",
            asset=spam_dataset,
            blocking=True,
            description=(
                "Labels are booleans (an error) and none is missing in the sources (a warning: "
                "unlabelled messages are left out of the dataset)."
            ),
        ),
    ]
)
def spam_dataset_checks(warehouse_db: DuckDBResource) -> Iterator[dg.AssetCheckResult]:
    """Check the dataset's classes, texts and labels in one step and one scan."""
    # One step rather than one per check: each step costs the run about 0.1 s of Dagster's own
    # bookkeeping, more than these counts take even on ten million messages.
    with warehouse_db.get_connection() as conn:
        spam, non_spam = conn.execute(
            "SELECT count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam) FROM "
            + warehouse.table("spam_dataset")
        ).fetchone()
        # The dataset itself leaves bad rows out; the sources show how many it had to.
        blank, missing = conn.execute(
            "SELECT count(*) FILTER (WHERE body IS NULL OR trim(body) = ''), "
            "count(*) FILTER (WHERE spam IS NULL) FROM ("
            "SELECT spam, body FROM " + warehouse.table("sms_spam_examples") + " UNION ALL "
            "SELECT spam, body FROM " + warehouse.table("user_messages") + ")"
        ).fetchone()
        (label_type,) = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = 'spam_dataset' AND column_name = 'spam'",
            [warehouse.SCHEMA],
        ).fetchone()
    yield dg.AssetCheckResult(
        check_name="check_spam_dataset_has_both_classes",
        passed=spam > 0 and non_spam > 0,
        metadata={"spam": spam, "non_spam": non_spam},
    )
    yield dg.AssetCheckResult(
        check_name="check_spam_dataset_text_present",
        passed=blank == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"blank_messages_left_out": blank},
    )
    yield dg.AssetCheckResult(
        check_name="check_spam_dataset_labels_boolean",
        passed=label_type == "BOOLEAN" and missing == 0,
        severity=(
            dg.AssetCheckSeverity.ERROR if label_type != "BOOLEAN" else dg.AssetCheckSeverity.WARN
        ),
        metadata={"label_type": label_type, "unlabelled_messages_left_out": missing},
    )
