"""The engine's self-test: a hypothesis state machine against a plain reference model.

Random saga starts on a few flows (3–4 steps; compensations present and absent; no pivot, or a
pivot first, in the middle, last; park or retry_forever; one flow with a deadline), each with a
fault plan drawn per (phase, step, attempt) — ok, reject, error, drop (the command is lost: a
time-out, the action did not run), run_then_drop (the action ran, its reply is lost), duplicate
(two replies), late_ok / late_reject / late_error (the handler is held until its attempt timed
out, then answers during the backoff: a really late reply), later_ok / later_reject (held until
the next attempt is under way, or the step was left); virtual time moved on by a little or a
lot, one saga or all of them driven to their end; the runtime crashed (closed without finishing
anything) and restarted on its SQLite store with a clock no earlier than before, then
``recover()``; ``saga retry`` of a failed saga; ``cancel`` of any saga; a start repeated with
the same id.

After every rule, for every saga the store holds:

* the store holds every saga started — no saga is lost across crashes (and nothing else);
* ``sagas.audit.audit_saga`` finds no violation of DESIGN.md §4 (``expect_terminal=False`` for a
  saga still in flight);
* **history oracle** (every saga): the reference model (:class:`tests.stateful_support.ModelSaga`,
  DESIGN.md §4.2–4.3 written from the text, not from ``sagas.language.compiler`` or
  ``sagas.language.plan``) is fed the final outcome of each visit as the log shows it (the last
  ``*.succeeded`` / ``step.failed`` kind ``rejected`` / ran out); each visit must be of the
  (phase, step) the model expects next — so the compensations are exactly the ones §4.2
  requires, in reverse order — and the status and reason must be the model's;
* **plan oracle** (a saga whose log shows no ``saga.cancelled`` and no ``saga.deadline_exceeded``:
  then the outcome of every attempt follows from the fault plan alone — crashes happen only at
  rest and change no outcome): the model also predicts each visit's outcome and last attempt from
  the plan (DESIGN.md §3's inbox, §4.5's late replies) and the number of ``saga retry`` applied;
  the log must show exactly those visits, and the end predicted. Where a cancel or the deadline
  cut attempts short, what happened depends on timing, so only the history oracle applies;
* semantic atomicity on the handlers' effects: a compensated saga undid every effect (of steps
  that declare a compensation) after it happened; a completed saga undid nothing.

At the end of each example (``teardown``), every saga is driven to its end and all of it is
checked once more with ``expect_terminal=True`` (termination, §4.1).

Budget: ``max_examples`` 200 under ``CI`` (30 locally), see ``SETTINGS``. The test was checked
against bugs planted on purpose in a scratch copy (see the issue note): compensating in forward
order, compensating a rejected step, compensating after an exhausted pivot (each caught by the
audit and by the history oracle), and ignoring a late success (caught by the plan oracle only).

Determinism (so hypothesis can shrink): each saga has a service instance of its own, timers fire
only when the runtime is at rest, and a held handler is released only after its attempt timed
out and before the next timer fires (:class:`tests.stateful_support.Driver`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, TypeVar, cast

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from actors import FaultKind
from sagas import IdConflict
from sagas.audit import audit_saga
from sagas.testing import SagaTestEnvironment
from tests.stateful_support import (
    INJECTED,
    KINDS,
    LATE,
    POOL,
    SAGA_IDS,
    TERMINAL,
    Driver,
    FlowSpec,
    Lab,
    Plan,
    Probe,
    check_history,
    check_plan,
    effects_problems,
    flow_of,
    predict,
    predict_from_plan,
)

START = 1_700_000_000.0
StepPhase = Literal["action", "compensation"]

FLOWS = (
    FlowSpec("plain", (("a", True), ("b", True), ("c", True)), attempts=2),
    FlowSpec("gaps", (("a", False), ("b", True), ("c", False), ("d", True)), attempts=3,
             retry_forever=True),
    FlowSpec("pivot_mid", (("a", True), ("b", True), ("p", False), ("z", False)), pivot=2,
             attempts=2, jitter=True),
    FlowSpec("pivot_first", (("p", False), ("y", False), ("z", False)), pivot=0, attempts=2),
    FlowSpec("deadline", (("a", True), ("b", False), ("c", True), ("p", False)), pivot=3,
             attempts=3, deadline="12s"),
)


@dataclass(frozen=True)
class SagaCase:
    """What a started saga is: its flow and its fault plan."""

    flow: FlowSpec
    plan: Plan

    def __repr__(self) -> str:
        return f"SagaCase(flow={self.flow!r}, plan={dict(self.plan)!r})"


def plans(spec: FlowSpec) -> st.SearchStrategy[Plan]:
    """Fault plans: up to four (phase, step) with trouble — either a few attempts' kinds, or the
    same kind on every attempt (a step that keeps failing, so it runs out). Shrinks to no
    faults."""
    budget = spec.attempts + 1  # one more than a visit uses: a `saga retry` goes on numbering
    kind = st.sampled_from(KINDS)
    kinds = st.one_of(st.lists(kind, min_size=1, max_size=budget).map(tuple),
                      kind.map(lambda k: (k,) * spec.attempts))
    return st.dictionaries(st.sampled_from(spec.targets()), kinds, max_size=4)


cases = st.sampled_from(FLOWS).flatmap(
    lambda spec: st.builds(SagaCase, st.just(spec), plans(spec)))

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Mark the machine broken while ``method`` runs, so teardown skips its final checks after
    a failure (and reports the original one)."""

    @wraps(method)
    def run(self: EngineMachine, *args: Any, **kwargs: Any) -> Any:
        self.broken = True
        result = method(self, *args, **kwargs)
        self.broken = False
        return result

    return run  # type: ignore[return-value]


class EngineMachine(RuleBasedStateMachine):
    """A runtime on a SQLite store and virtual time, sagas in it, and the rules above."""

    sagas = Bundle("sagas")

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.dir = tempfile.mkdtemp(prefix="sagactor-stateful-")
        self.url = f"sqlite:///{self.dir}/sagas.db"
        self.lab = Lab()
        self.cases: dict[str, SagaCase] = {}
        self.inputs: dict[str, dict[str, Any]] = {}
        self.retries: Counter[str] = Counter()
        self.env = self._open(START)
        self.driver = Driver(self.env, self.lab)
        self.broken = False

    def _open(self, start: float) -> SagaTestEnvironment:
        env = SagaTestEnvironment(self.url, start=start,
                                  services={"svc": [Probe(self.lab) for _ in range(POOL)]})
        for saga_id, case in self.cases.items():
            self._inject(env, saga_id, case)
        return env

    def _inject(self, env: SagaTestEnvironment, saga_id: str, case: SagaCase) -> None:
        """The saga's fault plan: injected kinds as ``env.faults`` rules (one per attempt), late
        ones as the lab's script."""
        for (phase, step), kinds in case.plan.items():
            for attempt, kind in enumerate(kinds, start=1):
                if kind in INJECTED:
                    env.faults.add(step, phase=cast("StepPhase", phase), attempts={attempt},
                                   saga_id=saga_id, kind=cast("FaultKind", kind))
                elif kind in LATE:
                    self.lab.late[(saga_id, phase, step, attempt)] = LATE[kind]

    # -- rules ----------------------------------------------------------------------------------
    @initialize(target=sagas, first=st.lists(cases, min_size=1, max_size=3))
    @guarded
    def start_first(self, first: list[SagaCase]) -> MultipleResults[str]:
        return multiple(*[self._start(case) for case in first])

    @precondition(lambda self: len(self.cases) < len(SAGA_IDS))
    @rule(target=sagas, more=st.lists(cases, min_size=1, max_size=2))
    @guarded
    def start(self, more: list[SagaCase]) -> MultipleResults[str]:
        return multiple(*[self._start(case) for case in more[:len(SAGA_IDS) - len(self.cases)]])

    def _start(self, case: SagaCase) -> str:
        saga_id = SAGA_IDS[len(self.cases)]
        self.cases[saga_id] = case
        self.inputs[saga_id] = {"n": len(self.cases)}
        self._inject(self.env, saga_id, case)
        assert self.env.start(flow_of(case.flow), self.inputs[saga_id], saga_id) == saga_id
        self.driver.rest()
        return saga_id

    @rule(saga=sagas)
    @guarded
    def start_again(self, saga: str) -> None:
        """§4.9: the same id with the same definition and input is the existing saga."""
        flow = flow_of(self.cases[saga].flow)
        before = self.env.runtime.store.header(saga).last_seq
        assert self.env.start(flow, self.inputs[saga], saga) == saga
        with pytest.raises(IdConflict):
            self.env.start(flow, {"n": -1}, saga)
        self.driver.rest()
        assert self.env.runtime.store.header(saga).last_seq == before

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0, 20.0]))
    @guarded
    def advance(self, seconds: float) -> None:
        self.driver.advance(seconds)

    @rule(saga=sagas)
    @guarded
    def drive_one(self, saga: str) -> None:
        store = self.env.runtime.store
        self.driver.drive(lambda: store.header(saga).status in TERMINAL, f"saga {saga}")

    @rule()
    @guarded
    def drive_all(self) -> None:
        self._drive_all()

    @precondition(lambda self: not self.lab.held() and bool(self._in_flight() or self._failed()))
    @rule(later=st.sampled_from([0.0, 1.0, 4.0, 6.0, 30.0]),
          first=st.sampled_from(["recover", "cancel", "retry"]), data=st.data())
    @guarded
    def crash_and_recover(self, later: float, first: str, data: st.DataObject) -> None:
        """Close the runtime with whatever is in flight (at rest: only lost commands awaiting
        their time-out, and backoffs), reopen the store in a new runtime whose clock is
        ``later`` seconds on — maybe cancel a saga in flight or retry a failed one there first,
        which adopts just that saga (§5) — then recover: every other saga in flight is adopted
        and put back in motion (§4.7)."""
        now = self.env.now()
        self.env.close()
        self.env = self._open(now + later)
        self.driver = Driver(self.env, self.lab)
        runtime = self.env.runtime
        candidates = {"cancel": self._in_flight(), "retry": self._failed()}.get(first, [])
        acted = data.draw(st.sampled_from(candidates), label=first) if candidates else None
        if acted is not None and first == "cancel":
            runtime.cancel(acted)
        elif acted is not None:
            self.retries[acted] += 1
            runtime.retry(acted)
        orphans = set(runtime.store.in_flight()) - {acted}
        assert set(runtime.recover()) == orphans
        self.driver.rest()

    @precondition(lambda self: bool(self._failed()))
    @rule(data=st.data())
    @guarded
    def retry_failed(self, data: st.DataObject) -> None:
        saga = data.draw(st.sampled_from(self._failed()), label="saga")
        self.retries[saga] += 1
        self.env.runtime.retry(saga)
        self.driver.rest()

    @precondition(lambda self: bool(self._in_flight()))
    @rule(data=st.data())
    @guarded
    def cancel_in_flight(self, data: st.DataObject) -> None:
        """§4.4: cancel a saga in flight (the audit and the history oracle judge what follows:
        before the pivot succeeded it rolls back as at its deadline, else it carries on)."""
        saga = data.draw(st.sampled_from(self._in_flight()), label="saga")
        self.env.runtime.cancel(saga)
        self.driver.rest()

    @rule(saga=sagas)
    @guarded
    def cancel_any(self, saga: str) -> None:
        """§4.4: cancelling a terminal saga does nothing."""
        before = self.env.runtime.store.header(saga)
        self.env.runtime.cancel(saga)
        self.driver.rest()
        if before.status in TERMINAL:
            assert self.env.runtime.store.header(saga).last_seq == before.last_seq

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    @guarded
    def store_holds_every_saga_and_each_keeps_the_guarantees(self) -> None:
        self._check(expect_terminal=False)

    def _check(self, *, expect_terminal: bool) -> None:
        store = self.env.runtime.store
        assert sorted(h.saga_id for h in store.list()) == sorted(self.cases), \
            "the store holds exactly the sagas started"
        effects = list(self.lab.effects)
        for saga_id, case in self.cases.items():
            record = store.load(saga_id)
            header, events = record.header, record.events
            where = f"saga {saga_id} ({case!r}, retried {self.retries[saga_id]}x)"
            problems = [v.format() for v in audit_saga(
                record, now=self.env.now(), flow=flow_of(case.flow),
                expect_terminal=expect_terminal)]
            problems += check_history(case.flow, events, header.status, header.reason)
            if not any(e.type in ("saga.cancelled", "saga.deadline_exceeded") for e in events):
                problems += check_plan(case.flow, case.plan, self.retries[saga_id], events,
                                       header.status, header.reason)
            problems += effects_problems(case.flow, saga_id, header.status, effects)
            assert not problems, f"{where}: " + "; ".join(problems) + "\n" + "\n".join(
                f"  {e.seq} {e.type} {e.step or ''} {e.attempt or ''} {e.data}" for e in events)

    # -- helpers --------------------------------------------------------------------------------
    def _in_flight(self) -> list[str]:
        return sorted(self.env.runtime.store.in_flight())

    def _failed(self) -> list[str]:
        return sorted(h.saga_id for h in self.env.runtime.store.list(status="failed"))

    def _drive_all(self) -> None:
        store = self.env.runtime.store
        self.driver.drive(lambda: not store.in_flight() and not self.lab.held(), "the runtime")

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._drive_all()
                self._check(expect_terminal=True)
        finally:
            self.lab.stop_holding()
            self.env.runtime.wait_idle(5.0)  # after a failure (or an aborted example): settle
            self.env.close()
            shutil.rmtree(self.dir, ignore_errors=True)


SETTINGS = settings(
    max_examples=200 if os.environ.get("CI") else 30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                          HealthCheck.filter_too_much],
    # no explain phase: on a failure it re-runs hundreds of variants (minutes) for little
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

# on a failure, shrinking and explaining take longer than the suite's default timeout
TestEngineStateful = pytest.mark.timeout(900)(EngineMachine.TestCase)
TestEngineStateful.settings = SETTINGS


# -- the reference model itself, on DESIGN.md's examples ------------------------------------------
PLAIN, GAPS, PIVOT_MID, PIVOT_FIRST = FLOWS[0], FLOWS[1], FLOWS[2], FLOWS[3]


@pytest.mark.parametrize("spec, outcomes, compensations, expected", [
    (PLAIN, {}, {}, ("completed", None, ())),
    (PLAIN, {"c": "rejected"}, {}, ("compensated", None, ("b", "a"))),
    (PLAIN, {"c": "exhausted"}, {}, ("compensated", None, ("c", "b", "a"))),
    (PLAIN, {"a": "rejected"}, {}, ("compensated", None, ())),
    (PLAIN, {"c": "rejected"}, {"a": "exhausted"}, ("failed", "compensation_failed", ("b",))),
    (PLAIN, {"c": "rejected"}, {"b": "exhausted"}, ("failed", "compensation_failed", ())),
    (GAPS, {"d": "exhausted"}, {}, ("compensated", None, ("d", "b"))),
    (GAPS, {"c": "rejected"}, {}, ("compensated", None, ("b",))),
    (PIVOT_MID, {"p": "rejected"}, {}, ("compensated", None, ("b", "a"))),
    (PIVOT_MID, {"p": "exhausted"}, {}, ("failed", "pivot_unknown", ())),
    (PIVOT_MID, {"z": "rejected"}, {}, ("failed", "forward_recovery", ())),
    (PIVOT_MID, {"z": "exhausted"}, {}, ("failed", "forward_recovery", ())),
    (PIVOT_FIRST, {"p": "rejected"}, {}, ("compensated", None, ())),
    (PIVOT_FIRST, {"p": "exhausted"}, {}, ("failed", "pivot_unknown", ())),
])
def test_reference_model_follows_design_4_2_and_4_3(spec, outcomes, compensations, expected):
    prediction = predict(spec, outcomes, compensations)
    assert (prediction.status, prediction.reason, prediction.compensated) == expected


@pytest.mark.parametrize("plan, retries, expected", [
    ({}, 0, [("action", "a", "succeeded", 1), ("action", "b", "succeeded", 1),
             ("action", "c", "succeeded", 1)]),
    # a reply lost after the action ran: the retry is answered from the inbox
    ({("action", "b"): ("run_then_drop",)}, 0,
     [("action", "a", "succeeded", 1), ("action", "b", "succeeded", 2),
      ("action", "c", "succeeded", 1)]),
    # a late success during the backoff ends the step with its own attempt
    ({("action", "b"): ("late_ok",)}, 0,
     [("action", "a", "succeeded", 1), ("action", "b", "succeeded", 1),
      ("action", "c", "succeeded", 1)]),
    # ... and as well once attempt 2 is under way (attempt 2 was started)
    ({("action", "b"): ("later_reject",)}, 0,
     [("action", "a", "succeeded", 1), ("action", "b", "rejected", 2),
      ("compensation", "a", "succeeded", 1)]),
    # late on the last attempt: it ran out; compensated with a and b
    ({("action", "b"): ("error", "late_ok")}, 0,
     [("action", "a", "succeeded", 1), ("action", "b", "exhausted", 2),
      ("compensation", "b", "succeeded", 1), ("compensation", "a", "succeeded", 1)]),
    # a compensation parks; `saga retry` goes on with attempt 3
    ({("action", "c"): ("reject",), ("compensation", "b"): ("error", "drop", "error")}, 1,
     [("action", "a", "succeeded", 1), ("action", "b", "succeeded", 1),
      ("action", "c", "rejected", 1), ("compensation", "b", "exhausted", 2),
      ("compensation", "b", "succeeded", 4), ("compensation", "a", "succeeded", 1)]),
])
def test_reference_model_predicts_visits_from_the_plan(plan, retries, expected):
    assert list(predict_from_plan(PLAIN, plan, retries).visits) == expected
