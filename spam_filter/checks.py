"""Data checks on the training set; a failure stops the run before a model is trained on it."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from spam_filter import warehouse
from spam_filter.assets.data import spam_dataset


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_has_both_classes(warehouse_db: DuckDBResource) -> dg.AssetCheckResult:
    """Both spam and non-spam messages are present, or there is nothing to learn."""
    with warehouse_db.get_connection() as conn:
        spam, non_spam = conn.execute(
            "SELECT count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam) FROM "
            + warehouse.table("spam_dataset")
        ).fetchone()
    return dg.AssetCheckResult(
        passed=spam > 0 and non_spam > 0, metadata={"spam": spam, "non_spam": non_spam}
    )


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_text_present(warehouse_db: DuckDBResource) -> dg.AssetCheckResult:
    """No message is null or blank."""
    with warehouse_db.get_connection() as conn:
        (blank,) = conn.execute(
            "SELECT count(*) FROM "
            + warehouse.table("spam_dataset")
            + " WHERE body IS NULL OR trim(body) = ''"
        ).fetchone()
    return dg.AssetCheckResult(passed=blank == 0, metadata={"blank_messages": blank})


@dg.asset_check(asset=spam_dataset, blocking=True)
def check_spam_dataset_labels_boolean(warehouse_db: DuckDBResource) -> dg.AssetCheckResult:
    """Every label is a non-null boolean."""
    with warehouse_db.get_connection() as conn:
        (label_type,) = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = 'spam_dataset' AND column_name = 'spam'",
            [warehouse.SCHEMA],
        ).fetchone()
        (missing,) = conn.execute(
            "SELECT count(*) FROM " + warehouse.table("spam_dataset") + " WHERE spam IS NULL"
        ).fetchone()
    return dg.AssetCheckResult(
        passed=label_type == "BOOLEAN" and missing == 0,
        metadata={"label_type": label_type, "missing_labels": missing},
    )
