"""The weights folder: how model files are named, written, found and cleaned up.

Imports neither Dagster nor Flask: the pipeline writes through `ModelStorage` and the API reads
through `resolve`, and both must agree on what a weights file may be.
"""

import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Only names this module writes count as weights files: cleanup never touches anything else.
_WEIGHTS_NAME = re.compile(r"spam_model_[0-9TZ]+_[0-9a-f]{8}\.json")
_PARTIAL_NAME = re.compile(r"\.spam_model_[0-9TZ]+_[0-9a-f]{8}\.json\.partial")
_LOCK_NAME = ".lock"


class UnsafeWeightsPath(ValueError):
    """A path recorded in `models` that does not name a weights file inside the weights folder."""


def resolve(stored_path: str, weights_dir: Path | str) -> Path:
    """The file a `models.path` value names, refused unless it is a JSON file in `weights_dir`.

    The database is shared with other processes, so a row is not trusted to point anywhere else
    (`../../etc/passwd`, a symlink out of the folder, an absolute path elsewhere).

    Raises:
        UnsafeWeightsPath: The path leaves the folder, or names a hidden or non-JSON file.
    """
    if "\x00" in stored_path:
        raise UnsafeWeightsPath(f"{stored_path!r} holds a NUL character")
    folder = Path(weights_dir).resolve()
    candidate = Path(stored_path)
    if not candidate.is_absolute():
        candidate = folder / candidate
    resolved = candidate.resolve()
    if resolved.parent != folder or resolved.name.startswith(".") or resolved.suffix != ".json":
        raise UnsafeWeightsPath(f"{stored_path!r} is not a .json file in {folder}")
    return resolved


@contextmanager
def exclusive(weights_dir: Path | str) -> Iterator[Path]:
    """Hold the folder's lock: one process at a time writes, promotes or cleans up.

    Held from writing a file until its `models` row is committed, so cleanup never mistakes a file
    about to be promoted for an orphan. The kernel drops the lock when its holder dies.
    """
    folder = Path(weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # Opened for reading, which is all flock needs: an existing lock file still locks when the
    # folder has become read-only, so the write itself reports the real problem.
    descriptor = os.open(folder / _LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(descriptor)


def write(weights: dict[str, Any], weights_dir: Path | str) -> Path:
    """Write `weights` under a new unique name, atomically and durably; returns the file.

    The file is written under a temporary name, flushed to disk and renamed, so a reader never sees
    half a file; the name carries microseconds and a random suffix, so two runs finishing in the
    same second never overwrite each other. On any error the partial file is removed.
    """
    folder = Path(weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = folder / f"spam_model_{stamp}_{uuid.uuid4().hex[:8]}.json"
    partial = folder / f".{final.name}.partial"
    try:
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(weights, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        # The rename is durable only once the folder is synced: the `models` row that will point
        # at this file must never outlive it after a crash.
        _fsync_folder(folder)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def orphans(weights_dir: Path | str, recorded_paths: Iterable[str]) -> list[Path]:
    """Weights and partial files no `models` row points at: left by runs that crashed.

    Call it while holding `exclusive`, with the paths read from `models` under that lock.
    """
    folder = Path(weights_dir).resolve()
    if not folder.is_dir():
        return []
    recorded = set()
    for path in recorded_paths:
        try:
            recorded.add(resolve(path, folder))
        except UnsafeWeightsPath:
            continue
    return sorted(
        entry
        for entry in folder.iterdir()
        if (_WEIGHTS_NAME.fullmatch(entry.name) and entry not in recorded)
        or _PARTIAL_NAME.fullmatch(entry.name)
    )
