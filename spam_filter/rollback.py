"""Rolling back to an earlier model, and keeping only the last retired models' weights.

Shared by `python database.py rollback` and the `rollback_model_job` in the Dagster UI; imports
no Dagster, so the command line starts quickly.
"""

from pathlib import Path

from spam_filter import weights
from spam_filter.spam import load_model
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.records import ModelRecord


class RollbackRefused(ValueError):
    """No model can be made active as asked; the message says why. Nothing changed."""


def rollback_target(history: list[ModelRecord], model: str | None) -> ModelRecord:
    """The retired model to make active: the named one (its path or file name), else the one
    retired most recently, which was active just before the current one."""
    retired = [r for r in history if r.status == "inactive" and r.path is not None]
    if model:
        named = [r for r in retired if model in (r.path, Path(r.path).name)]
        if not named:
            raise RollbackRefused(
                f"no retired model named {model!r}; `python database.py models` lists them"
            )
        return named[0]
    if not retired:
        raise RollbackRefused("no retired model to roll back to")
    return max(retired, key=lambda r: (r.retired_at is not None, r.retired_at or r.created_at))


def roll_back(
    storage: ApplicationStorage, weights_dir: str | Path, model: str | None = None
) -> tuple[ModelRecord, ModelRecord | None]:
    """Make an earlier model active again, in one transaction; returns (it, the model it replaced).

    Its weights must still load: a model whose file was deleted is refused, not half-restored.
    The weights folder's lock is held throughout, so no cleanup deletes the file meanwhile.
    """
    with weights.exclusive(weights_dir):
        history = storage.model_history()
        current = next((r for r in history if r.status == "active"), None)
        target = rollback_target(history, model)
        try:
            load_model(weights.resolve(target.path, weights_dir))
        except (OSError, ValueError) as error:
            raise RollbackRefused(f"{target.path} cannot be loaded: {error}") from error
        storage.reactivate_model(target.path, current.path if current else None)
    return target, current


def prune_retired_weights(
    storage: ApplicationStorage, weights_dir: str | Path, keep: int
) -> list[str]:
    """Delete the weights files of retired models beyond the `keep` most recently retired.

    Call it holding the weights folder's lock. The active model's file is never touched, nor a
    file any model kept for rollback still names; the rows stay, as history.
    """
    history = storage.model_history()
    retired = sorted(
        (r for r in history if r.status == "inactive" and r.path is not None),
        key=lambda r: r.retired_at or r.created_at,
        reverse=True,
    )
    kept = {Path(r.path).name for r in history if r.status == "active"}
    kept |= {Path(r.path).name for r in retired[:keep]}
    deleted = []
    for record in retired[keep:]:
        if Path(record.path).name in kept:
            continue
        path = weights.resolve(record.path, weights_dir)
        if path.exists():
            path.unlink()
            deleted.append(path.name)
    return deleted
