"""The worker (issue 17) as processes: ``kill -9`` of a worker holding a command, a long handler
on a live one, a handler that kills its worker every time, SIGTERM, and ``saga worker`` itself,
against a real redis-server. Workers are ``saga worker`` or ``python -m tests.worker_services``
(the same, with the claim and dead-letter settings the command does not offer).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import SAGA_CODE, eventually, read_until, saga_cli
from tests.worker_fixtures import redis_client  # noqa: F401 (a fixture)
from tests.worker_services import PROBE_FLOW, command, replies, runs, send

ROOT = Path(__file__).resolve().parent.parent
GROUP = "sagactor:workers"
STREAM = "sagactor:commands:probe"
Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def flow(tmp_path: Path) -> str:
    path = tmp_path / "probe.yaml"
    path.write_text(PROBE_FLOW)
    return str(path)


@pytest.fixture
def spawn(redis_url: str, flow: str) -> Iterator[Spawn]:  # noqa: F811
    """Start a worker process (``cli=True``: ``saga worker``) and wait for its ready line;
    every one still running is killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*options: str, cli: bool = False, ready: bool = True) -> subprocess.Popen[str]:
        program = ([sys.executable, "-c", SAGA_CODE, "worker"] if cli
                   else [sys.executable, "-m", "tests.worker_services"])
        proc = subprocess.Popen([*program, flow, "--broker", redis_url, *options], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        if ready:
            assert proc.stderr is not None
            read_until(proc.stderr, lambda line: " serving " in line, 30)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def the_reply(client: Any, key: str, timeout: float = 10.0) -> dict[str, Any]:
    return eventually(lambda: next((r for r in replies(client) if r["key"] == key), None),
                      timeout=timeout, what=f"a reply to {key}")


@pytest.mark.slow
def test_a_dead_workers_command_is_claimed_by_another_within_3_seconds(client, spawn, tmp_path):
    log = tmp_path / "log"
    holder = spawn("--name", "holder")
    send(client, command("s1:first", log, hold_first=True))
    eventually(lambda: runs(log), what="the holder running the command")
    spawn("--name", "survivor")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    died = time.monotonic()
    reply = the_reply(client, "s1:first")
    took = time.monotonic() - died
    assert took < 3.0, f"claimed and answered {took:.2f} s after the kill"
    assert reply["outcome"] == "ok" and reply["worker"] == "survivor"
    assert [run[0] for run in runs(log)] == [str(holder.pid), str(reply["result"]["pid"])]
    assert eventually(lambda: client.xpending(STREAM, GROUP)["pending"] == 0 or None) is True


@pytest.mark.slow
def test_a_long_handler_on_a_live_worker_is_not_claimed(client, spawn, tmp_path):
    log = tmp_path / "log"
    spawn("--name", "one")
    spawn("--name", "two")
    send(client, command("s1:first", log, sleep=4))  # twice the idle time of a claim
    eventually(lambda: runs(log), what="a worker running the command")
    time.sleep(3)
    [pending] = client.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert pending["times_delivered"] == 1
    reply = the_reply(client, "s1:first")
    assert reply["worker"] == pending["consumer"] and reply["outcome"] == "ok"
    assert len(runs(log)) == 1


@pytest.mark.slow
def test_a_command_that_kills_its_workers_is_dead_lettered_and_answered_error(client, spawn,
                                                                             tmp_path):
    log = tmp_path / "log"
    settings = ("--max-deliveries", "2", "--claim-idle", "0.3")
    first = spawn(*settings)
    send(client, command("s1:first", log, exit=True))
    assert first.wait(timeout=10) == 1
    second = spawn(*settings, ready=False)  # claims it, runs it, dies (maybe before it says
    assert second.wait(timeout=10) == 1     # that it is ready)
    last = spawn(*settings)
    reply = the_reply(client, "s1:first")
    assert reply["outcome"] == "error" and "dead-lettered after 3 deliveries" in reply["reason"]
    [(_, dead)] = client.xrange("sagactor:dead:probe")
    assert dead["deliveries"] == "3" and json.loads(dead["body"])["key"] == "s1:first"
    assert [run[0] for run in runs(log)] == [str(first.pid), str(second.pid)]
    assert client.xpending(STREAM, GROUP)["pending"] == 0 and last.poll() is None


@pytest.mark.slow
def test_sigterm_finishes_the_command_in_flight_then_exits_0(client, spawn, redis_url,  # noqa: F811
                                                             tmp_path):
    log = tmp_path / "log"
    worker = spawn("--json", "--concurrency", "4", cli=True, ready=False)
    assert worker.stderr is not None and worker.stdout is not None
    [line] = read_until(worker.stderr, lambda line: " serving " in line, 30)
    assert line.startswith("worker ") and line.rstrip().endswith(
        f"serving probe, other of probe_flow on {redis_url}; stop with Ctrl-C")
    send(client, command("s1:first", log, sleep=1))
    eventually(lambda: runs(log), what="the handler running")
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "stopping: finishing the 1 command(s) it holds" in err
    ready = json.loads(out)
    assert ready["services"] == ["probe", "other"] and ready["concurrency"] == 4
    assert the_reply(client, "s1:first", timeout=0.1)["outcome"] == "ok"
    assert client.xpending(STREAM, GROUP)["pending"] == 0


def test_saga_worker_with_an_unreachable_broker_exits_6_with_one_line(flow):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = saga_cli("worker", flow, timeout=60,
                    env={**os.environ, "SAGA_BROKER": f"redis://:pw@127.0.0.1:{port}/0"})
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith(f"error: broker redis://:***@127.0.0.1:{port}/0 cannot be "
                                  "used: ")
    assert len(done.stderr.splitlines()) == 1 and "pw" not in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_saga_worker_usage_errors_exit_2(flow, redis_url):  # noqa: F811
    unknown = saga_cli("worker", flow, "--broker", redis_url, "--services", "probe,nope")
    assert unknown.returncode == 2
    assert "no service 'nope' in probe_flow" in unknown.stderr
    missing = saga_cli("worker", "nowhere.yaml", "--broker", redis_url)
    assert missing.returncode == 2 and "nowhere.yaml:1:1: no such file" in missing.stderr
    not_redis = saga_cli("worker", flow, "--broker", "http://host")
    assert not_redis.returncode == 2 and "is not a Redis URL" in not_redis.stderr


@pytest.mark.slow
def test_an_orchestrator_runs_sagas_on_a_saga_worker(redis_url):  # noqa: F811
    """The two sides together: a runtime placing every service remote, `saga worker` hosting
    them (flows/order_inventory.yaml)."""
    from sagas import Runtime, load_flow

    worker = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "worker",
                               "flows/order_inventory.yaml", "--broker", redis_url], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stderr is not None
        read_until(worker.stderr, lambda line: " serving " in line, 30)
        flow = load_flow(ROOT / "flows" / "order_inventory.yaml")
        with Runtime("memory://", broker=redis_url, remote="all") as runtime:
            done = runtime.run(flow, {"order_id": "o-1", "sku": "widget", "qty": 1,
                                      "amount": 25}, timeout=30)
            refused = runtime.run(flow, {"order_id": "o-2", "sku": "widget", "qty": 10**9,
                                         "amount": 25}, timeout=30)
        assert (done.status, refused.status) == ("completed", "compensated")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=30)
