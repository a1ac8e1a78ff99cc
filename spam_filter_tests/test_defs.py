"""The code location loads and wires the job, the schedule and the resources."""

import ast
import subprocess
import sys
from datetime import datetime

import dagster as dg

from spam_filter.definitions import defs
from spam_filter_tests.helpers import PROJECT_ROOT

ASSET_KEYS = {
    "sms_spam_examples",
    "gold_examples",
    "user_reports",
    "user_messages",
    "spam_dataset",
    "spam_model",
    "spam_bag_of_words",
    "non_spam_bag_of_words",
    "spam_training_dataframe",
    "spam_testing_dataframe",
    "model_score",
    "model_file",
}


def test_definitions_load_with_every_asset():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == ASSET_KEYS


def test_job_selects_all_assets_and_runs_in_process():
    job = defs.resolve_job_def("create_spam_model_job")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert selected == ASSET_KEYS
    assert job.executor_def.name == "in_process"


def test_assets_materialized_from_the_ui_run_in_process():
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_job_includes_the_checks_and_only_failures_that_matter_block():
    job = defs.resolve_job_def("create_spam_model_job")
    graph = job.asset_layer.asset_graph
    blocking = {key.name: graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    assert blocking == {
        "check_false_positive_rate": True,
        "check_spam_dataset_has_both_classes": True,
        "check_spam_dataset_labels_boolean": True,
        # These can only warn: blank messages are left out of the dataset, and the user messages'
        # checks show what the defences did.
        "check_spam_dataset_text_present": False,
        "check_user_messages_reporter_share": False,
        "check_user_messages_label_balance": False,
        "check_user_messages_flagged_reporters": False,
    }


def test_assets_are_grouped_by_stage():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "sms_spam_examples": "ingestion",
        "gold_examples": "ingestion",
        "user_reports": "ingestion",
        "user_messages": "ingestion",
        "spam_dataset": "ingestion",
        "spam_model": "training",
        "spam_bag_of_words": "training",
        "non_spam_bag_of_words": "training",
        "spam_training_dataframe": "training",
        "spam_testing_dataframe": "training",
        "model_score": "deployment",
        "model_file": "deployment",
    }


def test_the_lineage_shows_what_each_step_reads():
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): sorted(
            parent.to_user_string() for parent in graph.get(key).parent_keys
        )
        for key in graph.get_all_asset_keys()
    }
    assert parents["model_score"] == ["spam_model", "spam_testing_dataframe"]
    assert parents["user_messages"] == ["sms_spam_examples", "user_reports"]


def test_every_asset_and_check_has_one_line_of_description_of_its_own():
    graph = defs.resolve_asset_graph()
    descriptions = [graph.get(key).description for key in graph.get_all_asset_keys()]
    descriptions += [graph.get_check_spec(key).description for key in graph.asset_check_keys]
    assert all(descriptions)
    # One line each, as the UI shows them: the reasoning goes into comments.
    assert [d for d in descriptions if "\n" in d.strip()] == []
    # A multi-asset's outputs would otherwise all show the function's docstring.
    assert len(set(descriptions)) == len(descriptions)


def test_every_config_field_is_described_in_the_ui():
    """The launchpad and the resources page show each field's docstring."""
    fields = {
        f"{key.to_user_string()}.{name}": field.description
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        for schema in [defs.resolve_assets_def(key).op.config_schema]
        if schema is not None and hasattr(schema.config_type, "fields")
        for name, field in schema.config_type.fields.items()
    }
    fields |= {
        f"{name}.{field_name}": field.description
        for name, resource in defs.resources.items()
        if isinstance(resource, dg.ConfigurableResource)
        for field_name, field in type(resource)
        .to_config_schema()
        .as_field()
        .config_type.fields.items()
    }
    assert "spam_model.alpha" in fields and "warehouse.run_lock_timeout_seconds" in fields
    assert [name for name, description in fields.items() if not description] == []


def test_the_api_does_not_load_dagster():
    probe = "import api, sys; assert 'dagster' not in sys.modules, 'api imported dagster'"
    subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, check=True)


def test_the_package_never_imports_the_command_line_scripts():
    scripts = {"database", "sample_data", "api"}
    for path in (PROJECT_ROOT / "spam_filter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            assert not scripts & {name.split(".")[0] for name in names if name}, path


def test_resources_are_named_as_the_assets_expect():
    assert {
        "database",
        "model_storage",
        "io_manager",
        "pickle_io_manager",
        "warehouse",
        "retrain_policy",
    } <= set(defs.resources)


def test_the_rollback_job_runs_in_process():
    assert defs.resolve_job_def("rollback_model_job").executor_def.name == "in_process"


def test_schedule_is_monthly_running_and_targets_the_job():
    schedule = defs.resolve_schedule_def("monthly_retrain_schedule")
    assert schedule.cron_schedule == "0 0 1 * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1))
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    assert schedule.job_name == "create_spam_model_job"
