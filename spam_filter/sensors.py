"""Retrain when enough has been learned: a sensor that counts accepted reports."""

import json
import time

import dagster as dg

from spam_filter import settings
from spam_filter.jobs import create_spam_model_job
from spam_filter.resources import ApplicationDatabase
from spam_filter.tunables import DESCRIBED_BY_DOCSTRINGS


class RetrainPolicy(dg.ConfigurableResource):
    """When new reports justify a retrain."""

    model_config = DESCRIBED_BY_DOCSTRINGS

    reports: int = 500
    """Accepted or changed votes since the last requested run that start a new one."""
    min_interval_seconds: float = 3600.0
    """The least time between two runs this sensor requests."""

    @classmethod
    def from_environment(cls) -> "RetrainPolicy":
        """The policy with `SPAM_FILTER_RETRAIN_AFTER_REPORTS` and
        `SPAM_FILTER_RETRAIN_MIN_INTERVAL_SECONDS` applied, read when the code location loads."""
        return cls(
            reports=settings.retrain_after_reports(),
            min_interval_seconds=settings.retrain_min_interval_seconds(),
        )


@dg.sensor(
    job=create_spam_model_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retrain_on_reports_sensor(
    context: dg.SensorEvaluationContext,
    database: ApplicationDatabase,
    retrain_policy: RetrainPolicy,
) -> dg.SensorResult | dg.SkipReason:
    """Request a retrain once enough new reports arrived, at most once per interval."""
    cursor = json.loads(context.cursor) if context.cursor else {"sequence": 0, "requested_at": 0}
    sequence = database.storage().report_sequence()
    if sequence < cursor["sequence"]:  # a new, empty inbox: count from its start
        cursor["sequence"] = 0
    new_reports = sequence - cursor["sequence"]
    if new_reports < retrain_policy.reports:
        return dg.SkipReason(
            f"{new_reports} new reports; retraining after {retrain_policy.reports}"
        )
    waited = time.time() - cursor["requested_at"]
    if waited < retrain_policy.min_interval_seconds:
        return dg.SkipReason(
            f"{new_reports} new reports, but the last retrain was requested {waited:.0f} s ago"
        )
    # No run key: the cursor already asks once per batch of reports, and a sequence restarts with
    # a new inbox, where a key seen before would make Dagster drop the request without a word.
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"reports": str(sequence)})],
        cursor=json.dumps({"sequence": sequence, "requested_at": time.time()}),
    )
