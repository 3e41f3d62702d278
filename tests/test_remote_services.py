"""Services in workers, seen from the orchestrator (issue 17): a runtime with a broker publishes
the commands of services placed remote and drives its sagas on the replies workers send back.

The workers here are ``tests/plain_redis_worker.py``, written with plain redis-py and no
sagactor import, in real processes: what the README's wire protocol promises is what they get.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagas import Runtime, parse_flow
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import eventually

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "plain_redis_worker.py"

FLOW = """\
saga: pay_remote
services:
  payment: {remote: true, handlers: [charge, refund]}
  shipping: {remote: true, handlers: [ship, fail_ship]}
defaults:
  retry: {attempts: 2, backoff: 10ms}
  timeout: TIMEOUT
steps:
  - name: charge
    service: payment
    action: charge
    compensation: refund
    input: {amount: $.input.amount}
  - name: ship
    service: shipping
    action: SHIP
    effects: none
"""


def _flow(ship: str = "ship", timeout: str = "5s", attempts: int = 2,
          on_compensation_failure: str = "park") -> object:
    text = FLOW.replace("SHIP", ship).replace("TIMEOUT", timeout)
    text = text.replace("attempts: 2", f"attempts: {attempts}")
    text = text.replace("  timeout:", f"  on_compensation_failure: {on_compensation_failure}\n"
                                      "  timeout:")
    return parse_flow(text, source="<f>")


@pytest.fixture
def workers(redis_url: str) -> Iterator[list[subprocess.Popen[str]]]:  # noqa: F811
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)


def _worker(url: str, started: list, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(WORKER), url, "payment,shipping", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(proc)
    assert proc.stdout is not None and "serving" in proc.stdout.readline()
    return proc


def _runs(redis_server) -> list[str]:  # noqa: F811
    return [r.decode() for r in redis_server.client().lrange("plain-worker:runs", 0, -1)]


def test_a_plain_redis_py_worker_serves_a_flows_class_less_services(
        redis_server, redis_url, workers):  # noqa: F811
    worker = _worker(redis_url, workers)
    with Runtime(broker=redis_url) as runtime:
        result = runtime.run(_flow(), {"amount": 25}, "paid", timeout=20)
    assert result.status == "completed"
    assert result.context["steps"]["charge"] == {
        "handler": "charge", "worker": result.context["steps"]["charge"]["worker"],
        "payload": {"amount": 25}}
    assert result.context["steps"]["charge"]["worker"].endswith(f":{worker.pid}")
    assert _runs(redis_server) == ["payment:charge:paid:charge", "shipping:ship:paid:ship"]
    group = redis_server.client()
    for stream in group.scan_iter("sagactor:replies:*"):  # every reply acknowledged
        assert group.xpending(stream, "sagactor:orchestrators")["pending"] == 0


def test_a_refusal_in_a_worker_is_compensated_by_the_worker(
        redis_server, redis_url, workers):  # noqa: F811
    _worker(redis_url, workers)
    with Runtime(broker=redis_url) as runtime:
        result = runtime.run(_flow(ship="fail_ship"), {"amount": 5}, "refused", timeout=20)
    assert result.status == "compensated"
    assert _runs(redis_server) == ["payment:charge:refused:charge",
                                   "shipping:fail_ship:refused:ship",
                                   "payment:refund:refused:charge:compensation"]


def test_a_compensation_waits_for_its_action_still_running_in_a_worker(
        redis_server, redis_url, workers):  # noqa: F811
    """The action outlasts its timeout in the worker: the saga compensates, but the
    compensation is published only once the action's command is answered, so the workers
    never run them out of order (its attempts time out meanwhile, as behind a busy mailbox in
    process: retried until it runs)."""
    _worker(redis_url, workers, "--hold", "charge=1.5")
    _worker(redis_url, workers)  # a second worker, free to take the compensation at once
    with Runtime(broker=redis_url) as runtime:
        result = runtime.run(_flow(timeout="300ms", attempts=1,
                                   on_compensation_failure="retry_forever"),
                             {"amount": 7}, "slow", timeout=20)
    assert result.status == "compensated"
    runs = _runs(redis_server)
    assert runs.index("payment:charge:slow:charge") < \
        runs.index("payment:refund:slow:charge:compensation"), runs


def test_saga_events_are_published_to_a_stream_per_flow(
        redis_server, redis_url, workers):  # noqa: F811
    _worker(redis_url, workers)
    client = redis_server.client()
    client.xgroup_create("sagactor:events:pay_remote", "inventory", id="0", mkstream=True)
    with Runtime(broker=redis_url, publish=redis_url) as runtime:
        runtime.run(_flow(), {"amount": 1}, "told", timeout=20)

        def read() -> list:
            return client.xrange("sagactor:events:pay_remote")

        entries = eventually(lambda: len(read()) >= 6 and read(), 10)
    bodies = [json.loads(fields[b"body"]) for _, fields in entries]
    assert [b["seq"] for b in bodies] == list(range(1, len(bodies) + 1))
    assert bodies[-1]["type"] == "saga.completed" and bodies[-1]["saga_id"] == "told"
    assert entries[0][1][b"topic"].decode() == "pay_remote.saga.started"
    got = client.xreadgroup("inventory", "c1", {"sagactor:events:pay_remote": ">"}, count=100)
    assert len(got[0][1]) == len(entries)  # a consumer group reads them like any stream


def test_the_orchestrator_trims_the_replies_it_acknowledged(redis_server, redis_url, workers,  # noqa: F811
                                                            monkeypatch):
    from sagas.remote import outbound

    monkeypatch.setattr(outbound, "TRIM_EVERY", 0.1)
    _worker(redis_url, workers)
    client = redis_server.client(decode_responses=True)
    with Runtime(broker=redis_url) as runtime:
        assert runtime.run(_flow(), {"amount": 3}, "trimmed", timeout=20).status == "completed"

        def left() -> int:
            return sum(client.xlen(s) for s in client.scan_iter("sagactor:replies:*"))

        eventually(lambda: left() == 0, 10, what=lambda: f"{left()} replies left in the streams")
