"""Handing the warehouse's memory back between phases of a run.

DuckDB keeps the buffers it filled, up to its memory cap, until the database closes, and a run
keeps the warehouse open from start to end. Python then builds the model's dictionaries beside a
DuckDB that still holds its whole cap, and the process peaks at the sum of both. Lowering the cap
for a moment makes DuckDB evict its cache and free its buffers (temporary tables move to disk and
are read back when next used); restoring it leaves the next phase its whole cap.

The cap is global to the database: lowering it through one connection holds every connection to
the same file in the process. That is safe here because a run's steps take turns (the in-process
executor), and every change is undone when its block ends, however it ends.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

# Small enough to evict every unpinned block, with room left for the SET that restores the cap.
_RELEASING_LIMIT_BYTES = 10**6
# Per DuckDB thread, for streaming a copy or a scan: each thread pins blocks of its own. 64 MB
# served the 2 threads of the machine it was measured on. (Scoring needs more: at 30M it ran out
# of memory under this cap, so it runs at the full cap and frees it after each batch.)
STREAMING_BYTES_PER_THREAD = 32 * 10**6
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


def streaming_limit_bytes(conn: duckdb.DuckDBPyConnection) -> int:
    """What streaming work needs with DuckDB's number of threads."""
    (threads,) = conn.execute("SELECT current_setting('threads')").fetchone()
    return STREAMING_BYTES_PER_THREAD * max(1, int(threads))


@contextmanager
def memory_capped(
    conn: duckdb.DuckDBPyConnection, limit_bytes: int | None = None
) -> Iterator[None]:
    """Hold DuckDB to `limit_bytes` (default: `streaming_limit_bytes`, and never above its own
    cap) for the statements inside, then give it back its own cap.

    For work that streams (copies, scans with small results): DuckDB would otherwise fill its
    whole cap with cached blocks beside what Python holds. An in-memory database is left alone: it
    has no file to spill beside, and DuckDB would write its temporary tables into the working
    directory.
    """
    (path,) = conn.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    try:
        cap = memory_limit_bytes(conn)
    except ValueError:
        cap = None
    if path is None or cap is None:
        # Freeing memory is an economy, never a reason to fail a run.
        yield
        return
    limit = streaming_limit_bytes(conn) if limit_bytes is None else limit_bytes
    try:
        conn.execute("SET memory_limit = $limit", {"limit": f"{min(cap, limit)} bytes"})
    except duckdb.Error:
        # Pinned buffers can keep DuckDB over the lower cap; it then keeps its own.
        pass
    try:
        yield
    finally:
        conn.execute("SET memory_limit = $limit", {"limit": f"{cap} bytes"})


def release_memory(conn: duckdb.DuckDBPyConnection) -> None:
    """Free DuckDB's cached buffers in this process's database and keep its memory cap."""
    with memory_capped(conn, _RELEASING_LIMIT_BYTES):
        pass
