"""Where the project keeps its files: one place, environment variables first, then defaults.

Defaults are anchored on the project root (not the working directory), so every command works
from anywhere. Values are read when called, never at import time, so tests and servers can set
the environment before they start.
"""

import math
import os
from pathlib import Path
from typing import Any

import duckdb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL_VARIABLE = "SPAM_FILTER_DATABASE_URL"


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def database_path() -> Path:
    """The application database: messages, models, reporters and their reports."""
    return _path_from_env("SPAM_FILTER_DATABASE", PROJECT_ROOT / "data" / "spam_filter.duckdb")


def database_url() -> str | None:
    """`SPAM_FILTER_DATABASE_URL` (postgresql://...): the application database on PostgreSQL
    instead of the DuckDB file; None when unset or empty."""
    return os.environ.get(DATABASE_URL_VARIABLE) or None


def database_location() -> str:
    """Where the application database is: the PostgreSQL URL when one is set, else the file."""
    return database_url() or str(database_path())


def warehouse_path() -> Path:
    """The pipeline's own DuckDB file for intermediate tables, kept apart from the app database."""
    return _path_from_env("SPAM_FILTER_WAREHOUSE", PROJECT_ROOT / "data" / "warehouse.duckdb")


def warehouse_memory_limit() -> str:
    """DuckDB's memory cap for a retrain, in DuckDB's units (`256MB`, `1GB`): past it, large
    aggregates and joins spill to disk next to the warehouse instead of growing."""
    limit = os.environ.get("SPAM_FILTER_WAREHOUSE_MEMORY") or "256MB"
    try:
        # DuckDB is the judge of its own units: a scratch in-memory database with the cap.
        duckdb.connect(config={"memory_limit": limit}).close()
    except duckdb.Error as error:
        raise SettingError(
            f"SPAM_FILTER_WAREHOUSE_MEMORY must be a size DuckDB reads, such as 256MB or 1GB, "
            f"not {limit!r} ({error})"
        ) from None
    return limit


def weights_dir() -> Path:
    """Where model weight files are written and read."""
    return _path_from_env("SPAM_FILTER_WEIGHTS_DIR", PROJECT_ROOT / "weights")


def storage_dir() -> Path:
    """Where Dagster stores non-table asset values (bags of words, scores)."""
    return _path_from_env("SPAM_FILTER_STORAGE_DIR", PROJECT_ROOT / "data" / "storage")


def gold_csv_path() -> Path | None:
    """The product's curated messages that only ever judge models (`label,text`), if any."""
    value = os.environ.get("SPAM_FILTER_GOLD_CSV")
    return Path(value).expanduser().resolve() if value else None


def spam_csv_path() -> Path:
    """The SMS Spam Collection shipped with the project."""
    return _path_from_env("SPAM_FILTER_SPAM_CSV", PROJECT_ROOT / "spam.csv")


class SettingError(ValueError):
    """An environment variable holds a value the system cannot run with."""


def _number(name: str, default: float, minimum: float = 0.0, whole: bool = False) -> float:
    """The variable as a finite number above `minimum` (at least it, when `whole`), else the
    default when unset: a zero rate or a NaN interval would start a server that refuses or spins."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    within = value >= minimum if whole else value > minimum
    if not (math.isfinite(value) and within and (value.is_integer() or not whole)):
        kind = f"a whole number of at least {minimum:g}" if whole else f"a number above {minimum:g}"
        raise SettingError(f"{name} must be {kind}, not {text!r}")
    return value


def _whole(name: str, default: int, minimum: int = 1) -> int:
    return int(_number(name, default, minimum, whole=True))


def retrain_after_reports() -> int:
    """New accepted reports after which the sensor asks for a retrain."""
    return _whole("SPAM_FILTER_RETRAIN_AFTER_REPORTS", 500)


def retrain_min_interval_seconds() -> float:
    """The least time between two retrains the sensor asks for."""
    return _number("SPAM_FILTER_RETRAIN_MIN_INTERVAL_SECONDS", 3600, whole=True)


def api_config() -> dict[str, Any]:
    """The API's configuration: the paths above, then its own environment variables."""
    return {
        "DATABASE": database_location(),
        "WEIGHTS_DIR": str(weights_dir()),
        "MODEL_REFRESH_SECONDS": _number("SPAM_FILTER_MODEL_REFRESH_SECONDS", 2),
        "MODEL_FULL_CHECK_SECONDS": _number("SPAM_FILTER_MODEL_FULL_CHECK_SECONDS", 30),
        "MAX_CONTENT_LENGTH": _whole("SPAM_FILTER_MAX_BODY_BYTES", 64 * 1024),
        # Under gunicorn: how long a body may take to arrive (then a 408), and each of gunicorn's
        # reads of the headers may wait (see the gunicorn settings' `post_fork`).
        "BODY_READ_SECONDS": _number("SPAM_FILTER_BODY_READ_SECONDS", 10),
        "MAX_BATCH_TEXTS": _whole("SPAM_FILTER_MAX_BATCH_TEXTS", 1000),
        # A report body fits 1,000 SMS-length reports.
        "MAX_REPORT_BODY_BYTES": _whole("SPAM_FILTER_MAX_REPORT_BODY_BYTES", 512 * 1024),
        "MAX_REPORTS_PER_REQUEST": _whole("SPAM_FILTER_MAX_REPORTS_PER_REQUEST", 1000),
        "MAX_REPORT_TEXT_CHARACTERS": _whole("SPAM_FILTER_MAX_REPORT_TEXT_CHARACTERS", 2000),
        # Per reporter and API process: a steady 100 reports a second, bursts of two full batches.
        "REPORT_RATE_PER_SECOND": _number("SPAM_FILTER_REPORT_RATE", 100),
        "REPORT_BURST": _number("SPAM_FILTER_REPORT_BURST", 2000, minimum=1, whole=True),
        "REPORT_RETRY_AFTER_SECONDS": 5,
        # Off only to measure what counting costs.
        "METRICS": os.environ.get("SPAM_FILTER_METRICS", "on") != "off",
        # Set (by the gunicorn config) when several workers' metrics are added up from files.
        "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
    }
