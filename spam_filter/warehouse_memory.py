"""Handing the warehouse's memory back between phases of a run.

DuckDB keeps the buffers it filled, up to its memory cap, until the database closes, and a run
keeps the warehouse open from start to end. Python then builds the model's dictionaries beside a
DuckDB that still holds its whole cap, and the process peaks at the sum of both. Lowering the cap
for a moment makes DuckDB evict its cache and free its buffers (temporary tables move to disk and
are read back when next used); restoring it leaves the next phase its whole cap.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

# The smallest cap DuckDB accepts for the moment it frees its buffers: what stays pinned by an open
# result is kept whatever the figure.
_RELEASING_LIMIT_BYTES = 10**6
# Enough for DuckDB to stream a copy or a scan, and the scoring of one batch of messages.
STREAMING_LIMIT_BYTES = 64 * 10**6
# How DuckDB shows a memory setting: `122.0 MiB`, `2.3 GiB`, `512 bytes`.
_SETTING_RE = re.compile(r"([0-9.]+) (bytes|[KMGTP]iB)")
_UNIT_BYTES = {
    "bytes": 1,
    **{f"{prefix}iB": 1024 ** (power + 1) for power, prefix in enumerate("KMGTP")},
}


def memory_limit_bytes(conn: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's memory cap, in bytes, to within a twentieth of the unit it is shown in.

    DuckDB shows the cap cut to one decimal (256MB is `244.1 MiB`); the middle of what that text
    covers is shown as the same text again, so a cap restored from it does not creep down.
    """
    (limit,) = conn.execute("SELECT current_setting('memory_limit')").fetchone()
    match = _SETTING_RE.fullmatch(limit.strip())
    if match is None:
        raise ValueError(f"unexpected memory_limit setting {limit!r}")
    number, unit = match.groups()
    if "." in number:
        number = f"{number}5"
    return int(float(number) * _UNIT_BYTES[unit])


@contextmanager
def memory_capped(
    conn: duckdb.DuckDBPyConnection, limit_bytes: int = STREAMING_LIMIT_BYTES
) -> Iterator[None]:
    """Hold DuckDB to `limit_bytes` (or its own cap, if lower) for the statements inside, then
    give it back its own cap.

    For work that streams (copies, scans with small results, fetches that Python turns into
    dictionaries): DuckDB would otherwise fill its whole cap with cached blocks beside what Python
    builds. Lowering the cap frees DuckDB's buffers at once.
    """
    cap = memory_limit_bytes(conn)
    try:
        conn.execute("SET memory_limit = $limit", {"limit": f"{min(cap, limit_bytes)} bytes"})
    except duckdb.Error:
        # Pinned buffers can keep DuckDB over the limit: it keeps its cap, which is only a lost
        # economy, never a reason to fail a run.
        pass
    try:
        yield
    finally:
        conn.execute("SET memory_limit = $limit", {"limit": f"{cap} bytes"})


def release_memory(conn: duckdb.DuckDBPyConnection) -> None:
    """Free DuckDB's cached buffers in this process's database and keep its memory cap."""
    with memory_capped(conn, _RELEASING_LIMIT_BYTES):
        pass
