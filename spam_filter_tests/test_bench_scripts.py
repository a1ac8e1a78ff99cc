"""The benchmark scripts start: each answers --help, the quickest runs in a tiny mode, and the
tutorial baseline that bench_api serves answers.

The benchmarks themselves are not tests (they take minutes of both cores); this only keeps a
rename elsewhere in the project from breaking one unnoticed.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spam_filter_tests.helpers import PROJECT_ROOT

BENCH_SCRIPTS = sorted(path.name for path in (PROJECT_ROOT / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_each_benchmark_answers_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, f"bench/{script}", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_the_metrics_benchmark_runs_and_leaves_no_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/bench_metrics.py", "--requests", "20", "--rounds", "1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "the metrics cost" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_tutorial_baseline_scores_with_the_active_model(trained_db: str) -> None:
    """bench_api's baseline app finds the active model's file as the API does."""
    from bench.tutorial_app import create_app

    client = create_app().test_client()
    answer = client.post("/api/find_spam", json={"text": "WINNER! claim your prize, call now"})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    assert answer.get_json() == {"success": True, "is_spam": True}
