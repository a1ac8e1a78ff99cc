"""The application database's statements, shared by every backend.

Each statement is whole, literal SQL that DuckDB and PostgreSQL both accept; values travel as
`$1`-style parameters, which both take natively.
"""

BEGIN = "BEGIN TRANSACTION"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

INSERT_MESSAGE = "INSERT INTO messages (spam, body) VALUES ($1, $2)"

COUNT_MESSAGES = "SELECT count(*) FROM messages"

COUNT_MODELS = "SELECT count(*) FROM models"

SELECT_ACTIVE_MODEL = """
    SELECT
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate, created_at
    FROM models
    WHERE status = 'active'
    ORDER BY created_at DESC
    LIMIT 1
"""

SELECT_MODEL_HISTORY = """
    SELECT
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate, created_at
    FROM models
    ORDER BY created_at DESC
"""

SELECT_ACTIVE_PATHS = "SELECT path FROM models WHERE status = 'active'"

SELECT_RECORDED_PATHS = "SELECT DISTINCT path FROM models WHERE path IS NOT NULL"

# Rows name their weights file relative to the weights folder; `relativize_model_paths` finds the
# absolute paths a database may still hold.
SELECT_ABSOLUTE_MODEL_PATHS = """
    SELECT path FROM models WHERE path LIKE '/%'
    UNION
    SELECT compared_with FROM models WHERE compared_with LIKE '/%'
"""

RENAME_MODEL_PATH = "UPDATE models SET path = $1 WHERE path = $2"

RENAME_COMPARED_MODEL_PATH = "UPDATE models SET compared_with = $1 WHERE compared_with = $2"

RETIRE_ACTIVE_MODEL = "UPDATE models SET status = 'inactive' WHERE status = 'active'"

INSERT_MODEL = """
    INSERT INTO models (
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

SELECT_COLUMNS = """
    SELECT column_name, data_type
    FROM information_schema.columns
    WHERE table_name = $1
    ORDER BY ordinal_position
"""

# The tables `describe` reports, each with the statement that counts its rows.
TABLE_ROW_COUNTS = {"messages": COUNT_MESSAGES, "models": COUNT_MODELS}
