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
