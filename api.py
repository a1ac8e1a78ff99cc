"""The spam-checking HTTP API.

`python api.py` serves on 127.0.0.1:5000 for development; production serves `api:create_app()`
with gunicorn (see README). Dagster is never imported here: the API needs only the model.
"""

import logging
import os
from typing import Any

from flask import Flask

from spam_filter import settings
from spam_filter.serving import database_watcher, metrics, rate_limits, routes


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the API: defaults and environment overrides, then `test_config`."""
    app = Flask(__name__)
    # werkzeug would answer a path with doubled slashes with an HTML redirect: a 404 in JSON here.
    app.url_map.merge_slashes = False
    app.config.from_mapping(settings.api_config())
    if test_config:
        app.config.from_mapping(test_config)
    app.logger.setLevel(logging.INFO)
    database_watcher.init_app(app)
    rate_limits.init_app(app)
    app.register_blueprint(routes.blueprint)
    metrics.init_app(app)
    return app


def main() -> None:
    host = os.environ.get("SPAM_FILTER_API_HOST", "127.0.0.1")
    port = int(os.environ.get("SPAM_FILTER_API_PORT", "5000"))
    create_app().run(host=host, port=port)


if __name__ == "__main__":
    main()
