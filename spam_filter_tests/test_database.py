"""`python database.py`: the command line that bootstraps the application database."""

import subprocess
import sys

from spam_filter_tests.helpers import PROJECT_ROOT


def test_database_script_creates_and_prints_the_tables(project_env):
    result = subprocess.run(
        [sys.executable, "database.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env={**project_env, "PATH": ""},
    )
    assert "messages" in result.stdout and "models" in result.stdout
    assert "true_positive_rate" in result.stdout


def test_database_script_keeps_existing_rows(project_env):
    run = {"capture_output": True, "text": True, "check": True, "cwd": PROJECT_ROOT}
    subprocess.run([sys.executable, "database.py"], env=project_env, **run)
    subprocess.run([sys.executable, "sample_data.py", "--count", "3"], env=project_env, **run)
    again = subprocess.run([sys.executable, "database.py"], env=project_env, **run)
    assert "messages (3 rows)" in again.stdout
