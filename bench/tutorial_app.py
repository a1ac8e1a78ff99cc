"""The tutorial's per-request `is_spam`, served faithfully as the baseline the API replaces.

Every request opens the DuckDB file (read-write, as the tutorial does, so only one worker can
serve without locking itself out), reads the active model's path with `SELECT *` into a
DataFrame, opens and parses the weights file, and scores `text.split()` with the tutorial's
`compare_text_to_bow`. Served by gunicorn as `bench.tutorial_app:create_app()`.
"""

import json
from pathlib import Path

import duckdb
from flask import Flask, jsonify, request

from spam_filter import settings
from spam_filter.spam import compare_text_to_bow


def is_spam(text: str, database_path: str, weights_dir: Path) -> bool:
    """Score `text` the tutorial's way: database, weights file and model loaded anew each call."""
    with duckdb.connect(database_path) as conn:
        df = conn.execute("SELECT * FROM models WHERE status = 'active'").fetchdf()
        path_value = df.loc[0, "path"]
        # The tutorial stored paths under ./weights; this project, names in its weights folder.
        with open(weights_dir / path_value) as f:
            data = json.load(f)
            spam_bow = data.get("spam_bow")
            non_spam_bow = data.get("non_spam_bow")
            percent_spam = data.get("percent_spam")
    return compare_text_to_bow(text.split(), spam_bow, non_spam_bow, percent_spam)


def create_app() -> Flask:
    """Build the tutorial-style app on the configured database."""
    app = Flask(__name__)
    database_path = str(settings.database_path())
    weights_dir = settings.weights_dir()

    @app.post("/api/find_spam")
    def find_spam():
        """Answer with the tutorial's per-request is_spam."""
        text = request.json["text"]
        return jsonify(success=True, is_spam=is_spam(text, database_path, weights_dir))

    return app
