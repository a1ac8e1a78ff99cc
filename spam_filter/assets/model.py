"""Model assets: train on the dataset, score against the active model, promote the better one."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

import database as app_database
from spam_filter import warehouse
from spam_filter.assets.data import spam_dataset
from spam_filter.evaluation import Score, promotion_decision, score_table
from spam_filter.faults import crash_point
from spam_filter.resources import ApplicationDatabase, ModelStorage
from spam_filter.spam import SpamModel, decision_prior, smoothed_bags_of_words
from spam_filter.sql import UNNEST_BODY_WORDS, install_tokenizer

_DICT_IO_MANAGER = "dict_io_manager"
_TOP_WORDS = 15


class SpamModelConfig(dg.Config):
    """How the dataset is split and the bags of words are smoothed."""

    alpha: float = 0.1
    """Additive smoothing: the count every vocabulary word gets in both classes."""
    test_size: float = 0.3
    """Share of messages held out for scoring."""
    seed: int = 0
    """Seed of the hash that assigns each message to the training or the testing split."""


@dg.multi_asset(
    name="spam_model",
    deps=[spam_dataset],
    outs={
        "spam_bag_of_words": dg.AssetOut(io_manager_key=_DICT_IO_MANAGER),
        "non_spam_bag_of_words": dg.AssetOut(io_manager_key=_DICT_IO_MANAGER),
        "spam_training_dataframe": dg.AssetOut(kinds={"duckdb"}),
        "spam_testing_dataframe": dg.AssetOut(kinds={"duckdb"}),
    },
)
def spam_model(
    context: dg.AssetExecutionContext, config: SpamModelConfig, warehouse_db: DuckDBResource
):
    """Split the dataset and count words per class into smoothed bags of words."""
    if not 0 < config.test_size < 1:
        raise dg.Failure(f"test_size must lie between 0 and 1, not {config.test_size}")
    dataset = warehouse.table("spam_dataset")
    split_settings = warehouse.table("spam_split_settings")
    # A message goes to the test split when the hash of its text and the seed falls under
    # test_size: deterministic, needs no shuffle in memory, and keeps duplicate texts together.
    # The training split is a view, which cannot hold parameters, so the seed and share live in a
    # one-row table that both splits read.
    in_test = "hash(body, split.seed) % 1000000 < split.test_size * 1000000"
    with warehouse_db.get_connection() as conn:
        conn.execute(
            "CREATE OR REPLACE TABLE "
            + split_settings
            + " AS SELECT $seed::INTEGER AS seed, $test_size::DOUBLE AS test_size",
            {"seed": config.seed, "test_size": config.test_size},
        )
        from_dataset = " FROM " + dataset + ", " + split_settings + " AS split WHERE "
        warehouse.replace_view(
            conn,
            "spam_training_dataframe",
            "SELECT spam, body" + from_dataset + "NOT (" + in_test + ")",
        )
        # The test split stays a table: scoring numbers its messages by rowid, which a view lacks,
        # and numbering a view with row_number() copies every message's token list (seconds at
        # 10M). It is the smaller share, and a model is scored on it once or twice per run.
        warehouse.replace_table(
            conn, "spam_testing_dataframe", "SELECT spam, body" + from_dataset + in_test
        )
        context.log.info("split the dataset; counting words of the training messages")
        install_tokenizer(conn)
        counts = conn.execute(
            "SELECT word, count(*) FILTER (WHERE spam), count(*) FILTER (WHERE NOT spam) FROM ("
            "  SELECT spam, "
            + UNNEST_BODY_WORDS
            + " AS word FROM "
            + warehouse.table("spam_training_dataframe")
            + ") WHERE word <> '' GROUP BY word"
        ).fetchall()
        train_spam, train_total = conn.execute(
            "SELECT count(*) FILTER (WHERE spam), count(*) FROM "
            + warehouse.table("spam_training_dataframe")
        ).fetchone()
        test_spam, test_total = conn.execute(
            "SELECT count(*) FILTER (WHERE spam), count(*) FROM "
            + warehouse.table("spam_testing_dataframe")
        ).fetchone()
        previews = {
            name: warehouse.preview(conn, name)
            for name in ("spam_training_dataframe", "spam_testing_dataframe")
        }
    spam_counts = {word: spam for word, spam, _ in counts if spam}
    non_spam_counts = {word: ham for word, _, ham in counts if ham}
    spam_bow, non_spam_bow = smoothed_bags_of_words(spam_counts, non_spam_counts, config.alpha)
    context.log.info(
        f"trained on {train_total:,} messages ({train_spam:,} spam); vocabulary {len(spam_bow):,}"
    )
    bag_metadata = {"vocabulary_size": len(spam_bow), "alpha": config.alpha}
    yield dg.Output(
        spam_bow,
        "spam_bag_of_words",
        metadata={**bag_metadata, "spam_words": sum(spam_counts.values())},
    )
    yield dg.Output(
        non_spam_bow,
        "non_spam_bag_of_words",
        metadata={**bag_metadata, "non_spam_words": sum(non_spam_counts.values())},
    )
    for name, spam_rows, rows in (
        ("spam_training_dataframe", train_spam, train_total),
        ("spam_testing_dataframe", test_spam, test_total),
    ):
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                "row_count": rows,
                "spam_count": spam_rows,
                "seed": config.seed,
                "test_size": config.test_size,
                "preview": dg.MetadataValue.md(previews[name]),
            },
        )


class ModelScoreConfig(dg.Config):
    """How the new model decides, and the false-positive rate it must stay under."""

    false_positive_cost: float = 8.0
    """Missed spams that one hidden legitimate message is worth; raises the bar for calling spam."""
    max_false_positive_rate: float = 0.01
    """Blocking check: a model flagging more legitimate messages than this is never promoted."""


@dg.asset(
    deps=["spam_training_dataframe", "spam_testing_dataframe"],
    io_manager_key=_DICT_IO_MANAGER,
    check_specs=[
        dg.AssetCheckSpec(
            "check_false_positive_rate",
            asset="model_score",
            blocking=True,
            description="The new model flags few enough legitimate test messages to be promoted.",
        )
    ],
)
def model_score(
    context: dg.AssetExecutionContext,
    config: ModelScoreConfig,
    spam_bag_of_words: dict[str, float],
    non_spam_bag_of_words: dict[str, float],
    warehouse_db: DuckDBResource,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
):
    """The new model's rates on the test split, beside the active model's on the same messages."""
    # The prior comes from the counts the bags of words were trained on, as recorded with the
    # training split, not from a recount of the split's view, which follows its upstream tables.
    training = _latest_metadata(context, "spam_training_dataframe")
    train_spam, train_total = training["spam_count"], training["row_count"]
    prior = decision_prior(train_spam, train_total, config.false_positive_cost)
    model = SpamModel(spam_bag_of_words, non_spam_bag_of_words, prior)
    with warehouse_db.get_connection() as conn:
        context.log.info("scoring the new model on the test split")
        challenger = score_table(conn, "spam_testing_dataframe", model, _log_progress(context))
        active_path, active, active_problem = _score_active_model(
            context, conn, database, model_storage
        )
    passes_ceiling = challenger.false_positive_rate <= config.max_false_positive_rate
    if active_problem is not None:
        promote, reason = True, active_problem + "; promoting without a comparison"
    else:
        promote, reason = promotion_decision(challenger, active)
    if not passes_ceiling:
        promote, reason = (
            False,
            (
                f"false-positive rate {challenger.false_positive_rate:.4f} is over the ceiling "
                f"{config.max_false_positive_rate:.4f}"
            ),
        )
    top_words = sorted(model.log_odds.items(), key=lambda item: item[1], reverse=True)[:_TOP_WORDS]
    metadata = {
        **{k: v for k, v in challenger.as_dict().items()},
        "test_messages": challenger.messages,
        "train_messages": train_total,
        "vocabulary_size": model.vocabulary_size,
        "percent_spam": prior,
        "confusion_matrix": dg.MetadataValue.md(challenger.confusion_markdown()),
        "most_spam_indicative_words": dg.MetadataValue.md(
            "| word | log-odds |\n|---|---|\n"
            + "\n".join(f"| `{word}` | {odds:.2f} |" for word, odds in top_words)
        ),
        "active_model": active_path or "none",
        "would_promote": promote,
        "decision": reason,
    }
    if active is not None:
        metadata["active_true_positive_rate"] = active.true_positive_rate
        metadata["active_false_positive_rate"] = active.false_positive_rate
    yield dg.Output(
        {
            "challenger": challenger.as_dict(),
            "active": active.as_dict() if active else None,
            "active_path": active_path,
            "percent_spam": prior,
            "seed": training.get("seed"),
            # model_file may run on its own from the UI, after this check failed in another run:
            # the decision carries the verdict so that such a model is still never promoted.
            "passes_ceiling": passes_ceiling,
            "promote": promote,
            "reason": reason,
        },
        metadata=metadata,
    )
    yield dg.AssetCheckResult(
        check_name="check_false_positive_rate",
        passed=passes_ceiling,
        metadata={
            "false_positive_rate": challenger.false_positive_rate,
            "max_false_positive_rate": config.max_false_positive_rate,
        },
    )


def _score_active_model(context, conn, database: ApplicationDatabase, storage: ModelStorage):
    """(active model's path, its score on the test split, why it could not be scored)."""
    with database.connect(read_only=True) as app:
        record = app_database.active_model(app)
    if record is None:
        return None, None, None
    try:
        active_model = storage.load(record.path)
    except (OSError, ValueError) as error:
        problem = f"active model {record.path} cannot be read ({error})"
        context.log.warning(problem)
        return record.path, None, problem
    context.log.info(f"scoring the active model {record.path} on the same test split")
    score = score_table(conn, "spam_testing_dataframe", active_model, _log_progress(context))
    return record.path, score, None


def _log_progress(context: dg.AssetExecutionContext):
    def log(done: int, total: int) -> None:
        context.log.info(f"scored {done:,} of {total:,} test messages")

    return log


@dg.asset(io_manager_key=_DICT_IO_MANAGER)
def model_file(
    context: dg.AssetExecutionContext,
    spam_bag_of_words: dict[str, float],
    non_spam_bag_of_words: dict[str, float],
    model_score: dict,
    database: ApplicationDatabase,
    model_storage: ModelStorage,
) -> dg.Output[dict]:
    """The weights file of the new model, promoted to active when it beats the active model."""
    challenger = Score(**{k: model_score["challenger"][k] for k in Score.__dataclass_fields__})
    promote, reason = model_score["promote"], model_score["reason"]
    active_path = model_score["active_path"]
    active = model_score["active"] or {}
    record = app_database.ModelRecord(
        path=None,
        status="rejected",
        true_positive_rate=challenger.true_positive_rate,
        false_positive_rate=challenger.false_positive_rate,
        seed=model_score["seed"],
        reason=reason,
        compared_with=active_path,
        compared_true_positive_rate=active.get("true_positive_rate"),
        compared_false_positive_rate=active.get("false_positive_rate"),
    )
    path = None
    if promote:
        model = SpamModel(
            spam_bag_of_words,
            non_spam_bag_of_words,
            model_score["percent_spam"],
            info={
                "seed": record.seed,
                "true_positive_rate": record.true_positive_rate,
                "false_positive_rate": record.false_positive_rate,
            },
        )
        path, promote, reason = _write_and_promote(
            context, model, record, database, model_storage, active_path
        )
    if not promote:
        with database.connect() as conn:
            app_database.record_rejected_model(conn, replace(record, reason=reason))
    context.log.info(f"promoted: {promote}; {reason}")
    return dg.Output(
        {"promoted": promote, "reason": reason, "path": path},
        metadata={
            "promoted": promote,
            "reason": reason,
            "model_file": path or "none",
            "active_model": (path if promote else active_path) or "none",
            "true_positive_rate": challenger.true_positive_rate,
            "false_positive_rate": challenger.false_positive_rate,
        },
    )


def _write_and_promote(
    context: dg.AssetExecutionContext,
    model: SpamModel,
    record: app_database.ModelRecord,
    database: ApplicationDatabase,
    storage: ModelStorage,
    active_path: str | None,
) -> tuple[str | None, bool, str]:
    """Write the weights and switch the active model to them: (path or None, promoted, reason).

    The weights folder's lock covers cleanup, writing and the switch. A run that dies in between
    leaves its file marked pending: the next run deletes it unless its row was committed.
    """
    try:
        with storage.exclusive(on_wait=context.log.info):
            _remove_orphan_weights(context, database, storage)
            path = storage.save(model)
            crash_point("weights_written")
            try:
                with database.connect() as conn:
                    app_database.promote_model(conn, replace(record, path=path), active_path)
            except app_database.ActiveModelChanged as error:
                Path(path).unlink()
                storage.settle(path)
                return (
                    None,
                    False,
                    f"not promoted: another run promoted a model meanwhile ({error})",
                )
            crash_point("switch_closed")
            storage.settle(path)
    except OSError as error:
        raise dg.Failure(
            description=(
                f"cannot write the new model's weights into {storage.weights_dir}: "
                f"{error.strerror or error}. Nothing was promoted; "
                f"{active_path or 'no model'} stays active."
            ),
            metadata={"weights_dir": storage.weights_dir, "error": str(error)},
        ) from error
    return path, True, record.reason


def _remove_orphan_weights(
    context: dg.AssetExecutionContext, database: ApplicationDatabase, storage: ModelStorage
) -> None:
    """Delete weights files that runs killed before their switch committed left behind."""
    try:
        with database.connect(read_only=True) as conn:
            recorded = app_database.recorded_model_paths(conn)
        removed = storage.remove_orphans(recorded)
    except OSError as error:
        # Leftovers are never served; failing to delete them must not fail the run (an unreadable
        # database still does: the promotion that follows needs it anyway).
        context.log.warning(f"could not remove orphaned weights files: {error}")
        return
    if removed:
        context.log.info(f"removed {len(removed)} orphaned weights file(s): {', '.join(removed)}")


def _latest_metadata(context: dg.AssetExecutionContext, asset: str) -> dict:
    """The metadata values of an asset's latest materialization (this run's, within a run)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{asset} has not been materialized yet")
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}
