"""OpenTelemetry traces of sagas (sagas.observe.tracing): spans from the log, with ids derived
from the saga (the wire protocol's), one trace per saga across processes, the worker's handler
span under its attempt's.

The extra ``sagactor[otel]`` must be installed: these tests skip without it, except under CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from actors import Command, Faults
from sagas import Runtime
from sagas.events import Event
from sagas.observe import tracing
from sagas.observe.tracing import (
    SagaTracer,
    current_traceparent,
    export_to_file,
    handler_span,
    parse_traceparent,
    read_spans,
    retry_span_id,
    tracing_enabled,
)
from sagas.remote.protocol import (
    saga_span_id,
    saga_trace_id,
    step_span_id,
    traceparent,
)
from sagas.stores import MemoryStore, open_store

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "flows" / "order_inventory.yaml")
ORDER = {"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25}
STEPS = ["reserve_inventory", "charge_payment", "create_shipment", "notify_customer"]
WAIT = 20.0


def ns(at: float) -> int:
    return round(at * 1_000_000_000)


def hex16(value: int) -> str:
    return f"{value:016x}"


def hex32(value: int) -> str:
    return f"{value:032x}"


class Collector:
    """A tracer provider of its own (never the global one) with an in-memory exporter."""

    def __init__(self, **provider_args):
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(**provider_args)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def tracer(self, store=None) -> SagaTracer:
        tracer = SagaTracer(self.provider)
        return tracer.bind(store) if store is not None else tracer

    def spans(self, saga_id=None):
        spans = list(self.exporter.get_finished_spans())
        if saga_id is not None:
            spans = [s for s in spans if hex32(s.context.trace_id) == saga_trace_id(saga_id)]
        return spans


def run(collector: Collector, saga_id: str, *, faults=None, data=ORDER, store=None):
    """Run one saga to its end with a tracer listening; its status and log."""
    store = store if store is not None else MemoryStore()
    tracer = collector.tracer(store)
    with Runtime(store, faults=faults, listeners=[tracer.listener]) as runtime:
        runtime.start(FLOW, data, saga_id)
        status = runtime.wait(saga_id, timeout=WAIT).status
    return status, list(store.load(saga_id).events)


def by_id(spans):
    return {hex16(s.context.span_id): s for s in spans}


def the_started(events, kind, step, attempt):
    return next(e for e in events if e.type == kind and e.step == step and e.attempt == attempt)


# -- spans of one process ------------------------------------------------------------------------
def test_a_completed_saga_is_one_root_and_a_span_per_attempt_with_the_derived_ids_and_times():
    collector = Collector()
    status, log = run(collector, "trace-ok")
    assert status == "completed"
    spans = collector.spans("trace-ok")
    assert len(spans) == 5
    assert {hex32(s.context.trace_id) for s in spans} == {saga_trace_id("trace-ok")}
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1
    root = roots[0]
    assert hex16(root.context.span_id) == saga_span_id("trace-ok")
    assert root.name == "saga order_inventory"
    assert root.start_time == ns(log[0].at) and log[0].type == "saga.started"
    assert root.end_time == ns(log[-1].at) and log[-1].type == "saga.completed"
    assert root.status.status_code is StatusCode.OK
    assert root.attributes["saga.status"] == "completed"
    assert root.attributes["saga.flow"] == "order_inventory"
    assert [e.name for e in root.events] == [e.type for e in log]
    assert [e.timestamp for e in root.events] == [ns(e.at) for e in log]
    assert not root.links  # started with no caller span
    steps = by_id(s for s in spans if s.parent is not None)
    for step in STEPS:
        span = steps[step_span_id("trace-ok", step, "action", 1)]
        assert span.name == f"step {step}"
        assert hex16(span.parent.span_id) == saga_span_id("trace-ok")
        assert span.parent.trace_id == root.context.trace_id
        started = the_started(log, "step.started", step, 1)
        ended = the_started(log, "step.succeeded", step, 1)
        assert (span.start_time, span.end_time) == (ns(started.at), ns(ended.at))
        assert span.status.status_code is StatusCode.OK
        assert span.kind is SpanKind.CLIENT
        assert dict(span.attributes) == {
            "saga.id": "trace-ok", "saga.step": step, "saga.phase": "action",
            "saga.attempt": 1, "saga.step.kind": "call", "saga.outcome": "succeeded"}
    # the span a command's traceparent names is the attempt's span
    tp = parse_traceparent(traceparent("trace-ok", "charge_payment", "action", 1))
    assert tp is not None
    assert (tp[0], tp[1]) == (root.context.trace_id,
                              int(step_span_id("trace-ok", "charge_payment", "action", 1), 16))
    # each emitted as its outcome was committed: the attempts in order, the root at the end
    assert [s.name for s in spans] == [f"step {step}" for step in STEPS] + [root.name]


def test_a_compensated_saga_is_ok_with_its_status_and_the_rejection_in_error():
    collector = Collector()
    status, log = run(collector, "trace-comp",
                      faults=Faults().add(step="charge_payment", kind="reject",
                                          message="card declined"))
    assert status == "compensated"
    spans = by_id(collector.spans("trace-comp"))
    root = spans[saga_span_id("trace-comp")]
    assert root.status.status_code is StatusCode.OK
    assert root.attributes["saga.status"] == "compensated"
    assert root.end_time == ns(log[-1].at) and log[-1].type == "saga.compensated"
    charge = spans[step_span_id("trace-comp", "charge_payment", "action", 1)]
    assert charge.status.status_code is StatusCode.ERROR
    assert charge.status.description == "rejected: card declined"
    assert charge.attributes["saga.outcome"] == "rejected"
    undo = spans[step_span_id("trace-comp", "reserve_inventory", "compensation", 1)]
    assert undo.name == "compensation reserve_inventory"
    assert hex16(undo.parent.span_id) == saga_span_id("trace-comp")
    started = the_started(log, "compensation.started", "reserve_inventory", 1)
    ended = the_started(log, "compensation.succeeded", "reserve_inventory", 1)
    assert (undo.start_time, undo.end_time) == (ns(started.at), ns(ended.at))
    assert undo.status.status_code is StatusCode.OK
    assert len(spans) == 4  # reserve, charge, its compensation, the root


def test_each_attempt_is_a_span_and_a_failed_saga_is_an_error_with_its_reason():
    faults = (Faults().add(step="reserve_inventory", kind="error", attempts=[1], message="flaky")
              .add(step="charge_payment", kind="reject")
              .add(step="reserve_inventory", phase="compensation", kind="error"))
    collector = Collector()
    status, _ = run(collector, "trace-fail", faults=faults)
    assert status == "failed"
    spans = by_id(collector.spans("trace-fail"))
    first = spans[step_span_id("trace-fail", "reserve_inventory", "action", 1)]
    second = spans[step_span_id("trace-fail", "reserve_inventory", "action", 2)]
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "error: InjectedFault: flaky"
    assert first.attributes["saga.outcome"] == "error"
    assert second.status.status_code is StatusCode.OK
    assert first.end_time <= second.start_time
    undos = [s for s in spans.values() if s.name == "compensation reserve_inventory"]
    assert len(undos) == 3  # the flow's three attempts, each in error
    assert all(s.status.status_code is StatusCode.ERROR for s in undos)
    root = spans[saga_span_id("trace-fail")]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "failed: compensation_failed"
    assert root.attributes["saga.reason"] == "compensation_failed"
    assert [e.name for e in root.events].count("compensation.retrying") == 2


def test_a_retried_saga_adds_a_retry_span_under_its_root():
    faults = (Faults().add(step="charge_payment", kind="reject")
              .add(step="reserve_inventory", phase="compensation", kind="error",
                   attempts=[1, 2, 3]))
    collector = Collector()
    store = MemoryStore()
    tracer = collector.tracer(store)
    with Runtime(store, faults=faults, listeners=[tracer.listener]) as runtime:
        runtime.start(FLOW, ORDER, "trace-retry")
        assert runtime.wait("trace-retry", timeout=WAIT).status == "failed"
        assert runtime.retry("trace-retry", timeout=WAIT) is not None
        assert runtime.wait("trace-retry", timeout=WAIT).status == "compensated"
    log = list(store.load("trace-retry").events)
    spans = by_id(collector.spans("trace-retry"))
    assert [s for s in spans.values() if s.parent is None] == [spans[saga_span_id("trace-retry")]]
    retried = next(e for e in log if e.type == "saga.retried")
    again = spans[retry_span_id("trace-retry", retried.seq)]
    assert again.name == "saga.retry"
    assert hex16(again.parent.span_id) == saga_span_id("trace-retry")
    assert (again.start_time, again.end_time) == (ns(retried.at), ns(log[-1].at))
    assert again.status.status_code is StatusCode.OK
    assert again.attributes["saga.status"] == "compensated"
    assert [e.name for e in again.events] == [e.type for e in log if e.seq >= retried.seq]
    fourth = spans[step_span_id("trace-retry", "reserve_inventory", "compensation", 4)]
    assert fourth.status.status_code is StatusCode.OK
    assert hex16(fourth.parent.span_id) == saga_span_id("trace-retry")


def test_the_ids_are_the_same_in_every_run_of_a_saga_id():
    one, two = Collector(), Collector()
    run(one, "trace-same")
    run(two, "trace-same")
    ids = [sorted((s.name, s.context.trace_id, s.context.span_id,
                   s.parent.span_id if s.parent else None) for s in c.spans()) for c in (one, two)]
    assert ids[0] == ids[1]


def test_a_seeded_sagas_testing_run_gives_the_same_spans_every_time():
    """sagas.testing's SagaTestEnvironment with a tracer: ids from the seeded saga ids, times
    from the virtual clock, so two runs of one seed export the same spans (retries, backoff
    and a compensation included)."""
    from sagas.testing import SagaTestEnvironment

    def spans_of_a_run() -> list[tuple]:
        collector = Collector()
        faults = (Faults().add(step="reserve_inventory", kind="error", attempts=[1])
                  .add(step="create_shipment", kind="reject"))
        with SagaTestEnvironment(seed=7, faults=faults, tracing=collector.tracer()) as env:
            statuses = [env.run(FLOW, {**ORDER, "order_id": f"o-{n}"}).status for n in range(3)]
        assert statuses == ["compensated"] * 3
        return sorted((s.name, s.context.trace_id, s.context.span_id,
                       s.parent.span_id if s.parent else None, s.start_time, s.end_time,
                       s.status.status_code.name, [e.name for e in s.events])
                      for s in collector.spans())

    first, second = spans_of_a_run(), spans_of_a_run()
    assert len(first) == 3 * 7  # per saga: root, 2 reserve attempts, charge, ship, 2 undone
    assert first == second


def test_a_ratio_sampler_keeps_or_drops_each_saga_whole():
    collector = Collector(sampler=TraceIdRatioBased(0.5))
    for n in range(12):
        run(collector, f"trace-sampled-{n}")
    kept = {hex32(s.context.trace_id) for s in collector.spans()}
    assert 0 < len(kept) < 12
    for trace_id in kept:
        spans = [s for s in collector.spans() if hex32(s.context.trace_id) == trace_id]
        assert len(spans) == 5


# -- across processes: a saga taken over completes the same trace --------------------------------
def test_a_taken_over_saga_completes_the_same_trace():
    store = MemoryStore()
    first, second = Collector(), Collector()
    dropped = Faults().add(step="charge_payment", kind="drop")  # in flight at charge_payment
    one = Runtime(store, faults=dropped, listeners=[first.tracer(store).listener])
    try:
        one.start(FLOW, ORDER, "trace-over")
        assert one.wait_idle(WAIT)
    finally:
        one.close()
    store._owners.discard(one.owner)  # as if its process had died (test_recovery does so too)
    assert store.header("trace-over").status == "running"
    with Runtime(store, recover=True, listeners=[second.tracer(store).listener]) as two:
        assert two.wait("trace-over", timeout=WAIT).status == "completed"
    log = list(store.load("trace-over").events)
    before, after = first.spans(), second.spans()
    assert [s.name for s in before] == ["step reserve_inventory"]
    assert sorted(s.name for s in after) == sorted(
        ["step charge_payment", "step create_shipment", "step notify_customer",
         "saga order_inventory"])
    trace_id = int(saga_trace_id("trace-over"), 16)
    assert {s.context.trace_id for s in before + after} == {trace_id}
    root = next(s for s in after if s.parent is None)
    assert hex16(root.context.span_id) == saga_span_id("trace-over")
    assert all(s.parent.span_id == root.context.span_id for s in before + after
               if s is not root)
    # the start this process never saw comes from the stored log
    assert root.start_time == ns(log[0].at)
    assert "saga.partial" not in root.attributes
    assert [e.name for e in root.events] == [e.type for e in log]
    charge = by_id(after)[step_span_id("trace-over", "charge_payment", "action", 1)]
    assert charge.start_time == ns(the_started(log, "step.started", "charge_payment", 1).at)
    assert charge.status.status_code is StatusCode.OK


KILLED_CHILD = """
import sys, threading
from opentelemetry.sdk.trace import TracerProvider
from actors import Faults
from sagas import Runtime
from sagas.observe.tracing import SagaTracer, export_to_file
from sagas.stores import open_store

url, path, flow, order = sys.argv[1:5]
provider = TracerProvider()
export_to_file(path, provider)
store = open_store(url)
tracer = SagaTracer(provider, load_events=lambda saga_id: store.load(saga_id).events)
at_charge = threading.Event()

def listen(saga_id, events):
    if any(e.type == "step.started" and e.step == "charge_payment" for e in events):
        at_charge.set()

runtime = Runtime(store, faults=Faults().add(step="charge_payment", kind="drop"),
                  listeners=[tracer.listener, listen])
runtime.start(flow, __import__("json").loads(order), "trace-killed")
assert at_charge.wait(30)
print("at charge_payment", flush=True)
sys.stdin.read()
"""


def test_a_saga_whose_process_was_killed_is_finished_in_the_same_trace_by_another(tmp_path):
    """A process drives a saga to charge_payment and is killed (-9); this process resumes it:
    the spans of both (the first's from its file) are one tree with one root."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env["PYTHONPATH"] = str(ROOT)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, url, str(tmp_path / "first.jsonl"), FLOW,
         json.dumps(ORDER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=ROOT, env=env)
    try:
        assert child.stdout.readline().strip() == "at charge_payment"
    finally:
        child.kill()
        child.wait(timeout=30)
    collector = Collector()
    store = open_store(url)
    try:
        with Runtime(store, recover=True, listeners=[collector.tracer(store).listener]) as two:
            assert two.wait("trace-killed", timeout=WAIT).status == "completed"
        log = list(store.load("trace-killed").events)
    finally:
        store.close()
    first = read_spans(tmp_path / "first.jsonl")
    assert [s["name"] for s in first] == ["step reserve_inventory"]
    second = collector.spans()
    trace_id = saga_trace_id("trace-killed")
    assert {s["trace_id"] for s in first} | {hex32(s.context.trace_id) for s in second} == \
        {trace_id}
    (root,) = [s for s in second if s.parent is None]
    assert hex16(root.context.span_id) == saga_span_id("trace-killed")
    assert root.start_time == ns(log[0].at)
    assert first[0]["parent_span_id"] == saga_span_id("trace-killed")
    assert all(hex16(s.parent.span_id) == saga_span_id("trace-killed")
               for s in second if s is not root)
    assert sorted(s.name for s in second if s is not root) == [
        "step charge_payment", "step create_shipment", "step notify_customer"]


def _event(saga_id, seq, kind, step=None, attempt=None, at=1000.0, **data):
    return Event(seq, kind, step, attempt, at + seq, f"{saga_id}/{seq}", None, data)


def test_without_the_log_a_process_that_never_saw_the_start_marks_its_root_partial():
    collector = Collector()
    tracer = collector.tracer()  # no load_events
    tracer.listener("s", [_event("s", 5, "step.started", "b", 1),
                          _event("s", 6, "step.succeeded", "b", 1)])
    tracer.listener("s", [_event("s", 4, "step.succeeded", "a", 1)])  # seen already: skipped
    tracer.listener("s", [_event("s", 7, "step.succeeded", "c", 1),  # start unseen: left out
                          _event("s", 8, "saga.completed")])
    spans = by_id(collector.spans())
    assert set(spans) == {step_span_id("s", "b", "action", 1), saga_span_id("s")}
    root = spans[saga_span_id("s")]
    assert root.attributes["saga.partial"] is True
    assert root.start_time == ns(1005.0) and root.name == "saga"


def test_the_root_links_to_the_span_the_saga_was_started_in():
    collector = Collector()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracer = collector.tracer()
    tracer.listener("linked", [
        _event("linked", 1, "saga.started", input={}, traceparent=caller, flow="f"),
        _event("linked", 2, "saga.completed")])
    (root,) = collector.spans()
    assert root.name == "saga f"
    (link,) = root.links
    assert (hex32(link.context.trace_id), hex16(link.context.span_id)) == \
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert link.context.is_remote
    assert root.context.trace_id == int(saga_trace_id("linked"), 16)  # its own trace


def test_a_late_success_after_a_time_out_is_only_an_event_and_an_unfinished_attempt_is_closed():
    collector = Collector()
    tracer = collector.tracer()
    tracer.listener("late", [_event("late", 1, "saga.started", input={}),
                             _event("late", 2, "step.started", "a", 1),
                             _event("late", 3, "step.timed_out", "a", 1),
                             _event("late", 4, "step.started", "a", 2),
                             _event("late", 5, "step.succeeded", "a", 1),
                             _event("late", 6, "step.started", "b", 1),
                             _event("late", 7, "saga.completed")])
    spans = by_id(collector.spans())
    first = spans[step_span_id("late", "a", "action", 1)]
    assert first.attributes["saga.outcome"] == "timed_out"
    assert first.status.description == "timed out"
    assert (first.start_time, first.end_time) == (ns(1002.0), ns(1003.0))
    assert spans[step_span_id("late", "a", "action", 2)].attributes["saga.outcome"] == \
        "unfinished"
    assert spans[step_span_id("late", "b", "action", 1)].end_time == ns(1007.0)
    assert len(spans) == 4


# -- the worker's side and the caller's span -----------------------------------------------------
def test_a_handler_span_is_a_child_of_the_attempt_span_its_command_names():
    collector = Collector()
    tp = traceparent("s-9", "charge_payment", "action", 2)
    envelope = {"traceparent": tp, "tracestate": None, "saga_id": "s-9",
                "step": "charge_payment", "phase": "action", "attempt": 2,
                "service": "payment", "handler": "charge"}
    command = Command(command_id="c", saga_id="s-9", step="charge_payment", phase="action",
                      name="charge", attempt=2, key="s-9:charge_payment", payload={})
    for given in (tp, envelope, command):
        with handler_span(given, "payment", "charge",
                          tracer_provider=collector.provider) as span:
            assert trace.get_current_span() is span  # the handler's own spans nest under it
    spans = collector.spans()
    assert len(spans) == 3
    for span in spans:
        assert span.name == "handle payment.charge"
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == int(saga_trace_id("s-9"), 16)
        assert hex16(span.parent.span_id) == step_span_id("s-9", "charge_payment", "action", 2)
        assert span.parent.is_remote
    assert spans[1].attributes["saga.attempt"] == 2
    assert spans[2].attributes["saga.step"] == "charge_payment"


def test_a_handler_that_raises_marks_its_span_in_error_and_the_exception_goes_on():
    collector = Collector()
    with pytest.raises(RuntimeError), handler_span(traceparent("s", "a", "action", 1), "svc",
                                                    "do", tracer_provider=collector.provider):
        raise RuntimeError("boom")
    (span,) = collector.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_current_traceparent_names_the_current_span():
    collector = Collector()
    assert current_traceparent() is None
    with collector.provider.get_tracer("test").start_as_current_span("request") as span:
        context = span.get_span_context()
        assert current_traceparent() == \
            f"00-{hex32(context.trace_id)}-{hex16(context.span_id)}-{int(context.trace_flags):02x}"
    assert current_traceparent() is None


def test_parse_traceparent_takes_only_w3c_values():
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(good) == (0x0af7651916cd43dd8448eb211c80319c,
                                       0xb7ad6b7169203331, 1)
    for bad in (None, "", good.upper(), good + "-x", "ff" + good[2:],
                "00-" + "0" * 32 + "-b7ad6b7169203331-01", good.replace("-01", "-1")):
        assert parse_traceparent(bad) is None, bad


# -- on, off, and nothing imported ---------------------------------------------------------------
@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"SAGA_TRACING": "1"}, True),
    ({"SAGA_TRACING": "off", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ({"SAGA_TRACES_FILE": "/tmp/spans.jsonl"}, True),
])
def test_tracing_is_on_only_when_asked(environ, on, monkeypatch):
    monkeypatch.setattr(tracing, "_global_sdk_provider", lambda: None)
    assert tracing_enabled(environ) is on


def test_importing_the_module_or_asking_whether_it_is_on_imports_no_opentelemetry():
    code = textwrap.dedent("""
        import sys
        from sagas.observe.tracing import current_traceparent, tracing_enabled
        assert tracing_enabled({}) is False
        assert current_traceparent() is None
        loaded = [m for m in sys.modules if m.startswith("opentelemetry")]
        assert not loaded, loaded
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- spans to a file, from several processes -----------------------------------------------------
def test_spans_from_an_orchestrator_and_a_worker_process_make_one_tree_in_files(tmp_path):
    """The orchestrator's spans (here, this process) and a worker process's handler span, each
    written to a file, read back as one tree: the handler under its attempt's span."""
    provider = TracerProvider()
    export_to_file(tmp_path / "orchestrator.jsonl", provider)
    store = MemoryStore()
    tracer = SagaTracer(provider, load_events=lambda sid: store.load(sid).events)
    with Runtime(store, listeners=[tracer.listener]) as runtime:
        runtime.start(FLOW, ORDER, "trace-file")
        assert runtime.wait("trace-file", timeout=WAIT).status == "completed"
    worker = textwrap.dedent("""
        import json, sys
        from sagas.observe.tracing import configure_from_env, handler_span
        assert configure_from_env(service_name="worker")
        with handler_span(json.loads(sys.argv[1])):
            pass
    """)
    command = {"traceparent": traceparent("trace-file", "charge_payment", "action", 1),
               "tracestate": None, "saga_id": "trace-file", "step": "charge_payment",
               "phase": "action", "attempt": 1, "service": "payment", "handler": "charge"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env.update(SAGA_TRACES_FILE=str(tmp_path / "worker.jsonl"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", worker, json.dumps(command)], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    spans = read_spans(tmp_path / "orchestrator.jsonl") + read_spans(tmp_path / "worker.jsonl")
    assert len({s["pid"] for s in spans}) == 2
    assert {s["trace_id"] for s in spans} == {saga_trace_id("trace-file")}
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert [r["span_id"] for r in roots] == [saga_span_id("trace-file")]
    ids = {s["span_id"]: s for s in spans}
    (handler,) = [s for s in spans if s["service"] == "worker"]
    assert handler["name"] == "handle payment.charge" and handler["kind"] == "CONSUMER"
    parent = ids[handler["parent_span_id"]]
    assert parent["name"] == "step charge_payment"
    assert parent["parent_span_id"] == saga_span_id("trace-file")
    assert roots[0]["status"] == {"code": "OK", "description": None}
    assert roots[0]["attributes"]["saga.status"] == "completed"
    assert all(s["start"] <= s["end"] for s in spans)


CONFIGURE = """
import sys
from opentelemetry import trace
from sagas.observe.tracing import configure_from_env, handler_span
try:
    on = configure_from_env(service_name="probe")
except ValueError as exc:
    print("refused:", exc)
    raise SystemExit(0)
print("on" if on else "off", type(trace.get_tracer_provider()).__name__)
with handler_span("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "svc", "do"):
    pass
trace.get_tracer_provider().shutdown() if on else None
"""


@pytest.mark.parametrize(("environ", "says"), [
    ({}, "off ProxyTracerProvider"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "on TracerProvider"),
    ({"OTEL_TRACES_EXPORTER": "no-such-exporter"},
     "refused: OTEL_TRACES_EXPORTER names 'no-such-exporter', which is not installed"),
])
def test_configure_from_env_sets_up_the_standard_configuration(environ, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env.update(environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CONFIGURE], env=env, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == says
    if "console" in environ.values():  # the console exporter printed the span, named by us
        assert '"name": "handle svc.do"' in proc.stdout
        assert '"service.name": "probe"' in proc.stdout


def test_saga_run_with_an_exporter_that_is_not_installed_exits_2_in_one_line(tmp_path):
    from tests.support import one_clear_line, saga_cli

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    order = json.dumps(ORDER)
    for environ, says in (({"OTEL_TRACES_EXPORTER": "no-such-exporter"},
                           "OTEL_TRACES_EXPORTER names 'no-such-exporter', which is not"),
                          ({"SAGA_TRACING": "1", "OTEL_TRACES_EXPORTER": "none"}, None)):
        ran = saga_cli("run", FLOW, "--input", order,
                       "--store", "memory://", env={**env, **environ})
        if says is None:  # on, exporting nowhere: runs as usual
            assert ran.returncode == 0, ran.stderr
            continue
        assert ran.returncode == 2
        assert says in one_clear_line(ran.stderr)
