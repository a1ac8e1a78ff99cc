"""The code location loads and wires the job, the schedule and the resources."""

from datetime import datetime

import dagster as dg

from spam_filter import defs

ASSET_KEYS = {
    "sms_spam_examples",
    "user_messages",
    "spam_dataset",
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


def test_job_includes_the_blocking_checks():
    job = defs.resolve_job_def("create_spam_model_job")
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {
        "check_false_positive_rate",
        "check_spam_dataset_has_both_classes",
        "check_spam_dataset_text_present",
        "check_spam_dataset_labels_boolean",
    } <= checks


def test_resources_are_named_as_the_assets_expect():
    assert {"database", "model_storage", "io_manager", "dict_io_manager", "warehouse_db"} <= set(
        defs.resources
    )


def test_schedule_is_monthly_running_and_targets_the_job():
    schedule = defs.resolve_schedule_def("monthly_retrain_schedule")
    assert schedule.cron_schedule == "0 0 1 * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1))
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    assert schedule.job_name == "create_spam_model_job"
