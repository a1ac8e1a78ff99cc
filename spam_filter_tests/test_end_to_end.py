"""The system as a user runs it: the scripts, the real `dagster` CLI and a real HTTP server."""

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sklearn.model_selection import train_test_split

from spam_filter import settings
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.processes import gunicorn_command
from spam_filter.resources import ModelStorage
from spam_filter.spam import train_model
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import ModelRecord
from spam_filter_tests.helpers import JOB_COMMAND
from spam_filter_tests.servers import free_port, service


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@contextmanager
def _gunicorn(env: dict[str, str]) -> Iterator[str]:
    """Serve the API with gunicorn on a free port; yield its find_spam URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/find_spam"
    command = gunicorn_command(f"127.0.0.1:{port}", 2)
    with service(command, env, lambda: _post(url, {"text": "ping"}), "gunicorn", 30):
        yield url


def test_bootstrap_train_and_serve(project_env, tmp_path):
    env = {**os.environ, **project_env, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run = {"cwd": settings.PROJECT_ROOT, "env": env, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "database.py"], **run)
    subprocess.run([sys.executable, "sample_data.py", "--count", "2000"], **run)
    job = subprocess.run(
        JOB_COMMAND,
        **{**run, "check": False},
    )
    assert job.returncode == 0, job.stderr.decode()[-3000:]

    with _gunicorn(env) as url:
        answer = _post(url, {"text": "you are the winner!"})
        assert answer["success"] is True
        assert answer["is_spam"] is True
        assert _post(url, {"text": "are we still on for lunch tomorrow?"})["is_spam"] is False


def test_api_agrees_with_offline_evaluation_on_raw_test_messages(project_env, app_db):
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    train, test = train_test_split(frame, test_size=0.3, stratify=frame["spam"], random_state=0)
    model = train_model(zip(train["body"], train["spam"], strict=True), 0.1, 8.0)
    path = ModelStorage(weights_dir=project_env["SPAM_FILTER_WEIGHTS_DIR"]).save(model)
    DuckDBStorage(app_db).promote_model(ModelRecord(path, "active", 0.9, 0.01), replacing=None)

    texts = test["body"].tolist()
    offline = [model.verdict(text) for text in texts]
    served = []
    with _gunicorn({**os.environ, **project_env}) as url:
        for start in range(0, len(texts), 200):  # 200 SMS stay under the 64 KiB body limit
            answer = _post(url, {"texts": texts[start : start + 200]})
            served.extend((r["is_spam"], r["spam_probability"]) for r in answer["results"])
    assert len(served) == len(texts) == 1672
    assert [spam for spam, _ in served] == [spam for spam, _ in offline]
    assert [p for _, p in served] == [p for _, p in offline]
