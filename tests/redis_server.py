"""A private Redis server for the tests, started by the test session itself.

The first test that asks for :func:`redis_server` starts one server for the whole session:
Debian's ``/usr/bin/redis-server`` (the ``redis-server`` package; ``redis-server`` on ``PATH``
failing that), as the current user, listening on a free port on 127.0.0.1 only, its data in a
temporary directory, with the append-only file on (``appendonly yes``, ``appendfsync everysec``)
and no RDB snapshots (``save ""``). The settings are in a config file in that directory, so
:meth:`RedisServer.restart` brings the server back on the same port with the same data, the
append-only file reloaded, and the settings a test changed with ``CONFIG SET`` undone.

:func:`redis_url` gives each test an empty server: before the test every database is emptied
(``FLUSHALL``), the settings above are put back (``CONFIG SET``) and a server a previous test
killed is restarted; the URL is database 0's (``redis://127.0.0.1:PORT/0``). The tests run one
at a time, so the server is theirs alone while they run; a test may use the other fifteen
databases too (``redis_server.url(db=N)``), they are empty as well.

A test that kills the server (:meth:`RedisServer.kill9`) restarts it itself, or leaves that to
the next test's :func:`redis_url`. At the end of the session the server is stopped by its pid
(SIGTERM: a clean shutdown, then a kill if it lingers) and the directory removed; also when
the interpreter exits without the fixture's teardown, and the server dies with the test
session should that be killed (Linux's parent-death signal; for a server started, or
restarted, from the main thread — the signal is tied to the thread that starts it).

When ``redis-server`` or the ``redis`` package is missing the tests that use these fixtures
are skipped with one line saying what to install, except under ``CI=true``, where they fail:
CI installs both (``.ci/run``), so a skip there would hide a broken set-up.

A test module uses them by importing them (``from tests.redis_server import redis_server,
redis_url``): the server is one per session whichever modules do.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
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

__all__ = ["RedisServer", "redis_server", "redis_url", "require_redis"]

_BINARY = "/usr/bin/redis-server"
_HOST = "127.0.0.1"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_redis(reason: str) -> None:
    """Skip the test for want of ``reason`` (one line saying what to install), or fail it
    under ``CI=true``, where everything the tests need is installed."""
    if _in_ci():
        pytest.fail(f"CI=true, but {reason}", pytrace=False)
    pytest.skip(reason)


def _binary() -> str | None:
    """Debian's ``redis-server``, or the one on ``PATH``, if any."""
    if os.access(_BINARY, os.X_OK):
        return _BINARY
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's process, before it runs: be killed if the test session dies without
    stopping it (Linux's parent-death signal). Nothing in its directory is worth keeping
    then."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _info(port: int) -> dict[str, str] | None:
    """The server's ``INFO`` (its default sections) as ``{field: value}``, read over a plain
    socket (no client library needed to tell whether it is up); None while nothing answers
    on ``port`` or it answers with an error."""
    try:
        with socket.create_connection((_HOST, port), timeout=2.0) as sock:
            sock.sendall(b"INFO\r\n")
            reader = sock.makefile("rb")
            head = reader.readline()
            if not head.startswith(b"$"):
                return None
            body = reader.read(int(head[1:]))
    except (OSError, ValueError):
        return None
    fields: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("#"):
            fields[name] = value
    return fields


class RedisServer:
    """One private Redis server: :meth:`start` it, :meth:`kill9` and :meth:`restart` it,
    :meth:`stop` it. ``pid`` is the running server's, None while it is not running; ``port``
    stays the same across restarts."""

    def __init__(self, binary: str, *, appendfsync: str = "everysec", save: str = "") -> None:
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="sagactor-redis-"))
        self.data = self.base / "data"
        self.config = self.base / "redis.conf"
        self.log = self.base / "redis.log"
        self.port = 0
        self.pid: int | None = None
        # what reset() puts back; save "" means no RDB snapshots
        self.settings = {"appendonly": "yes", "appendfsync": appendfsync, "save": save}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """The server on a free port; returns once it answers."""
        with self._lock:
            self.data.mkdir(mode=0o700)
            for attempt in range(3):  # a free port may be taken between choosing and binding it
                self.port = _free_port()
                self._write_config()
                if self._launch():
                    return
                if attempt == 2:
                    raise RuntimeError(f"redis-server did not start; its log:\n{self._log_tail()}")

    def _write_config(self) -> None:
        lines = [
            f"bind {_HOST}",
            f"port {self.port}",
            f'dir "{self.data}"',
            f'logfile "{self.log}"',
            "daemonize no",
            "databases 16",
            f"appendonly {self.settings['appendonly']}",
            f"appendfsync {self.settings['appendfsync']}",
            f'save "{self.settings["save"]}"',
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def _launch(self) -> bool:
        """Start ``redis-server`` with the config file; whether it came up (False when it
        exited, e.g. its port was taken). Returns once it answers, its data loaded."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as log:
            process = subprocess.Popen(
                [self.binary, str(self.config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, preexec_fn=_die_with_parent if in_main_thread else None)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            info = _info(self.port)
            # INFO answers while the data is loading: wait for loading:0, and make sure it is
            # this server answering, not another one that had the port
            if (info is not None and info.get("process_id") == str(process.pid)
                    and info.get("loading") == "0"):
                self._process, self.pid = process, process.pid
                return True
            time.sleep(0.02)
        process.kill()
        process.wait()
        raise RuntimeError(f"redis-server took over {_START_TIMEOUT}s to start:\n"
                           f"{self._log_tail()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill9(self) -> None:
        """SIGKILL the server (no shutdown: what the append-only file holds is what a restart
        finds) and reap it. Killing a server that is not running does nothing."""
        with self._lock:
            process, self._process, self.pid = self._process, None, None
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def restart(self) -> None:
        """Start the server again on the same port and data directory, with the config file's
        settings; returns once it answers, its append-only file reloaded. A running server is
        shut down cleanly first (SIGTERM)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the Redis server was stopped for good")
            self._shutdown()
            if not self._launch():
                raise RuntimeError(f"redis-server did not restart on port {self.port}; its "
                                   f"log:\n{self._log_tail()}")

    def _shutdown(self) -> None:
        process, self._process, self.pid = self._process, None, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)  # shutdown: the append-only file fsynced
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then a kill if it lingers), and remove its
        directory. Stopping twice is fine."""
        with self._lock:
            self._stopped = True
            self._shutdown()
            shutil.rmtree(self.base, ignore_errors=True)

    def reset(self) -> None:
        """Empty every database and put the settings back (``CONFIG SET``), restarting the
        server first if it is not running: what :func:`redis_url` does before each test."""
        with self._lock:
            if not self.running:
                self.restart()
            client = self.client()
            try:
                client.flushall()
                client.config_set("appendonly", self.settings["appendonly"])
                client.config_set("appendfsync", self.settings["appendfsync"])
                client.config_set("save", self.settings["save"])
            finally:
                client.close()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    # -- connections ---------------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:PORT/DB``."""
        return f"redis://{_HOST}:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs: Any) -> Any:
        """A new redis-py client (``redis.Redis``) of database ``db``; ``kwargs`` go to it
        (``decode_responses=True``, timeouts, ...). The caller closes it."""
        import redis

        return redis.Redis(host=_HOST, port=self.port, db=db, **kwargs)


_server: RedisServer | None = None
_server_lock = threading.Lock()


def _the_server() -> RedisServer:
    """The session's server, started on first use (whichever test module asks first)."""
    global _server
    with _server_lock:
        if _server is None:
            try:
                import redis  # noqa: F401
            except ImportError:
                require_redis("the redis package is not installed (pip install 'sagactor[redis]')")
            binary = _binary()
            if binary is None:
                require_redis(f"no Redis server binary at {_BINARY} or on PATH "
                              "(apt-get install redis-server)")
            assert binary is not None
            server = RedisServer(binary)
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            _server = server
            atexit.register(server.stop)  # should the session end without its teardown
        return _server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's private Redis server (skipped, or failed under CI=true, when
    redis-server or the redis package is missing)."""
    server = _the_server()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server, every database emptied and the
    settings put back just before the test (restarted first if a test killed it)."""
    redis_server.reset()
    return redis_server.url(0)
