"""The HTTP-stack limit: parse the same JSON as the API, answer a constant, touch no model.

Served by gunicorn as `bench.constant_app:create_app()` to show what Flask and gunicorn alone
cost per request; the API is measured against it.
"""

import json

from flask import Flask, jsonify, request


def create_app() -> Flask:
    """Build the constant-answer app."""
    app = Flask(__name__)

    @app.post("/api/find_spam")
    def find_spam():
        """Parse the body like the API does and answer the same constant every time."""
        payload = json.loads(request.get_data(cache=False))
        if not isinstance(payload.get("text"), str):
            return jsonify(success=False, error='"text" must be a string'), 400
        return jsonify(success=True, is_spam=False, spam_probability=0.0, model="constant")

    return app
