"""Helpers for the pipeline's warehouse: where table assets live and how to describe them."""

import duckdb
import pandas as pd

from spam_filter.sql import identifier

# The DuckDB pandas IO manager stores and loads DataFrame assets as SCHEMA.<asset name>; assets
# built in SQL write their tables (or views) at the same place, so any asset can still load them as
# DataFrames.
SCHEMA = "public"

# Table names are fixed identifiers from this module, never user input.
TABLES = (
    "sms_spam_examples",
    "user_messages",
    "spam_dataset",
    "spam_training_dataframe",
    "spam_testing_dataframe",
    # Not an asset: the seed and test share that the training split's view reads.
    "spam_split_settings",
)


def table(name: str) -> str:
    """The qualified name of a table asset, checked against the known asset tables."""
    if name not in TABLES:
        raise ValueError(f"unknown warehouse table {name!r}")
    return identifier(SCHEMA) + "." + identifier(name)


def replace_view(conn: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
    """Make a table asset a view of `select`, in place of a table an earlier version wrote.

    A view costs nothing to materialize however many messages it covers; the assets made views
    select from tables that are themselves snapshots, so they read the same rows as a copy would.
    """
    _drop_other_kind(conn, name, keep="VIEW")
    conn.execute("CREATE OR REPLACE VIEW " + table(name) + " AS " + select)


def replace_table(conn: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
    """Write a table asset from `select`, in place of a view of that name."""
    _drop_other_kind(conn, name, keep="BASE TABLE")
    conn.execute("CREATE OR REPLACE TABLE " + table(name) + " AS " + select)


def _drop_other_kind(conn: duckdb.DuckDBPyConnection, name: str, keep: str) -> None:
    # CREATE OR REPLACE refuses to replace a view with a table or a table with a view.
    conn.execute("CREATE SCHEMA IF NOT EXISTS " + identifier(SCHEMA))
    existing = conn.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_schema = ? AND table_name = ?",
        [SCHEMA, name],
    ).fetchone()
    if existing is not None and existing[0] != keep:
        kind = "VIEW" if existing[0] == "VIEW" else "TABLE"
        conn.execute("DROP " + kind + " " + table(name))


def row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    return conn.execute("SELECT count(*) FROM " + table(name)).fetchone()[0]


def preview(conn: duckdb.DuckDBPyConnection, name: str, rows: int = 5) -> str:
    """A markdown table of the first rows, for the asset's page in the UI."""
    frame: pd.DataFrame = conn.execute("SELECT * FROM " + table(name) + " LIMIT ?", [rows]).df()
    return frame.to_markdown(index=False) if len(frame) else "(empty)"
