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
from sagas.core import park_unavailable
from sagas.events import TERMINAL_EVENTS, Event
from sagas.model import Flow
from sagas.stores import MemoryStore, NewSaga, SagaRecord
from sagas.testing import SagaTestEnvironment
from tests.support import Scripted, StepSpec, make_flow

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
}


def _run_scenarios() -> dict[str, SagaRecord]:
    store = MemoryStore()
    store.register_owner(ALIVE)
    service = Scripted({("k2", "action"): ["block"]})
    with SagaTestEnvironment(store, services={"svc": service}) as env:
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
    records = {header.saga_id: store.load(header.saga_id) for header in store.list()}
    # a saga parked because its definition no longer runs: the engine's own event for it
    base = records["completed"]
    head = base.events[:3]
    parked = park_unavailable("unavailable", 3, head[-1].event_id, "no module named shop",
                              _Clock(head[-1].at))
    records["unavailable"] = _record("unavailable", base, [*head, parked])
    return records


class _Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at

    def random(self, key: str) -> float:  # pragma: no cover - not drawn
        return 0.0


@pytest.fixture(scope="module")
def real() -> dict[str, SagaRecord]:
    return _run_scenarios()


# -- building stores from (corrupted) logs -----------------------------------------------------
def _status_of(events: list[Event]) -> tuple[str, str | None]:
    for event in reversed(events):
        if event.type in TERMINAL_EVENTS:
            status = TERMINAL_EVENTS[event.type]
            return status, event.data.get("reason") if status == "failed" else None
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


def _ev(type_: str, step: str | None = None, attempt: int | None = None, at: float = 0.0,
        **data: Any) -> Event:
    """A new event; its seq and id are set when the log is renumbered."""
    return Event(0, type_, step, attempt, at, "", None, data)


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


def test_violation_format_and_json():
    violation = Violation("o-1", 7, "wrong_end", "completed but 'b' never succeeded")
    assert violation.format() == "o-1 seq 7: wrong_end: completed but 'b' never succeeded"
    assert Violation("o-1", None, "orphaned", "x").format() == "o-1: orphaned: x"
    assert violation.to_json() == {"saga_id": "o-1", "seq": 7, "rule": "wrong_end",
                                   "message": "completed but 'b' never succeeded"}
