"""A private Redis server for a benchmark (S12), durable as the research advises.

``tests/redis_server.py`` is the tests' server; it imports pytest. This one is the same server
with the same settings: Debian's ``/usr/bin/redis-server`` (``redis-server`` on ``PATH``
failing that) as the current user, on a free loopback port, its data in a temporary directory,
the append-only file on with ``appendfsync always`` by default (what a worker asks of its
broker: with less, a crash can lose the last second of the workers' inbox, and handlers run
again; ``everysec`` is what the tests and the scale-out research ran) and no RDB snapshots
(``save ""``). It is stopped by its pid (SIGTERM, a kill if it lingers) and dies with the
benchmark should that be killed (Linux's parent-death signal).

:func:`unavailable` says, in one line, what to install when redis-server or redis-py is
missing. :func:`process_cpu_seconds` is a process's CPU time (user + system, all its threads)
so far, from ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["FSYNC_POLICIES", "SETTINGS", "BenchRedis", "binary", "process_cpu_seconds",
           "unavailable"]

SETTINGS: dict[str, str] = {"appendonly": "yes", "appendfsync": "always", "save": '""'}
"""The server's persistence settings by default: what a worker asks of its broker (it warns
otherwise, :mod:`sagas.remote.worker`): every write in the append-only file, fsynced, before
it is answered."""
FSYNC_POLICIES = ("always", "everysec", "no")

_BINARY = "/usr/bin/redis-server"
_HOST = "127.0.0.1"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")


def binary() -> str | None:
    """Debian's ``redis-server``, or the one on ``PATH``, if any."""
    if os.access(_BINARY, os.X_OK):
        return _BINARY
    return shutil.which("redis-server")


def unavailable() -> str | None:
    """What to install for a Redis benchmark (one line), or ``None`` when all is there."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'sagactor[redis]')"
    if binary() is None:
        return f"no Redis server binary at {_BINARY} or on PATH (apt-get install redis-server)"
    return None


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by process ``pid``; 0.0 if it is
    gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(b")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _answers(port: int, pid: int) -> bool:
    """Whether the server of ``pid`` answers on ``port`` with its data loaded (``INFO`` over a
    plain socket)."""
    try:
        with socket.create_connection((_HOST, port), timeout=2.0) as sock:
            sock.sendall(b"INFO server\r\nINFO persistence\r\n")
            reader = sock.makefile("rb")
            text = ""
            for _ in range(2):
                head = reader.readline()
                if not head.startswith(b"$"):
                    return False
                text += reader.read(int(head[1:]) + 2).decode(errors="replace")
    except (OSError, ValueError):
        return False
    return f"process_id:{pid}\r\n" in text and "loading:0\r\n" in text


class BenchRedis:
    """One private redis-server: :meth:`start`, :attr:`url`, :meth:`client`, :meth:`stop`."""

    def __init__(self, binary_path: str, appendfsync: str = SETTINGS["appendfsync"]) -> None:
        if appendfsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync is one of {', '.join(FSYNC_POLICIES)}, "
                             f"not {appendfsync!r}")
        self.binary = binary_path
        self.settings = {**SETTINGS, "appendfsync": appendfsync}
        self.base = Path(tempfile.mkdtemp(prefix="sagactor-bench-redis-"))
        self.data = self.base / "data"
        self.config = self.base / "redis.conf"
        self.log = self.base / "redis.log"
        self.port = 0
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchRedis:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.data.mkdir(mode=0o700)
        for _ in range(3):  # a free port may be taken between choosing and binding it
            self.port = _free_port()
            lines = [f"bind {_HOST}", f"port {self.port}", f'dir "{self.data}"',
                     f'logfile "{self.log}"', "daemonize no",
                     *(f"{name} {value}" for name, value in self.settings.items())]
            self.config.write_text("\n".join(lines) + "\n")
            with open(self.log, "ab") as log:
                process = subprocess.Popen([self.binary, str(self.config)],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           preexec_fn=_die_with_parent)
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(self.port, process.pid):
                    self._process, self.pid = process, process.pid
                    return
                time.sleep(0.02)
            if process.poll() is None:
                process.kill()
                process.wait()
                raise RuntimeError(f"redis-server took over {_START_TIMEOUT:.0f}s to start:\n"
                                   f"{self._log_tail()}")
        raise RuntimeError(f"redis-server did not start; its log:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server by its pid and remove its directory. Stopping twice is fine."""
        process, self._process, self.pid = self._process, None, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
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

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    def client(self) -> Any:
        """A new redis-py client (text answers); the caller closes it."""
        import redis

        return redis.Redis(host=_HOST, port=self.port, db=0, decode_responses=True)

    def aof_bytes(self) -> int:
        """The append-only files' size on disk."""
        return sum(p.stat().st_size for p in self.data.rglob("*") if p.is_file())
