"""Deployment: score the new model against the active one, and promote it if it is as good."""

from collections.abc import Callable
from dataclasses import replace

import dagster as dg
import duckdb

from spam_filter import constants
from spam_filter.assets.training import PICKLE_IO_MANAGER
from spam_filter.faults import crash_point
from spam_filter.promotion import ModelScore, decide_promotion
from spam_filter.resources import ApplicationDatabase, ModelStorage, Warehouse
from spam_filter.scoring import Score, score_test_split
from spam_filter.spam import TrainedModel
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.records import ActiveModelChanged, ModelRecord

GROUP = "deployment"


class ModelScoreConfig(dg.Config):
    """The false-positive rate a new model must stay under to be promoted."""

    max_false_positive_rate: float = constants.MAX_FALSE_POSITIVE_RATE
    """A model flagging more legitimate test messages than this is never promoted."""


@dg.asset(group_name=GROUP, io_manager_key=PICKLE_IO_MANAGER)
def model_score(
    context: dg.AssetExecutionContext,
    config: ModelScoreConfig,
    spam_model: TrainedModel,
    warehouse: Warehouse,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> dg.Output[ModelScore]:
    """The new model's rates on the test split, beside the active model's on the same messages."""
    progress = _log_progress(context)
    with warehouse.get_connection() as conn:
        context.log.info("scoring the new model on the test split")
        challenger = score_test_split(conn, spam_model.model, progress)
        active_path, active, problem = _score_active_model(
            context, conn, database.storage(), model_storage, progress
        )
    decision = decide_promotion(challenger, active, config.max_false_positive_rate, problem)
    score = ModelScore(challenger, active, active_path, config.max_false_positive_rate, decision)
    metadata = {
        **challenger.as_dict(),
        "test_messages": challenger.messages,
        "confusion_matrix": dg.MetadataValue.md(challenger.confusion_markdown()),
        "active_model": active_path or "none",
        "would_promote": decision.promote,
        "decision": decision.reason,
    }
    if active is not None:
        metadata["active_true_positive_rate"] = active.true_positive_rate
        metadata["active_false_positive_rate"] = active.false_positive_rate
    return dg.Output(score, metadata=metadata)


@dg.asset_check(asset=model_score, blocking=True)
def check_false_positive_rate(model_score: ModelScore) -> dg.AssetCheckResult:
    """The new model flags few enough legitimate test messages to be promoted."""
    return dg.AssetCheckResult(
        passed=model_score.under_ceiling,
        metadata={
            "false_positive_rate": model_score.challenger.false_positive_rate,
            "max_false_positive_rate": model_score.max_false_positive_rate,
        },
    )


@dg.asset(group_name=GROUP, io_manager_key=PICKLE_IO_MANAGER)
def model_file(
    context: dg.AssetExecutionContext,
    spam_model: TrainedModel,
    model_score: ModelScore,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> dg.Output[ModelRecord]:
    """The weights file of the new model, promoted to active when it beats the active model."""
    challenger, active = model_score.challenger, model_score.active
    record = ModelRecord(
        path=None,
        status="rejected",
        true_positive_rate=challenger.true_positive_rate,
        false_positive_rate=challenger.false_positive_rate,
        seed=spam_model.seed,
        reason=model_score.decision.reason,
        compared_with=model_score.active_path,
        compared_true_positive_rate=active.true_positive_rate if active else None,
        compared_false_positive_rate=active.false_positive_rate if active else None,
    )
    storage = database.storage()
    if model_score.decision.promote:
        record = _write_and_promote(context, spam_model, record, storage, model_storage)
    if record.status == "rejected":
        storage.record_rejected_model(record)
    promoted = record.status == "active"
    context.log.info(f"promoted: {promoted}; {record.reason}")
    return dg.Output(
        record,
        metadata={
            "promoted": promoted,
            "reason": record.reason,
            "model_file": record.path or "none",
            "active_model": (record.path if promoted else model_score.active_path) or "none",
            "true_positive_rate": record.true_positive_rate,
            "false_positive_rate": record.false_positive_rate,
        },
    )


def _score_active_model(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    storage: ApplicationStorage,
    model_storage: ModelStorage,
    progress: Callable[[int, int], None],
) -> tuple[str | None, Score | None, str | None]:
    """(active model's path, its score on the test split, why it could not be scored)."""
    record = storage.active_model()
    if record is None:
        return None, None, None
    try:
        active_model = model_storage.load(record.path)
    except (OSError, ValueError) as error:
        problem = f"active model {record.path} cannot be read ({error})"
        context.log.warning(problem)
        return record.path, None, problem
    context.log.info(f"scoring the active model {record.path} on the same test split")
    return record.path, score_test_split(conn, active_model, progress), None


def _log_progress(context: dg.AssetExecutionContext) -> Callable[[int, int], None]:
    def log(done: int, total: int) -> None:
        context.log.info(f"scored {done:,} of {total:,} test messages")

    return log


def _write_and_promote(
    context: dg.AssetExecutionContext,
    trained: TrainedModel,
    record: ModelRecord,
    storage: ApplicationStorage,
    model_storage: ModelStorage,
) -> ModelRecord:
    """Write the weights and switch the active model to them; the record as it was stored.

    The weights folder's lock covers cleanup, writing and the switch. A run that dies in between
    leaves its file marked pending: the next run deletes it unless its row was committed.
    """
    model = replace(
        trained.model,
        info={
            "seed": trained.seed,
            "true_positive_rate": record.true_positive_rate,
            "false_positive_rate": record.false_positive_rate,
        },
    )
    try:
        with model_storage.exclusive(on_wait=context.log.info):
            _remove_orphan_weights(context, storage, model_storage)
            name = model_storage.save(model)
            crash_point("weights_written")
            try:
                storage.promote_model(replace(record, path=name), record.compared_with)
            except ActiveModelChanged as error:
                model_storage.discard(name)
                reason = f"not promoted: another run promoted a model meanwhile ({error})"
                return replace(record, reason=reason)
            crash_point("switch_closed")
            model_storage.settle(name)
    except OSError as error:
        raise dg.Failure(
            description=(
                f"cannot write the new model's weights into {model_storage.weights_dir}: "
                f"{error.strerror or error}. Nothing was promoted; "
                f"{record.compared_with or 'no model'} stays active."
            ),
            metadata={"weights_dir": model_storage.weights_dir, "error": str(error)},
        ) from error
    return replace(record, path=name, status="active")


def _remove_orphan_weights(
    context: dg.AssetExecutionContext, storage: ApplicationStorage, model_storage: ModelStorage
) -> None:
    """Delete weights files that runs killed before their switch committed left behind."""
    try:
        removed = model_storage.remove_orphans(storage.recorded_model_paths())
    except OSError as error:
        # Leftovers are never served; failing to delete them must not fail the run (an unreadable
        # database still does: the promotion that follows needs it anyway).
        context.log.warning(f"could not remove orphaned weights files: {error}")
        return
    if removed:
        context.log.info(f"removed {len(removed)} orphaned weights file(s): {', '.join(removed)}")
