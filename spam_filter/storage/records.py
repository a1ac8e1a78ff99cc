"""What the application database holds, as values every backend returns alike."""

from dataclasses import dataclass
from datetime import datetime


class ActiveModelChanged(RuntimeError):
    """Another run promoted a model after this run compared itself with the active one."""


@dataclass(frozen=True)
class ModelRecord:
    """One row of `models`: a trained model and the decision taken about it."""

    path: str | None
    status: str
    true_positive_rate: float
    false_positive_rate: float
    seed: int | None = None
    reason: str = ""
    compared_with: str | None = None
    compared_true_positive_rate: float | None = None
    compared_false_positive_rate: float | None = None
    created_at: datetime | None = None
