"""A private PostgreSQL server for the tests, started by the test session itself.

The first test that asks for :func:`postgres_server` starts one cluster for the whole session:
Debian's binaries (``/usr/lib/postgresql/<version>/bin``, the ``postgresql`` package) run
``initdb`` in a temporary directory, then ``postgres`` listens on a free loopback port and on a
unix socket in that directory, with durability switched off (the tests never survive a crash
of the server, and it makes them fast). :func:`postgres_url` gives each test a database of its
own (a copy of an empty template, dropped after the test); :func:`postgres_store_url` gives it
an empty saga store: a database holding the store's schema and no data, which is emptied after
the test (its sessions ended, its tables truncated, its counters reset) and given to a later
test, three times faster than a new database each time. At the end of the session the server
is stopped by its pid and the directory removed.

PostgreSQL refuses to run as root: as root, the server and ``initdb`` run as the ``postgres``
user (which Debian's package creates), or ``nobody`` failing that.

When the binaries or psycopg are missing the tests that use these fixtures are skipped with
one line saying what to install, except under ``CI=true``, where they fail: CI installs both
(``.ci/run``), so a skip there would hide a broken set-up.

A test module uses them by importing them (``from tests.postgres_server import
postgres_server, postgres_url``): the server is one per session whichever modules do.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "postgres_server", "postgres_store_url", "postgres_url",
           "require_postgres"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_TEMPLATE = "sagactor_template"
_STORE_TEMPLATE = "sagactor_store_template"
_SUPERUSER = "postgres"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_postgres(reason: str) -> None:
    """Skip the test for want of ``reason`` (one line saying what to install), or fail it
    under ``CI=true``, where everything the tests need is installed."""
    if _in_ci():
        pytest.fail(f"CI=true, but {reason}", pytrace=False)
    pytest.skip(reason)


def _binaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL Debian installed, if any."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    for initdb in reversed(found):
        directory = Path(initdb).parent
        if (directory / "postgres").is_file():
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's process, before it runs: be stopped (immediate shutdown) if the test
    session dies without stopping it (Linux's parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


class PostgresServer:
    """One private PostgreSQL cluster: :meth:`start` it, make databases, :meth:`stop` it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="sagactor-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "run"
        self.log = self.base / "postgres.log"
        self.port = 0
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        self._names = itertools.count(1)
        self._names_lock = threading.Lock()
        self._spare_stores: list[str] = []  # emptied store databases, for the next test
        self._store_template = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """``initdb``, then the server on a free port; returns once it takes connections."""
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            os.chmod(self.base, 0o755)  # the server's user must reach its directories
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(directory, self._user.pw_uid, self._user.pw_gid)
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", _SUPERUSER,
                   "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        for attempt in range(3):  # a free port may be taken between choosing and binding it
            self.port = _free_port()
            if self._launch():
                break
            if attempt == 2:
                raise RuntimeError(f"PostgreSQL did not start; its log:\n{self._log_tail()}")
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{_TEMPLATE}" IS_TEMPLATE true')

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_START_TIMEOUT,
                              **self._as_user())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": [],
                "cwd": str(self.base)}

    def _launch(self) -> bool:
        """Start ``postgres`` on ``self.port``; whether it came up."""
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
                "-c", "shared_buffers=64MB"]
        with open(self.log, "ab") as log:
            if self._user is not None:
                os.chown(self.log, self._user.pw_uid, self._user.pw_gid)
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       preexec_fn=_die_with_parent, **self._as_user())
        deadline = time.monotonic() + _START_TIMEOUT
        import psycopg

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
        """Stop the server by its pid (fast shutdown, then a kill if it lingers), and remove
        its directory. Stopping twice is fine."""
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

    # -- connections and databases -----------------------------------------------------------

    def params(self, dbname: str) -> dict[str, Any]:
        """psycopg's connection parameters for ``dbname`` (TCP on the loopback port)."""
        return {"host": "127.0.0.1", "port": self.port, "user": _SUPERUSER, "dbname": dbname}

    def url(self, dbname: str, *, password: str | None = None) -> str:
        """The store URL of ``dbname`` (trust authentication: any password is accepted)."""
        secret = "" if password is None else f":{password}"
        return f"postgresql://{_SUPERUSER}{secret}@127.0.0.1:{self.port}/{dbname}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[Any]:
        """A superuser connection in autocommit mode, closed on exit."""
        import psycopg

        db = psycopg.connect(**self.params(dbname), autocommit=True)
        try:
            yield db
        finally:
            db.close()

    def new_name(self) -> str:
        with self._names_lock:
            return f"test_{os.getpid()}_{next(self._names)}"

    def create_database(self) -> str:
        """A new, empty database (a copy of the empty template); its name."""
        name = self.new_name()
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending its sessions (a test may leave one open)."""
        with self.admin() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def store_database(self) -> str:
        """A database holding an empty saga store: one a test emptied, or a new copy of a
        template holding the store's schema (made once, by the store itself)."""
        with self._names_lock:
            if self._spare_stores:
                return self._spare_stores.pop()
        if not self._store_template:
            from sagas.stores import open_store

            with self.admin() as db:
                db.execute(f'CREATE DATABASE "{_STORE_TEMPLATE}" TEMPLATE "{_TEMPLATE}"')
            open_store(self.url(_STORE_TEMPLATE)).close()
            with self.admin() as db:
                db.execute(f'ALTER DATABASE "{_STORE_TEMPLATE}" IS_TEMPLATE true')
            self._store_template = True
        name = self.new_name()
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_STORE_TEMPLATE}"')
        return name

    def recycle_store_database(self, name: str) -> None:
        """Empty the store in ``name`` for a later test: end its sessions (their advisory
        locks go with them), truncate every table but the schema's version, the positions'
        counters (reset) and the partitions' leases (made free and never held again). A
        database that cannot be emptied so is dropped instead."""
        try:
            with self.admin(name) as db:
                db.execute("SET lock_timeout = '5s'")
                db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                tables = [t for (t,) in db.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'sagactor' "
                    "AND tablename NOT IN ('meta', 'counters', 'leases') ORDER BY tablename")]
                with db.transaction():
                    meta = db.execute("SELECT key, value FROM sagactor.meta ORDER BY key")
                    counters = db.execute("UPDATE sagactor.counters SET value = 0").rowcount
                    leases = db.execute(
                        "UPDATE sagactor.leases SET member = NULL, epoch = 0, expires_at = NULL, "
                        "renewed_at = NULL").rowcount
                    from sagas.stores.postgres._schema import SCHEMA_VERSION  # psycopg's here

                    if (meta.fetchall() != [("partitions", "64"),
                                            ("schema_version", str(SCHEMA_VERSION))]
                            or counters != 2 or leases != 64 or len(tables) != 10):
                        raise RuntimeError(f"the store in {name} was changed: not reused")
                    db.execute("TRUNCATE " + ", ".join(f"sagactor.{t}" for t in tables)
                               + " RESTART IDENTITY")
        except Exception:
            self.drop_database(name)
            return
        with self._names_lock:
            self._spare_stores.append(name)

    def databases(self) -> set[str]:
        with self.admin() as db:
            return {name for (name,) in db.execute("SELECT datname FROM pg_database")}


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody user to run "
                       "PostgreSQL as")


_server: PostgresServer | None = None
_server_lock = threading.Lock()


def _the_server() -> PostgresServer:
    """The session's server, started on first use (whichever test module asks first)."""
    global _server
    with _server_lock:
        if _server is None:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                require_postgres("psycopg is not installed (pip install 'sagactor[postgres]')")
            bin_dir = _binaries()
            if bin_dir is None:
                require_postgres("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                                 "(apt-get install postgresql)")
            assert bin_dir is not None
            server = PostgresServer(bin_dir)
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            _server = server
            atexit.register(server.stop)  # should the session end without its teardown
        return _server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL server (skipped, or failed under CI=true, when
    PostgreSQL or psycopg is missing)."""
    server = _the_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The store URL of a new, empty database of its own, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_store_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The store URL of an empty saga store (the schema made, no data) in a database of its
    own for the test, emptied after it for a later one."""
    name = postgres_server.store_database()
    yield postgres_server.url(name)
    postgres_server.recycle_store_database(name)
