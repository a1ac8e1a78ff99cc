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
        compared_true_positive_rate, compared_false_positive_rate, created_at, retired_at
    FROM models
    WHERE status = 'active'
    ORDER BY created_at DESC
    LIMIT 1
"""

SELECT_MODEL_HISTORY = """
    SELECT
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate, created_at, retired_at
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

RETIRE_ACTIVE_MODEL = """
    UPDATE models
    SET status = 'inactive', retired_at = current_timestamp
    WHERE status = 'active'
"""

# Returns the row's weights too: a backend that keeps weights with the row refuses one without.
REACTIVATE_MODEL = """
    UPDATE models
    SET status = 'active', retired_at = NULL
    WHERE path = $1 AND status = 'inactive'
    RETURNING path, weights
"""

SELECT_MODEL_WEIGHTS = "SELECT weights FROM models WHERE path = $1 AND weights IS NOT NULL"
SELECT_PATHS_WITH_WEIGHTS = "SELECT path FROM models WHERE weights IS NOT NULL"

# Where weights live in the rows, keeping the last `$1` retired models' weights is clearing the
# older retired rows' weights: the rows stay, as history, and a rollback to them is refused.
CLEAR_OLD_RETIRED_WEIGHTS = """
    UPDATE models
    SET weights = NULL
    WHERE status = 'inactive' AND weights IS NOT NULL AND path NOT IN (
        SELECT path
        FROM models
        WHERE status = 'inactive' AND path IS NOT NULL
        ORDER BY coalesce(retired_at, created_at) DESC
        LIMIT $1
    )
    RETURNING path
"""

# `weights` is the model's JSON where the backend keeps weights with the row (PostgreSQL), else
# NULL: the DuckDB backend keeps them in the weights folder.
INSERT_MODEL = """
    INSERT INTO models (
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate, weights
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""

SELECT_ACTIVE_MODEL_WEIGHTS = """
    SELECT
        path, status, true_positive_rate, false_positive_rate, seed, reason, compared_with,
        compared_true_positive_rate, compared_false_positive_rate, created_at, retired_at,
        weights
    FROM models
    WHERE status = 'active'
    ORDER BY created_at DESC
    LIMIT 1
"""

SELECT_COLUMNS = """
    SELECT column_name, data_type
    FROM information_schema.columns
    WHERE table_name = $1
    ORDER BY ordinal_position
"""

INSERT_REPORTER = """
    INSERT INTO reporters (name, key_hash)
    VALUES ($1, $2)
    RETURNING reporter_id
"""

SELECT_REPORTER_BY_NAME = "SELECT reporter_id FROM reporters WHERE name = $1"

REVOKE_REPORTER = """
    UPDATE reporters
    SET revoked_at = current_timestamp
    WHERE name = $1 AND revoked_at IS NULL
    RETURNING reporter_id
"""

FLAG_REPORTER = """
    UPDATE reporters
    SET flagged_at = current_timestamp, flag_reason = $2
    WHERE reporter_id = $1
"""

CLEAR_REPORTER_FLAG = """
    UPDATE reporters
    SET flagged_at = NULL, flag_reason = NULL
    WHERE reporter_id = $1 AND flagged_at IS NOT NULL
"""

SELECT_REPORTER_KEYS = """
    SELECT key_hash, reporter_id, name
    FROM reporters
    WHERE revoked_at IS NULL
"""

SELECT_REPORTERS = """
    SELECT
        reporters.reporter_id, reporters.name, reporters.created_at, reporters.revoked_at,
        reporters.flagged_at, reporters.flag_reason, count(reports.reporter_id)
    FROM reporters
    LEFT JOIN reports ON reports.reporter_id = reporters.reporter_id
    GROUP BY
        reporters.reporter_id, reporters.name, reporters.created_at, reporters.revoked_at,
        reporters.flagged_at, reporters.flag_reason
    ORDER BY reporters.name
"""

COUNT_REPORTERS = "SELECT count(*) FROM reporters"

COUNT_REPORTS = "SELECT count(*) FROM reports"

# One vote per reporter and message: a later report with another label replaces the earlier one.
# A vote that repeats the stored label changes nothing and returns no row: a duplicate (as in
# `report_inbox.RECORD_VOTE`).
UPSERT_REPORT = """
    INSERT INTO reports (reporter_id, message_key, text_key, message_id, body, spam, reported_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (reporter_id, message_key) DO UPDATE SET
        text_key = excluded.text_key,
        message_id = excluded.message_id,
        body = excluded.body,
        spam = excluded.spam,
        reported_at = excluded.reported_at
    WHERE reports.spam IS DISTINCT FROM excluded.spam
    RETURNING reporter_id
"""

# The tables `describe` reports, each with the statement that counts its rows.
TABLE_ROW_COUNTS = {
    "messages": COUNT_MESSAGES,
    "models": COUNT_MODELS,
    "reporters": COUNT_REPORTERS,
    "reports": COUNT_REPORTS,
}
