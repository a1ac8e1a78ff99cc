"""Benchmark a retrain end to end against the bare DuckDB word count on the same messages.

For each size, a temporary folder gets an application database holding that many sample messages
(`sample_data.py`'s realistic ones, almost all distinct; not timed), and the share of distinct
texts among them is counted. Then `dagster job execute ... create_spam_model_job` runs through the
real CLI twice (the second time with a model active, as the monthly schedule runs), and a fresh
Python process runs the bare query: tokenize and count the words of every message. All are
measured the same way: wall time, and the peak of the summed RSS of the whole process tree, polled
with psutil, and beside it the largest single process's peak from the same polls. (Not `wait4`'s
`ru_maxrss`, which `/usr/bin/time -v` prints: Linux carries a forked child's high-water mark
across `exec`, so after this script inserts 30M messages a child reports the script's own size.)
The Dagster floor is `dagster job list` on the same code location:
starting the CLI and loading the definitions, without running anything.

    python bench/bench_retrain.py                  # 0 (spam.csv alone), 10k, 1M, 10M
    python bench/bench_retrain.py --sizes 10k,1M --repeat 3
    python bench/bench_retrain.py --sizes 30M

With `--repeat`, each size is measured that many times on fresh data and the median run is shown
(every run's times are listed). Not a test: the figures depend on the machine and on whatever else
runs on it; the load average and the CPU others used meanwhile are printed beside them.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import sample_data  # noqa: E402
from bench.environment import folder_environment  # noqa: E402
from spam_filter.processes import RETRAIN_JOB_ARGUMENTS  # noqa: E402
from spam_filter.storage.factory import open_storage  # noqa: E402
from spam_filter.tokenizer_sql import TOKEN_TEXT_MACRO, TOKENIZE_MACRO  # noqa: E402

BIN = Path(sys.executable).parent
JOB_COMMAND = [str(BIN / "dagster"), *RETRAIN_JOB_ARGUMENTS]
# The cost of starting the CLI and loading the code location, without running anything.
CLI_FLOOR_COMMAND = [str(BIN / "dagster"), "job", "list", "-m", "spam_filter.definitions"]
# Run in a fresh interpreter so its memory is measured alone; prints the query's own seconds. The
# macro's text (what `spam_filter.tokenizer_sql.install_tokenizer` executes) comes as an
# argument, so the measured process imports nothing but DuckDB.
BARE_QUERY_SCRIPT = """
import sys, time
import duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
conn.execute("SET enable_progress_bar = false")
conn.execute(sys.argv[2])
start = time.perf_counter()
rows = conn.execute(
    "SELECT word, count(*) FROM (SELECT unnest(spam_tokens(body)) AS word FROM messages) "
    "GROUP BY word"
).fetchall()
print(f"{time.perf_counter() - start:.4f} {len(rows)}")
"""
DEFAULT_SIZES = "0,10k,1M,10M"
# The project's goals for a retrain: default data within a margin of the Dagster floor; large
# sizes within a multiple of the bare count and under a memory peak, whatever the size.
# What `make run` trains on: spam.csv alone, with no sample messages.
DEFAULT_DATA_SIZE = 0
DEFAULT_DATA_MARGIN_SECONDS = 1.5
LARGE_SIZES = (10_000_000, 30_000_000)
LARGE_RATIO = 3.0
PEAK_MB = 400.0
# A 64-bit hash per text: at 30M texts the chance of any collision is about 2e-5, and hashes take
# far less memory to count than the texts.
DISTINCT_TEXTS = "SELECT count(*), count(DISTINCT hash(body)) FROM messages"

_POLL_SECONDS = 0.02
_STEP_RE = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.hms]+)\.')
_DURATION_RE = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9.]+)s)?(?:([0-9.]+)ms)?$")


@dataclass
class Measurement:
    """What one measured process tree did."""

    seconds: float
    tree_peak_mb: float
    largest_process_peak_mb: float
    returncode: int
    stdout: str = ""
    stderr: str = ""
    processes_seen: int = 1
    background_cpu: float = 0.0
    """Share of the machine's CPUs busy outside the measured tree meanwhile (0 = undisturbed)."""
    load: float = 0.0
    """The one-minute load average when it ended."""


@dataclass
class Row:
    """One size's figures."""

    size: int
    job: Measurement
    retrain: Measurement
    """A second run in the same DAGSTER_HOME with a model active, as the monthly schedule runs."""
    bare: Measurement
    bare_query_seconds: float
    vocabulary: int
    distinct_share: float
    steps: dict[str, float] = field(default_factory=dict)
    retrain_steps: dict[str, float] = field(default_factory=dict)
    repeats: list["Row"] = field(default_factory=list)
    """Every repeat of this size, this row (the median) included."""

    @property
    def slower_run(self) -> Measurement:
        return max(self.job, self.retrain, key=lambda run: run.seconds)

    @property
    def ratio(self) -> float:
        """The slower run's wall time over the bare query's, measured on the same rows."""
        if not self.bare_query_seconds:
            return 0.0
        return self.slower_run.seconds / self.bare_query_seconds

    @property
    def peak_mb(self) -> float:
        return max(self.job.tree_peak_mb, self.retrain.tree_peak_mb)

    @property
    def highest_peak_mb(self) -> float:
        """The peak over every repeat: a goal on memory holds for each run, not for a median."""
        return max(row.peak_mb for row in self.repeats or [self])

    def median_seconds(self, run: str) -> float:
        """The median over the repeats of the `job` (first) or `retrain` (second) run's time."""
        return statistics.median(getattr(row, run).seconds for row in self.repeats or [self])


def parse_size(text: str) -> int:
    """Read `10k`, `1M` or `15000` as a message count."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def format_size(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1_000 and size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def parse_duration(text: str) -> float:
    """Seconds from Dagster's short durations: `8.3ms`, `533ms`, `2.1s`, `4m52s`, `1h4m`."""
    match = _DURATION_RE.match(text)
    if not match or not any(match.groups()):
        return float("nan")
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def step_seconds(log: str) -> dict[str, float]:
    """Each step's duration as Dagster logged it when the step finished."""
    return {step: parse_duration(duration) for step, duration in _STEP_RE.findall(log)}


def run_measured(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Measurement:
    """Run a command and poll its whole process tree's RSS until it exits (or time out): the
    peak of the sum over every process alive at once, and of the largest process alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        me = psutil.Process()
        busy_before = _busy_cpu_seconds()
        mine_before = sum(me.cpu_times()[:2])
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        tree_cpu: dict[int, float] = {}
        root = psutil.Process(process.pid)
        peak = largest = 0
        seen: set[int] = set()
        deadline = start + timeout
        while True:
            rss = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            for member in tree:
                try:
                    member_rss = member.memory_info().rss
                    rss += member_rss
                    largest = max(largest, member_rss)
                    times = member.cpu_times()
                    tree_cpu[member.pid] = times.user + times.system
                    seen.add(member.pid)
                except psutil.NoSuchProcess:
                    pass
            peak = max(peak, rss)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(_POLL_SECONDS)
        seconds = time.perf_counter() - start
        # The reaped child's own CPU time is exact; its children's last polled values are close.
        own_cpu = usage.ru_utime + usage.ru_stime
        children_cpu = sum(cpu for pid, cpu in tree_cpu.items() if pid != process.pid)
        # This process's polling is not the job's, but not a disturbance from outside either.
        polling = sum(me.cpu_times()[:2]) - mine_before
        others = _busy_cpu_seconds() - busy_before - own_cpu - children_cpu - polling
        # wait4 reaped the child: tell Popen so it does not wait for it again.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measurement(
            seconds=seconds,
            tree_peak_mb=peak / 2**20,
            largest_process_peak_mb=largest / 2**20,
            returncode=process.returncode,
            stdout=out.read(),
            stderr=err.read(),
            processes_seen=len(seen),
            background_cpu=max(others, 0.0) / (seconds * (psutil.cpu_count() or 1)),
            load=os.getloadavg()[0],
        )


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def base_env(folder: Path) -> dict[str, str]:
    """The environment of a run whose every path lies in `folder`."""
    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    return folder_environment(folder, PYTHONPATH=str(PROJECT_ROOT))


def measure_size(size: int, seed: int, timeout: float, verbose: bool) -> Row:
    """Build a database of `size` messages in a temporary folder and measure job and bare query."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{format_size(size)}_") as tmp:
        folder = Path(tmp)
        env = base_env(folder)
        started = time.perf_counter()
        storage = open_storage(env["SPAM_FILTER_DATABASE"])
        storage.create_schema()
        sample_data.insert_sample_messages(storage, size, seed=seed, progress=False)
        with storage.connection(read_only=True) as conn:
            rows, distinct = conn.execute(DISTINCT_TEXTS).fetchone()
        print(
            f"[{format_size(size)}] inserted {size:,} messages in "
            f"{time.perf_counter() - started:.1f}s (not timed), "
            f"{distinct / rows if rows else 1:.2%} distinct",
            flush=True,
        )
        job = run_measured(JOB_COMMAND, env, PROJECT_ROOT, timeout)
        log = job.stdout + job.stderr
        if job.returncode != 0 or "RUN_SUCCESS" not in log:
            print(log[-4000:], file=sys.stderr)
            raise SystemExit(f"[{format_size(size)}] the job failed (exit {job.returncode})")
        if verbose:
            print(log, flush=True)
        retrain = run_measured(JOB_COMMAND, env, PROJECT_ROOT, timeout)
        if retrain.returncode != 0 or "RUN_SUCCESS" not in retrain.stdout + retrain.stderr:
            print((retrain.stdout + retrain.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(f"[{format_size(size)}] the second run failed")
        bare = run_measured(
            [
                sys.executable,
                "-c",
                BARE_QUERY_SCRIPT,
                env["SPAM_FILTER_DATABASE"],
                TOKEN_TEXT_MACRO + ";" + TOKENIZE_MACRO,
            ],
            env,
            PROJECT_ROOT,
            timeout,
        )
        if bare.returncode != 0:
            print(bare.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"[{format_size(size)}] the bare query failed")
        query_seconds, vocabulary = bare.stdout.split()[-2:]
        row = Row(
            size,
            job,
            retrain,
            bare,
            float(query_seconds),
            int(vocabulary),
            distinct / rows if rows else 1.0,
            step_seconds(log),
            step_seconds(retrain.stdout + retrain.stderr),
        )
        print(
            f"[{format_size(size)}] job {job.seconds:.2f}s {job.tree_peak_mb:.0f} MB, "
            f"second run {retrain.seconds:.2f}s {retrain.tree_peak_mb:.0f} MB "
            f"({job.processes_seen} process(es)); bare query {row.bare_query_seconds:.2f}s "
            f"{bare.tree_peak_mb:.0f} MB; ratio {_ratio_text(row)}; load {retrain.load:.1f}; "
            "second run's steps "
            + ", ".join(f"{step} {seconds:.2f}s" for step, seconds in row.retrain_steps.items()),
            flush=True,
        )
        return row


def measure_median(size: int, seed: int, timeout: float, verbose: bool, repeat: int) -> Row:
    """Measure a size `repeat` times on fresh data; the run of median ratio, with all runs."""
    runs = [measure_size(size, seed, timeout, verbose) for _ in range(max(repeat, 1))]
    median = sorted(runs, key=lambda row: row.ratio)[(len(runs) - 1) // 2]
    median.repeats = runs
    return median


def measure_cli_floor(timeout: float, repeat: int) -> Measurement:
    """Start the CLI and load the code location without running a job; the median of `repeat`."""
    runs = []
    for _ in range(max(repeat, 1)):
        with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
            runs.append(run_measured(CLI_FLOOR_COMMAND, base_env(Path(tmp)), PROJECT_ROOT, timeout))
    return sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]


def _ratio_text(row: Row) -> str:
    """The ratio, or a dash where the bare count is too short to divide by (default data)."""
    return f"{row.ratio:.2f}x" if row.bare_query_seconds >= 0.05 else "-"


def report(rows: list[Row], floor: Measurement | None) -> str:
    """The table, every repeat's times, each step's seconds and the goal lines."""
    header = (
        f"{'size':>6} | {'distinct':>8} | {'vocabulary':>10} | {'job wall s':>10} | "
        f"{'2nd run s':>9} | {'bare count s':>12} | {'ratio':>6} | {'peak MB':>7} | "
        f"{'max proc MB':>11} | {'bare MB':>7} | {'load':>4} | {'other CPU':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{format_size(row.size):>6} | {row.distinct_share:>8.2%} | {row.vocabulary:>10,} | "
            f"{row.job.seconds:>10.2f} | {row.retrain.seconds:>9.2f} | "
            f"{row.bare_query_seconds:>12.2f} | {_ratio_text(row):>6} | {row.peak_mb:>7.0f} | "
            f"{max(row.job.largest_process_peak_mb, row.retrain.largest_process_peak_mb):>11.0f} | "
            f"{row.bare.tree_peak_mb:>7.0f} | {row.retrain.load:>4.1f} | "
            f"{row.retrain.background_cpu:>9.0%}"
        )
    lines.append(
        "ratio: the slower of the two runs over the bare count; peak: the process tree's summed "
        "RSS, the higher of the two runs; load: the one-minute load average after the second run; "
        "other CPU: share of the machine busy outside the measured tree meanwhile."
    )
    if any(len(row.repeats) > 1 for row in rows):
        lines.append("median of the repeats shown; every repeat (job s / 2nd run s / bare s):")
        for row in rows:
            lines.append(
                f"  {format_size(row.size)}: "
                + "; ".join(
                    f"{r.job.seconds:.2f} / {r.retrain.seconds:.2f} / {r.bare_query_seconds:.2f}"
                    for r in row.repeats
                )
            )
    if floor is not None:
        lines.append(
            f"Dagster floor (`dagster job list -m spam_filter.definitions`): {floor.seconds:.2f}s, "
            f"{floor.tree_peak_mb:.0f} MB, load {floor.load:.1f}"
        )
    steps = sorted({step for row in rows for step in (*row.steps, *row.retrain_steps)})
    if steps:
        lines.append("")
        lines.append("step seconds, first run / second run (from the runs' logs):")
        lines.append(f"{'step':<52}" + "".join(f"{format_size(r.size):>16}" for r in rows))
        for step in steps:
            lines.append(
                f"{step:<52}"
                + "".join(
                    f"{r.steps.get(step, float('nan')):>8.2f}"
                    f"{r.retrain_steps.get(step, float('nan')):>8.2f}"
                    for r in rows
                )
            )
    lines.append("")
    lines.extend(goal_lines(rows, floor))
    return "\n".join(lines)


def goal_lines(rows: list[Row], floor: Measurement | None) -> list[str]:
    """PASS/FAIL for each goal that the measured sizes can answer."""

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = []
    by_size = {row.size: row for row in rows}
    if DEFAULT_DATA_SIZE in by_size and floor is not None:
        row = by_size[DEFAULT_DATA_SIZE]
        limit = floor.seconds + DEFAULT_DATA_MARGIN_SECONDS
        repeats = len(row.repeats or [row])
        for label, run in (("first run, new DAGSTER_HOME", "job"), ("second run", "retrain")):
            seconds = row.median_seconds(run)
            lines.append(
                f"{verdict(seconds <= limit)}: default data (spam.csv alone, as `make run` "
                f"trains), {label}, median of {repeats}: {seconds:.2f}s <= the Dagster floor + "
                f"{DEFAULT_DATA_MARGIN_SECONDS:g}s ({limit:.2f}s)"
            )
    for size in LARGE_SIZES:
        if size in by_size:
            row = by_size[size]
            lines.append(
                f"{verdict(row.ratio <= LARGE_RATIO)}: {format_size(size)} within "
                f"{LARGE_RATIO:g}x the bare count on the same rows: {row.slower_run.seconds:.2f}s "
                f"/ {row.bare_query_seconds:.2f}s = {row.ratio:.2f}x"
            )
    for row in rows:
        lines.append(
            f"{verdict(row.highest_peak_mb <= PEAK_MB)}: {format_size(row.size)} peak "
            f"{row.highest_peak_mb:.0f} MB (the highest of its runs) <= {PEAK_MB:.0f} MB"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"comma-separated message counts ({DEFAULT_SIZES}; 30M is about 10 minutes more)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample messages")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before a run is killed (3600)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per size on fresh data; the median is reported, every time listed (1)",
    )
    parser.add_argument("--no-cli-floor", action="store_true", help="skip the Dagster floor")
    parser.add_argument("--verbose", action="store_true", help="print each run's Dagster log")
    args = parser.parse_args()
    sizes = [parse_size(size) for size in args.sizes.split(",") if size.strip()]
    floor = None if args.no_cli_floor else measure_cli_floor(args.timeout, args.repeat)
    rows = [
        measure_median(size, args.seed, args.timeout, args.verbose, args.repeat) for size in sizes
    ]
    print()
    print(report(rows, floor))


if __name__ == "__main__":
    main()
