"""Helpers for the pipeline's warehouse: where table assets live and how to describe them."""

import duckdb
import pandas as pd

# The DuckDB pandas IO manager stores and loads DataFrame assets as SCHEMA.<asset name>; assets
# built in SQL write their tables at the same place, so any asset can still load them as DataFrames.
SCHEMA = "public"

# Table names are fixed identifiers from this module, never user input.
TABLES = (
    "sms_spam_examples",
    "user_messages",
    "spam_dataset",
    "spam_training_dataframe",
    "spam_testing_dataframe",
)


def table(name: str) -> str:
    """The qualified name of a table asset, checked against the known asset tables."""
    if name not in TABLES:
        raise ValueError(f"unknown warehouse table {name!r}")
    return f"{SCHEMA}.{name}"


def row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    return conn.execute("SELECT count(*) FROM " + table(name)).fetchone()[0]


def preview(conn: duckdb.DuckDBPyConnection, name: str, rows: int = 5) -> str:
    """A markdown table of the first rows, for the asset's page in the UI."""
    frame: pd.DataFrame = conn.execute("SELECT * FROM " + table(name) + " LIMIT ?", [rows]).df()
    return frame.to_markdown(index=False) if len(frame) else "(empty)"
