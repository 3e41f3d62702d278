"""Prometheus metrics (``sagas.observe.metrics``): a runtime's listener counts a batch of sagas
of the shop's order flow, the endpoint is scraped over HTTP and parsed with the client's own
parser; ``/healthz``; the broker's backlog on a real redis-server; the address and bind
errors."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from actors import Faults
from sagas import Runtime
from sagas.events import Event
from sagas.stores import MemoryStore
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
ORDER_FLOW = str(ROOT / "flows" / "order_inventory.yaml")
WAIT = 30.0

try:
    import prometheus_client  # noqa: F401
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - installed by .ci/run
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("prometheus-client is not installed: pip install 'sagactor[metrics]'",
                allow_module_level=True)

from sagas.observe.metrics import (  # noqa: E402 - after the check above
    Backlog,
    BadAddress,
    MetricsServerError,
    SagaMetrics,
    broker_backlog,
    broker_dead_letters,
    broker_health,
    parse_address,
    runtime_health,
    serve_metrics,
)


def scrape(url: str) -> dict[str, Any]:
    """``/metrics`` over HTTP, parsed: family name -> family."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], family: str, sample: str | None = None
            ) -> list[tuple[dict[str, str], float]]:
    found = families.get(family)
    if found is None:
        return []
    name = sample or family
    return [(s.labels, s.value) for s in found.samples if s.name == name]


def by_labels(found: list[tuple[dict[str, str], float]]) -> dict[tuple[Any, ...], float]:
    return {tuple(sorted(labels.items())): v for labels, v in found}


def value(families: dict[str, Any], family: str, sample: str | None = None,
          **labels: str) -> float:
    return sum(v for found, v in samples(families, family, sample)
               if all(found.get(k) == want for k, want in labels.items()))


def order(saga: str, qty: int = 1) -> dict[str, Any]:
    return {"order_id": saga, "sku": "widget", "qty": qty, "amount": 500}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- a batch through a runtime, scraped over HTTP ---------------------------------------------
def test_a_scrape_during_and_after_a_batch_counts_it_exactly():
    """60 sagas: every one's charge fails once (a retry), every 5th is refused at the pivot
    (compensated), every 7th asks for more stock than there is (compensated at once)."""
    faults = Faults().add("charge_payment", kind="error", attempts=[1])
    ids = [f"order-{n:03d}" for n in range(60)]
    refused = [s for n, s in enumerate(ids) if n % 5 == 0 and n % 7 != 0]
    for saga_id in refused:
        faults.add("create_shipment", kind="reject", saga_id=saga_id)
    too_many = {s for n, s in enumerate(ids) if n % 7 == 0}
    metrics = SagaMetrics()
    with Runtime(faults=faults, listeners=[metrics.listener]) as runtime:
        metrics.attach(runtime)
        with serve_metrics(metrics, "127.0.0.1:0", health=runtime_health(runtime)) as server:
            ends: list[tuple[str, str]] = []
            done = threading.Event()

            def ended(saga_id: str, status: str, reason: str | None) -> None:
                ends.append((saga_id, status))
                if len(ends) == len(ids):
                    done.set()

            pending = [runtime.submit(ORDER_FLOW, order(s, 10**9 if s in too_many else 1), s,
                                      on_end=ended) for s in ids]
            during = scrape(server.url)  # the batch is still running (or just ended)
            started = value(during, "saga_sagas_started", "saga_sagas_started_total")
            ended_now = value(during, "saga_sagas_ended", "saga_sagas_ended_total")
            assert 0 <= ended_now <= started <= len(ids)
            assert all(p.result(WAIT) for p in pending)
            assert done.wait(WAIT)
            assert runtime.wait_idle(WAIT)
            after = scrape(server.url)
    statuses = Counter(status for _, status in ends)
    assert statuses == {"completed": len(ids) - len(refused) - len(too_many),
                        "compensated": len(refused) + len(too_many)}
    flow = "order_inventory"
    assert samples(after, "saga_sagas_started", "saga_sagas_started_total") == \
        [({"flow": flow}, float(len(ids)))]
    assert by_labels(samples(after, "saga_sagas_ended", "saga_sagas_ended_total")) == {
        (("flow", flow), ("status", status)): float(n) for status, n in statuses.items()}
    assert samples(after, "saga_sagas_in_flight") == [({"flow": flow}, 0.0)]
    assert samples(after, "saga_sagas_parked", "saga_sagas_parked_total") == []

    def steps(step: str, phase: str = "action", outcome: str | None = None) -> float:
        wanted = {"flow": flow, "step": step, "phase": phase}
        if outcome is not None:
            wanted["outcome"] = outcome
        return value(after, "saga_step_duration_seconds", "saga_step_duration_seconds_count",
                     **wanted)

    reached_charge = len(ids) - len(too_many)
    assert steps("reserve_inventory", outcome="succeeded") == reached_charge
    assert steps("reserve_inventory", outcome="rejected") == len(too_many)
    assert steps("charge_payment", outcome="error") == reached_charge  # the first attempts
    assert steps("charge_payment", outcome="succeeded") == reached_charge
    assert steps("create_shipment", outcome="rejected") == len(refused)
    assert steps("create_shipment", outcome="succeeded") == statuses["completed"]
    assert steps("notify_customer") == statuses["completed"]
    assert steps("charge_payment", "compensation", "succeeded") == len(refused)
    assert steps("reserve_inventory", "compensation", "succeeded") == len(refused)
    assert value(after, "saga_step_retries", "saga_step_retries_total", flow=flow,
                 step="charge_payment", phase="action") == reached_charge
    # histograms: the buckets are cumulative and end in +Inf == count, the sums are durations
    family = "saga_step_duration_seconds"
    for labels, count in samples(after, family, family + "_count"):
        buckets = [(float(b["le"]), v) for b, v in samples(after, family, family + "_bucket")
                   if {k: b[k] for k in labels} == labels]
        assert [v for _, v in sorted(buckets)] == sorted(v for _, v in buckets)
        assert max(buckets)[1] == count and max(buckets)[0] == float("inf")
    assert all(v >= 0 for _, v in samples(after, family, family + "_sum"))
    assert value(after, "saga_sagas_duration_seconds", "saga_sagas_duration_seconds_count") \
        == len(ids)
    assert value(after, "saga_store_commit_duration_seconds",
                 "saga_store_commit_duration_seconds_count") > 0
    # no label anywhere holds a saga id (nor any part of one)
    for family_ in after.values():
        for sample in family_.samples:
            for key, label in sample.labels.items():
                assert key == "le" or not any(saga_id in label or label in saga_id
                                              for saga_id in ids), (sample.name, label)
    labels_seen = {key for f in after.values() for s in f.samples for key in s.labels}
    assert labels_seen <= {"flow", "status", "step", "phase", "outcome", "le", "reason"}


def test_a_parked_saga_is_counted_by_its_reason():
    faults = Faults().add("create_shipment", kind="reject").add(
        "charge_payment", kind="error", phase="compensation")
    metrics = SagaMetrics()
    with Runtime(faults=faults, listeners=[metrics.listener]) as runtime:
        metrics.attach(runtime)
        result = runtime.run(ORDER_FLOW, order("p-1"), "p-1")
        families = {f.name: f for f in text_string_to_metric_families(
            metrics.render().decode())}
    assert (result.status, result.reason) == ("failed", "compensation_failed")
    assert samples(families, "saga_sagas_parked", "saga_sagas_parked_total") == \
        [({"flow": "order_inventory", "reason": "compensation_failed"}, 1.0)]
    assert value(families, "saga_step_retries", "saga_step_retries_total",
                 step="charge_payment", phase="compensation") == 2  # 3 attempts
    assert value(families, "saga_step_duration_seconds", "saga_step_duration_seconds_count",
                 step="charge_payment", phase="compensation", outcome="error") == 3


def test_events_before_attach_are_counted_once_attached():
    metrics = SagaMetrics()
    with Runtime(listeners=[metrics.listener]) as runtime:
        runtime.run(ORDER_FLOW, order("early"), "early")
        assert value(_parse(metrics), "saga_sagas_started", "saga_sagas_started_total") == 0
        metrics.attach(runtime)
        runtime.run(ORDER_FLOW, order("late"), "late")
        families = _parse(metrics)
    assert samples(families, "saga_sagas_ended", "saga_sagas_ended_total") == \
        [({"flow": "order_inventory", "status": "completed"}, 2.0)]


def test_a_flow_given_by_the_engine_needs_no_store():
    metrics = SagaMetrics(flow_of=lambda saga_id: pytest.fail("no store read"))
    events = [Event(1, "saga.started", None, None, 100.0, "s/1", None, {}),
              Event(2, "step.started", "a", 1, 100.0, "s/2", "s/1", {}),
              Event(3, "step.timed_out", "a", 1, 101.5, "s/3", "s/2", {"reason": "cancelled"})]
    metrics.on_saga_events("s", "f", events)
    families = _parse(metrics)
    assert samples(families, "saga_sagas_in_flight") == [({"flow": "f"}, 1.0)]
    metrics.on_saga_events("s", "f", [Event(4, "saga.compensated", None, None, 102.0, "s/4",
                                            "s/3", {})])
    families = _parse(metrics)
    assert samples(families, "saga_sagas_in_flight") == [({"flow": "f"}, 0.0)]
    assert value(families, "saga_step_duration_seconds", "saga_step_duration_seconds_sum",
                 outcome="cancelled") == 1.5
    assert value(families, "saga_sagas_duration_seconds", "saga_sagas_duration_seconds_sum",
                 status="compensated") == 2.0


def test_a_member_reports_its_partitions_and_the_members_alive():
    store = MemoryStore()
    metrics = SagaMetrics()
    with Runtime(store, member=True, listeners=[metrics.listener]) as runtime:
        metrics.attach(runtime)
        runtime.run(ORDER_FLOW, order("m-1"), "m-1")
        families = _parse(metrics)
        assert samples(families, "saga_partitions_owned") == [({}, float(store.partitions()))]
        assert samples(families, "saga_members_alive") == [({}, 1.0)]
    assert value(families, "saga_sagas_ended", "saga_sagas_ended_total") == 1


class _Membership:
    """What attach reads of a member's membership: the partitions held, of 4."""

    ttl = 10.0

    def __init__(self) -> None:
        self.holding = [0, 1, 2, 3]

    def held(self) -> list[int]:
        return list(self.holding)

    @staticmethod
    def partition_of(saga_id: str) -> int:
        return int(saga_id[-1]) % 4


class _Member:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.membership = _Membership()
        self.broker = None
        self.dead_letters = None


def test_the_sagas_of_partitions_given_up_are_no_longer_in_flight_here():
    member = _Member()
    metrics = SagaMetrics(flow_of=lambda saga_id: "f")
    metrics.attach(member, time_commits=False)  # type: ignore[arg-type]
    for n in range(8):
        metrics.on_events(f"s{n}", [Event(1, "saga.started", None, None, 1.0, f"s{n}/1", None,
                                          {})])
    assert samples(_parse(metrics), "saga_sagas_in_flight") == [({"flow": "f"}, 8.0)]
    assert samples(_parse(metrics), "saga_partitions_owned") == [({}, 4.0)]
    member.membership.holding = [0, 1]  # 2 and 3 taken over by another member
    assert samples(_parse(metrics), "saga_sagas_in_flight") == [({"flow": "f"}, 4.0)]
    assert samples(_parse(metrics), "saga_partitions_owned") == [({}, 2.0)]
    assert value(_parse(metrics), "saga_sagas_started", "saga_sagas_started_total") == 8


def test_commit_timing_wraps_the_store_and_is_undone():
    store = MemoryStore()
    metrics = SagaMetrics()
    undo = metrics.time_commits(store)
    assert metrics.time_commits(store)() is None  # already timed: nothing more
    with Runtime(store) as runtime:
        runtime.run(ORDER_FLOW, order("c-1"), "c-1")
    counted = value(_parse(metrics), "saga_store_commit_duration_seconds",
                    "saga_store_commit_duration_seconds_count")
    assert counted >= 2
    undo()
    assert "write" not in vars(store)


def test_a_gauge_that_cannot_be_read_is_left_out_of_the_scrape(caplog):
    metrics = SagaMetrics()
    metrics.watch_members(lambda: 1 / 0)
    metrics.watch_dead_letters(lambda: {"inventory": 2})
    metrics.watch_broker(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    families = _parse(metrics)
    assert "saga_members_alive" not in families
    assert samples(families, "saga_dead_letters") == [({"service": "inventory"}, 2.0)]
    assert samples(families, "saga_broker_up") == [({}, 0.0)]
    assert "saga_broker_commands_waiting" not in families
    assert "could not be read" in caplog.text


def _parse(metrics: SagaMetrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


# -- /healthz and the endpoint ----------------------------------------------------------------
def test_healthz_answers_as_health_says():
    why: list[Any] = [None]

    def health() -> str | None:
        if isinstance(why[0], Exception):
            raise why[0]
        return why[0]

    with serve_metrics(SagaMetrics(), "127.0.0.1:0", health=health) as server:
        assert get(server.url + "/healthz") == (200, "ready\n")
        why[0] = "the store does not answer"
        assert get(server.url + "/healthz") == (503, "not ready: the store does not answer\n")
        why[0] = RuntimeError("boom")
        assert get(server.url + "/healthz") == (503, "not ready: health check failed: boom\n")
        why[0] = None
        assert get(server.url + "/healthz")[0] == 200
        assert get(server.url + "/nothing")[0] == 404
        assert get(server.url + "/")[0] == 200
        request = urllib.request.Request(server.url + "/metrics", data=b"x", method="POST")
        assert get(request)[0] == 405  # type: ignore[arg-type]
    with pytest.raises(OSError):  # closed: the port is free again
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_runtime_health_is_not_ready_once_the_runtime_is_closed():
    runtime = Runtime()
    health = runtime_health(runtime)
    assert health() is None
    runtime.close()
    assert health() == "the runtime is stopped"


def test_a_taken_port_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError) as caught:
            serve_metrics(SagaMetrics(), f"127.0.0.1:{port}")
    message = str(caught.value)
    assert message == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    with pytest.raises(MetricsServerError, match=r"^cannot serve metrics on 192\.0\.2\.1:9464: "
                                                 r"Cannot assign requested address$"):
        serve_metrics(SagaMetrics(), "192.0.2.1:9464")  # TEST-NET-1: no interface has it


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("localhost:0", ("localhost", 0)),
    ("[::1]:9464", ("::1", 9464)), (" 0.0.0.0:80 ", ("0.0.0.0", 80)),
])
def test_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("9464", "has no port"), (":9464", "has no host"), ("", "is not an address"),
    ("host:http", "is not a number"), ("host:65536", "above 65535"),
    ("::1:9464", "IPv6 address goes in brackets"), ("[::1]9464", r"use \[IPv6\]:PORT"),
    ("host:-1", "is not a number"), ("host:٩٤", "is not a number"),
])
def test_bad_addresses_are_one_line(text, message):
    with pytest.raises(BadAddress, match=message) as caught:
        parse_address(text)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_the_ipv6_loopback_is_served_when_there_is_one():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with serve_metrics(SagaMetrics(), "[::1]:0") as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/healthz") == (200, "ready\n")


# -- the broker -------------------------------------------------------------------------------
def test_the_broker_backlog_and_dead_letters_by_service(redis_url):  # noqa: F811
    from sagas.remote.broker import connect
    from sagas.remote.protocol import command_stream, dead_stream, workers_group

    client = connect(redis_url)
    stream = command_stream("inventory")
    for n in range(5):
        client.xadd(stream, {"body": f"{n}"})
    client.xgroup_create(stream, workers_group(), id="0")
    client.xreadgroup(workers_group(), "w1", {stream: ">"}, count=2)  # 2 pending, 3 waiting
    client.xadd(command_stream("payment"), {"body": "x"})  # no group yet: waiting
    client.xadd(dead_stream("payment"), {"body": "dead"})
    backlog = broker_backlog(client, ["inventory", "payment", "shipping"])
    assert {s: (b.waiting, b.pending) for s, b in backlog.items()} == \
        {"inventory": (3, 2), "payment": (1, 0), "shipping": (0, 0)}
    assert backlog["shipping"] == Backlog(0, 0, None)
    assert 0 <= backlog["inventory"].oldest_age < 60  # type: ignore[operator]
    assert broker_dead_letters(client, ["inventory", "payment"]) == {"inventory": 0,
                                                                     "payment": 1}
    metrics = SagaMetrics()
    metrics.watch_redis(client, lambda: ["inventory", "payment"])
    families = _parse(metrics)
    assert samples(families, "saga_broker_up") == [({}, 1.0)]
    assert by_labels(samples(families, "saga_broker_commands_waiting")) == \
        {(("service", "inventory"),): 3.0, (("service", "payment"),): 1.0}
    assert value(families, "saga_broker_commands_pending", service="inventory") == 2
    assert value(families, "saga_dead_letters", service="payment") == 1
    metrics.observe_queue_time("inventory", 0.02)
    assert value(_parse(metrics), "saga_broker_command_queue_seconds",
                 "saga_broker_command_queue_seconds_count", service="inventory") == 1
    # a saga worker's: the services it hosts, and its health is the broker's
    worker = SimpleNamespace(services=("inventory",), prefix="sagactor")
    families = _parse(SagaMetrics().attach_worker(worker, client))
    assert samples(families, "saga_broker_commands_waiting") == [({"service": "inventory"},
                                                                  3.0)]
    assert broker_health(client)() is None
    client.close()
    dead = connect(redis_url, check=False)
    dead.connection_pool.connection_kwargs["port"] = 1  # nothing listens there
    assert broker_health(dead)().startswith("the broker does not answer: ")


def test_a_worker_reports_how_long_each_command_waited_in_the_broker(redis_url,  # noqa: F811
                                                                     tmp_path):
    """saga worker --metrics: saga_broker_command_queue_seconds{service} from each command's
    entry id (its time in the stream) to the worker reading it."""
    import time

    from sagas.language.loader import parse_flow
    from sagas.remote.broker import connect
    from sagas.remote.worker import Worker
    from tests.support import eventually
    from tests.worker_services import PROBE_FLOW, command, replies

    client = connect(redis_url)
    added = int(time.time() * 1000) - 5_000  # an entry added 5 s ago, as its id says
    client.xadd("sagactor:commands:probe", {"body": json.dumps(command("q1:first", tmp_path
                                                                          / "log"))},
                id=f"{added}-0")
    metrics = SagaMetrics()
    worker = Worker(redis_url, [parse_flow(PROBE_FLOW, source="<probe>")])
    metrics.attach_worker(worker, client)  # before it reads: its first commands count too
    with worker.start():
        eventually(lambda: replies(client) or None, what="the command answered")
    families = _parse(metrics)
    name = "saga_broker_command_queue_seconds"
    assert value(families, name, f"{name}_count", service="probe") == 1
    assert 5.0 <= value(families, name, f"{name}_sum", service="probe") < 60
    client.close()
