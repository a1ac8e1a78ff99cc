"""A full disk or a read-only weights folder while `model_file` writes: a clear failure, no change;
and a folder that fails after the switch: the promotion stands and says so.

The first tests run the job in its own mount namespace (`unshare`, no privileges needed) where the
weights folder is a real full tmpfs or a read-only bind mount, so the kernel itself refuses the
write.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spam_filter import faults
from spam_filter_tests.helpers import (
    PROJECT_ROOT,
    active_model,
    load_recorded,
    materialize_all,
    promote_weak_model,
    wait_for,
)

# Runs the job once, then lists the weights folder as this namespace sees it: its tmpfs is gone
# once the process ends, so whatever the failed run left there must be looked at from inside.
_RUN_JOB = """
import json
import os
import sys

from spam_filter.definitions import defs

result = defs.resolve_job_def("create_spam_model_job").execute_in_process(raise_on_error=False)
failure = None if result.success else result.failure_data_for_node("model_file")
print(json.dumps({
    "success": result.success,
    "error": failure.error.message if failure else None,
    "weights_dir": sorted(os.listdir(os.environ["SPAM_FILTER_WEIGHTS_DIR"])),
}))
"""

# The folder's files are copied into a small tmpfs, which is then filled and mounted in its place.
_DISK_FULL = """
set -e
mount -t tmpfs -o size=32m tmpfs "$STAGE"
cp -a "$SPAM_FILTER_WEIGHTS_DIR/." "$STAGE/"
dd if=/dev/zero of="$STAGE/filler" bs=64k 2>/dev/null || true
mount --bind "$STAGE" "$SPAM_FILTER_WEIGHTS_DIR"
exec "$PYTHON" -c "$SCRIPT"
"""

_READ_ONLY = """
set -e
mount --bind "$SPAM_FILTER_WEIGHTS_DIR" "$SPAM_FILTER_WEIGHTS_DIR"
mount -o remount,bind,ro "$SPAM_FILTER_WEIGHTS_DIR"
exec "$PYTHON" -c "$SCRIPT"
"""


def _weights_files(names: list[str]) -> list[str]:
    """The names that are not the folder's lock file or the disk-filling file."""
    return sorted(name for name in names if name not in {".lock", "filler"})


def _require_mount_namespaces() -> None:
    probe = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.fail(
            "these tests need unprivileged user and mount namespaces (`unshare --map-root-user "
            f"--mount`), which this machine refuses: {probe.stderr.strip()}"
        )


def _run_job_in_namespace(setup: str, env: dict[str, str], stage: Path) -> dict:
    _require_mount_namespaces()
    stage.mkdir()
    completed = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", setup],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            **env,
            "STAGE": str(stage),
            "PYTHON": sys.executable,
            "SCRIPT": _RUN_JOB,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("setup", "kernel_error"),
    [(_DISK_FULL, "No space left on device"), (_READ_ONLY, "Read-only file system")],
    ids=["disk full", "read-only folder"],
)
def test_an_unwritable_weights_folder_fails_the_run_and_keeps_the_active_model(
    setup: str,
    kernel_error: str,
    trained_db: str,
    project_env: dict[str, str],
    resources: dict,
    tmp_path: Path,
) -> None:
    weights_dir = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    promote_weak_model(trained_db, str(weights_dir))
    before = active_model(trained_db)
    files_before = _weights_files(os.listdir(weights_dir))

    outcome = _run_job_in_namespace(setup, project_env, tmp_path / "stage")

    assert outcome["success"] is False
    message = outcome["error"]
    assert f"cannot write the new model's weights into {weights_dir}: {kernel_error}" in message
    assert f"Nothing was promoted; {before.path} stays active." in message
    # No partial file stayed behind in the folder the run saw, and nothing new was recorded.
    assert _weights_files(outcome["weights_dir"]) == files_before
    after = active_model(trained_db)
    assert after == before
    assert load_recorded(after.path).vocabulary_size > 0

    # With the folder writable again, the next run promotes a model.
    assert materialize_all(resources).success
    assert active_model(trained_db).path != before.path


def test_a_folder_that_cannot_be_tidied_after_the_switch_still_reports_the_promotion(
    trained_db: str, project_env: dict[str, str], tmp_path: Path
) -> None:
    """Once the switch has committed, the new model is served: a failure to drop its file's
    pending marker afterwards must not make the run say that nothing was promoted."""
    weights_dir = Path(project_env["SPAM_FILTER_WEIGHTS_DIR"])
    weak = promote_weak_model(trained_db, str(weights_dir))
    release = tmp_path / "release"
    job = subprocess.Popen(
        [sys.executable, "-c", _RUN_JOB],
        cwd=PROJECT_ROOT,
        env={**os.environ, **project_env, faults.HOLD_AT_VARIABLE: f"switch_closed:{release}"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: list(weights_dir.glob(".*.pending")), seconds=120)
        # A folder in the marker's place: removing it fails, as in a folder turned read-only.
        (marker,) = weights_dir.glob(".*.pending")
        marker.unlink()
        (marker / "inside").mkdir(parents=True)
        release.touch()
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    outcome = json.loads(output.strip().splitlines()[-1])
    assert outcome["success"] is True, outcome["error"]
    promoted = active_model(trained_db)
    assert promoted.path != weak
    assert marker.name == f".{promoted.path}.pending"
    assert load_recorded(promoted.path).vocabulary_size > 0
