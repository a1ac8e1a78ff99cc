"""The evaluation command on the real spam.csv: this project beats the tutorial it started from."""

import os
import subprocess
import sys

import pytest

from spam_filter import constants, evaluate, settings
from spam_filter.datasets import read_sms_spam_collection


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, float]]:
    """Evaluate every method on two seeded splits of spam.csv."""
    data = read_sms_spam_collection(str(settings.spam_csv_path()))
    return evaluate.evaluate(
        data["body"].tolist(),
        data["spam"].tolist(),
        splits=2,
        alpha=constants.ALPHA,
        false_positive_cost=constants.FALSE_POSITIVE_COST,
    )


def test_reports_every_method(results: dict[str, dict[str, float]]) -> None:
    assert set(results) == set(evaluate.METHODS)
    for rates in results.values():
        assert set(rates) == set(evaluate.RATES)


def test_project_flags_fewer_legitimate_messages_than_the_tutorial(
    results: dict[str, dict[str, float]],
) -> None:
    ours = results[evaluate.THIS_PROJECT]
    for tutorial in (evaluate.TUTORIAL_API, evaluate.TUTORIAL_NORMALISED):
        assert ours["false_positive_rate"] < results[tutorial]["false_positive_rate"]
    assert ours["true_positive_rate"] > 0.9


def test_sklearn_baseline_is_sane(results: dict[str, dict[str, float]]) -> None:
    sklearn = results[evaluate.SKLEARN]
    assert 0.8 < sklearn["true_positive_rate"] <= 1.0
    assert 0.0 <= sklearn["false_positive_rate"] < 0.02
    assert sklearn["accuracy"] > 0.95


def test_command_prints_the_table() -> None:
    root = str(settings.PROJECT_ROOT)
    # The child finds the project from its root even where it is not installed (pip install -e).
    python_path = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "spam_filter.evaluate", "--splits", "1"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    for name in evaluate.METHODS:
        assert name in completed.stdout
    assert "split 1/1" in completed.stderr
