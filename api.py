"""The spam-checking HTTP API.

`python api.py` serves on 127.0.0.1:5000 for development; production serves `api:create_app()`
with gunicorn (see README). Dagster is never imported here: the API needs only the model.
"""

import logging
import os
import sys
from typing import Any

from flask import Flask

from spam_filter import settings
from spam_filter.command_line import error_line
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


def main() -> int:
    host = os.environ.get("SPAM_FILTER_API_HOST", "127.0.0.1")
    port = os.environ.get("SPAM_FILTER_API_PORT", "5000")
    try:
        if not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise settings.SettingError(
                f"SPAM_FILTER_API_PORT must be a port number (0 to 65535), not {port!r}"
            )
        app = create_app()
    except settings.SettingError as error:
        print(error_line(error), file=sys.stderr)
        return 2
    app.run(host=host, port=int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
