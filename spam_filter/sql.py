"""The tokenizer as DuckDB macros, so that counting and scoring millions of messages stays in SQL.

The macros spell out the same patterns as `spam_filter.spam.tokenize`; tests hold the two equal
token for token. Every statement here and elsewhere is literal SQL plus parameters; `identifier`
is the only way a name enters SQL text.

`regexp_extract_all` would express the token pattern directly, but it runs several times slower
than the equivalent below: every separator run becomes a space and every currency sign gets spaces
around it, so the tokens are the non-empty pieces between spaces. Those steps are plain
string-to-string functions, which DuckDB also evaluates once per distinct value of a
dictionary-compressed column rather than once per row.
"""

import re

import duckdb

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifier(name: str) -> str:
    """`name` as a quoted SQL identifier, for the one thing parameters cannot carry.

    Raises:
        ValueError: The name is not a plain identifier; it is refused, never escaped.
    """
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return '"' + name + '"'


# Literal SQL, so no query is ever assembled by formatting; the patterns are those of
# `spam_filter.spam` (LONG_NUMBER_PATTERN, LONG_NUMBER_TOKEN, SEPARATOR_CLASS, CURRENCY_SIGNS), and
# tests hold the two tokenizers equal on every code point.
TOKEN_TEXT_MACRO = (
    "CREATE OR REPLACE TEMP MACRO spam_token_text(text) AS "
    "replace(replace(replace(regexp_replace(regexp_replace(lower(text), "
    "'[0-9]{5,}', ' 00000 ', 'g'), "
    r"""'[ \t\n\r\f\v!"#%&''()*+,\-./:;<=>?@\[\\\]^_`{|}~]+', ' ', 'g'), """
    "'£', ' £ '), '$', ' $ '), '€', ' € ')"
)
TOKENIZE_MACRO = (
    "CREATE OR REPLACE TEMP MACRO spam_tokens(text) AS "
    "list_filter(string_split(spam_token_text(text), ' '), lambda token: token <> '')"
)
# Counting queries unnest the pieces and drop the empty ones after: cheaper than `list_filter`.
UNNEST_BODY_WORDS = "unnest(string_split(spam_token_text(body), ' '))"


def install_tokenizer(connection: duckdb.DuckDBPyConnection) -> None:
    """Define `spam_tokens(text) -> VARCHAR[]` and `spam_token_text(text)` on this connection.

    `spam_token_text` is the message with its tokens separated by one or more spaces;
    `spam_tokens` is the list of those tokens, the same as `spam_filter.spam.tokenize`.
    """
    connection.execute(TOKEN_TEXT_MACRO)
    connection.execute(TOKENIZE_MACRO)
