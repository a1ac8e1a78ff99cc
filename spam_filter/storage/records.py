"""What the application database holds, as values every backend returns alike."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from spam_filter.reporter_keys import message_key, text_key


class ActiveModelChanged(RuntimeError):
    """Another run promoted a model after this run compared itself with the active one."""


class ReporterExists(ValueError):
    """A reporter of that name exists already."""


class StorageUnavailable(RuntimeError):
    """The database cannot take the write now; nothing was stored, and the caller may retry."""


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
    retired_at: datetime | None = None


@dataclass(frozen=True)
class Report:
    """One user's report about one message: its text and whether it is spam."""

    text: str
    is_spam: bool
    message_id: str | None = None


def vote_rows(reporter_id: int, reports: Iterable[Report], reported_at: object) -> list[tuple]:
    """The rows one request's reports are stored as, in every backend: (reporter, message key,
    text key, message id, text, is spam, reported at)."""
    rows = []
    for report in reports:
        text_hash = text_key(report.text)
        rows.append(
            (
                reporter_id,
                message_key(text_hash=text_hash, message_id=report.message_id),
                text_hash,
                report.message_id,
                report.text,
                report.is_spam,
                reported_at,
            )
        )
    return rows


@dataclass(frozen=True)
class ReportOutcome:
    """What recording a request's reports changed: new or changed votes, and repeats."""

    accepted: int
    duplicates: int


@dataclass(frozen=True)
class ReporterKey:
    """What the API needs to know about a key it is shown: whose it is."""

    reporter_id: int
    name: str


@dataclass(frozen=True)
class Reporter:
    """One row of `reporters`, with how many votes it has recorded."""

    reporter_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    flagged_at: datetime | None
    flag_reason: str | None
    reports: int

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "flagged" if self.flagged_at is not None else "active"
