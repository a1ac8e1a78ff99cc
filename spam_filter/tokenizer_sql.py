"""The tokenizer as DuckDB macros, so that counting and scoring millions of messages stays in SQL.

The macros spell out the same patterns as `spam_filter.spam.tokenize` (the kinds of long numbers,
SEPARATOR_CLASS, CURRENCY_SIGNS); tests hold the two equal on every code point.

`regexp_extract_all` would express the token pattern directly, but it runs several times slower
than the equivalent below: every separator run becomes a space and every currency sign gets spaces
around it, so the tokens are the non-empty pieces between spaces. Those steps are plain
string-to-string functions, which DuckDB also evaluates once per distinct value of a
dictionary-compressed column rather than once per row. Queries that count words unnest
`string_split(spam_token_text(body), ' ')` and drop the empty pieces after, which is cheaper than
filtering each list.
"""

import duckdb

TOKEN_TEXT_MACRO = r"""
    CREATE OR REPLACE TEMP MACRO spam_token_text(text) AS
    replace(replace(replace(
        regexp_replace(
            regexp_replace(regexp_replace(regexp_replace(lower(text),
                '[0-9]{10,}', ' longnumber ', 'g'),
                '[0-9]{6,}', ' ', 'g'),
                '[0-9]{5}', ' 00000 ', 'g'),
            '[ \t\n\r\f\v!"#%&''()*+,\-./:;<=>?@\[\\\]^_`{|}~]+', ' ', 'g'
        ),
        '£', ' £ '), '$', ' $ '), '€', ' € ')
"""

TOKENIZE_MACRO = """
    CREATE OR REPLACE TEMP MACRO spam_tokens(text) AS
    list_filter(string_split(spam_token_text(text), ' '), lambda token: token <> '')
"""


def install_tokenizer(connection: duckdb.DuckDBPyConnection) -> None:
    """Define `spam_tokens(text) -> VARCHAR[]` and `spam_token_text(text)` on this connection.

    `spam_token_text` is the message with its tokens separated by one or more spaces;
    `spam_tokens` is the list of those tokens, the same as `spam_filter.spam.tokenize`.
    """
    connection.execute(TOKEN_TEXT_MACRO)
    connection.execute(TOKENIZE_MACRO)
