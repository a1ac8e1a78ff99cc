"""Retraining from a shell is recorded where the UI looks (`make retrain`), and a run recorded in
a temporary Dagster instance says so."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from spam_filter.resources import temporary_instance_warning
from spam_filter_tests.helpers import JOB_COMMAND, PROJECT_ROOT, add_sample_messages

RUN_SYSTEM = PROJECT_ROOT / "scripts" / "run_system.py"
WARNING = "this run is recorded in a temporary Dagster instance"


def test_only_temporary_instances_are_warned_about(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        assert WARNING in temporary_instance_warning(ephemeral)
    # What the CLI makes when DAGSTER_HOME is unset.
    cli_temporary = tmp_path / ".tmp_dagster_home_abc123"
    cli_temporary.mkdir()
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(cli_temporary)) as instance:
        assert "make retrain" in temporary_instance_warning(instance)
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance:
        assert temporary_instance_warning(instance) is None


def _environment(project_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **project_env}
    env.pop("DAGSTER_HOME", None)
    return env


@pytest.mark.slow
def test_a_job_run_from_the_shell_without_dagster_home_warns(
    project_env: dict[str, str], app_db: str, tmp_path: Path
) -> None:
    add_sample_messages(app_db)
    result = subprocess.run(
        JOB_COMMAND,
        cwd=tmp_path,
        env=_environment(project_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "WARNING" in output and WARNING in output
    assert "make retrain" in output


@pytest.mark.slow
def test_make_retrain_records_the_run_in_the_uis_instance(
    project_env: dict[str, str], app_db: str, tmp_path: Path
) -> None:
    add_sample_messages(app_db)
    home = tmp_path / "dagster_home"
    result = subprocess.run(
        [sys.executable, str(RUN_SYSTEM), "retrain"],
        cwd=tmp_path,
        env={**_environment(project_env), "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"DAGSTER_HOME={home}" in result.stdout
    assert WARNING not in result.stdout + result.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert [(run.job_name, run.status) for run in runs] == [
        ("create_spam_model_job", dg.DagsterRunStatus.SUCCESS)
    ]
