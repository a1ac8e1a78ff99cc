"""The retraining job and its monthly schedule."""

import dagster as dg

create_spam_model_job = dg.define_asset_job(
    name="create_spam_model_job",
    selection=dg.AssetSelection.all(),
    description="Retrain the spam model and promote it if it beats the active one.",
)

monthly_retrain_schedule = dg.ScheduleDefinition(
    name="monthly_retrain_schedule",
    job=create_spam_model_job,
    cron_schedule="0 0 1 * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
