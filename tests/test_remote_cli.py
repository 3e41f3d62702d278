"""`saga run --broker URL --remote all` against `saga worker` processes on a real redis-server
(issue 17's acceptance): the handlers run in the workers, a refused step is compensated there,
and a batch finishes although a worker is killed with ``kill -9`` in the middle of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import SAGA_CODE, eventually, saga_cli

pytestmark = pytest.mark.slow  # a redis-server and several saga processes

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "flows" / "order_inventory.yaml")
INPUT = json.dumps({"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25})


@pytest.fixture
def workers(redis_url: str) -> Iterator[list[subprocess.Popen[str]]]:  # noqa: F811
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _worker(url: str, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "worker", FLOW, "--broker", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    started.append(proc)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("worker "), line
    return proc


def test_a_saga_runs_its_handlers_in_two_workers(redis_url, workers,  # noqa: F811
                                                  tmp_path):
    pids = {_worker(redis_url, workers).pid for _ in range(2)}
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    done = saga_cli("run", FLOW, "--input", INPUT, "--store", store, "--broker", redis_url,
                    "--remote", "all", "--json")
    assert done.returncode == 0, done.stderr
    saga = json.loads(done.stdout)
    sent_by = next(e["data"]["output"]["sent_by"] for e in saga["history"]
                   if e["type"] == "step.succeeded" and e["step"] == "notify_customer")
    assert int(sent_by.rsplit(":", 1)[1]) in pids  # a worker sent it, not saga run
    refused = saga_cli("run", FLOW, "--input", INPUT, "--store", store, "--broker", redis_url,
                       "--remote", "all", "--fail", "create_shipment", "--json")
    assert refused.returncode == 1, refused.stderr
    types = [e["type"] for e in json.loads(refused.stdout)["history"]]
    assert types.count("compensation.succeeded") == 2 and types[-1] == "saga.compensated"


def test_remote_without_a_broker_is_a_usage_error_and_an_unreachable_broker_exits_6(tmp_path):
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    no_broker = saga_cli("run", FLOW, "--input", INPUT, "--store", store, "--remote", "all")
    assert no_broker.returncode == 2
    assert "--remote needs the broker" in no_broker.stderr
    gone = saga_cli("run", FLOW, "--input", INPUT, "--store", store, "--broker",
                    "redis://:secret@127.0.0.1:1/0", "--remote", "all")
    assert gone.returncode == 6, gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1 and "secret" not in gone.stderr


def test_a_batch_finishes_when_a_worker_is_killed_in_the_middle(redis_server, redis_url,  # noqa: F811
                                                               workers, tmp_path):
    victim = _worker(redis_url, workers)
    _worker(redis_url, workers)
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    batch = subprocess.Popen(
        [sys.executable, "-c", SAGA_CODE, "run", FLOW, "--input", INPUT, "--store", store,
         "--broker", redis_url, "--remote", "all", "--count", "2000", "--concurrency", "200",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    client = redis_server.client(decode_responses=True)
    try:
        def victim_holds() -> bool:  # commands read by the victim, not yet answered
            for service in ("inventory", "payment", "shipping", "notifications"):
                stream = f"sagactor:commands:{service}"
                try:
                    for consumer in client.xinfo_consumers(stream, "sagactor:workers"):
                        if consumer["name"].endswith(f":{victim.pid}") and consumer["pending"]:
                            return True
                except Exception:  # the group does not exist yet
                    continue
            return False

        eventually(victim_holds, 60, interval=0.005, what="the worker to hold commands")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        out, err = batch.communicate(timeout=300)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["count"] == summary["completed"] == 2000, summary
    audit = saga_cli("audit", "--store", store)
    assert audit.returncode == 0, audit.stdout[-3000:]


def test_saga_serve_publishes_saga_events_to_the_broker(redis_server, redis_url,  # noqa: F811
                                                        tmp_path):
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    serve = subprocess.Popen(
        [sys.executable, "-c", SAGA_CODE, "serve", FLOW, "--store", store, "--publish",
         redis_url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    client = redis_server.client(decode_responses=True)
    try:
        assert serve.stderr is not None and "serving order_inventory" in serve.stderr.readline()
        data = json.dumps({"order_id": "o-9", "sku": "widget", "qty": 1, "amount": 5})
        sent = saga_cli("send", "OrderPlaced", "--key", "o-9", "--data", data, "--store", store)
        assert sent.returncode == 0, sent.stderr

        def published() -> list:
            entries = client.xrange("sagactor:events:order_inventory")
            return entries if entries and entries[-1][1]["topic"].endswith("saga.completed") \
                else []

        entries = eventually(published, 30, what="the saga's events on the broker")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    bodies = [json.loads(fields["body"]) for _, fields in entries]
    assert {b["saga_id"] for b in bodies} == {"order_inventory.o-9"}
    assert [b["seq"] for b in bodies] == list(range(1, len(bodies) + 1))
    assert serve.returncode == 0


def test_one_trace_spans_the_orchestrator_and_the_worker(redis_url, tmp_path):  # noqa: F811
    """The trace of a remote saga: one root, a span per step attempt under it, and the worker
    process's handler span under its attempt's span (the command's traceparent)."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install "
                                                    "'sagactor[otel]'")
    from sagas.observe.tracing import read_spans
    from sagas.remote.protocol import saga_trace_id

    env = {**os.environ, "SAGA_TRACES_FILE": str(tmp_path / "worker.jsonl")}
    worker = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "worker", FLOW, "--broker",
                               redis_url], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True, cwd=ROOT, env=env)
    try:
        assert worker.stderr is not None and worker.stderr.readline().startswith("worker ")
        done = saga_cli("run", FLOW, "--input", INPUT, "--id", "traced", "--store",
                        f"sqlite:///{tmp_path / 'sagas.db'}", "--broker", redis_url,
                        "--remote", "all",
                        env={**os.environ, "SAGA_TRACES_FILE": str(tmp_path / "run.jsonl")})
        assert done.returncode == 0, done.stderr
        handled = eventually(lambda: len(read_spans(tmp_path / "worker.jsonl")) >= 4 and
                             read_spans(tmp_path / "worker.jsonl"), 10)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
    spans = read_spans(tmp_path / "run.jsonl")
    trace = saga_trace_id("traced")
    assert {s["trace_id"] for s in spans + handled} == {trace}
    roots = [s for s in spans if not s.get("parent_span_id")]
    assert len(roots) == 1
    steps = {s["span_id"]: s for s in spans if s.get("parent_span_id") == roots[0]["span_id"]}
    assert sorted(s["name"] for s in steps.values()) == [
        "step charge_payment", "step create_shipment", "step notify_customer",
        "step reserve_inventory"]
    assert len(handled) == 4 and all(h["parent_span_id"] in steps for h in handled)
