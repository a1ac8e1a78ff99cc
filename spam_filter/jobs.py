"""The retraining job and its monthly schedule, and the rollback job."""

import dagster as dg

from spam_filter.resources import ApplicationDatabase, ModelStorage
from spam_filter.rollback import RollbackRefused, roll_back
from spam_filter.tunables import Tunables

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


class RollbackConfig(Tunables):
    """Which model to make active again."""

    model: str = ""
    """A retired model's weights file name (see `python database.py models`); empty for the one
    active just before the current one."""


@dg.op
def rollback_model(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> None:
    """Make an earlier model active again; the API serves it within seconds."""
    try:
        target, replaced = roll_back(
            database.storage(on_wait=context.log.info), model_storage.weights_dir, config.model
        )
    except RollbackRefused as error:
        raise dg.Failure(str(error)) from None
    context.log.info(
        f"{target.path} is active again, in place of {replaced.path if replaced else 'none'}"
    )
    # `model_file`'s last materialization still names the replaced model: the catalog shows this
    # beside it.
    context.log_event(
        dg.AssetObservation(
            asset_key="model_file",
            metadata={
                "active_model": target.path,
                "rolled_back_from": replaced.path if replaced else "none",
            },
        )
    )


@dg.job(description="Make an earlier model active again (the model is the op's config).")
def rollback_model_job() -> None:
    rollback_model()
