"""The spam_filter code location.

`defs` is resolved on first access rather than imported here, so that the API, which needs only
the pure modules (`spam`, `settings`), does not load Dagster: that costs each gunicorn worker
seconds of start-up and about 250 MB. Dagster finds it all the same, since `dagster -m
spam_filter` lists the module's members with `dir()` and reads them with `getattr()`.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from spam_filter.definitions import defs

        return defs
    raise AttributeError(f"module 'spam_filter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "defs"]
