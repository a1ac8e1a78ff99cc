"""The code location: every asset, check, job, schedule and resource, in one Definitions."""

import dagster as dg
from dagster_duckdb_pandas import DuckDBPandasIOManager

from spam_filter import checks, settings, tables
from spam_filter.assets import deployment, ingestion, training
from spam_filter.jobs import create_spam_model_job, monthly_retrain_schedule, rollback_model_job
from spam_filter.resources import ApplicationDatabase, ModelStorage, Warehouse
from spam_filter.sensors import RetrainPolicy, retrain_on_reports_sensor


def warehouse_connection_config() -> dict[str, str | bool]:
    """DuckDB settings of the warehouse. The memory cap keeps a retrain on millions of messages
    in flat memory: DuckDB spills large joins and aggregates to disk instead of growing. Tables
    are stored uncompressed: they are scratch copies that each run rewrites and then reads several
    times, and compressing message texts (FSST) costs more than the copy itself and slows every
    later tokenizing pass; they take about 1.7x the disk."""
    return {
        "memory_limit": settings.warehouse_memory_limit(),
        "preserve_insertion_order": False,
        "force_compression": "uncompressed",
    }


def build_resources() -> dict:
    """Resources on the configured paths, read when the code location loads."""
    warehouse_file = settings.warehouse_path()
    connection_config = warehouse_connection_config()
    warehouse_file.parent.mkdir(parents=True, exist_ok=True)
    # On PostgreSQL, the URL (and its password) is read from the environment by each run, and the
    # UI shows the variable's name only.
    database_url = dg.EnvVar(settings.DATABASE_URL_VARIABLE) if settings.database_url() else None
    return {
        "database": ApplicationDatabase(path=database_url or str(settings.database_path())),
        "model_storage": ModelStorage(weights_dir=str(settings.weights_dir())),
        "warehouse": Warehouse(
            database=str(warehouse_file),
            connection_config=connection_config,
            run_lock_database_url=database_url or "",
        ),
        "io_manager": DuckDBPandasIOManager(
            database=str(warehouse_file),
            schema=tables.SCHEMA,
            connection_config=connection_config,
        ),
        training.PICKLE_IO_MANAGER: dg.FilesystemIOManager(base_dir=str(settings.storage_dir())),
        "retrain_policy": RetrainPolicy.from_environment(),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingestion, training, deployment]),
    asset_checks=dg.load_asset_checks_from_modules([checks, deployment]),
    jobs=[create_spam_model_job, rollback_model_job],
    schedules=[monthly_retrain_schedule],
    sensors=[retrain_on_reports_sensor],
    resources=build_resources(),
    # One process per run, for the job and for "Materialize" in the UI alike: a process per step
    # spends more time starting than working.
    executor=dg.in_process_executor,
)
