"""The warehouse's tables: where table assets live, and how the UI describes them.

The DuckDB pandas IO manager stores and loads DataFrame assets as `public.<asset name>`; assets
built in SQL write their tables (or views) at the same place, so any of them loads as a DataFrame.
"""

import duckdb
import pandas as pd

SCHEMA = "public"

# The metadata key Dagster's catalog shows as a table's row count.
ROW_COUNT = "dagster/row_count"

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS public"

_KIND = """
    SELECT table_type
    FROM information_schema.tables
    WHERE table_schema = 'public' AND table_name = $1
"""

# CREATE OR REPLACE refuses to replace a view with a table or a table with a view, and a warehouse
# written by another release of the pipeline may hold either. Each asset that is a view drops a
# table of its name first, and the one that is a table drops a view.
_KIND_WRITTEN = {
    "spam_dataset": "VIEW",
    "spam_training_dataframe": "VIEW",
    "spam_testing_dataframe": "BASE TABLE",
}
_DROP_OTHER_KIND = {
    "spam_dataset": "DROP TABLE public.spam_dataset",
    "spam_training_dataframe": "DROP TABLE public.spam_training_dataframe",
    "spam_testing_dataframe": "DROP VIEW public.spam_testing_dataframe",
}


def make_room_for(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop `public.<name>` if it is not of the kind (table or view) the asset now writes."""
    conn.execute(CREATE_SCHEMA)
    existing = conn.execute(_KIND, [name]).fetchone()
    if existing is not None and existing[0] != _KIND_WRITTEN[name]:
        conn.execute(_DROP_OTHER_KIND[name])


# Both read through a cursor of their own: DuckDB refuses relation calls on a connection whose last
# result was not fetched to the end, as after `fetchone()`.


def row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    with conn.cursor() as cursor:
        ((count,),) = cursor.table(f"{SCHEMA}.{name}").count("*").fetchall()
    return count


def preview(conn: duckdb.DuckDBPyConnection, name: str, rows: int = 5) -> str:
    """A markdown table of the first rows, for the asset's page in the UI."""
    with conn.cursor() as cursor:
        frame: pd.DataFrame = cursor.table(f"{SCHEMA}.{name}").limit(rows).df()
    return frame.to_markdown(index=False) if len(frame) else "(empty)"
