"""The code location: every asset, check, job, schedule and resource, in one Definitions."""

import dagster as dg
from dagster_duckdb_pandas import DuckDBPandasIOManager

from spam_filter import checks, settings, warehouse
from spam_filter.assets import data, model
from spam_filter.jobs import create_spam_model_job, monthly_retrain_schedule
from spam_filter.resources import ApplicationDatabase, ModelStorage, Warehouse

# The warehouse's memory cap keeps a retrain on millions of messages in flat memory: DuckDB spills
# large joins and aggregates to disk instead of growing.
WAREHOUSE_CONNECTION_CONFIG = {"memory_limit": "256MB", "preserve_insertion_order": False}


def build_resources() -> dict:
    """Resources pointing at the configured paths (read now, when the code location loads)."""
    warehouse_file = str(settings.warehouse_path())
    settings.warehouse_path().parent.mkdir(parents=True, exist_ok=True)
    return {
        "database": ApplicationDatabase(path=str(settings.database_path())),
        "model_storage": ModelStorage(weights_dir=str(settings.weights_dir())),
        "warehouse_db": Warehouse(
            database=warehouse_file, connection_config=WAREHOUSE_CONNECTION_CONFIG
        ),
        "io_manager": DuckDBPandasIOManager(
            database=warehouse_file,
            schema=warehouse.SCHEMA,
            connection_config=WAREHOUSE_CONNECTION_CONFIG,
        ),
        "dict_io_manager": dg.FilesystemIOManager(base_dir=str(settings.storage_dir())),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data, model]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[create_spam_model_job],
    schedules=[monthly_retrain_schedule],
    resources=build_resources(),
    # Also for "Materialize selected" in the UI, which runs the implicit asset job.
    executor=dg.in_process_executor,
)
