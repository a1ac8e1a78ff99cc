"""The environment a benchmark's processes run in: the caller's, without what would point them
at the caller's own system.

A benchmark makes its own database, weights and Dagster instance in a temporary folder. An
exported `SPAM_FILTER_DATABASE_URL` would instead send its runs to the caller's PostgreSQL (and
promote models there) while its sample data went into the temporary file, and a UI or API
address would move its servers off the loopback interface. Other `SPAM_FILTER_*` settings pass
through, for experiments, and are named on stderr beside the figures they change.
"""

import os
import sys
from pathlib import Path

NOT_INHERITED = (
    "SPAM_FILTER_DATABASE_URL",
    "SPAM_FILTER_API_BIND",
    "SPAM_FILTER_UI_HOST",
    "SPAM_FILTER_UI_PORT",
)
_named: set[str] = set()


def bench_environment(**settings: str) -> dict[str, str]:
    """The caller's environment without `NOT_INHERITED`, with `settings` on top."""
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    passed = sorted(
        name for name in env if name.startswith("SPAM_FILTER_") and name not in settings
    )
    if passed and not _named.issuperset(passed):
        _named.update(passed)
        print(f"note: run with {', '.join(f'{n}={env[n]}' for n in passed)}", file=sys.stderr)
    return {**env, **settings}


def folder_environment(folder: Path, **settings: str) -> dict[str, str]:
    """`bench_environment` with the database, warehouse, weights, pipeline storage and Dagster
    instance all in `folder` (nothing is created), and `settings` on top."""
    return bench_environment(
        SPAM_FILTER_DATABASE=str(folder / "app.duckdb"),
        SPAM_FILTER_WAREHOUSE=str(folder / "warehouse.duckdb"),
        SPAM_FILTER_WEIGHTS_DIR=str(folder / "weights"),
        SPAM_FILTER_STORAGE_DIR=str(folder / "storage"),
        DAGSTER_HOME=str(folder / "dagster_home"),
        **settings,
    )
