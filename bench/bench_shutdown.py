"""Measure how long `make run`'s services take to stop after Ctrl-C.

Starts `scripts/run_system.py` of a checkout (this one by default) on state in a temporary folder,
waits until the API and the Dagster UI answer, sends SIGINT as Ctrl-C does, and prints when the run
command exited and when the last process of either service's process group was gone. Run:

    python bench/bench_shutdown.py [--checkout DIR] [--rounds 3] [--early SECONDS]

With `--early`, Ctrl-C comes that long after the API answers, while the UI may still be starting.
The first round trains a model (the run command's bootstrap); later rounds reuse it.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bench.environment import folder_environment  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


def _group_members(groups: set[int]) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose process group is one of `groups`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) in groups and state != "Z":
            members.append((int(entry), name))
    return members


def _round(
    checkout: Path, env: dict[str, str], api_port: int, ui_port: int, log: Path, early: float | None
) -> str:
    python = checkout / ".venv" / "bin" / "python"
    with log.open("a") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            [str(python), "scripts/run_system.py"],
            cwd=checkout,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            restore_signals=True,
        )
        try:
            deadline = time.monotonic() + 600
            while not (
                _answers(api_port, "/api/health")
                and (early is not None or _answers(ui_port, "/server_info"))
            ):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the run command did not come up; see {log}")
                time.sleep(0.2)
            ready = time.monotonic() - started
            # Let the schedule daemon and the code server finish starting, as they have by the
            # time a person presses Ctrl-C, unless the interrupt is to come early.
            time.sleep(5 if early is None else early)
            groups = set(_children(process.pid))
            interrupted = time.monotonic()
            process.send_signal(signal.SIGINT)
            exited = None
            last_seen: list[tuple[int, str]] = []
            while True:
                now = time.monotonic()
                if exited is None and process.poll() is not None:
                    exited = now - interrupted
                members = _group_members(groups)
                if members:
                    last_seen = members
                elif exited is not None:
                    gone = now - interrupted
                    break
                if now - interrupted > 120:
                    raise SystemExit(f"processes still up after 120 s: {members}")
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lingering = ", ".join(sorted({name for _, name in last_seen})) or "none"
    return (
        f"ready after {ready:5.1f} s; after SIGINT the run command exited in {exited:5.2f} s, "
        f"the last process of its services was gone in {gone:5.2f} s (last: {lingering})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=PROJECT_ROOT, help="project to run")
    parser.add_argument("--rounds", type=int, default=3, help="start-and-stop rounds (3)")
    parser.add_argument(
        "--early", type=float, help="interrupt this many seconds after the API answers"
    )
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    folder = Path(tempfile.mkdtemp(prefix="spam_filter_shutdown_"))
    api_port, ui_port = _free_port(), _free_port()
    env = folder_environment(
        folder,
        SPAM_FILTER_API_BIND=f"127.0.0.1:{api_port}",
        SPAM_FILTER_UI_PORT=str(ui_port),
    )
    print(f"run command of {checkout}; log in {folder / 'run.log'}")
    try:
        for number in range(1, args.rounds + 1):
            outcome = _round(checkout, env, api_port, ui_port, folder / "run.log", args.early)
            print(f"round {number}: {outcome}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
