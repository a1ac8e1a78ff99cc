"""The tokenizer as DuckDB macros, so that counting and scoring millions of messages stays in SQL.

Built from the same pattern constants as `spam_filter.spam.tokenize`; a test holds the two equal
token for token. The patterns are module constants, never user input, so quoting them into the
macros' text is safe.

`regexp_extract_all` would express the token pattern directly, but it runs several times slower
than the equivalent below: every separator run becomes a space and every currency sign gets spaces
around it, so the tokens are the non-empty pieces between spaces. Those steps are plain
string-to-string functions, which DuckDB also evaluates once per distinct value of a
dictionary-compressed column rather than once per row.
"""

import duckdb

from spam_filter.spam import (
    CURRENCY_SIGNS,
    LONG_NUMBER_PATTERN,
    LONG_NUMBER_TOKEN,
    SEPARATOR_CLASS,
)


def sql_string(value: str) -> str:
    """A SQL string literal of a trusted constant (for SQL text that cannot take parameters)."""
    return "'" + value.replace("'", "''") + "'"


def _spaced_text() -> str:
    text = (
        f"regexp_replace(regexp_replace(lower(text), {sql_string(LONG_NUMBER_PATTERN)}, "
        f"{sql_string(' ' + LONG_NUMBER_TOKEN + ' ')}, 'g'), "
        f"{sql_string('[' + SEPARATOR_CLASS + ']+')}, ' ', 'g')"
    )
    for sign in CURRENCY_SIGNS:
        text = f"replace({text}, {sql_string(sign)}, {sql_string(' ' + sign + ' ')})"
    return text


TOKEN_TEXT_MACRO = f"CREATE OR REPLACE TEMP MACRO spam_token_text(text) AS {_spaced_text()}"
TOKENIZE_MACRO = (
    "CREATE OR REPLACE TEMP MACRO spam_tokens(text) AS "
    "list_filter(string_split(spam_token_text(text), ' '), lambda token: token <> '')"
)
# Counting queries unnest the pieces and drop the empty ones after: cheaper than `list_filter`.
UNNEST_WORDS = "unnest(string_split(spam_token_text({text}), ' '))"


def install_tokenizer(connection: duckdb.DuckDBPyConnection) -> None:
    """Define `spam_tokens(text) -> VARCHAR[]` and `spam_token_text(text)` on this connection.

    `spam_token_text` is the message with its tokens separated by one or more spaces;
    `spam_tokens` is the list of those tokens, the same as `spam_filter.spam.tokenize`.
    """
    connection.execute(TOKEN_TEXT_MACRO)
    connection.execute(TOKENIZE_MACRO)


def unnest_words(text: str) -> str:
    """SQL unnesting the tokens of `text` (a trusted SQL expression), with empty pieces to drop."""
    return UNNEST_WORDS.format(text=text)
