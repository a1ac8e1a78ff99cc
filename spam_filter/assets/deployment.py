"""Deployment: score the new model against the active one, and promote it if it beats it."""

from collections.abc import Callable
from dataclasses import replace

import dagster as dg
from pydantic import Field

from spam_filter import constants, weights
from spam_filter.assets.training import PICKLE_IO_MANAGER
from spam_filter.faults import crash_point
from spam_filter.promotion import ModelScore, PromotionRule, decide_promotion
from spam_filter.resources import ApplicationDatabase, ModelStorage, Warehouse
from spam_filter.rollback import prune_retired_weights
from spam_filter.scoring import METRIC_GROUPS, score_models
from spam_filter.spam import SpamModel, TrainedModel
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.records import ActiveModelChanged, ModelRecord, StorageUnavailable
from spam_filter.tunables import Tunables

GROUP = "deployment"


class ModelScoreConfig(Tunables):
    """What a new model must achieve on the test split to be promoted."""

    max_false_positive_rate: float = Field(constants.MAX_FALSE_POSITIVE_RATE, ge=0, le=1)
    """A model flagging more legitimate gold messages than this is never promoted."""
    gold_true_positive_tolerance: float = Field(0.005, ge=0, le=1)
    """How far below the active model's gold true-positive rate a new model may fall."""
    gold_false_positive_tolerance: float = Field(0.001, ge=0, le=1)
    """How far above the active model's gold false-positive rate a new model may rise."""
    min_gold_true_positive_rate: float = Field(constants.MIN_GOLD_TRUE_POSITIVE_RATE, ge=0, le=1)
    """A model catching less gold spam than this is never promoted, the first one included."""


@dg.asset(group_name=GROUP, io_manager_key=PICKLE_IO_MANAGER, deps=["spam_testing_dataframe"])
def model_score(
    context: dg.AssetExecutionContext,
    config: ModelScoreConfig,
    spam_model: TrainedModel,
    warehouse: Warehouse,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> dg.Output[ModelScore]:
    """The new model's rates on the test split, beside the active model's on the same messages."""
    rule = PromotionRule(
        max_false_positive_rate=config.max_false_positive_rate,
        min_true_positive_rate=config.min_gold_true_positive_rate,
        gold_true_positive_tolerance=config.gold_true_positive_tolerance,
        gold_false_positive_tolerance=config.gold_false_positive_tolerance,
        false_positive_cost=spam_model.false_positive_cost,
    )
    active_path, active_model, problem = _active_model(
        context, database.storage(on_wait=context.log.info), model_storage
    )
    models = [spam_model.model] if active_model is None else [spam_model.model, active_model]
    context.log.info(
        f"scoring the new model and the active model {active_path} on the same test split"
        if active_model is not None
        else "scoring the new model on the test split"
    )
    with warehouse.get_connection() as conn:
        challenger, *others = score_models(
            conn, models, _progress_logger(context), list(spam_model.left_out_reporters)
        )
    active = others[0] if others else None
    decision = decide_promotion(challenger, active, rule, problem)
    metadata = {
        **challenger.gold.as_dict(),
        **challenger.as_metadata(),
        "test_messages": sum(getattr(challenger, g).messages for g in METRIC_GROUPS),
        "gold_confusion_matrix": dg.MetadataValue.md(challenger.gold.confusion_markdown()),
        "active_model": active_path or "none",
        "would_promote": decision.promote,
        "decision": decision.reason,
    }
    if active is not None:
        metadata.update(active.as_metadata(prefix="active_"))
    return dg.Output(ModelScore(challenger, active, active_path, rule, decision), metadata=metadata)


@dg.asset_check(asset=model_score, blocking=True)
def check_false_positive_rate(model_score: ModelScore) -> dg.AssetCheckResult:
    """The new model flags few enough legitimate gold messages to be promoted."""
    return dg.AssetCheckResult(
        passed=model_score.under_ceiling,
        metadata={
            "gold_false_positive_rate": model_score.challenger.gold.false_positive_rate,
            "max_false_positive_rate": model_score.rule.max_false_positive_rate,
        },
    )


class ModelFileConfig(Tunables):
    """How many earlier models stay ready for a rollback."""

    keep_retired_models: int = Field(5, ge=0)
    """Retired models whose weights are kept; older ones' files are deleted (on PostgreSQL, the
    weights in their rows are cleared)."""


@dg.asset(group_name=GROUP, io_manager_key=PICKLE_IO_MANAGER)
def model_file(
    context: dg.AssetExecutionContext,
    config: ModelFileConfig,
    spam_model: TrainedModel,
    model_score: ModelScore,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> dg.Output[ModelRecord]:
    """The weights file of the new model, promoted to active when it beats the active model."""
    challenger = model_score.challenger.gold
    active = model_score.active.gold if model_score.active else None
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
    storage = database.storage(on_wait=context.log.info)
    if model_score.decision.promote and storage.keeps_weights:
        record = _promote_with_weights(spam_model, record, storage)
        if record.status == "active":
            _prune_retired_weights(context, storage, model_storage, config.keep_retired_models)
    elif model_score.decision.promote:
        record = _write_and_promote(
            context, spam_model, record, storage, model_storage, config.keep_retired_models
        )
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


def _active_model(
    context: dg.AssetExecutionContext, storage: ApplicationStorage, model_storage: ModelStorage
) -> tuple[str | None, SpamModel | None, str | None]:
    """(active model's path, the model, why it could not be read)."""
    record = storage.active_model()
    if record is None:
        return None, None, None
    try:
        return record.path, storage.load_model(record.path, model_storage.weights_dir), None
    except (OSError, ValueError) as error:
        problem = f"active model {record.path} cannot be read ({error})"
        context.log.warning(problem)
        return record.path, None, problem


def _progress_logger(context: dg.AssetExecutionContext) -> Callable[[int, int], None]:
    def log(done: int, total: int) -> None:
        context.log.info(f"scored {done:,} of {total:,} test messages")

    return log


def _write_and_promote(
    context: dg.AssetExecutionContext,
    trained: TrainedModel,
    record: ModelRecord,
    storage: ApplicationStorage,
    model_storage: ModelStorage,
    keep_retired_models: int,
) -> ModelRecord:
    """Write the weights and switch the active model to them; the record as it was stored.

    The weights folder's lock covers cleanup, writing and the switch. A run that dies in between
    leaves its file marked pending: the next run deletes it unless its row was committed.
    """
    model = _with_provenance(trained, record)
    promoted = False
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
            promoted = True
            crash_point("switch_closed")
            model_storage.settle(name)
            _prune_retired_weights(context, storage, model_storage, keep_retired_models)
    except OSError as error:
        if promoted:
            # The switch is committed and the model served. Its file may stay marked pending,
            # which the next run's cleanup leaves alone: its row exists.
            context.log.warning(
                f"promoted {name}, but could not tidy the weights folder after it: "
                f"{error.strerror or error}"
            )
            return replace(record, path=name, status="active")
        raise dg.Failure(
            description=(
                f"cannot write the new model's weights into {model_storage.weights_dir}: "
                f"{error.strerror or error}. Nothing was promoted; "
                f"{record.compared_with or 'no model'} stays active."
            ),
            metadata={"weights_dir": model_storage.weights_dir, "error": str(error)},
        ) from error
    return replace(record, path=name, status="active")


def _prune_retired_weights(
    context: dg.AssetExecutionContext,
    storage: ApplicationStorage,
    model_storage: ModelStorage,
    keep: int,
) -> None:
    """Delete the weights of retired models beyond the last `keep`; a failure only warns."""
    try:
        deleted = prune_retired_weights(storage, model_storage.weights_dir, keep)
    except (OSError, StorageUnavailable) as error:
        context.log.warning(f"could not delete old weights files: {error}")
        return
    if deleted:
        context.log.info(f"deleted the weights of {len(deleted)} older retired model(s)")


def _promote_with_weights(
    trained: TrainedModel, record: ModelRecord, storage: ApplicationStorage
) -> ModelRecord:
    """Switch the active model to the new one, its weights in its row; the record as stored.

    The row and its weights commit in one transaction, so a run that dies at any point leaves
    either both or neither: there is no file to write first, to lock or to clean up after.
    """
    name = weights.new_name()
    text = weights.to_json(_with_provenance(trained, record).to_weights())
    crash_point("weights_written")
    try:
        storage.promote_model(replace(record, path=name), record.compared_with, weights=text)
    except ActiveModelChanged as error:
        return replace(
            record, reason=f"not promoted: another run promoted a model meanwhile ({error})"
        )
    crash_point("switch_closed")
    return replace(record, path=name, status="active")


def _with_provenance(trained: TrainedModel, record: ModelRecord) -> SpamModel:
    """The model with what it was trained with and how it scored, kept in its weights."""
    return replace(
        trained.model,
        info={
            "seed": trained.seed,
            "true_positive_rate": record.true_positive_rate,
            "false_positive_rate": record.false_positive_rate,
        },
    )


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
