"""The retraining job and its monthly schedule."""

import dagster as dg

create_spam_model_job = dg.define_asset_job(
    name="create_spam_model_job",
    selection=dg.AssetSelection.all(),
    description="Retrain the spam model and promote it if it beats the active one.",
    # One process for the whole run: a process per step spends more time starting than working.
    executor_def=dg.in_process_executor,
)

monthly_retrain_schedule = dg.ScheduleDefinition(
    name="monthly_retrain_schedule",
    job=create_spam_model_job,
    cron_schedule="0 0 1 * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
