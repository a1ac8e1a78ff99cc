"""The weights folder: how model files are named, written, found and cleaned up.

Imports neither Dagster nor Flask: the pipeline writes through `ModelStorage` and the API reads
through `resolve`, and both must agree on what a weights file may be.
"""

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spam_filter.file_locks import lock_exclusively

# Cleanup only ever acts on pending markers of names this module writes.
_PENDING_NAME = re.compile(r"\.(spam_model_[0-9TZ]+_[0-9a-f]{8}\.json)\.pending")
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
def exclusive(
    weights_dir: Path | str,
    timeout_seconds: float = 600.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the folder's lock: one process at a time writes, promotes or cleans up.

    Held from writing a file until its `models` row is committed, so cleanup never mistakes a file
    about to be promoted for an orphan. The kernel drops the lock when its holder dies.

    Raises:
        LockTimeout: The lock stayed taken for `timeout_seconds`.
    """
    folder = Path(weights_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / _LOCK_NAME
    # Opened for reading, which is all flock needs: an existing lock file still locks when the
    # folder has become read-only, so the write itself reports the real problem.
    descriptor = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        lock_exclusively(descriptor, lock_path, timeout_seconds, on_wait)
        yield folder
    finally:
        os.close(descriptor)


def write(weights: dict[str, Any], weights_dir: Path | str) -> Path:
    """Write `weights` under a new unique name, atomically and durably; returns the file.

    A pending marker is made first and stays until `settle`: if the process dies before the file's
    fate is recorded, the marker tells cleanup this file may be an orphan, and cleanup touches no
    file without one (another database's files in a shared folder, files copied in by hand).
    The weights go to a temporary name, are flushed to disk and renamed, so a reader never sees half
    a file; the name carries microseconds and a random suffix, so runs never overwrite each other.
    On any error nothing is left behind.
    """
    folder = Path(weights_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / new_name()
    marker, partial = _pending_marker(final), folder / f".{final.name}.partial"
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _fsync_folder(folder)
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
        marker.unlink(missing_ok=True)
        raise
    return final


def new_name() -> str:
    """A new model's unique name: microseconds and a random suffix, so runs never collide."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"spam_model_{stamp}_{uuid.uuid4().hex[:8]}.json"


def to_json(weights: dict[str, Any]) -> str:
    """The weights as the text a weights file holds, for a backend that keeps them in its rows."""
    return json.dumps(weights)


def from_json(text: str) -> dict[str, Any]:
    """Weights read back from `to_json`'s text; ValueError when it is not a JSON object."""
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the stored weights are not valid JSON: {error}") from error
    if not isinstance(weights, dict):
        raise ValueError("the stored weights are not a JSON object")
    return weights


def settle(path: Path | str) -> None:
    """Drop a written file's pending marker, once its row is committed or the file deleted."""
    _pending_marker(Path(path)).unlink(missing_ok=True)


def _pending_marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.pending")


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def orphans(weights_dir: Path | str, recorded_paths: Iterable[str]) -> list[Path]:
    """What runs that died between writing a file and recording it left behind, to delete in order.

    For each pending marker: its weights file and partial file when no row names the file, then
    the marker itself (last, so an interrupted cleanup finds it again). Call it holding
    `exclusive`, with the paths read from `models` under that lock.
    """
    folder = Path(weights_dir).resolve()
    if not folder.is_dir():
        return []
    recorded_names = {Path(path).name for path in recorded_paths}
    leftovers = []
    for marker in sorted(folder.iterdir()):
        match = _PENDING_NAME.fullmatch(marker.name)
        if match is None:
            continue
        name = match.group(1)
        if name not in recorded_names:
            leftovers += [
                path for path in (folder / name, folder / f".{name}.partial") if path.exists()
            ]
        leftovers.append(marker)
    return leftovers
