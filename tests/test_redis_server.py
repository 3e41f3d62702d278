"""The tests' private Redis server (tests/redis_server.py): it starts, streams work on it, each
test finds it empty, it survives kill -9 with its append-only file, and it goes away with the
test session, stopped or killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaped counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_client_adds_to_a_stream_and_reads_it_through_a_group(
        redis_server: RedisServer, redis_url: str) -> None:  # noqa: F811
    import redis

    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0" == redis_server.url()
    assert redis_server.url(db=3) == f"redis://127.0.0.1:{redis_server.port}/3"
    assert redis_server.pid is not None and not _gone(redis_server.pid)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.xgroup_create("commands", "workers", id="0", mkstream=True)
        entry = client.xadd("commands", {"body": '{"v": 1}'})
        got = client.xreadgroup("workers", "w-1", {"commands": ">"}, count=10, block=100)
        assert got == [["commands", [(entry, {"body": '{"v": 1}'})]]]
        assert client.xpending("commands", "workers")["pending"] == 1
        assert client.xack("commands", "workers", entry) == 1
        persistence = client.info("persistence")
        assert persistence["aof_enabled"] == 1
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        client.close()


def test_a_test_leaves_data_and_settings_behind(
        redis_server: RedisServer, redis_url: str) -> None:  # noqa: F811
    with redis_server.client() as db0, redis_server.client(db=5) as db5:
        db0.xadd("left-behind", {"k": "v"})
        db5.set("also", "here")
        db0.config_set("appendfsync", "always")
        db0.config_set("save", "60 1")
        assert db0.dbsize() == 1 and db5.dbsize() == 1


def test_the_next_test_finds_every_database_empty_and_the_settings_back(
        redis_server: RedisServer, redis_url: str) -> None:  # noqa: F811
    with redis_server.client(decode_responses=True) as client:
        assert client.dbsize() == 0
        assert client.info("keyspace") == {}  # no keys in any of the 16 databases
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("save") == {"save": ""}


def test_an_entry_written_before_kill9_is_there_after_restart(
        redis_server: RedisServer, redis_url: str) -> None:  # noqa: F811
    import redis

    port = redis_server.port
    with redis_server.client(decode_responses=True) as client:
        client.config_set("appendfsync", "always")
        entry = client.xadd("commands", {"body": "before the kill"})
    old_pid = redis_server.pid
    assert old_pid is not None
    redis_server.kill9()
    assert redis_server.pid is None and not redis_server.running and _gone(old_pid)
    with (redis_server.client(socket_connect_timeout=1, retry=None) as client,
          pytest.raises(redis.ConnectionError)):
        client.ping()

    redis_server.restart()
    assert redis_server.port == port and redis_server.pid not in (None, old_pid)
    with redis_server.client(decode_responses=True) as client:
        assert client.xrange("commands") == [(entry, {"body": "before the kill"})]
        # the config file's settings, not the CONFIG SET before the kill
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.info("persistence")["aof_enabled"] == 1


def test_a_killed_server_is_restarted_for_the_next_test(
        redis_server: RedisServer) -> None:  # noqa: F811
    redis_server.kill9()
    redis_server.reset()  # what the redis_url fixture does before each test
    assert redis_server.running
    with redis_server.client() as client:
        assert client.ping() is True and client.dbsize() == 0


_SESSION = textwrap.dedent("""
    import json, os, time

    from tests.redis_server import redis_server  # noqa: F401

    def test_start(redis_server):
        with redis_server.client() as client:
            assert client.ping()
        out = os.environ["REDIS_SERVER_OUT"]
        with open(out + ".tmp", "w") as f:
            json.dump({"pid": redis_server.pid, "base": str(redis_server.base)}, f)
        os.replace(out + ".tmp", out)
        if os.environ.get("REDIS_SERVER_HANG"):
            time.sleep(120)
""")


def _session(tmp_path: Path, *, hang: bool) -> tuple[subprocess.Popen[str], Path]:
    (tmp_path / "test_session.py").write_text(_SESSION)
    out = tmp_path / "server.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_SERVER_OUT": str(out)}
    if hang:
        env["REDIS_SERVER_HANG"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "test_session.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, out


@pytest.mark.slow
def test_the_server_is_stopped_and_its_directory_removed_after_the_session(
        tmp_path: Path) -> None:
    process, out = _session(tmp_path, hang=False)
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    server = json.loads(out.read_text())
    assert _gone(server["pid"])
    assert not Path(server["base"]).exists()


@pytest.mark.slow
def test_the_server_dies_with_a_killed_session(tmp_path: Path) -> None:
    process, out = _session(tmp_path, hang=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the session did not start its server"
            time.sleep(0.05)
        server = json.loads(out.read_text())
        assert not _gone(server["pid"])
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while not _gone(server["pid"]):
            assert time.monotonic() < deadline, "the server outlived its killed session"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if out.exists():  # nothing removed the killed session's directory
            shutil.rmtree(json.loads(out.read_text())["base"], ignore_errors=True)
