"""``sagas.audit``: real sagas audit clean; each rule flags a hand-corrupted log exactly.

A store of real sagas is produced once (module fixture) by running flows on virtual time with
injected faults: completed, compensated (after rejection, errors, time-outs), failed for each
reason, retried after failing, ``retry_forever`` that recovers, deadline and cancel. Every rule
test then takes one of those logs, breaks it the way the rule forbids, stores it beside the
clean original in a fresh ``MemoryStore``, and asserts the audit reports exactly one violation:
that saga, that seq, that rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from sagas.audit import RULES, Violation, audit_saga, audit_store
from sagas.engine.core import park_unavailable
from sagas.events import TERMINAL_EVENTS, Event
from sagas.language.loader import parse_flow
from sagas.language.model import Flow
from sagas.stores import MemoryStore, NewSaga, SagaRecord
from sagas.testing import CoreDriver, SagaTestEnvironment
from tests.flow_support import BLOCK
from tests.support import Other, Scripted, StepSpec, make_flow

ALIVE = "audit-test-owner"
THREE = make_flow("a", "b", "c", attempts=2, name="three")
FOUR = make_flow("a", "b", "c", "d", name="four")
PIVOTED = make_flow("a", "b", StepSpec("p", pivot=True), StepSpec("z", compensation=False),
                    attempts=2, name="pivoted")
FOREVER = make_flow("a", "b", "c", attempts=2, max_backoff="30s", name="forever",
                    on_compensation_failure="retry_forever")
DEADLINE = make_flow("a", "b", "c", attempts=5, backoff="20s", timeout="1m", deadline="30s",
                     name="deadline")
NO_UNDO = make_flow("a", StepSpec("b", compensation=False), "c", name="no_undo")
BLOCKING = make_flow("k1", "k2", "k3", name="blocking")
BLOCKING_UNDO = make_flow("m1", StepSpec("m2", service="other"), "m3", name="blocking_undo")

PARALLEL = parse_flow("""
saga: par
services: {svc: tests.support:Scripted}
steps:
  - {name: a, service: svc, action: do, compensation: undo}
  - name: blk
    parallel:
      left: [{name: l1, service: svc, action: do, compensation: undo}]
      right:
        - {name: r1, service: svc, action: do, compensation: undo}
        - {name: r2, service: svc, action: do, compensation: undo}
  - {name: z, service: svc, action: do, compensation: undo}
""")

CHOOSER = parse_flow("""
saga: chooser
services: {svc: tests.support:Scripted}
steps:
  - {name: a, service: svc, action: do, compensation: undo}
  - name: pick
    choice:
      - name: big
        when: {path: $.input.n, gt: 10}
        steps: [{name: b, service: svc, action: do, compensation: undo}]
  - {name: c, service: svc, action: do, compensation: undo}
""")
BRANCH_STEPS = {"l1", "r1", "r2"}

Faults = list[tuple[str, str, str, Iterable[int] | None]]  # (step, phase, kind, attempts)

# saga id -> (flow, faults, `saga retry` it once it has failed)
SCENARIOS: dict[str, tuple[Flow, Faults, bool]] = {
    "completed": (THREE, [], False),
    "compensated": (THREE, [("c", "action", "reject", None)], False),
    "errors": (THREE, [("b", "action", "error", None)], False),
    "timeout": (THREE, [("a", "action", "drop", [1])], False),
    "duplicate": (THREE, [("a", "action", "duplicate", None)], False),
    "comp_timeout": (THREE, [("c", "action", "reject", None),
                             ("b", "compensation", "drop", [1])], False),
    "parked": (THREE, [("c", "action", "reject", None),
                       ("b", "compensation", "error", [1, 2])], False),
    "parked_retried": (THREE, [("c", "action", "reject", None),
                               ("b", "compensation", "error", [1, 2])], True),
    "four": (FOUR, [("c", "action", "reject", None)], False),
    "pivot_rejected": (PIVOTED, [("p", "action", "reject", None)], False),
    "pivot_unknown": (PIVOTED, [("p", "action", "error", None)], False),
    "pivot_unknown_retried": (PIVOTED, [("p", "action", "error", [1, 2])], True),
    "forward": (PIVOTED, [("z", "action", "reject", None)], False),
    "forward_retried": (PIVOTED, [("z", "action", "reject", [1])], True),
    "forever": (FOREVER, [("c", "action", "reject", None),
                          ("b", "compensation", "error", [1, 2, 3, 4, 5])], False),
    "deadline_backoff": (DEADLINE, [("b", "action", "error", None)], False),
    "deadline_in_flight": (DEADLINE, [("b", "action", "drop", None)], False),
    "no_undo": (NO_UNDO, [("c", "action", "reject", None)], False),
    "parallel_branch": (PARALLEL, [("r2", "action", "reject", None)], False),
    "parallel_after": (PARALLEL, [("z", "action", "reject", None)], False),
    "parallel_done": (PARALLEL, [], False),
    "chosen": (CHOOSER, [("c", "action", "reject", None)], False),
}


def _run_scenarios() -> dict[str, SagaRecord]:
    store = MemoryStore()
    store.register_owner(ALIVE)
    service = Scripted({("k2", "action"): ["block"]})
    other = Other({("m2", "compensation"): ["block"]})
    with SagaTestEnvironment(store, services={"svc": service, "other": other}) as env:
        for saga_id, (flow, faults, retry) in SCENARIOS.items():
            for step, phase, kind, attempts in faults:
                env.faults.add(step, kind=kind, phase=phase, attempts=attempts,  # type: ignore[arg-type]
                               saga_id=saga_id)
            result = env.run(flow, {}, saga_id)
            assert result.status != "completed" or not retry
            if retry:
                env.runtime.retry(saga_id)
                env.drive(saga_id)
        # cancelled while `k2` is in flight: the deadline path, before the pivot
        saga_id = env.start(BLOCKING, {}, "cancelled")
        assert service.blocked.wait(10)
        env.runtime.cancel(saga_id)
        service.release.set()
        env.drive(saga_id)
        # cancelled while compensating: recorded, and nothing else changes
        env.faults.add("m3", kind="reject", saga_id="cancel_compensating")
        saga_id = env.start(BLOCKING_UNDO, {}, "cancel_compensating")
        assert other.blocked.wait(10)
        env.runtime.cancel(saga_id)
        other.release.set()
        env.drive(saga_id)
    records = {header.saga_id: store.load(header.saga_id) for header in store.list()}
    # a saga parked because its definition no longer runs: the engine's own event for it
    base = records["completed"]
    driver = CoreDriver(THREE, saga_id="unavailable", start=base.header.started_at)
    driver.reply("a")  # b's action is in flight
    last = driver.events[-1]
    parked = park_unavailable("unavailable", last.seq, last.event_id, "no module named shop",
                              driver)
    records["unavailable"] = _record("unavailable", base, [*driver.events, parked])
    return records


@pytest.fixture(scope="module")
def real() -> dict[str, SagaRecord]:
    return _run_scenarios()


# -- building stores from (corrupted) logs -----------------------------------------------------
def _status_of(events: list[Event]) -> tuple[str, str | None]:
    for event in reversed(events):
        if event.type in TERMINAL_EVENTS:
            status = TERMINAL_EVENTS[event.type]
            return status, event.data.get("reason") if status == "failed" else None
        if event.step in BRANCH_STEPS:
            continue  # a branch's steps never set the saga's status: its block's do
        if event.type in ("step.started", "compensation.started", "saga.retried"):
            phase = event.data.get("phase", "compensation" if "compensation" in event.type
                                   else "action")
            return ("compensating" if phase == "compensation" else "running"), None
    return "running", None


def _renumber(saga_id: str, events: Iterable[Event]) -> list[Event]:
    return [replace(e, seq=i, event_id=f"{saga_id}/{i}", position=None)
            for i, e in enumerate(events, 1)]


def _record(saga_id: str, base: SagaRecord, events: list[Event], **header: Any) -> SagaRecord:
    events = _renumber(saga_id, events)
    status, reason = _status_of(events)
    fields: dict[str, Any] = {"saga_id": saga_id, "status": status, "reason": reason,
                              "last_seq": events[-1].seq if events else 0, "owner": ALIVE}
    fields.update(header)
    return SagaRecord(replace(base.header, **fields), base.definition_text, tuple(events))


def _store(*records: SagaRecord, alive: bool = True) -> MemoryStore:
    store = MemoryStore()
    if alive:
        store.register_owner(ALIVE)
    for record in records:
        h = record.header
        created, _ = store.create(NewSaga(h.saga_id, h.flow, h.version, h.definition,
                                          record.definition_text, h.input, h.status, h.reason,
                                          h.started_at, record.events, h.owner))
        assert created
    return store


def _found(violations: list[Violation]) -> list[tuple[str, int | None, str]]:
    return [(v.saga_id, v.seq, v.rule) for v in violations]


def _ev(type_: str, step: str | None = None, attempt: int | None = None, /,
        **data: Any) -> Event:
    """A new event with ``data``; its seq and id are set when the log is renumbered."""
    return Event(0, type_, step, attempt, 0.0, "", None, data)


def _at(events: list[Event], type_: str, step: str | None = None, attempt: int | None = None,
        nth: int = 0) -> int:
    """The index in ``events`` of the ``nth`` event of that type (and step, attempt)."""
    found = [i for i, e in enumerate(events) if e.type == type_
             and (step is None or e.step == step) and (attempt is None or e.attempt == attempt)]
    return found[nth]


Mutation = Callable[[list[Event]], None]


def _corrupt(real: dict[str, SagaRecord], name: str, mutate: Mutation,
             **header: Any) -> tuple[MemoryStore, list[Event]]:
    """``real[name]``'s log, mutated in place by ``mutate``, stored as saga ``bad`` beside the
    clean original; returns the store and the stored (renumbered) log."""
    events = list(real[name].events)
    mutate(events)
    bad = _record("bad", real[name], events, **header)
    return _store(real[name], bad), list(bad.events)


def _only(store: MemoryStore, seq: int | None, rule: str, **options: Any) -> Violation:
    """Assert the audit finds exactly one violation: saga ``bad``, ``seq``, ``rule``."""
    violations = audit_store(store, now=options.pop("now", 1_700_000_000.0), **options)
    assert _found(violations) == [("bad", seq, rule)], [v.format() for v in violations]
    assert rule in RULES
    return violations[0]


# -- clean sagas -------------------------------------------------------------------------------
def test_real_sagas_of_every_kind_audit_clean(real):
    outcomes = {(r.header.status, r.header.reason) for r in real.values()}
    assert outcomes == {("completed", None), ("compensated", None),
                        ("failed", "compensation_failed"), ("failed", "pivot_unknown"),
                        ("failed", "forward_recovery"), ("failed", "definition_unavailable")}
    kinds = {e.type for r in real.values() for e in r.events}
    assert {"saga.retried", "reply.ignored", "saga.deadline_exceeded", "saga.cancelled",
            "step.timed_out", "compensation.timed_out", "compensation.retrying"} <= kinds
    store = _store(*real.values())
    assert audit_store(store, include_running=False) == []
    assert audit_store(store, include_running=True) == []


def test_the_scenarios_ended_as_designed(real):
    def end(name: str) -> tuple[str, str | None]:
        return real[name].header.status, real[name].header.reason

    assert end("parked") == ("failed", "compensation_failed")
    assert end("parked_retried") == ("compensated", None)
    assert end("pivot_unknown_retried") == ("completed", None)
    assert end("forward_retried") == ("completed", None)
    assert end("forever") == ("compensated", None)
    assert end("cancelled") == ("compensated", None)
    assert end("deadline_in_flight") == ("compensated", None)
    assert end("cancel_compensating") == ("compensated", None)
    assert "saga.cancelled" in {e.type for e in real["cancel_compensating"].events}


def test_violation_format_and_json():
    violation = Violation("o-1", 7, "wrong_end", "completed but 'b' never succeeded")
    assert violation.format() == "o-1 seq 7: wrong_end: completed but 'b' never succeeded"
    assert Violation("o-1", None, "orphaned", "x").format() == "o-1: orphaned: x"
    assert violation.to_json() == {"saga_id": "o-1", "seq": 7, "rule": "wrong_end",
                                   "message": "completed but 'b' never succeeded"}


def test_every_prefix_of_a_real_log_is_a_clean_saga_in_flight(real):
    for name, record in real.items():
        for end in range(1, len(record.events) + 1):
            prefix = _record(name, record, list(record.events[:end]))
            assert audit_saga(prefix, now=0.0, owner_alive=True) == [], (name, end)
            if prefix.header.status not in ("completed", "compensated", "failed"):
                expected = [(name, None, "not_terminal")]
                assert _found(audit_saga(prefix, now=0.0, expect_terminal=True)) == expected


# -- the log as a sequence ---------------------------------------------------------------------
def test_seq_gap(real):
    events = [replace(e, seq=e.seq + (e.seq >= 5)) for e in real["completed"].events]
    record = _record("bad", real["completed"], list(real["completed"].events))
    record = replace(record, events=tuple(events),
                     header=replace(record.header, last_seq=events[-1].seq))
    assert _found(audit_saga(record, now=0.0)) == [("bad", 6, "seq_gap")]


def test_seq_repeat(real):
    events = [replace(e, seq=e.seq - (e.seq >= 5)) for e in real["completed"].events]
    record = _record("bad", real["completed"], list(real["completed"].events))
    record = replace(record, events=tuple(events),
                     header=replace(record.header, last_seq=events[-1].seq))
    assert _found(audit_saga(record, now=0.0)) == [("bad", 4, "seq_repeat")]


def test_header_seq(real):
    record = _record("bad", real["completed"], list(real["completed"].events))
    record = replace(record, header=replace(record.header, last_seq=99))
    assert _found(audit_saga(record, now=0.0)) == [("bad", None, "header_seq")]


def test_empty_log(real):
    record = _record("bad", real["completed"], [])
    assert _found(audit_saga(record, now=0.0)) == [("bad", None, "empty_log")]


def test_event_id_repeat(real):
    bad = _record("bad", real["completed"], list(real["completed"].events))
    events = list(bad.events)
    events[5] = replace(events[5], event_id=events[4].event_id)
    store = _store(real["completed"], replace(bad, events=tuple(events)))
    _only(store, 6, "event_id_repeat")


def test_unknown_event(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1, _ev("step.exploded", "a", 1))

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "step.exploded") + 1, "unknown_event")


def test_malformed_event(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "step.retrying", "a")
        events[i] = replace(events[i], attempt=None)

    store, log = _corrupt(real, "timeout", mutate)
    _only(store, _at(log, "step.retrying", "a") + 1, "malformed_event")


def test_first_event(real):
    store, _ = _corrupt(real, "completed", lambda events: events.pop(0))
    _only(store, 1, "first_event")


def test_started_twice(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1, events[0])

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "saga.started", nth=1) + 1, "started_twice")


# -- epochs and terminal events ----------------------------------------------------------------
def test_terminal_twice(real):
    def mutate(events: list[Event]) -> None:
        events.append(_ev("saga.failed", reason="forward_recovery"))

    store, log = _corrupt(real, "completed", mutate, status="completed", reason=None)
    _only(store, len(log), "terminal_twice")


def test_after_terminal(real):
    store, log = _corrupt(real, "completed", lambda events: events.append(
        _ev("step.started", "c", 2, payload={}, timeout_at=0.0)), status="completed")
    _only(store, len(log), "after_terminal")


def test_reply_after_terminal(real):
    store, log = _corrupt(real, "compensated", lambda events: events.append(
        _ev("reply.ignored", "c", 1, phase="action", attempt=1, outcome="succeeded")))
    _only(store, len(log), "reply_after_terminal")


def test_bad_retry_of_a_saga_that_had_not_failed(real):
    store, log = _corrupt(real, "completed", lambda events: events.append(
        _ev("saga.retried", "c", requested_by=None, phase="action")))
    assert log[-1].type == "saga.retried"
    _only(store, len(log), "bad_retry")


def test_bad_retry_that_resumes_elsewhere(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "saga.retried")
        events[i] = replace(events[i], step="a")

    store, log = _corrupt(real, "parked_retried", mutate)
    _only(store, _at(log, "saga.retried") + 1, "bad_retry")


def test_not_terminal_only_when_running_sagas_are_not_accepted(real):
    store, _ = _corrupt(real, "completed", lambda events: events.pop())
    assert audit_store(store, include_running=True) == []  # its owner is alive
    _only(store, None, "not_terminal", include_running=False)


def test_orphaned_when_in_flight_with_no_live_owner(real):
    store, _ = _corrupt(real, "completed", lambda events: events.pop(), owner="gone-runtime")
    violation = _only(store, None, "orphaned")
    assert "saga resume" in violation.message
    _only(store, None, "not_terminal", include_running=False)


def test_header_status(real):
    store, log = _corrupt(real, "compensated", lambda events: None, status="completed")
    _only(store, len(log), "header_status")


def test_header_status_reason(real):
    store, log = _corrupt(real, "parked", lambda events: None, reason="pivot_unknown")
    _only(store, len(log), "header_status")


def test_definition_invalid(real):
    bad = _record("bad", real["completed"], list(real["completed"].events),
                  definition="f" * 64)
    store = _store(real["completed"], replace(bad, definition_text="saga: [unclosed\n"))
    violation = _only(store, None, "definition_invalid")
    assert "<stored definition>:" in violation.message


def test_definition_mismatch(real):
    store, _ = _corrupt(real, "completed", lambda events: None, definition="e" * 64)
    _only(store, None, "definition_mismatch")


# -- attempts ----------------------------------------------------------------------------------
def test_attempt_not_started(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1,
                      _ev("step.failed", "a", 5, error="boom", kind="error"))

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "step.failed", "a") + 1, "attempt_not_started")


def test_attempt_order(real):
    def mutate(events: list[Event]) -> None:
        for i in (_at(events, "step.started", "a", 2), _at(events, "step.succeeded", "a", 2)):
            events[i] = replace(events[i], attempt=3)

    store, log = _corrupt(real, "timeout", mutate)
    _only(store, _at(log, "step.started", "a", 3) + 1, "attempt_order")


def test_two_outcomes(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1,
                      _ev("step.failed", "a", 1, error="boom", kind="error"))

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "step.failed", "a") + 1, "two_outcomes")


def test_timed_out_twice(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "step.timed_out", "a")
        events.insert(i + 1, events[i])

    store, log = _corrupt(real, "timeout", mutate)
    _only(store, _at(log, "step.timed_out", "a", nth=1) + 1, "timed_out_twice")


def test_timed_out_after_reply(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1,
                      _ev("step.timed_out", "a", 1, timeout_at=0.0))

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "step.timed_out", "a") + 1, "timed_out_after_reply")


def test_late_error(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.retrying", "a") + 1,
                      _ev("step.failed", "a", 1, error="late", kind="error"))

    store, log = _corrupt(real, "timeout", mutate)
    _only(store, _at(log, "step.failed", "a") + 1, "late_error")


def test_stale_outcome(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.started", "b") + 1,
                      _ev("step.succeeded", "a", 1, output={}))

    store, log = _corrupt(real, "timeout", mutate)
    _only(store, _at(log, "step.succeeded", "a", 1) + 1, "stale_outcome")


def test_left_in_flight(real):
    store, log = _corrupt(real, "errors", lambda events: events.pop(
        _at(events, "step.failed", "b", 2)))
    _only(store, _at(log, "compensation.started", "b") + 1, "left_in_flight")


def test_too_many_attempts(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "step.failed", "b", 2)
        events[i + 1:i + 1] = [_ev("step.retrying", "b", 2, next_attempt_at=0.0),
                               _ev("step.started", "b", 3, payload={}, timeout_at=0.0),
                               _ev("step.failed", "b", 3, error="boom", kind="error")]

    store, log = _corrupt(real, "errors", mutate)
    _only(store, _at(log, "step.started", "b", 3) + 1, "too_many_attempts")


def test_gave_up_early(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "step.retrying", "b")
        del events[i:i + 3]  # retrying 1, started 2, failed 2

    store, log = _corrupt(real, "errors", mutate)
    _only(store, _at(log, "compensation.started", "b") + 1, "gave_up_early")


# -- forward order, deadline and cancel --------------------------------------------------------
def test_unknown_step(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "step.succeeded", "a") + 1, _ev(
            "reply.ignored", "ghost", 1, phase="action", attempt=1, outcome="succeeded"))

    store, log = _corrupt(real, "completed", mutate)
    _only(store, _at(log, "reply.ignored") + 1, "unknown_step")


def test_step_order(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "step.failed", "c")
        events[i + 1:i + 1] = [_ev("step.started", "d", 1, payload={}, timeout_at=0.0),
                               _ev("step.failed", "d", 1, error="no", kind="rejected")]

    store, log = _corrupt(real, "four", mutate)
    _only(store, _at(log, "step.started", "d") + 1, "step_order")


def test_abort_ignored(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "saga.deadline_exceeded")
        events[i + 1:i + 1] = [_ev("step.started", "b", 3, payload={}, timeout_at=0.0),
                               _ev("step.failed", "b", 3, error="boom", kind="error")]

    store, log = _corrupt(real, "deadline_backoff", mutate)
    _only(store, _at(log, "step.started", "b", 3) + 1, "abort_ignored")


def test_deadline_while_compensating(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "compensation.started", "b") + 1,
                      _ev("saga.deadline_exceeded", deadline_at=0.0))

    store, log = _corrupt(real, "compensated", mutate)
    _only(store, _at(log, "saga.deadline_exceeded") + 1, "deadline_while_compensating")


# -- compensation ------------------------------------------------------------------------------
def _compensate(step: str, attempt: int = 1) -> list[Event]:
    return [_ev("compensation.started", step, attempt, payload={}, timeout_at=0.0),
            _ev("compensation.succeeded", step, attempt, output={})]


def _insert_after(type_: str, step: str | None, new: list[Event]) -> Mutation:
    def mutate(events: list[Event]) -> None:
        i = _at(events, type_, step) + 1
        events[i:i] = new

    return mutate


def test_no_compensation(real):
    store, log = _corrupt(real, "no_undo", _insert_after("step.failed", "c", _compensate("b")))
    _only(store, _at(log, "compensation.started", "b") + 1, "no_compensation")


def test_pivot_compensated_the_pivot_itself(real):
    store, log = _corrupt(real, "pivot_rejected",
                          _insert_after("step.failed", "p", _compensate("p")))
    _only(store, _at(log, "compensation.started", "p") + 1, "pivot_compensated")


def test_pivot_compensated_after_the_pivot_succeeded(real):
    store, log = _corrupt(real, "forward", _insert_after("step.failed", "z", _compensate("b")))
    _only(store, _at(log, "compensation.started", "b") + 1, "pivot_compensated")


def test_compensated_not_started(real):
    store, log = _corrupt(real, "four", _insert_after("step.failed", "c", _compensate("d")))
    _only(store, _at(log, "compensation.started", "d") + 1, "compensated_not_started")


def test_compensated_rejected(real):
    store, log = _corrupt(real, "compensated",
                          _insert_after("step.failed", "c", _compensate("c")))
    _only(store, _at(log, "compensation.started", "c") + 1, "compensated_rejected")


def test_compensation_unprovoked(real):
    store, log = _corrupt(real, "completed",
                          _insert_after("step.succeeded", "c", _compensate("c")))
    _only(store, _at(log, "compensation.started", "c") + 1, "compensation_unprovoked")


def test_compensation_order(real):
    def mutate(events: list[Event]) -> None:
        b, a = _at(events, "compensation.started", "b"), _at(events, "compensation.started", "a")
        events[b:a + 2] = [*events[a:a + 2], *events[b:a]]  # a's compensation before b's

    store, log = _corrupt(real, "compensated", mutate)
    _only(store, _at(log, "compensation.started", "b") + 1, "compensation_order")


def test_compensation_twice(real):
    store, log = _corrupt(real, "comp_timeout", _insert_after(
        "compensation.succeeded", "b", [_ev("compensation.succeeded", "b", 1, output={})]))
    _only(store, _at(log, "compensation.succeeded", "b", 1) + 1, "compensation_twice")


def test_missing_compensation(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "compensation.started", "b")
        del events[i:i + 2]

    store, log = _corrupt(real, "compensated", mutate)
    violation = _only(store, len(log), "missing_compensation")
    assert "'b'" in violation.message


def test_branch_not_undone(real):
    def mutate(events: list[Event]) -> None:  # the left branch's l1 is never cancelled
        i = _at(events, "compensation.started", "l1")
        del events[i]
        del events[_at(events, "compensation.succeeded", "l1")]

    store, log = _corrupt(real, "parallel_after", mutate)
    left_end = next(i for i, e in enumerate(log, 1) if e.type == "branch.compensated"
                    and e.data["branch"] == "blk.left")
    violation = _only(store, left_end, "branch_not_undone")
    assert "branch blk.left" in violation.message and "'l1'" in violation.message


def test_parallel_sagas_audit_clean_and_undo_every_branch(real):
    for name in ("parallel_branch", "parallel_after", "parallel_done"):
        assert audit_saga(real[name], now=1_700_000_000.0) == []
    undone = [e.step for e in real["parallel_after"].events
              if e.type == "compensation.succeeded"]
    assert undone[-1] == "a" and set(undone[:-1]) == {"l1", "r1", "r2", "blk"}
    assert undone.index("r2") < undone.index("r1")  # each branch in reverse


def test_block_join(real):
    def mutate(events: list[Event]) -> None:  # the left branch never said it completed
        del events[next(i for i, e in enumerate(events) if e.type == "branch.completed"
                        and e.data["branch"] == "blk.left")]

    store, log = _corrupt(real, "parallel_done", mutate)
    violation = _only(store, _at(log, "step.succeeded", "blk") + 1, "block_join")
    assert "blk.left" in violation.message


def test_choice_branch(real):
    assert [e.data["branch"] for e in real["chosen"].events if e.type == "choice.made"] == \
        ["default"]
    undone = [e.step for e in real["chosen"].events if e.type == "compensation.succeeded"]
    assert undone == ["a"]  # b never ran on this route, so it is not compensated

    def mutate(events: list[Event]) -> None:  # an input for which 'big' had to be taken
        events[0] = replace(events[0], data={**events[0].data, "input": {"n": 50}})

    store, log = _corrupt(real, "chosen", mutate)
    violation = _only(store, _at(log, "choice.made", "pick") + 1, "choice_branch")
    assert "'big'" in violation.message


def test_pivot_unknown_compensated(real):
    def mutate(events: list[Event]) -> None:
        i = _at(events, "saga.failed")
        events[i:i] = _compensate("b")

    store, log = _corrupt(real, "pivot_unknown", mutate)
    _only(store, _at(log, "compensation.started", "b") + 1, "pivot_unknown_compensated")


def test_wrong_end_status(real):
    def mutate(events: list[Event]) -> None:
        events[-1] = _ev("saga.compensated")

    store, log = _corrupt(real, "completed", mutate)
    _only(store, len(log), "wrong_end")


def test_wrong_end_reason(real):
    def mutate(events: list[Event]) -> None:
        events[-1] = _ev("saga.failed", reason="pivot_unknown")

    store, log = _corrupt(real, "forward", mutate)
    violation = _only(store, len(log), "wrong_end")
    assert "forward_recovery" in violation.message


def test_stuck_retry_forever(real):
    def mutate(events: list[Event]) -> None:
        del events[_at(events, "compensation.started", "b", 6):]

    store, log = _corrupt(real, "forever", mutate)
    since = log[_at(log, "compensation.started", "b")]
    assert audit_store(store, now=since.at + 600) == []
    violation = _only(store, since.seq, "stuck_retry_forever", now=since.at + 7200)
    assert "2h" in violation.message
    assert audit_store(store, now=since.at + 7200, stuck_after=3 * 3600) == []


def test_every_rule_has_a_test():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    untested = [rule for rule in RULES if not any(t.startswith(rule) for t in tested)]
    assert untested == []


def test_late_error_of_a_compensation_rejection(real):
    def mutate(events: list[Event]) -> None:
        events.insert(_at(events, "compensation.retrying", "b") + 1,
                      _ev("compensation.failed", "b", 1, error="no", kind="rejected"))

    store, log = _corrupt(real, "comp_timeout", mutate)
    _only(store, _at(log, "compensation.failed", "b") + 1, "late_error")


# -- logs of parallel blocks and choices, corrupted on the pure core ------------------------------
def test_audit_flags_a_block_that_succeeded_though_a_branch_failed():
    saga = CoreDriver(parse_flow(BLOCK.replace("effects: none", "compensation: undo")))
    saga.reply("prep")
    saga.reply("a1")
    saga.reply("b1")
    assert saga.status == "completed"
    assert audit_saga(saga.record(), now=2_000.0) == []
    corrupt = []
    for event in saga.events:
        if event.step == "b1" and event.type == "step.succeeded":
            event = replace(event, type="step.failed",
                            data={"error": "no", "kind": "rejected"})
        elif event.type == "branch.completed" and event.data["branch"] == "blk.b":
            event = replace(event, type="branch.compensated")
        corrupt.append(event)
    assert audit_saga(saga.record(corrupt), now=2_000.0) != []


def test_audit_flags_a_choice_its_conditions_do_not_allow():
    saga = CoreDriver(CHOOSER, {"n": 50})  # 'big' is taken
    saga.reply("a")
    saga.reply("b")
    saga.reply("c")
    assert saga.status == "completed"
    assert audit_saga(saga.record(), now=2_000.0) == []
    corrupt = [replace(e, data={"input": {"n": 5}, "deadline_at": None})
               if e.type == "saga.started" else e for e in saga.events]
    assert audit_saga(saga.record(corrupt), now=2_000.0) != []


# -- who wrote each event (stores shared by members, fenced with leases) ------------------------
def _handed_over(real: dict[str, SagaRecord]) -> tuple[MemoryStore, str]:
    """A store where member-a wrote the start of a saga under epoch 1 of its partition, gave
    the partition back, and member-b wrote the rest under epoch 2."""
    from sagas.stores import Append, Fence, partition_of

    base = real["completed"]
    events = list(base.events)
    store = _store()
    saga_id = "handed-over"
    partition = partition_of(saga_id, store.partitions())
    a = store.acquire("member-a", [partition], 60.0)
    h = base.header
    store.create(NewSaga(saga_id, h.flow, h.version, h.definition, base.definition_text,
                         h.input, "running", None, h.started_at, tuple(events[:2]), ALIVE),
                 fence=Fence.of("member-a", a))
    store.release("member-a", [partition])
    b = store.acquire("member-b", [partition], 60.0)
    store.append([Append(saga_id, tuple(events[2:]), h.status, h.reason, h.updated_at)],
                 fence=Fence.of("member-b", b))
    return store, saga_id


class _Rewritten:
    """A store whose ``writers`` answer is replaced (a log no fenced store would accept)."""

    def __init__(self, store: MemoryStore, writers: dict[str, list[Any]]) -> None:
        self._store, self._writers = store, writers

    def writers(self, saga_id: str) -> list[Any]:
        return self._writers.get(saga_id) or self._store.writers(saga_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_writer_epochs_of_a_handed_over_saga_are_clean(real):
    store, saga_id = _handed_over(real)
    assert [(w.member, w.epoch) for w in store.writers(saga_id)][:3] == [
        ("member-a", 1), ("member-a", 1), ("member-b", 2)]
    assert audit_store(store, include_running=False) == []


def test_writer_epoch_order_flags_a_write_under_a_lost_lease(real):
    from sagas.stores import Writer

    store, saga_id = _handed_over(real)
    writers = store.writers(saga_id)
    stale = [*writers[:-1], Writer(writers[-1].seq, "member-a", 1)]  # a paused member's write
    found = audit_store(_Rewritten(store, {saga_id: stale}), include_running=False)
    assert _found(found) == [(saga_id, writers[-1].seq, "writer_epoch_order")]
    assert "member-a under epoch 1" in found[0].message


def test_writer_epoch_shared_flags_two_members_under_one_epoch(real):
    from sagas.stores import Writer

    store, saga_id = _handed_over(real)
    writers = store.writers(saga_id)
    shared = [*writers[:-1], Writer(writers[-1].seq, "member-c", 2)]
    found = audit_store(_Rewritten(store, {saga_id: shared}), include_running=False)
    assert _found(found) == [(saga_id, writers[-1].seq, "writer_epoch_shared")]
    assert "member-c" in found[0].message and "member-b" in found[0].message
