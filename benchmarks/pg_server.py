"""A private PostgreSQL server for a benchmark (S11), with the settings of the scale-out research.

``tests/postgres_server.py`` is the tests' server; it imports pytest and runs with durability
switched off (``fsync=off``, ``synchronous_commit=off``), which would flatter a benchmark. This
one is durable, with the settings of the research that measured this machine's floors
(``/work/shared/research/scale-out-floors.md``): ``fsync=on``, ``synchronous_commit=on``,
``shared_buffers=512MB``, ``max_wal_size=4GB``, ``checkpoint_timeout=15min``,
``max_connections=50``; Debian's binaries (``/usr/lib/postgresql/<version>/bin``), ``initdb``
in a temporary directory, the server on a free loopback port (and a unix socket in that
directory), stopped by its pid at the end.

PostgreSQL refuses to run as root: as root, ``initdb`` and the server run as the ``postgres``
user (Debian's package creates it), or ``nobody`` failing that.

:func:`unavailable` says, in one line, what to install when psycopg or the binaries are
missing. :func:`cpu_seconds` is the CPU time (user + system) of the postmaster and its child
processes so far, from ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS", "BenchPostgres", "binaries", "cpu_seconds", "unavailable"]

SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "50",
}
"""The server's settings: the scale-out research's (durable, as a production server would be)."""

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL Debian installed, if any."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version,
                         reverse=True):
        directory = Path(initdb).parent
        if (directory / "postgres").is_file():
            return directory
    return None


def unavailable() -> str | None:
    """What to install for a PostgreSQL benchmark (one line), or ``None`` when all is there."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'sagactor[postgres]')"
    if binaries() is None:
        return ("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql)")
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's process: an immediate shutdown should the benchmark die without
    stopping it (Linux's parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody user to run "
                       "PostgreSQL as")


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, utime + stime in clock ticks) of a process, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[11]) + int(fields[12])


def cpu_seconds(postmaster: int) -> float:
    """CPU seconds (user + system) used so far by ``postmaster`` and its child processes (the
    backends serving the connections, the WAL writer, the checkpointer...). A child that
    exited meanwhile is not counted: read it around a window in which none does."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        found = _stat(pid)
        if found is not None and (int(pid) == postmaster or found[0] == postmaster):
            ticks += found[1]
    return ticks / _TICKS


class BenchPostgres:
    """One private, durable PostgreSQL cluster: :meth:`start`, make databases, :meth:`stop`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="sagactor-bench-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "run"
        self.log = self.base / "postgres.log"
        self.port = 0
        self.pid: int | None = None
        self.version = bin_dir.parent.name
        self._process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None

    def __enter__(self) -> BenchPostgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """``initdb``, then the server on a free port; returns once it takes connections."""
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            os.chmod(self.base, 0o755)  # the server's user must reach its directories
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(directory, self._user.pw_uid, self._user.pw_gid)
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", _SUPERUSER,
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_START_TIMEOUT,
                              **self._as_user())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr}")
        for _ in range(3):  # a free port may be taken between choosing and binding it
            self.port = _free_port()
            if self._launch():
                return
        raise RuntimeError(f"PostgreSQL did not start; its log:\n{self._log_tail()}")

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": [],
                "cwd": str(self.base)}

    def _launch(self) -> bool:
        import psycopg

        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1"]
        for name, value in SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.log, "ab") as log:
            if self._user is not None:
                os.chown(self.log, self._user.pw_uid, self._user.pw_gid)
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       preexec_fn=_die_with_parent, **self._as_user())
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                psycopg.connect(**self.params("postgres"), connect_timeout=2).close()
            except psycopg.OperationalError:
                time.sleep(0.05)
                continue
            self._process, self.pid = process, process.pid
            return True
        process.kill()
        process.wait()
        raise RuntimeError(f"PostgreSQL took over {_START_TIMEOUT}s to start:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server by its pid (fast shutdown, a kill if it lingers) and remove its
        directory. Stopping twice is fine."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)  # fast shutdown: ends the sessions
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def params(self, dbname: str) -> dict[str, Any]:
        """psycopg's connection parameters for ``dbname`` (TCP on the loopback port)."""
        return {"host": "127.0.0.1", "port": self.port, "user": _SUPERUSER, "dbname": dbname}

    def url(self, dbname: str) -> str:
        """The store URL of ``dbname``."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[Any]:
        """A superuser connection in autocommit mode, closed on exit."""
        import psycopg

        db = psycopg.connect(**self.params(dbname), autocommit=True)
        try:
            yield db
        finally:
            db.close()

    def create_database(self, name: str, template: str | None = None) -> None:
        """A new database: empty, or a copy of ``template`` (which no session may use)."""
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}"'
                       + ("" if template is None else f' TEMPLATE "{template}"'))

    def drop_database(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
