"""The application database's command line: `python database.py` creates the tables.

The schema, the queries and the promotion transaction live in `spam_filter.storage`; this script
only calls them.
"""

import argparse
from pathlib import Path

from spam_filter import settings
from spam_filter.storage.factory import open_storage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Create the application database's tables.")
    parser.add_argument(
        "--database", type=Path, help="database file (default: SPAM_FILTER_DATABASE)"
    )
    args = parser.parse_args(argv)
    storage = open_storage(args.database)
    storage.create_schema()
    renamed = storage.relativize_model_paths(settings.weights_dir())
    if renamed:
        print(f"{renamed} weights path(s) rewritten relative to {settings.weights_dir()}")
    print(f"database {storage}\n{storage.describe()}")


if __name__ == "__main__":
    main()
