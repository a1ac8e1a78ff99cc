"""The tokenizer as a DuckDB macro, so that counting and scoring millions of messages stays in SQL.

Built from the same pattern constants as `spam_filter.spam.tokenize`; a test holds the two equal
token for token. The patterns are module constants, never user input, so quoting them into the
macro's text is safe.
"""

import duckdb

from spam_filter.spam import LONG_NUMBER_PATTERN, LONG_NUMBER_TOKEN, TOKEN_PATTERN


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


TOKENIZE_MACRO = (
    "CREATE OR REPLACE TEMP MACRO spam_tokens(text) AS regexp_extract_all("
    f"regexp_replace(lower(text), {_sql_string(LONG_NUMBER_PATTERN)}, "
    f"{_sql_string(' ' + LONG_NUMBER_TOKEN + ' ')}, 'g'), {_sql_string(TOKEN_PATTERN)})"
)


def install_tokenizer(connection: duckdb.DuckDBPyConnection) -> None:
    """Define `spam_tokens(text) -> VARCHAR[]` on this connection."""
    connection.execute(TOKENIZE_MACRO)
