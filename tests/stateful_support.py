"""The stateful engine self-test's oracle, service and driver (``tests/test_engine_stateful.py``).

Three parts:

* **The reference model** — :class:`ModelSaga`, :func:`predict` and :func:`predict_from_plan`:
  DESIGN.md §4.2–4.3 (which step is compensated, in which order, how a saga ends) and, for the
  plan level, the service contract of §3 (the idempotent inbox, what each fault does) and the late
  replies of §4.5, written out plainly. It never calls :mod:`sagas.language.compiler`,
  :mod:`sagas.language.plan` or :mod:`sagas.engine.core`, so a bug in the engine's recovery
  rules cannot hide in the oracle.
* **The service** — :class:`Probe` (one object per pool instance, re-created on every runtime
  restart) over a :class:`Lab` that outlives restarts: a handler succeeds unless the attempt is
  scripted *late*, in which case it is held until its attempt has timed out (``late_*``: the
  reply arrives during the backoff) or until the saga has moved on (``later_*``: the next attempt
  is under way, queued behind the held one), so its reply really arrives late; every handler
  call that returned (an *effect*) is recorded.
* **The driver** — :class:`Driver` moves virtual time timer by timer and waits between timers
  for the runtime to come to *rest*: nothing in flight but handlers held on purpose that are not
  due for release yet (those that are are released, so their late replies go out).

Determinism: every saga has a service instance of its own (:data:`SAGA_IDS` are chosen so, see
:func:`saga_ids`), timers fire only at rest, and a held reply is released at a point fixed by
the saga's own log, before any later timer fires. So a saga's log depends on the rules the test
applied, never on thread scheduling.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from actors import Rejected, Service, handles
from sagas import Flow
from sagas.events import Event
from sagas.testing import SagaTestEnvironment
from tests.support import StepSpec, eventually, make_flow

__all__ = [
    "INJECTED",
    "KINDS",
    "LATE",
    "POOL",
    "SAGA_IDS",
    "TERMINAL",
    "Driver",
    "FlowSpec",
    "Lab",
    "ModelSaga",
    "Plan",
    "PlanPrediction",
    "Prediction",
    "Probe",
    "Visit",
    "check_history",
    "check_plan",
    "effects_problems",
    "flow_of",
    "kind_of",
    "predict",
    "predict_from_plan",
    "saga_ids",
    "visits_of",
]

TERMINAL = ("completed", "compensated", "failed")

# What can happen to one attempt, besides succeeding. The first five go through ``env.faults``
# (actors/_faults.py); the late ones are the Probe's: the handler runs, but is held until the
# attempt has timed out (``late_*``) or until the saga has moved on past it — the next attempt
# started, or the step was left (``later_*``) — then answers: succeeds / raises Rejected /
# raises an error.
INJECTED = ("error", "reject", "drop", "run_then_drop", "duplicate")
LATE = {"late_ok": ("succeeded", "timed_out"), "late_reject": ("rejected", "timed_out"),
        "late_error": ("error", "timed_out"), "later_ok": ("succeeded", "moved_on"),
        "later_reject": ("rejected", "moved_on")}
KINDS = (*INJECTED, *LATE)
_LATE_OUTCOME = {kind: outcome for kind, (outcome, _) in LATE.items()}

# A fault plan: (phase, step) -> the kinds of attempts 1, 2, ... (later attempts succeed).
Plan = Mapping[tuple[str, str], tuple[str, ...]]

POOL = 6  # service instances, and sagas per example: one instance each


def saga_ids(count: int = POOL) -> tuple[str, ...]:
    """``count`` saga ids routed to distinct instances of a ``count``-instance pool
    (``crc32(saga_id) % count``, actors/_pool.py), so no saga waits behind another's held
    handler."""
    ids: list[str] = []
    for n in range(count):
        k = 0
        while zlib.crc32(f"saga-{n}-{k}".encode()) % count != n:
            k += 1
        ids.append(f"saga-{n}-{k}")
    return tuple(ids)


SAGA_IDS = saga_ids()


# -- flows ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowSpec:
    """The shape of a flow, as the reference model sees it: steps (name, declares a
    compensation), the pivot's index, the retry budget, and what happens when it runs out."""

    name: str
    steps: tuple[tuple[str, bool], ...]
    pivot: int | None = None
    attempts: int = 2
    retry_forever: bool = False  # on_compensation_failure: retry_forever (else park)
    deadline: str | None = None
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.pivot is not None:
            assert not any(comp for _, comp in self.steps[self.pivot:]), \
                "neither the pivot nor a later step may declare a compensation"

    def step(self, index: int) -> str:
        return self.steps[index][0]

    def compensable(self, index: int) -> bool:
        return self.steps[index][1]

    def targets(self) -> tuple[tuple[str, str], ...]:
        """Every (phase, step) that can be attempted: the actions, and the compensations
        declared."""
        return tuple([("action", name) for name, _ in self.steps]
                     + [("compensation", name) for name, comp in self.steps if comp])

    def __repr__(self) -> str:
        return self.name


@cache
def flow_of(spec: FlowSpec) -> Flow:
    """The flow ``spec`` describes (over the ``svc`` service, ``POOL`` instances); checked to
    agree with ``spec``, so the model and the engine look at the same flow."""
    flow = make_flow(
        *[StepSpec(name, compensation=comp, pivot=i == spec.pivot)
          for i, (name, comp) in enumerate(spec.steps)],
        name=spec.name, attempts=spec.attempts, backoff="1s", multiplier=2, max_backoff="1m",
        jitter=spec.jitter, timeout="5s", deadline=spec.deadline, instances=POOL,
        on_compensation_failure="retry_forever" if spec.retry_forever else "park")
    assert [(s.name, s.compensation is not None) for s in flow.steps] == list(spec.steps)
    assert flow.pivot_index == spec.pivot
    return flow


# -- the reference model of DESIGN.md §4.2–4.3 ---------------------------------------------------
class ModelSaga:
    """One saga as DESIGN.md §4.2–4.3 say it goes, fed the final outcome of each *visit* (the
    attempts of one step's action or compensation in a row): ``succeeded``, ``rejected`` (an
    action's business "no") or ``exhausted`` (attempts ran out on errors or time-outs, or a
    deadline or cancel cut them short: the effect may have happened).

    :meth:`current` says which (phase, step) must be attempted next, so a log can be checked
    visit by visit; :meth:`retry` is ``saga retry`` on a ``failed`` saga.
    """

    def __init__(self, spec: FlowSpec):
        self.spec = spec
        self.phase = "action"
        self.index = 0
        self.status = "running"
        self.reason: str | None = None
        self.outcomes: dict[int, str] = {}  # step index -> final outcome of its action
        self.pending: list[int] = []  # compensations still to run, in the order they run
        self.compensated: list[str] = []  # compensations that succeeded, in order
        self.visits: list[tuple[str, str, str]] = []

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def current(self) -> tuple[str, str] | None:
        """The (phase, step) being attempted; None once the saga has ended."""
        return None if self.terminal else (self.phase, self.spec.step(self.index))

    def feed(self, outcome: str) -> None:
        """The visit of :meth:`current` ended with ``outcome``."""
        assert not self.terminal, "a terminal saga attempts nothing"
        self.visits.append((self.phase, self.spec.step(self.index), outcome))
        if self.phase == "action":
            self._action_ended(outcome)
        else:
            self._compensation_ended(outcome)

    def retry(self) -> None:
        """``saga retry``: a failed saga resumes where it stopped — the parked compensation, the
        step of forward recovery, or the pivot whose outcome was unknown."""
        assert self.status == "failed", "only a failed saga is re-driven"
        self.status = "compensating" if self.phase == "compensation" else "running"
        self.reason = None

    def _action_ended(self, outcome: str) -> None:
        i, pivot = self.index, self.spec.pivot
        self.outcomes[i] = outcome
        if outcome == "succeeded":
            if i + 1 < len(self.spec.steps):
                self.index = i + 1
            else:
                self._end("completed")
        elif pivot is not None and i > pivot:
            # §4.3: after the pivot succeeded recovery is forward; a step that is rejected or
            # runs out ends the saga failed, for `saga retry` to drive it on
            self._end("failed", "forward_recovery")
        elif i == pivot and outcome == "exhausted":
            # §4.3: the pivot's outcome is unknown: failed, nothing compensated
            self._end("failed", "pivot_unknown")
        else:
            # §4.2: compensate every step whose action was started and whose final outcome was
            # not `rejected` (the failing one included when it ran out), that declares a
            # compensation — one at a time, in reverse step order
            self.pending = [j for j in range(i, -1, -1)
                            if self.spec.compensable(j) and self.outcomes[j] != "rejected"]
            self._next_compensation()

    def _compensation_ended(self, outcome: str) -> None:
        if outcome == "succeeded":
            self.compensated.append(self.spec.step(self.pending.pop(0)))
            self._next_compensation()
        elif outcome == "exhausted":
            assert not self.spec.retry_forever, "retry_forever never runs out"
            # park (§4.2): the remaining compensations wait for `saga retry`
            self._end("failed", "compensation_failed")
        else:
            raise ValueError(f"a compensation ends succeeded or exhausted, not {outcome!r}")

    def _next_compensation(self) -> None:
        if self.pending:
            self.phase, self.index, self.status = "compensation", self.pending[0], "compensating"
        else:
            self._end("compensated")

    def _end(self, status: str, reason: str | None = None) -> None:
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Prediction:
    status: str
    reason: str | None
    compensated: tuple[str, ...]


def predict(spec: FlowSpec, outcomes: Mapping[str, str],
            compensations: Mapping[str, str] | None = None) -> Prediction:
    """How a saga of ``spec`` ends (no retries): ``outcomes[step]`` is the final outcome of a
    step's action, ``compensations[step]`` of its compensation; a step not named succeeds."""
    model = ModelSaga(spec)
    while (current := model.current()) is not None:
        phase, step = current
        given = outcomes if phase == "action" else (compensations or {})
        model.feed(given.get(step, "succeeded"))
    return Prediction(model.status, model.reason, tuple(model.compensated))


# -- the plan level: what each attempt's fault makes of a visit ------------------------------------
def kind_of(plan: Plan, phase: str, step: str, attempt: int) -> str:
    kinds = plan.get((phase, step), ())
    return kinds[attempt - 1] if attempt <= len(kinds) else "ok"


class ServiceModel:
    """The idempotent inbox of DESIGN.md §3, per saga: an action's definitive reply (success or
    `Rejected`) is kept under its key and answers every later delivery without running the
    handler; errors are not kept; a compensation's success is kept under its own key. (The
    tombstone is left out: no saga re-drives an action after its compensation ran.)"""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str, int], str] = {}
        self.generation: dict[str, int] = {}

    def fresh_key(self, step: str) -> None:
        """`saga retry` of a rejected action asks the service anew (the "no" stays under the old
        key)."""
        self.generation[step] = self.generation.get(step, 0) + 1

    def deliver(self, phase: str, step: str, kind: str) -> tuple[str, bool]:
        """The outcome of one delivery that reaches the service, and whether the handler ran."""
        ran = {"reject": "rejected", "error": "error", **_LATE_OUTCOME}.get(kind, "succeeded")
        key = (phase, step, self.generation.get(step, 0) if phase == "action" else 0)
        kept = self.kept.get(key)
        if kept is not None:
            return kept, False
        if ran == "succeeded" or (ran == "rejected" and phase == "action"):
            self.kept[key] = ran
        return ran, True


@dataclass(frozen=True)
class PlanPrediction:
    visits: tuple[tuple[str, str, str, int], ...]  # (phase, step, outcome, last attempt)
    status: str
    reason: str | None
    compensated: tuple[str, ...]


def predict_from_plan(spec: FlowSpec, plan: Plan, retries: int = 0) -> PlanPrediction:
    """Every visit of a saga of ``spec`` under fault ``plan`` — its final outcome and last
    attempt — and how it ends, when nothing cuts attempts short (no deadline, no cancel) and
    ``saga retry`` is applied ``retries`` times while it is failed.

    Attempt by attempt (DESIGN.md §3, §4.5; the fault kinds of actors/_faults.py): ``drop`` never
    reaches the service and times out; ``run_then_drop`` runs (its reply is kept by the inbox)
    but the reply is lost; ``duplicate`` answers twice, the first reply counts; a late kind runs
    the handler but answers only after the attempt timed out: a late success (or an action's late
    `Rejected`) ends the visit — with its own attempt, and ``later_*`` once the next attempt was
    sent (its reply, answered from the inbox, is then ignored) — anything else is ignored, and
    after the last attempt nothing can end it. An inbox hit answers at once, whatever the fault.
    """
    model = ModelSaga(spec)
    service = ServiceModel()
    visits: list[tuple[str, str, str, int]] = []
    first, last, left = 1, 0, retries
    while True:
        current = model.current()
        if current is None:
            if model.status != "failed" or left == 0:
                break
            left -= 1
            if model.phase == "action" and model.visits[-1][2] == "rejected":
                service.fresh_key(model.spec.step(model.index))
            model.retry()
            first = last + 1  # a re-driven visit numbers its attempts on
            continue
        phase, step = current
        outcome, last = _visit(spec, plan, service, phase, step, first)
        visits.append((phase, step, outcome, last))
        model.feed(outcome)
        first = 1
    return PlanPrediction(tuple(visits), model.status, model.reason, tuple(model.compensated))


def _visit(spec: FlowSpec, plan: Plan, service: ServiceModel, phase: str, step: str,
           first: int) -> tuple[str, int]:
    forever = phase == "compensation" and spec.retry_forever
    attempt = first
    while True:
        kind = kind_of(plan, phase, step, attempt)
        last = not forever and attempt - first + 1 >= spec.attempts
        reply = late = None
        if kind != "drop":
            outcome, ran = service.deliver(phase, step, kind)
            if kind in LATE and ran:
                late = outcome
            elif kind != "run_then_drop":
                reply = outcome
        if reply == "succeeded" or (reply == "rejected" and phase == "action"):
            return reply, attempt
        # an error, a compensation's rejection or a time-out: a failed attempt
        if last:
            return "exhausted", attempt
        if late == "succeeded" or (late == "rejected" and phase == "action"):
            return late, attempt + (LATE[kind][1] == "moved_on")
        attempt += 1


# -- reading a log -------------------------------------------------------------------------------
_STARTED = {"step.started": "action", "compensation.started": "compensation"}
_SUCCEEDED = {"step.succeeded": "action", "compensation.succeeded": "compensation"}
_TERMINAL_EVENTS = ("saga.completed", "saga.compensated", "saga.failed")


@dataclass
class Visit:
    """The attempts of one (phase, step) in a row, within one epoch (a ``saga.retried`` opens
    the next); ``outcome`` None while it is in progress."""

    phase: str
    step: str
    epoch: int
    last_attempt: int
    outcome: str | None = None

    def key(self) -> tuple[str, str, str, int]:
        return self.phase, self.step, self.outcome or "-", self.last_attempt


def visits_of(events: Iterable[Event]) -> tuple[list[Visit], bool]:
    """The visits of a log, each with its final outcome — ``succeeded`` (a ``*.succeeded`` was
    recorded), ``rejected`` (``step.failed`` of kind ``rejected``), else ``exhausted`` once the
    visit is over (another began, or the epoch ended) — and whether the last epoch ended."""
    visits: list[Visit] = []
    epoch, ended = 0, False
    for event in events:
        kind = event.type
        current = visits[-1] if visits else None
        if kind == "saga.retried":
            epoch, ended = epoch + 1, False
        elif kind in _TERMINAL_EVENTS:
            ended = True
        elif kind in _STARTED:
            phase, step = _STARTED[kind], event.step or ""
            if current is None or (current.epoch, current.phase, current.step) != \
                    (epoch, phase, step):
                visits.append(Visit(phase, step, epoch, event.attempt or 0))
            visits[-1].last_attempt = event.attempt or 0
        elif current is not None and event.step == current.step and (
                _SUCCEEDED.get(kind) == current.phase):
            current.outcome = "succeeded"
        elif current is not None and event.step == current.step and current.phase == "action" \
                and kind == "step.failed" and event.data.get("kind") == "rejected":
            current.outcome = "rejected"
    for visit in visits[:-1] if not ended else visits:
        if visit.outcome is None:
            visit.outcome = "exhausted"
    return visits, ended


def check_history(spec: FlowSpec, events: Sequence[Event], status: str,
                  reason: str | None) -> list[str]:
    """Problems with a log, judged by the model fed the outcomes the log itself shows: each visit
    is of the (phase, step) the model expects next (so compensations are exactly those §4.2
    requires, in reverse order), and the saga's status and reason are the model's."""
    model = ModelSaga(spec)
    visits, ended = visits_of(events)
    epoch = 0
    for n, visit in enumerate(visits):
        if visit.epoch != epoch:
            if model.status != "failed":
                return [f"visit {n}: retried while the model has it {model.status}"]
            model.retry()
            epoch = visit.epoch
        expected = model.current()
        if expected != (visit.phase, visit.step):
            return [f"visit {n}: the engine attempts the {visit.phase} of {visit.step!r}; the "
                    f"model expects {_describe(expected)} (compensated so far: "
                    f"{model.compensated}, outcomes: {model.visits})"]
        if visit.outcome is None:
            break
        model.feed(visit.outcome)
    if ended or status in TERMINAL:
        if (status, reason) != (model.status, model.reason):
            return [f"the saga ended {status} ({reason}); from the outcomes in its log "
                    f"{model.visits} the model says {model.status} ({model.reason}), "
                    f"compensating {model.compensated}"]
    elif status != model.status:
        return [f"the saga is {status}; the model says {model.status}"]
    return []


def check_plan(spec: FlowSpec, plan: Plan, retries: int, events: Sequence[Event],
               status: str, reason: str | None) -> list[str]:
    """Problems with a log, judged by the model run on the fault plan alone (see
    :func:`predict_from_plan`): the visits (outcome and last attempt) so far are the predicted
    ones, and a saga that ended ended as predicted."""
    predicted = predict_from_plan(spec, plan, retries)
    visits, ended = visits_of(events)
    done = [v.key() for v in visits if v.outcome is not None]
    if ended or status in TERMINAL:
        if done != list(predicted.visits) or (status, reason) != (predicted.status,
                                                                   predicted.reason):
            return [f"ended {status} ({reason}) after visits {done}; from the plan the model "
                    f"predicts {predicted.status} ({predicted.reason}) after "
                    f"{list(predicted.visits)}"]
    elif done != list(predicted.visits[:len(done)]):
        return [f"visits so far {done}; from the plan the model predicts "
                f"{list(predicted.visits)}"]
    return []


def _describe(expected: tuple[str, str] | None) -> str:
    return "nothing (the saga has ended)" if expected is None else \
        f"the {expected[0]} of {expected[1]!r}"


# -- the service ---------------------------------------------------------------------------------
AttemptKey = tuple[str, str, str, int]  # (saga_id, phase, step, attempt)
HOLD_LIMIT = 30.0  # a held handler gives up after this long (a test bug, reported as an error)


class Lab:
    """What outlives a runtime restart: the late script, the handlers held now, the effects.

    Thread-safe: handlers run on the service actors' threads.
    """

    def __init__(self) -> None:
        # attempt -> what its held handler answers, and when it is released (see LATE)
        self.late: dict[AttemptKey, tuple[str, str]] = {}
        self.effects: list[tuple[str, str, str]] = []  # (saga_id, phase, step), in order
        self._holds: dict[AttemptKey, threading.Event] = {}
        self._lock = threading.Lock()
        self._holding = True

    def handle(self, command: Any) -> dict[str, Any]:
        key: AttemptKey = (command.saga_id, command.phase, command.step, command.attempt)
        late, _ = self.late.get(key, (None, None))
        if late is not None:
            release = threading.Event()
            with self._lock:
                if self._holding:
                    self._holds[key] = release
                else:
                    release.set()
            if not release.wait(HOLD_LIMIT):
                raise RuntimeError(f"held handler {key} was never released")
            if late == "rejected":
                raise Rejected(f"{command.step} says no, late")
            if late == "error":
                raise RuntimeError(f"{command.step} broke, late")
        with self._lock:
            self.effects.append((command.saga_id, command.phase, command.step))
        return {"step": command.step, "attempt": command.attempt}

    def held(self) -> list[AttemptKey]:
        with self._lock:
            return list(self._holds)

    def release(self, key: AttemptKey) -> None:
        with self._lock:
            release = self._holds.pop(key, None)
        if release is not None:
            release.set()

    def stop_holding(self) -> None:
        """Release every held handler and hold no more (before closing a runtime that may
        still be busy: a handler held then would keep its actor from stopping)."""
        with self._lock:
            self._holding = False
            held, self._holds = list(self._holds.values()), {}
        for release in held:
            release.set()


class Probe(Service):
    """Every step's service: ``do`` (action) and ``undo`` (compensation), both through the lab."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        return self.lab.handle(command)

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return self.lab.handle(command)


def effects_problems(spec: FlowSpec, saga_id: str, status: str,
                     effects: Sequence[tuple[str, str, str]]) -> list[str]:
    """Semantic atomicity, on what the handlers did: a compensated saga undid every effect it
    had (of the steps that declare a compensation) after it happened; a completed saga undid
    nothing."""
    mine = [(phase, step) for s, phase, step in effects if s == saga_id]
    if status == "completed" and any(phase == "compensation" for phase, _ in mine):
        return [f"completed, yet compensations ran: {mine}"]
    if status == "compensated":
        for name, comp in spec.steps:
            done = [n for n, effect in enumerate(mine) if effect == ("action", name)]
            if comp and done and ("compensation", name) not in mine[done[-1]:]:
                return [f"compensated, yet the effect of {name!r} was never undone: {mine}"]
    return []


# -- the driver ----------------------------------------------------------------------------------
REST_LIMIT = 10.0  # seconds of real time to come to rest before the test gives up


class Driver:
    """Moves an environment's virtual time, timer by timer, waiting for rest in between."""

    def __init__(self, env: SagaTestEnvironment, lab: Lab):
        self.env = env
        self.lab = lab

    def rest(self) -> None:
        """Wait until nothing is in flight but held handlers not yet due for release; release
        (let the late reply go) every held handler that is due (see :data:`LATE`)."""
        activity = self.env.runtime.activity

        def at_rest() -> bool:
            for key in self.lab.held():
                if self._due(key):
                    self.lab.release(key)
            held = len(self.lab.held())
            if activity.count == held:
                return True
            # with nothing held, rest is idle: an event to wait on; a held handler keeps the
            # count above zero, and the activity announces only zero: then the count is polled
            return not held and activity.wait_idle(0.01)

        eventually(at_rest, REST_LIMIT, interval=0.0005,
                   what=lambda: f"the runtime at rest ({activity.count} messages in flight, "
                                f"held: {self.lab.held()})")

    def _due(self, key: AttemptKey) -> bool:
        """Whether a held handler's attempt has timed out (and, for ``later_*``, whether the
        saga has since started another attempt or ended)."""
        saga_id, phase, step, attempt = key
        kind = "step.timed_out" if phase == "action" else "compensation.timed_out"
        events = self.env.log.events(saga_id)
        timed_out = next((n for n, e in enumerate(events)
                          if e.type == kind and e.step == step and e.attempt == attempt), None)
        if timed_out is None:
            return False
        if self.lab.late[key][1] == "timed_out":
            return True
        return any(e.type.endswith(".started") or e.type in _TERMINAL_EVENTS
                   for e in events[timed_out + 1:])

    def fire_next(self) -> bool:
        """Fire the next due timer(s) and come to rest; False if no timer is pending."""
        due = self.env.runtime.scheduler.next_due()
        if due is None:
            return False
        self.env.clock.advance_to(max(due, self.env.now()))
        self.rest()
        return True

    def advance(self, seconds: float) -> None:
        """Move virtual time ``seconds`` on, firing each timer due by then at rest."""
        target = self.env.now() + seconds
        while (due := self.env.runtime.scheduler.next_due()) is not None and due <= target:
            self.fire_next()
        self.env.clock.advance_to(max(target, self.env.now()))
        self.rest()

    def drive(self, done: Callable[[], bool], what: str, limit: int = 10_000) -> None:
        """Fire timers until ``done()``; a saga that can no longer move is a failure (§4.1)."""
        for _ in range(limit):
            if done():
                return
            if not self.fire_next():
                raise AssertionError(f"{what} is stuck: nothing in flight, no timer pending "
                                     f"(held: {self.lab.held()})")
        raise AssertionError(f"{what} did not end after {limit} timers")
