"""The assets' own logic on tiny inputs, called directly: seconds, not a run through the CLI."""

import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from spam_filter.assets import training
from spam_filter.assets.deployment import check_false_positive_rate
from spam_filter.assets.training import SpamModelConfig
from spam_filter.promotion import ModelScore, PromotionDecision, PromotionRule
from spam_filter.resources import ApplicationDatabase, Warehouse
from spam_filter.scoring import Score, SplitScores
from spam_filter.spam import TrainedModel
from spam_filter.tables import ROW_COUNT

TINY_DATASET = [
    (True, "WINNER! claim your free cash prize now"),
    (True, "free entry to win a prize, text WIN now"),
    (True, "urgent: claim your cash reward, call now"),
    (False, "are we still on for lunch tomorrow?"),
    (False, "running late, see you at the station"),
    (False, "thanks for dinner, see you soon"),
    (False, "can you send me the notes from today?"),
    (False, "the kids are at football until six"),
] * 5


def _warehouse_with(path: Path, rows: list[tuple[bool, str]]) -> Warehouse:
    """A warehouse whose spam_dataset holds `rows`, as the ingestion assets would leave it."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA public")
        conn.execute(
            "CREATE TABLE public.spam_dataset (spam BOOLEAN, body VARCHAR, source VARCHAR, "
            "synthetic BOOLEAN, reporter_id INTEGER, capped BOOLEAN)"
        )
        conn.executemany(
            "INSERT INTO public.spam_dataset "
            "VALUES (?, ?, 'sms_spam_collection', false, NULL, false)",
            rows,
        )
    return Warehouse(database=str(path))


@pytest.fixture
def tiny_warehouse(tmp_path: Path) -> Warehouse:
    return _warehouse_with(tmp_path / "warehouse.duckdb", TINY_DATASET)


@pytest.fixture(autouse=True)
def _database(app_db: str) -> None:
    """The application database the model asset records reporter flags in."""


def _outputs(warehouse: Warehouse, config: SpamModelConfig) -> dict[str, object]:
    context = dg.build_asset_context()
    database = ApplicationDatabase(path=os.environ["SPAM_FILTER_DATABASE"])
    events = list(training.spam_model(context, config, warehouse, database))
    return {event.output_name: event.value for event in events if isinstance(event, dg.Output)} | {
        event.asset_key.to_user_string(): event.metadata
        for event in events
        if isinstance(event, dg.MaterializeResult)
    }


def test_training_counts_and_smooths_the_training_split(tiny_warehouse):
    outputs = _outputs(tiny_warehouse, SpamModelConfig(test_size=0.3, seed=1))
    trained = outputs["spam_model"]
    assert isinstance(trained, TrainedModel)
    training_rows = outputs["spam_training_dataframe"][ROW_COUNT]
    testing_rows = outputs["spam_testing_dataframe"][ROW_COUNT]
    # Identical texts stay on one side of the split, so the eight texts split as wholes.
    assert training_rows + testing_rows == len(TINY_DATASET)
    assert training_rows % 5 == 0 and testing_rows % 5 == 0
    assert trained.training_messages == training_rows
    assert trained.model.vocabulary_size == len(outputs["spam_bag_of_words"])
    assert set(outputs["spam_bag_of_words"]) == set(outputs["non_spam_bag_of_words"])
    assert sum(outputs["spam_bag_of_words"].values()) == pytest.approx(1.0)


def test_the_training_tables_row_count_includes_the_rows_the_model_leaves_out(tmp_path):
    warehouse = _warehouse_with(tmp_path / "warehouse.duckdb", TINY_DATASET)
    with duckdb.connect(warehouse.database) as conn:
        # A reporter's messages, half of them over its share.
        conn.execute(
            "INSERT INTO public.spam_dataset SELECT i % 2 = 0, 'report number ' || i, 'reports', "
            "false, 7, i % 4 < 2 FROM range(40) AS r(i)"
        )
    outputs = _outputs(warehouse, SpamModelConfig(test_size=0.3, seed=1))
    training_metadata = outputs["spam_training_dataframe"]
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        (view_rows,) = conn.execute(
            "SELECT count(*) FROM public.spam_training_dataframe"
        ).fetchone()
        (trained_on,) = conn.execute(
            "SELECT count(*) FROM public.spam_training_dataframe WHERE NOT capped"
        ).fetchone()
    assert training_metadata[ROW_COUNT] == view_rows
    assert training_metadata["messages_trained_on"] == trained_on < view_rows
    assert outputs["spam_model"].training_messages == trained_on


def test_the_false_positive_cost_raises_the_threshold_not_the_share(tiny_warehouse):
    # Too few messages for a budget: the cost alone sets the threshold.
    cheap = _outputs(tiny_warehouse, SpamModelConfig(false_positive_cost=1.0))["spam_model"]
    costly = _outputs(tiny_warehouse, SpamModelConfig(false_positive_cost=8.0))["spam_model"]
    assert cheap.spam_share == costly.spam_share
    assert cheap.model.percent_spam == pytest.approx(cheap.spam_share)
    assert costly.model.percent_spam < cheap.model.percent_spam
    assert cheap.model.log_odds == costly.model.log_odds
    assert costly.threshold_reason == "the false-positive cost"


def _config_failure(warehouse: Warehouse, config: dict) -> str:
    """Materialize `spam_model` with `config` through Dagster: the failure's text and cause."""
    result = dg.materialize(
        [training.spam_model],
        resources={
            "warehouse": warehouse,
            "database": ApplicationDatabase(path=os.environ["SPAM_FILTER_DATABASE"]),
            training.PICKLE_IO_MANAGER: dg.InMemoryIOManager(),
        },
        run_config={"ops": {"spam_model": {"config": config}}},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("spam_model").error
    return error.message + (error.cause.message if error.cause else "")


def test_a_bad_test_size_fails_before_touching_the_warehouse(tiny_warehouse):
    assert "test_size" in _config_failure(tiny_warehouse, {"test_size": 1.5})
    with duckdb.connect(tiny_warehouse.database, read_only=True) as conn:
        names = conn.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views()"
        ).fetchall()
    assert not {"spam_training_dataframe", "spam_testing_dataframe"} & {name for (name,) in names}


def test_a_split_without_spam_fails_with_a_reason(tmp_path):
    warehouse = _warehouse_with(tmp_path / "warehouse.duckdb", [(False, "hi"), (False, "ho")])
    with pytest.raises(dg.Failure, match="both spam and non-spam"):
        _outputs(warehouse, SpamModelConfig())


def test_most_indicative_words_come_from_the_spam_side(tiny_warehouse):
    trained = _outputs(tiny_warehouse, SpamModelConfig(seed=3))["spam_model"]
    top = [word for word, _ in trained.top_spam_words(3)]
    assert all(trained.model.log_odds[word] > 0 for word in top)
    assert not {"lunch", "see", "you"} & set(top)


def _score(false_positives: int, ceiling: float) -> ModelScore:
    gold = Score(90, false_positives, 100 - false_positives, 10)
    challenger = SplitScores(gold, Score(0, 0, 0, 0), Score(0, 0, 0, 0))
    rule = PromotionRule(max_false_positive_rate=ceiling)
    return ModelScore(challenger, None, None, rule, PromotionDecision(True, "test"))


@pytest.mark.parametrize(("false_positives", "passed"), [(0, True), (1, True), (2, False)])
def test_false_positive_check_holds_the_ceiling(false_positives, passed):
    result = check_false_positive_rate(_score(false_positives, ceiling=0.01))
    assert result.passed is passed
    assert result.metadata["gold_false_positive_rate"].value == false_positives / 100


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("false_positive_cost", 0.0, "Input should be greater than 0"),
        ("collection_false_positive_budget", -1.0, "Input should be greater than or equal to 0"),
        ("impact_margin", float("nan"), "Input should be a finite number"),
        ("seed", 2**40, "Input should be less than or equal to 2147483647"),
        ("test_size", 1.0, "Input should be less than 1"),
    ],
)
def test_a_config_value_out_of_range_fails_naming_its_field(tiny_warehouse, field, value, message):
    assert f"{field}\n  {message}" in _config_failure(tiny_warehouse, {field: value})


def test_every_field_out_of_range_is_named_at_once(tiny_warehouse):
    failure = _config_failure(tiny_warehouse, {"max_vocabulary": -1, "seed": 2**40})
    assert "2 validation errors for SpamModelConfig" in failure
    assert "max_vocabulary\n" in failure and "seed\n" in failure


def test_the_launchpad_describes_each_field_with_its_docstring():
    fields = training.spam_model.op.config_schema.config_type.fields
    assert fields["alpha"].description == (
        "Additive smoothing: the count every vocabulary word gets in both classes."
    )
    assert all(field.description for field in fields.values())
