"""The system as a user runs it: the scripts, the real `dagster` CLI and a real HTTP server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from spam_filter import settings

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_bootstrap_train_and_serve(project_env, tmp_path):
    env = {**os.environ, **project_env, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run = {"cwd": settings.PROJECT_ROOT, "env": env, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "database.py"], **run)
    subprocess.run([sys.executable, "sample_data.py", "--count", "2000"], **run)
    job = subprocess.run(
        [BIN / "dagster", "job", "execute", "-m", "spam_filter", "-j", "create_spam_model_job"],
        **{**run, "check": False},
    )
    assert job.returncode == 0, job.stderr.decode()[-3000:]

    port = _free_port()
    server = subprocess.Popen(
        [BIN / "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "api:create_app()"],
        cwd=settings.PROJECT_ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/find_spam"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = _post(url, {"text": "you are the winner!"})
                break
            except OSError:
                assert time.monotonic() < deadline, "the API did not start"
                assert server.poll() is None, "gunicorn exited"
                time.sleep(0.2)
        assert answer["success"] is True
        assert answer["is_spam"] is True
        assert _post(url, {"text": "are we still on for lunch tomorrow?"})["is_spam"] is False
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
