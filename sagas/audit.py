"""Auditing saga logs against the guarantees of DESIGN.md §4 (``saga audit``).

The audit reads each saga's log as a store holds it and checks, rule by rule, that the history
is one the engine is allowed to produce: seqs from 1 without gaps, one outcome per epoch and
nothing after it, compensations exactly where §4.2–4.3 put them and in reverse order, attempts
with at most one time-out and one reply, an end that follows from the history, a header that
agrees with the log. It is pure: no actors, no threads, no IO beyond the store object it is
given, and the clock only as a default for ``now``.

::

    from sagas.audit import audit_store

    for violation in audit_store(store, include_running=False):
        print(violation.format())   # "<saga_id> seq <n>: <rule>: <message>"

**The parsed view.** A log is cut into *epochs*: the first opens at ``saga.started``, each
``saga.retried`` opens another, and each ends at its terminal event. Within an epoch, the
``*.started`` events for one (phase, step) in a row form a *visit* of that state; a visit ends
at the next visit or at the epoch's terminal event. Its *trigger* is the compiled machine's
(:mod:`sagas.language.compiler`): ``succeeded``, ``rejected`` (an action's business "no"), or
``exhausted`` when it ended without either; ``abandoned`` when it ended with an attempt still
awaiting its reply, ``parked`` when a ``definition_unavailable`` failure cut it short. Events
after a terminal event are reported once (``after_terminal``...) and otherwise left out of the
view, so one corruption is reported by the rule it breaks, not by every rule downstream.

**Rules** (:data:`RULES` lists them with one line each) are small functions over that view;
the ones that need the flow (steps, order, pivot, compensations, retry policies) rebuild it from
the saga's stored definition text — a definition that no longer parses is itself reported, and
those rules are then skipped for that saga.

**In-flight sagas.** :func:`audit_store` with ``include_running=True`` (the CLI's default)
audits the history so far of a saga still in flight and accepts it being in flight while a live
runtime owns it; one whose owner is gone (or was never set) is reported ``orphaned``, since only
``saga resume`` will finish it. With ``include_running=False`` (a test after draining, or a
check after ``saga resume``), every saga not ended is reported ``not_terminal``. Either way a
``retry_forever`` saga compensating for longer than ``stuck_after`` seconds is reported
``stuck_retry_forever``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import pairwise
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import FlowErrors, UnknownSaga
from .events import EVENT_TYPES, TERMINAL_EVENTS, Event
from .language.compiler import CompiledFlow, compensation_state, compile_flow, step_state
from .language.loader import parse_flow
from .language.model import Flow, Step, format_duration
from .stores import partition_of

if TYPE_CHECKING:
    from typing import Protocol

    from .stores import EventLog, Ownership, SagaRecord

    class _AuditedStore(EventLog, Ownership, Protocol):
        """The store's facets an audit uses: the sagas' logs, and whether owners live."""

__all__ = ["RULES", "Violation", "audit_saga", "audit_store"]

_DESCRIBED: dict[str, str] = {}
RULES: Mapping[str, str] = MappingProxyType(_DESCRIBED)
"""Every rule's slug with one line saying what it checks, in the order the rules run. Each rule
is registered once, where it is defined (:func:`_rule`)."""

FAILED_REASONS = ("compensation_failed", "pivot_unknown", "forward_recovery",
                  "definition_unavailable")
_STARTED = {"step.started": "action", "compensation.started": "compensation"}
_REPLIES = {"step.succeeded": "action", "step.failed": "action",
            "compensation.succeeded": "compensation", "compensation.failed": "compensation"}
_TIMED_OUT = {"step.timed_out": "action", "compensation.timed_out": "compensation"}
_RETRYING = {"step.retrying": "action", "compensation.retrying": "compensation"}
_ATTEMPT_EVENTS = {**_STARTED, **_REPLIES, **_TIMED_OUT, **_RETRYING}
_SAGA_EVENTS = {"saga.started", "saga.deadline_exceeded", "saga.cancelled", *TERMINAL_EVENTS}
_ABORTS = ("saga.deadline_exceeded", "saga.cancelled")
_GAVE_UP = ("exhausted", "abandoned")  # triggers that mean "ran out": the effect is unknown


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: in saga ``saga_id``, at event ``seq`` (None: the saga as a whole)."""

    saga_id: str
    seq: int | None
    rule: str  # a slug of RULES
    message: str

    def format(self) -> str:
        """``<saga_id> seq <n>: <rule>: <message>`` (``<saga_id>: <rule>: ...`` without seq)."""
        where = self.saga_id if self.seq is None else f"{self.saga_id} seq {self.seq}"
        return f"{where}: {self.rule}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """``{"saga_id", "seq", "rule", "message"}``."""
        return {"saga_id": self.saga_id, "seq": self.seq, "rule": self.rule,
                "message": self.message}


# -- the parsed view ---------------------------------------------------------------------------
@dataclass(eq=False)
class _Visit:
    """A run of ``*.started`` events for one (phase, step) within one epoch, and its outcomes."""

    phase: str
    step: str
    epoch: int
    starts: list[Event] = field(default_factory=list)
    outcomes: list[Event] = field(default_factory=list)  # replies and time-outs, in order
    closed_by: Event | None = None  # the next visit's first start, or the terminal event
    resumed: bool = False  # continues the same state after a saga.retried
    definitive: Event | None = None  # the outcome that ended it: a success, an action's "no"
    answered: set[int] = field(default_factory=set)  # attempts with a reply or a time-out
    attempts: set[int] = field(default_factory=set)  # attempts started

    def add_outcome(self, event: Event) -> None:
        self.outcomes.append(event)
        assert event.attempt is not None
        self.answered.add(event.attempt)
        if self.definitive is None and (
                event.type.endswith(".succeeded")
                or (event.type == "step.failed" and event.data.get("kind") == "rejected")):
            self.definitive = event

    @property
    def first(self) -> Event:
        return self.starts[0]

    @property
    def state(self) -> str:
        return step_state(self.step) if self.phase == "action" else compensation_state(self.step)

    def in_flight(self) -> bool:
        """Whether the latest attempt has neither a reply nor a time-out."""
        return self.starts[-1].attempt not in self.answered

    @property
    def trigger(self) -> str | None:
        """``succeeded``, ``rejected``, ``exhausted``, ``abandoned``, ``parked``; None while
        the visit is still in progress."""
        definitive = self.definitive
        if definitive is not None:
            return "succeeded" if definitive.type.endswith(".succeeded") else "rejected"
        if self.closed_by is None:
            return None
        if _is_unavailable(self.closed_by):
            return "parked"
        return "abandoned" if self.in_flight() else "exhausted"

    def describe(self) -> str:
        what = "compensation" if self.phase == "compensation" else "action"
        return f"{what} of {self.step!r}"


@dataclass(eq=False)
class _Epoch:
    """From ``saga.started`` (or ``saga.retried``) to its terminal event."""

    index: int
    opener: Event | None
    events: list[Event] = field(default_factory=list)  # up to the terminal event included
    after: list[Event] = field(default_factory=list)  # after the terminal event
    terminal: Event | None = None
    visits: list[_Visit] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        if self.terminal is None or self.terminal.type != "saga.failed":
            return None
        reason = self.terminal.data.get("reason")
        return reason if isinstance(reason, str) else None


@dataclass(eq=False)
class _View:
    """A saga's log, cut into epochs, visits and attempts, with its compiled flow (if any)."""

    saga_id: str
    record: SagaRecord
    compiled: CompiledFlow | None
    flow_error: str | None
    now: float
    stuck_after: float
    expect_terminal: bool
    owner_alive: bool | None
    epochs: list[_Epoch] = field(default_factory=list)
    visits: list[_Visit] = field(default_factory=list)
    live: list[Event] = field(default_factory=list)  # events not after a terminal event
    attempts: dict[tuple[str, str, int], list[Event]] = field(default_factory=dict)
    stray: list[Event] = field(default_factory=list)  # outcomes of no visit in progress

    def violation(self, seq: int | None, rule: str, message: str) -> Violation:
        assert rule in RULES, rule
        return Violation(self.saga_id, seq, rule, message)

    def skip(self, event: Event) -> bool:
        """Whether ``event`` belongs to a parallel branch (audited in a view of its own)."""
        if self.compiled is None or not self.compiled.tracks:
            return False
        return event.type.startswith("branch.") or event.step in self.compiled.track_of

    @cached_property
    def sequence(self) -> tuple[Step, ...]:
        """The steps of the main sequence on the route this saga's choices took (a parallel
        block counts as one step; its branches are audited apart)."""
        if self.compiled is None:
            return ()
        route = tuple(e.data.get("branch") for e in self.events if e.type == "choice.made")
        return self.compiled.route_steps(route)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {step.name: index for index, step in enumerate(self.sequence)}

    @property
    def events(self) -> tuple[Event, ...]:
        return self.record.events

    @property
    def ended(self) -> bool:
        return bool(self.epochs) and self.epochs[-1].terminal is not None

    # -- the flow ---------------------------------------------------------------------------
    def step(self, name: str | None) -> Step | None:
        if self.compiled is None or name is None:
            return None
        info = self.compiled.info.get(step_state(name))
        return info.step if info is not None else None

    def index(self, name: str | None) -> int | None:
        """The step's position on the saga's route (None: not on it, or no flow)."""
        if name is None:
            return None
        return self._positions.get(name)

    @property
    def pivot_index(self) -> int | None:
        return next((i for i, step in enumerate(self.sequence) if step.pivot), None)

    def compensable(self, name: str) -> bool:
        """Whether the flow lets ``name`` be compensated: it declares a compensation and comes
        before the pivot."""
        step, index, pivot = self.step(name), self.index(name), self.pivot_index
        return (step is not None and index is not None and step.undoable
                and (pivot is None or index < pivot))

    # -- history ----------------------------------------------------------------------------
    @cached_property
    def pivot_success(self) -> Event | None:
        """The pivot action's success, if it happened (read after parsing)."""
        if self.compiled is None or self.compiled.flow.pivot is None:
            return None
        pivot = self.compiled.flow.pivot.name
        for visit in self.visits:
            if visit.phase == "action" and visit.step == pivot and visit.trigger == "succeeded":
                return visit.definitive
        return None

    def action_before(self, name: str, seq: int) -> _Visit | None:
        """The latest visit of ``name``'s action begun before ``seq``."""
        found = None
        for visit in self.visits:
            if visit.first.seq >= seq:
                break
            if visit.phase == "action" and visit.step == name:
                found = visit
        return found

    def backward(self, visit: _Visit) -> bool:
        """Whether ``visit`` (an action) ended in a way that starts backward recovery."""
        index, pivot = self.index(visit.step), self.pivot_index
        if visit.phase != "action" or index is None or visit.closed_by is None:
            return False
        trigger = visit.trigger
        if pivot is None or index < pivot:
            return trigger in ("rejected", *_GAVE_UP)
        return index == pivot and trigger == "rejected"

    def route_at(self, visit: _Visit) -> tuple[str, ...]:
        """The branches the saga's choices had taken when ``visit`` began."""
        return tuple(e.data.get("branch") for e in self.events
                     if e.type == "choice.made" and e.seq < visit.first.seq)

    def compensation_visits(self) -> list[_Visit]:
        return [v for v in self.visits if v.phase == "compensation"]


def _is_unavailable(event: Event) -> bool:
    return event.type == "saga.failed" and event.data.get("reason") == "definition_unavailable"


def _parse(view: _View) -> None:
    """Fill ``view`` from its record's events (see the module docstring)."""
    epoch: _Epoch | None = None
    visit: _Visit | None = None
    for event in view.events:
        if epoch is None or event.type == "saga.retried":
            if visit is not None and visit.closed_by is None:
                visit.closed_by = event
            opener = event if event.type in ("saga.started", "saga.retried") else None
            epoch = _Epoch(len(view.epochs), opener)
            view.epochs.append(epoch)
            visit = None
        if epoch.terminal is not None:
            epoch.after.append(event)
            continue
        if view.skip(event):
            continue
        epoch.events.append(event)
        view.live.append(event)
        if event.type in TERMINAL_EVENTS:
            epoch.terminal = event
            if visit is not None and visit.closed_by is None:
                visit.closed_by = event
            continue
        phase = _ATTEMPT_EVENTS.get(event.type)
        if phase is None or event.step is None or not _is_attempt(event.attempt):
            continue
        assert event.attempt is not None
        view.attempts.setdefault((phase, event.step, event.attempt), []).append(event)
        if event.type in _STARTED:
            same = visit is not None and (visit.phase, visit.step) == (phase, event.step)
            if visit is None or not same or visit.definitive is not None:
                previous = view.visits[-1] if view.visits else None
                if visit is not None:
                    visit.closed_by = event
                visit = _Visit(phase, event.step, epoch.index)
                visit.resumed = (previous is not None and previous.epoch < epoch.index
                                 and (previous.phase, previous.step) == (phase, event.step)
                                 and previous.trigger != "succeeded")
                epoch.visits.append(visit)
                view.visits.append(visit)
            visit.starts.append(event)
            visit.attempts.add(event.attempt)
        elif event.type in _REPLIES or event.type in _TIMED_OUT:
            current = (visit is not None and (visit.phase, visit.step) == (phase, event.step)
                       and event.attempt in visit.attempts)
            if current:
                assert visit is not None
                visit.add_outcome(event)
            else:
                view.stray.append(event)


def _is_attempt(attempt: object) -> bool:
    return isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1


# -- rules: the log as a sequence --------------------------------------------------------------
Rule = Callable[[_View], Iterator[Violation]]
_RULES: list[Rule] = []  # the main sequence's rules, in the order they run
_BRANCH_RULES: list[Rule] = []  # the rules a parallel branch's own history is held to


def _rule(applies: str, described: Mapping[str, str]) -> Callable[[Rule], Rule]:
    """Register a rule: the slugs it reports, each with one line for :data:`RULES`, and where it
    applies — ``"main"`` (the saga's main sequence), ``"branches"`` (each parallel branch's own
    history) or ``"both"``. The rules of order, abort and end are the main sequence's only: a
    branch is halted (it stops at its next step boundary) rather than cancelled, and its end is
    the block's to decide."""
    def register(check: Rule) -> Rule:
        _DESCRIBED.update(described)
        if applies in ("main", "both"):
            _RULES.append(check)
        if applies in ("branches", "both"):
            _BRANCH_RULES.append(check)
        return check
    return register


@_rule("main", {
    "empty_log": "a saga has at least its saga.started event",
})
def _empty_log(view: _View) -> Iterator[Violation]:
    if not view.events:
        yield view.violation(None, "empty_log", "the saga has no events at all")


@_rule("main", {
    "seq_gap": "seqs count from 1 with no gap",
    "seq_repeat": "no seq appears twice or goes backwards",
})
def _seq_order(view: _View) -> Iterator[Violation]:
    expected = 1
    for event in view.events:
        if event.seq > expected:
            missing = (str(expected) if event.seq == expected + 1
                       else f"{expected}..{event.seq - 1}")
            yield view.violation(event.seq, "seq_gap",
                                 f"seq {missing} missing before this {event.type}")
            expected = event.seq + 1
        elif event.seq < expected:
            yield view.violation(event.seq, "seq_repeat",
                                 f"{event.type} has seq {event.seq} after seq {expected - 1}")
        else:
            expected += 1


@_rule("main", {
    "event_id_repeat": "event ids are unique within a saga",
})
def _event_id_repeat(view: _View) -> Iterator[Violation]:
    seen: dict[str, int] = {}
    for event in view.events:
        if event.event_id in seen:
            yield view.violation(event.seq, "event_id_repeat",
                                 f"event id {event.event_id!r} already used at seq "
                                 f"{seen[event.event_id]}")
        else:
            seen[event.event_id] = event.seq


@_rule("main", {
    "unknown_event": "every event type is one the engine records (README: JSON shapes)",
})
def _unknown_event(view: _View) -> Iterator[Violation]:
    for event in view.events:
        if event.type not in EVENT_TYPES:
            yield view.violation(event.seq, "unknown_event", f"unknown event type {event.type!r}")


@_rule("main", {
    "malformed_event": "step events name a step and an attempt (>= 1); saga events name none",
})
def _malformed_event(view: _View) -> Iterator[Violation]:
    for event in view.events:
        if event.type in _ATTEMPT_EVENTS:
            if event.step is None or not _is_attempt(event.attempt):
                yield view.violation(event.seq, "malformed_event",
                                     f"{event.type} without a step and an attempt >= 1 "
                                     f"(step {event.step!r}, attempt {event.attempt!r})")
        elif event.type in _SAGA_EVENTS and (event.step is not None or event.attempt is not None):
            yield view.violation(event.seq, "malformed_event",
                                 f"{event.type} names step {event.step!r} / attempt "
                                 f"{event.attempt!r}: it concerns the whole saga")


@_rule("main", {
    "first_event": "the first event is saga.started",
})
def _first_event(view: _View) -> Iterator[Violation]:
    if view.events and view.events[0].type != "saga.started":
        first = view.events[0]
        yield view.violation(first.seq, "first_event",
                             f"the log begins with {first.type}, not saga.started")


@_rule("main", {
    "started_twice": "saga.started appears once",
})
def _started_twice(view: _View) -> Iterator[Violation]:
    for event in view.events[1:]:
        if event.type == "saga.started":
            yield view.violation(event.seq, "started_twice", "a second saga.started")


# -- rules: epochs and terminal events ---------------------------------------------------------
@_rule("main", {
    "terminal_twice": "exactly one terminal event per epoch",
    "reply_after_terminal": "reply.ignored is never recorded after a terminal event",
    "after_terminal": "nothing after a terminal event but a saga.retried opening a new epoch",
})
def _after_terminal(view: _View) -> Iterator[Violation]:
    for epoch in view.epochs:
        if epoch.terminal is None:
            continue
        end = f"{epoch.terminal.type} at seq {epoch.terminal.seq}"
        for event in epoch.after:
            if event.type in TERMINAL_EVENTS:
                yield view.violation(event.seq, "terminal_twice",
                                     f"{event.type} after {end}: one outcome per epoch")
            elif event.type == "reply.ignored":
                yield view.violation(event.seq, "reply_after_terminal",
                                     f"reply.ignored for {event.step!r} recorded after {end}")
            else:
                yield view.violation(event.seq, "after_terminal", f"{event.type} after {end}")


@_rule("main", {
    "bad_retry": "saga.retried follows saga.failed and resumes where the saga stopped",
})
def _bad_retry(view: _View) -> Iterator[Violation]:
    for previous, epoch in pairwise(view.epochs):
        retried = epoch.opener
        assert retried is not None  # every epoch but the first opens at saga.retried
        end = previous.terminal
        if end is None or end.type != "saga.failed":
            status = "still in flight" if end is None else TERMINAL_EVENTS[end.type]
            yield view.violation(retried.seq, "bad_retry",
                                 f"saga.retried of a saga that had not failed ({status})")
            continue
        resumed = (retried.data.get("phase"), retried.step)
        stopped = previous.visits[-1] if previous.visits else None
        if stopped is not None and resumed != (stopped.phase, stopped.step):
            yield view.violation(retried.seq, "bad_retry",
                                 f"saga.retried names the {resumed[0]} of {resumed[1]!r} but "
                                 f"the saga stopped at the {stopped.describe()}")
        elif epoch.visits and (epoch.visits[0].phase, epoch.visits[0].step) != resumed:
            yield view.violation(epoch.visits[0].first.seq, "bad_retry",
                                 f"after saga.retried for the {resumed[0]} of {resumed[1]!r}, "
                                 f"the {epoch.visits[0].describe()} started instead")


@_rule("main", {
    "not_terminal": "every saga has ended (include_running=False)",
})
def _not_terminal(view: _View) -> Iterator[Violation]:
    if view.expect_terminal and view.events and not view.ended:
        last = view.events[-1]
        yield view.violation(None, "not_terminal",
                             f"still in flight (last event {last.type} at seq {last.seq})")


@_rule("main", {
    "orphaned": "a saga in flight has a live owner (else `saga resume` must finish it)",
})
def _orphaned(view: _View) -> Iterator[Violation]:
    if view.expect_terminal or view.owner_alive is not False or not view.events or view.ended:
        return
    owner = view.record.header.owner
    who = f"its owner {owner!r} is gone" if owner else "no runtime owns it"
    yield view.violation(None, "orphaned", f"in flight but {who}: `saga resume` finishes it")


def _expected_status(view: _View) -> tuple[str, str | None]:
    """The status and reason the log implies."""
    epoch = view.epochs[-1]
    if epoch.terminal is not None:
        status = TERMINAL_EVENTS[epoch.terminal.type]
        return status, (epoch.terminal.data.get("reason") if status == "failed" else None)
    if epoch.visits:
        phase = epoch.visits[-1].phase
    else:
        phase = epoch.opener.data.get("phase") if epoch.opener is not None else "action"
    return ("compensating" if phase == "compensation" else "running"), None


@_rule("main", {
    'header_status': "the header's status and reason are those of the log",
})
def _header_status(view: _View) -> Iterator[Violation]:
    if not view.events:
        return
    header = view.record.header
    status, reason = _expected_status(view)
    terminal = view.epochs[-1].terminal
    seq = terminal.seq if terminal is not None else view.events[-1].seq
    if header.status != status:
        yield view.violation(seq, "header_status",
                             f"header says {header.status!r}, the log says {status!r}")
    elif header.reason != reason:
        yield view.violation(seq, "header_status",
                             f"header reason {header.reason!r}, the log says {reason!r}")


@_rule("main", {
    'header_seq': "the header's last_seq is the last event's seq",
})
def _header_seq(view: _View) -> Iterator[Violation]:
    last = view.events[-1].seq if view.events else 0
    if view.record.header.last_seq != last:
        yield view.violation(None, "header_seq",
                             f"header last_seq {view.record.header.last_seq}, last event seq "
                             f"{last}")


@_rule("main", {
    "definition_invalid": "the stored flow definition still parses",
    "definition_mismatch": "the stored flow text has the sha256 the header names",
})
def _definition(view: _View) -> Iterator[Violation]:
    if view.flow_error is not None:
        yield view.violation(None, "definition_invalid",
                             f"the stored flow definition no longer loads: {view.flow_error}")
    elif view.compiled is not None and view.compiled.definition != view.record.header.definition:
        yield view.violation(None, "definition_mismatch",
                             f"the stored flow text has sha256 {view.compiled.definition[:12]}..."
                             f", the header names {view.record.header.definition[:12]}...")


# -- rules: attempts ---------------------------------------------------------------------------
@_rule("both", {
    'attempt_not_started': "an attempt's outcome, time-out or retry follows its *.started",
})
def _attempt_not_started(view: _View) -> Iterator[Violation]:
    started: set[tuple[str, str, int]] = set()
    for event in view.live:
        phase = _ATTEMPT_EVENTS.get(event.type)
        if phase is None or event.step is None or not _is_attempt(event.attempt):
            continue
        assert event.attempt is not None
        key = (phase, event.step, event.attempt)
        if event.type in _STARTED:
            started.add(key)
        elif key not in started:
            yield view.violation(event.seq, "attempt_not_started",
                                 f"{event.type} for attempt {event.attempt} of {event.step!r}, "
                                 "which never started")


@_rule("both", {
    "attempt_order": "attempts of a (phase, step) are numbered 1, 2, 3... and start once",
})
def _attempt_order(view: _View) -> Iterator[Violation]:
    last: dict[tuple[str, str], int] = {}
    for visit in view.visits:
        for start in visit.starts:
            assert start.attempt is not None
            key = (visit.phase, visit.step)
            expected = last.get(key, 0) + 1
            if start.attempt != expected:
                yield view.violation(start.seq, "attempt_order",
                                     f"the {visit.describe()} starts attempt {start.attempt}, "
                                     f"expected {expected}")
            last[key] = max(last.get(key, 0), start.attempt)


def _outcomes(view: _View, kinds: Mapping[str, str]) -> Iterator[tuple[tuple[str, str, int],
                                                                          list[Event]]]:
    for key, events in view.attempts.items():
        yield key, [e for e in events if e.type in kinds]


@_rule("both", {
    "two_outcomes": "an attempt has at most one reply outcome (succeeded / failed)",
})
def _two_outcomes(view: _View) -> Iterator[Violation]:
    for (_, step, attempt), replies in _outcomes(view, _REPLIES):
        for extra in replies[1:]:
            yield view.violation(extra.seq, "two_outcomes",
                                 f"{extra.type} for attempt {attempt} of {step!r}, which already "
                                 f"had {replies[0].type} at seq {replies[0].seq}")


@_rule("both", {
    "timed_out_twice": "an attempt times out at most once",
})
def _timed_out_twice(view: _View) -> Iterator[Violation]:
    for (_, step, attempt), timeouts in _outcomes(view, _TIMED_OUT):
        for extra in timeouts[1:]:
            yield view.violation(extra.seq, "timed_out_twice",
                                 f"attempt {attempt} of {step!r} already timed out at seq "
                                 f"{timeouts[0].seq}")


@_rule("both", {
    "timed_out_after_reply": "an attempt never times out after its reply was recorded",
})
def _timed_out_after_reply(view: _View) -> Iterator[Violation]:
    for key, events in view.attempts.items():
        reply = next((e for e in events if e.type in _REPLIES), None)
        if reply is None:
            continue
        for event in events:
            if event.type in _TIMED_OUT and event.seq > reply.seq:
                yield view.violation(event.seq, "timed_out_after_reply",
                                     f"attempt {key[2]} of {key[1]!r} times out after its "
                                     f"{reply.type} at seq {reply.seq}")


@_rule("both", {
    "late_error": "a late error (or compensation rejection) of a timed-out attempt is ignored",
})
def _late_error(view: _View) -> Iterator[Violation]:
    for key, events in view.attempts.items():
        timed_out = next((e for e in events if e.type in _TIMED_OUT), None)
        if timed_out is None:
            continue
        for event in events:
            if event.seq < timed_out.seq or event.type not in ("step.failed",
                                                               "compensation.failed"):
                continue
            if event.type == "compensation.failed" or event.data.get("kind") != "rejected":
                what = "error" if event.data.get("kind") != "rejected" else "rejection"
                yield view.violation(event.seq, "late_error",
                                     f"a late {what} from attempt {key[2]} of {key[1]!r} (timed "
                                     f"out at seq {timed_out.seq}) is recorded: it is ignored")


@_rule("both", {
    "stale_outcome": "outcomes are recorded only for the step in progress",
})
def _stale_outcome(view: _View) -> Iterator[Violation]:
    for event in view.stray:
        phase = _ATTEMPT_EVENTS[event.type]
        assert event.step is not None and event.attempt is not None
        started = view.attempts.get((phase, event.step, event.attempt), [])
        if not any(e.type in _STARTED and e.seq < event.seq for e in started):
            continue  # attempt_not_started reports it
        yield view.violation(event.seq, "stale_outcome",
                             f"{event.type} for attempt {event.attempt} of {event.step!r}, no "
                             "longer in progress: it is recorded as reply.ignored")


@_rule("main", {
    "left_in_flight": "a step is left only once its latest attempt has an outcome",
})
def _left_in_flight(view: _View) -> Iterator[Violation]:
    for visit in view.visits:
        if visit.trigger == "abandoned":
            assert visit.closed_by is not None
            yield view.violation(visit.closed_by.seq, "left_in_flight",
                                 f"the {visit.describe()} is left while attempt "
                                 f"{visit.starts[-1].attempt} awaits its reply (no time-out)")


@_rule("both", {
    'too_many_attempts': "no more attempts than the step's retry policy allows",
})
def _too_many_attempts(view: _View) -> Iterator[Violation]:
    for visit in view.visits:
        step = view.step(visit.step)
        if step is None or (visit.phase == "compensation"
                            and step.on_compensation_failure == "retry_forever"):
            continue
        if len(visit.starts) > step.retry.attempts:
            extra = visit.starts[step.retry.attempts]
            yield view.violation(extra.seq, "too_many_attempts",
                                 f"the {visit.describe()} has {len(visit.starts)} attempts in "
                                 f"this epoch; its retry policy allows {step.retry.attempts}")


def _aborted(view: _View, visit: _Visit) -> bool:
    """Whether a deadline or cancel before the pivot's success cut ``visit`` short."""
    if visit.phase != "action" or visit.closed_by is None:
        return False
    pivot = view.pivot_success
    return any(e.type in _ABORTS and visit.first.seq < e.seq < visit.closed_by.seq
               and (pivot is None or pivot.seq > e.seq) for e in view.live)


@_rule("main", {
    "gave_up_early": "a step runs out only after all its attempts (or a deadline / cancel)",
})
def _gave_up_early(view: _View) -> Iterator[Violation]:
    for visit in view.visits:
        step = view.step(visit.step)
        if step is None or visit.trigger != "exhausted" or _aborted(view, visit):
            continue
        if len(visit.starts) < step.retry.attempts:
            assert visit.closed_by is not None
            yield view.violation(visit.closed_by.seq, "gave_up_early",
                                 f"the {visit.describe()} is given up after "
                                 f"{len(visit.starts)} of {step.retry.attempts} attempts")


# -- rules: forward order, deadline and cancel -------------------------------------------------
@_rule("main", {
    "unknown_step": "every step named in the log is a step of the flow",
})
def _unknown_step(view: _View) -> Iterator[Violation]:
    if view.compiled is None:
        return
    for event in view.events:
        if event.step is not None and step_state(event.step) not in view.compiled.info \
                and event.step not in view.compiled.choices:
            yield view.violation(event.seq, "unknown_step",
                                 f"{event.type} names step {event.step!r}, which the flow "
                                 "does not have")


@_rule("main", {
    'step_order': "a step's action starts only after the previous step succeeded",
})
def _step_order(view: _View) -> Iterator[Violation]:
    if view.compiled is None:
        return
    steps = view.sequence
    for position, visit in enumerate(view.visits):
        index = view.index(visit.step)
        if visit.phase != "action" or visit.resumed or index is None:
            continue
        previous = view.visits[position - 1] if position else None
        problem = None
        if index == 0:
            if previous is not None:
                problem = f"the first step starts again after the {previous.describe()}"
        elif previous is None:
            problem = f"{visit.step!r} is the first step started; {steps[0].name!r} comes first"
        elif previous.phase == "compensation":
            problem = (f"{visit.step!r} starts after the {previous.describe()}: no action "
                       "runs once compensation began")
        elif previous.step != steps[index - 1].name or previous.trigger != "succeeded":
            problem = (f"{visit.step!r} starts after {previous.step!r} "
                       f"{previous.trigger or 'in progress'}; it follows the success of "
                       f"{steps[index - 1].name!r}")
        if problem:
            yield view.violation(visit.first.seq, "step_order", problem)


def _current_visit(epoch: _Epoch, seq: int) -> _Visit | None:
    """The visit in progress at ``seq`` in ``epoch``."""
    current = None
    for visit in epoch.visits:
        if visit.first.seq > seq:
            break
        current = visit
    return current


@_rule("main", {
    "abort_ignored": "after a deadline or cancel before the pivot, the step in progress ends",
})
def _abort_ignored(view: _View) -> Iterator[Violation]:
    pivot = view.pivot_success
    reported: set[int] = set()
    for epoch in view.epochs:
        for event in epoch.events:
            if event.type not in _ABORTS or (pivot is not None and pivot.seq < event.seq):
                continue
            visit = _current_visit(epoch, event.seq)
            if visit is None or visit.phase != "action" or id(visit) in reported:
                continue
            later = [e for e in (*visit.starts, *visit.outcomes)
                     if e.seq > event.seq and e.type not in _TIMED_OUT]
            if later:
                reported.add(id(visit))
                yield view.violation(later[0].seq, "abort_ignored",
                                     f"{later[0].type} for {visit.step!r} after {event.type} at "
                                     f"seq {event.seq}: the step in progress ends there")


@_rule("main", {
    "deadline_while_compensating": "the deadline is disarmed while compensating",
})
def _deadline_while_compensating(view: _View) -> Iterator[Violation]:
    # a cancel while compensating is recorded and changes nothing (DESIGN §4.4): not checked
    for epoch in view.epochs:
        for event in epoch.events:
            if event.type != "saga.deadline_exceeded":
                continue
            visit = _current_visit(epoch, event.seq)
            if visit is None and epoch.opener is not None:
                compensating = epoch.opener.data.get("phase") == "compensation"
            else:
                compensating = visit is not None and visit.phase == "compensation"
            if compensating:
                yield view.violation(event.seq, "deadline_while_compensating",
                                     "saga.deadline_exceeded while compensating: the deadline "
                                     "is disarmed then")


# -- rules: compensation -----------------------------------------------------------------------
def _entries(view: _View) -> Iterator[_Visit]:
    """Compensation visits that begin a compensation (not resumed after a retry), known step."""
    for visit in view.compensation_visits():
        if not visit.resumed and view.index(visit.step) is not None:
            yield visit


@_rule("both", {
    "no_compensation": "only steps that declare a compensation are compensated",
})
def _no_compensation(view: _View) -> Iterator[Violation]:
    pivot = view.pivot_index
    for visit in _entries(view):
        step, index = view.step(visit.step), view.index(visit.step)
        assert step is not None and index is not None
        if not step.undoable and (pivot is None or index < pivot):
            yield view.violation(visit.first.seq, "no_compensation",
                                 f"{visit.step!r} is compensated but declares no compensation")


@_rule("main", {
    "pivot_compensated": "neither the pivot nor anything after its success is compensated",
})
def _pivot_compensated(view: _View) -> Iterator[Violation]:
    pivot, success = view.pivot_index, view.pivot_success
    if pivot is None:
        return
    for visit in _entries(view):
        index = view.index(visit.step)
        assert index is not None
        if index == pivot:
            problem = f"the pivot {visit.step!r} is compensated: it never is"
        elif index > pivot:
            problem = f"{visit.step!r} comes after the pivot and is compensated"
        elif success is not None and success.seq < visit.first.seq:
            problem = (f"{visit.step!r} is compensated after the pivot succeeded (seq "
                       f"{success.seq}): recovery is forward from there")
        else:
            continue
        yield view.violation(visit.first.seq, "pivot_compensated", problem)


@_rule("both", {
    "compensated_not_started": "a step is compensated only if its action was started",
})
def _compensated_not_started(view: _View) -> Iterator[Violation]:
    for visit in _entries(view):
        if view.compensable(visit.step) and view.action_before(visit.step,
                                                               visit.first.seq) is None:
            yield view.violation(visit.first.seq, "compensated_not_started",
                                 f"{visit.step!r} is compensated but its action never started")


@_rule("both", {
    "compensated_rejected": "a step whose final outcome was rejected is not compensated",
})
def _compensated_rejected(view: _View) -> Iterator[Violation]:
    for visit in _entries(view):
        action = view.action_before(visit.step, visit.first.seq)
        if view.compensable(visit.step) and action is not None and action.trigger == "rejected":
            assert action.definitive is not None
            yield view.violation(visit.first.seq, "compensated_rejected",
                                 f"{visit.step!r} is compensated but its action was rejected "
                                 f"(seq {action.definitive.seq}): a rejection had no effect")


@_rule("main", {
    "compensation_unprovoked": "compensation starts only after a step failed before the pivot",
})
def _compensation_unprovoked(view: _View) -> Iterator[Violation]:
    pivot = view.pivot_success
    for visit in _entries(view):
        action = view.action_before(visit.step, visit.first.seq)
        if (not view.compensable(visit.step) or action is None or action.trigger == "rejected"
                or (pivot is not None and pivot.seq < visit.first.seq)
                or view.epochs[visit.epoch].reason == "pivot_unknown"):
            continue  # another rule owns these
        if not any(view.backward(v) and v.closed_by is not None
                   and v.closed_by.seq <= visit.first.seq for v in view.visits):
            yield view.violation(visit.first.seq, "compensation_unprovoked",
                                 f"{visit.step!r} is compensated though no step failed before "
                                 "the pivot")
            return  # the same cause for every later compensation


@_rule("both", {
    "compensation_order": "compensations run one at a time, in reverse step order",
})
def _compensation_order(view: _View) -> Iterator[Violation]:
    visits = [v for v in view.compensation_visits() if view.index(v.step) is not None]
    for position, visit in enumerate(visits):
        if visit.resumed:
            continue
        index = view.index(visit.step)
        assert index is not None
        previous = visits[position - 1] if position else None
        problem = None
        if previous is not None and previous.step == visit.step and previous.definitive:
            problem = (f"the compensation of {visit.step!r} starts again after it succeeded at "
                       f"seq {previous.definitive.seq}")
        elif previous is not None and previous.step != visit.step and not previous.definitive:
            problem = (f"the compensation of {visit.step!r} starts while that of "
                       f"{previous.step!r} has not succeeded: one at a time")
        else:
            for earlier in visits[:position]:
                earlier_index = view.index(earlier.step)
                assert earlier_index is not None
                if earlier_index < index:
                    problem = (f"the compensation of {visit.step!r} starts after that of "
                               f"{earlier.step!r} (seq {earlier.first.seq}), an earlier step: "
                               "compensations run in reverse step order")
                    break
        if problem:
            yield view.violation(visit.first.seq, "compensation_order", problem)


@_rule("both", {
    "compensation_twice": "each compensation completes (succeeds) at most once",
})
def _compensation_twice(view: _View) -> Iterator[Violation]:
    done: dict[str, Event] = {}
    for visit in view.compensation_visits():
        for event in visit.outcomes:
            if event.type != "compensation.succeeded":
                continue
            if visit.step in done:
                yield view.violation(event.seq, "compensation_twice",
                                     f"the compensation of {visit.step!r} succeeds again (first "
                                     f"at seq {done[visit.step].seq})")
            else:
                done[visit.step] = event


@_rule("main", {
    "missing_compensation": "a compensated saga compensated every step backward recovery requires",
})
def _missing_compensation(view: _View) -> Iterator[Violation]:
    if view.compiled is None:
        return
    for epoch in view.epochs:
        end = epoch.terminal
        if end is None or end.type != "saga.compensated" or not any(
                view.backward(v) and v.first.seq < end.seq for v in view.visits):
            continue  # without a failure to recover from, the end itself is wrong (wrong_end)
        missing = []
        for step in reversed(view.sequence):
            if not view.compensable(step.name):
                continue
            action = view.action_before(step.name, end.seq)
            if action is None or action.trigger in ("rejected", None):
                continue
            if not any(v.step == step.name and v.definitive is not None
                       and v.definitive.seq < end.seq for v in view.compensation_visits()):
                missing.append(step.name)
        if missing:
            names = ", ".join(repr(name) for name in missing)
            yield view.violation(end.seq, "missing_compensation",
                                 f"saga.compensated but {names} never compensated (started, "
                                 "not rejected)")


@_rule("main", {
    "pivot_unknown_compensated": "a saga failed with pivot_unknown compensated nothing",
})
def _pivot_unknown_compensated(view: _View) -> Iterator[Violation]:
    for epoch in view.epochs:
        if epoch.reason != "pivot_unknown":
            continue
        visits = [v for v in epoch.visits if v.phase == "compensation"]
        if visits:
            assert epoch.terminal is not None
            names = ", ".join(repr(v.step) for v in visits)
            yield view.violation(visits[0].first.seq, "pivot_unknown_compensated",
                                 f"compensates {names} but ends failed/pivot_unknown (seq "
                                 f"{epoch.terminal.seq}): nothing is compensated then")


def _end_problem(view: _View, epoch: _Epoch, end: Event) -> str | None:
    """Why ``end`` does not follow from the history, or None."""
    compiled = view.compiled
    assert compiled is not None
    status = TERMINAL_EVENTS[end.type]
    actions = [v for v in epoch.visits if v.phase == "action"]
    last_action = actions[-1] if actions else None
    if status == "completed":
        flow_steps = view.sequence
        undone = [s.name for s in flow_steps
                  if not any(v.phase == "action" and v.step == s.name and v.trigger == "succeeded"
                             and v.first.seq < end.seq for v in view.visits)]
        if undone:
            return f"completed but {', '.join(map(repr, undone))} never succeeded"
        if not flow_steps and last_action is None:
            return None  # a route through the choices with no step: nothing to run
        if last_action is None or last_action.step != flow_steps[-1].name:
            return f"completed right after {last_action.step!r}" if last_action else \
                "completed with no step run in this epoch"
        return None
    if status == "compensated":
        success = view.pivot_success
        if success is not None and success.seq < end.seq:
            return (f"compensated after the pivot succeeded (seq {success.seq}): recovery is "
                    "forward from there")
        if not any(view.backward(v) and v.first.seq < end.seq for v in view.visits):
            return "compensated though no step failed before the pivot"
        last = epoch.visits[-1] if epoch.visits else None
        if last is not None and last.phase == "compensation" and last.trigger != "succeeded":
            return f"compensated while the compensation of {last.step!r} had not succeeded"
        if last is not None and last.phase == "action" and last.trigger == "succeeded":
            return f"compensated right after {last.step!r} succeeded"
        return None
    reason = epoch.reason
    if reason == "definition_unavailable":
        return None
    if reason not in FAILED_REASONS:
        return f"saga.failed with reason {end.data.get('reason')!r}, not one of the engine's"
    visit = (epoch.visits[-1] if epoch.visits else None) if reason == "compensation_failed" \
        else last_action
    if visit is None:
        return f"failed/{reason} with no step run in this epoch"
    trigger = "exhausted" if visit.trigger == "abandoned" else visit.trigger
    move = compiled.next(visit.state, trigger, view.route_at(visit)) if trigger else None
    if move != ("failed", reason):
        after = f"the {visit.describe()} {visit.trigger or 'in progress'}"
        if move is None:
            return f"failed/{reason} after {after}, which has no way to end failed"
        dest = move[0] if move[1] is None else f"{move[0]}/{move[1]}"
        return f"failed/{reason} after {after}, which leads to {dest}"
    return None


@_rule("main", {
    "wrong_end": "the terminal status (and reason) follows from the history",
})
def _wrong_end(view: _View) -> Iterator[Violation]:
    if view.compiled is None:
        return
    for epoch in view.epochs:
        if epoch.terminal is not None:
            problem = _end_problem(view, epoch, epoch.terminal)
            if problem:
                yield view.violation(epoch.terminal.seq, "wrong_end", problem)


@_rule("main", {
    "stuck_retry_forever": "a retry_forever saga is not compensating for over stuck_after",
})
def _stuck_retry_forever(view: _View) -> Iterator[Violation]:
    if not view.epochs or view.ended:
        return
    epoch = view.epochs[-1]
    current = epoch.visits[-1] if epoch.visits else None
    step = view.step(current.step) if current is not None else None
    if current is None or step is None or current.phase != "compensation" \
            or step.on_compensation_failure != "retry_forever":
        return
    since = next(v.first for v in epoch.visits if v.phase == "compensation")
    stuck = view.now - since.at
    if stuck > view.stuck_after:
        yield view.violation(since.seq, "stuck_retry_forever",
                             f"compensating for {format_duration(stuck)} (over "
                             f"{format_duration(view.stuck_after)}); the compensation of "
                             f"{current.step!r} is at attempt {current.starts[-1].attempt}")


@_rule("main", {
    "block_join": "a parallel block succeeds only once every branch completed",
})
def _block_join(view: _View) -> Iterator[Violation]:
    """A parallel block succeeds only once every branch has completed, and none failed."""
    compiled = view.compiled
    if compiled is None or not compiled.blocks:
        return
    for visit in view.visits:
        if visit.phase != "action" or visit.step not in compiled.blocks \
                or visit.trigger != "succeeded" or visit.definitive is None:
            continue
        success = visit.definitive
        ends: dict[str, str] = {}
        for event in view.events:
            if visit.first.seq < event.seq < success.seq and event.type.startswith("branch.") \
                    and event.type != "branch.halted":
                ends[event.data.get("branch")] = event.type
        wrong = [route for route in compiled.blocks[visit.step]
                 if ends.get(route) != "branch.completed"]
        if wrong:
            yield view.violation(success.seq, "block_join",
                                 f"block {visit.step!r} succeeded though branch "
                                 f"{', '.join(wrong)} had not completed")


@_rule("main", {
    "choice_branch": "a choice takes the first branch whose condition holds then",
})
def _choice_branch(view: _View) -> Iterator[Violation]:
    """A choice takes the first branch whose condition holds on the context of that moment
    (the input, and the outputs of the steps that had succeeded)."""
    compiled = view.compiled
    if compiled is None or not compiled.choices:
        return
    saga_input: Any = None
    outputs: dict[str, Any] = {}
    for event in view.live:
        if event.type == "saga.started":
            saga_input = event.data.get("input")
        elif event.type == "step.succeeded" and event.step is not None:
            outputs[event.step] = event.data.get("output")
        elif event.type == "choice.made" and event.step in compiled.choices:
            context = {"input": saga_input, "steps": dict(outputs)}
            choice = compiled.choices[event.step]
            expected = next((b.name for b in choice.branches
                             if b.when is None or b.when.holds(context)), None)
            if event.data.get("branch") != expected:
                yield view.violation(event.seq, "choice_branch",
                                     f"choice {event.step!r} took {event.data.get('branch')!r}; "
                                     f"its conditions pick {expected!r} on that context")




@_rule("branches", {
    "branch_not_undone": "a branch that ends compensated undid every step it did",
})
def _branch_not_undone(view: _View) -> Iterator[Violation]:
    """A branch that ended compensated undid every step it started that was not rejected
    (whether the branch failed, or was halted or undone after it completed)."""
    for epoch in view.epochs:
        end = epoch.terminal
        if end is None or end.type != "saga.compensated":
            continue
        missing = [step.name for step in view.sequence if view.compensable(step.name)
                   and (action := view.action_before(step.name, end.seq)) is not None
                   and action.trigger != "rejected"
                   and not any(v.step == step.name and v.definitive is not None
                               and v.definitive.seq < end.seq
                               for v in view.compensation_visits())]
        if missing:
            yield view.violation(end.seq, "branch_not_undone",
                                 f"branch ended compensated but {', '.join(map(repr, missing))} "
                                 "never compensated (started, not rejected)")



_BRANCH_ENDS = {"branch.compensated": "saga.compensated", "branch.failed": "saga.failed"}


def _branch_records(record: SagaRecord, compiled: CompiledFlow) -> Iterator[
        tuple[str, SagaRecord, CompiledFlow]]:
    """Each parallel branch's history as a log of its own (keeping the saga's seqs), with the
    branch compiled as a flow of its own."""
    flow = compiled.flow
    for route, (block, branch) in compiled.tracks.items():
        steps = {s.name for s in branch.steps}
        events: list[Event] = []
        for event in record.events:
            if event.step == block.name and event.type == "step.started" and not events:
                events.append(Event(event.seq, "saga.started", None, None, event.at,
                                    event.event_id, None, {"input": None}))
            elif not events:
                continue
            elif event.step in steps:
                events.append(event)
            elif event.data.get("branch") == route and event.type in _BRANCH_ENDS:
                data = {"reason": "compensation_failed"} if event.type == "branch.failed" \
                    else {}
                events.append(Event(event.seq, _BRANCH_ENDS[event.type], None, None, event.at,
                                    event.event_id, event.causation_id, data))
            elif event.type == "saga.retried" and events[-1].type == "saga.failed":
                events.append(event)
        if not events:
            continue
        branch_flow = Flow(name=f"{flow.name}.{route}", version=flow.version,
                           steps=branch.steps, services=flow.services,
                           definition=f"{flow.definition}:{route}", text=flow.text,
                           source=flow.source)
        yield route, type(record)(record.header, record.definition_text, tuple(events)), \
            compile_flow(branch_flow)


# -- entry points ------------------------------------------------------------------------------
def _compile(text: str) -> CompiledFlow | str:
    """The compiled flow of a stored definition, or why it no longer loads."""
    try:
        return compile_flow(parse_flow(text, source="<stored definition>"))
    except FlowErrors as error:
        first = error.errors[0].format() if error.errors else str(error)
        more = f" (+{len(error.errors) - 1} more)" if len(error.errors) > 1 else ""
        return first + more
    except Exception as error:  # a compiler invariant: report it, keep auditing
        return f"{type(error).__name__}: {error}"


def audit_saga(record: SagaRecord, *, now: float, stuck_after: float = 3600.0,
               flow: Flow | CompiledFlow | None = None, expect_terminal: bool = False,
               owner_alive: bool | None = None) -> list[Violation]:
    """Every rule ``record``'s log breaks, in seq order (saga-wide violations first).

    ``flow`` overrides the flow rebuilt from ``record.definition_text``. ``now`` (a Unix time)
    measures how long a ``retry_forever`` saga has been compensating against ``stuck_after``
    seconds. A saga not ended is reported ``not_terminal`` when ``expect_terminal``; otherwise
    ``orphaned`` when ``owner_alive`` is False (None: unknown, not checked).
    """
    if isinstance(flow, CompiledFlow):
        built: CompiledFlow | str = flow
    elif isinstance(flow, Flow):
        built = compile_flow(flow)
    else:
        built = _compile(record.definition_text)
    return _audit(record, built, now=now, stuck_after=stuck_after,
                  expect_terminal=expect_terminal, owner_alive=owner_alive)


def _audit(record: SagaRecord, built: CompiledFlow | str, *, now: float, stuck_after: float,
           expect_terminal: bool, owner_alive: bool | None) -> list[Violation]:
    """:func:`audit_saga` on a flow already compiled (or the reason it does not load)."""
    compiled, error = (built, None) if isinstance(built, CompiledFlow) else (None, built)
    view = _View(record.header.saga_id, record, compiled, error, now, stuck_after,
                 expect_terminal, owner_alive)
    _parse(view)
    found = [violation for rule in _RULES for violation in rule(view)]
    if compiled is not None and compiled.tracks:
        for route, branch_record, branch_compiled in _branch_records(record, compiled):
            branch_view = _View(branch_record.header.saga_id, branch_record, branch_compiled,
                                None, now, stuck_after, False, None)
            _parse(branch_view)
            found.extend(replace(violation, message=f"branch {route}: {violation.message}")
                         for rule in _BRANCH_RULES for violation in rule(branch_view))
    found.sort(key=lambda v: 0 if v.seq is None else v.seq)
    return found


def audit_store(store: _AuditedStore, *, now: float | None = None, stuck_after: float = 3600.0,
                include_running: bool = True) -> list[Violation]:
    """Audit every saga in ``store`` (in ``store.list()`` order: newest first).

    ``include_running=True`` (what ``saga audit`` does): a saga in flight is audited as far
    as it went, and is fine while its owner is alive; with no live owner it is ``orphaned``.
    ``include_running=False``: every saga must have ended, else ``not_terminal``. ``now``
    defaults to the current time. Flow definitions are parsed once per sha256.
    """
    moment = time.time() if now is None else now
    compiled: dict[str, CompiledFlow | str] = {}
    found: list[Violation] = []
    fencing = _Fencing.of(store)
    for header in store.list():
        try:
            record = store.load(header.saga_id)
        except UnknownSaga:  # pragma: no cover - stores never delete sagas
            continue
        key = record.header.definition
        if key not in compiled:
            compiled[key] = _compile(record.definition_text)
        built = compiled[key]
        alive = None
        if include_running and not _log_ended(record):
            alive = _owner_alive(store, record.header.owner) or \
                fencing.driven(header.saga_id)
        found.extend(_audit(record, built, now=moment, stuck_after=stuck_after,
                            expect_terminal=not include_running, owner_alive=alive))
        found.extend(fencing.check(header.saga_id))
    return found


_DESCRIBED.update({
    "writer_epoch_order": "on a shared store, a saga's fenced writes never go back to an "
                          "older epoch of its partition (no write by a member that lost it)",
    "writer_epoch_shared": "one epoch of a partition is one member's: no two members wrote "
                           "under it",
})


class _Fencing:
    """The store-wide writer checks of a store with leases (:meth:`Leases.writers`): each
    fenced event records the member and the epoch of its partition it was written under."""

    def __init__(self, store: Any, partitions: int, held: frozenset[int]) -> None:
        self.store = store
        self.partitions = partitions
        self.held = held  # partitions whose lease a live member holds now
        self.members: dict[tuple[int, int], tuple[str, str, int]] = {}

    @classmethod
    def of(cls, store: Any) -> _Fencing:
        try:
            partitions = store.partitions()
            held = frozenset(info.partition for info in store.leases() if info.held)
        except (AttributeError, NotImplementedError):
            partitions, held = 0, frozenset()
        return cls(store, partitions, held)

    def driven(self, saga_id: str) -> bool:
        """Whether a live member holds the saga's partition (it drives the saga)."""
        return bool(self.held) and partition_of(saga_id, self.partitions) in self.held

    def check(self, saga_id: str) -> Iterator[Violation]:
        if not self.partitions:
            return
        partition = partition_of(saga_id, self.partitions)
        newest: tuple[int, str, int] | None = None  # (epoch, member, seq)
        for seq, member, epoch in self.store.writers(saga_id):
            if member is None or epoch is None:
                continue
            if newest is not None and epoch < newest[0]:
                yield Violation(saga_id, seq, "writer_epoch_order",
                                f"written by {member} under epoch {epoch} of partition "
                                f"{partition}, after {newest[1]} wrote seq {newest[2]} under "
                                f"epoch {newest[0]}")
            if newest is None or epoch >= newest[0]:
                newest = (epoch, member, seq)
            first = self.members.setdefault((partition, epoch), (member, saga_id, seq))
            if first[0] != member:
                yield Violation(saga_id, seq, "writer_epoch_shared",
                                f"written by {member} under epoch {epoch} of partition "
                                f"{partition}, which {first[0]} wrote under too ({first[1]} "
                                f"seq {first[2]})")


def _log_ended(record: SagaRecord) -> bool:
    """Whether the log's last epoch ended (what :func:`audit_saga` checks in detail)."""
    for event in reversed(record.events):
        if event.type == "saga.retried":
            return False
        if event.type in TERMINAL_EVENTS:
            return True
    return False


def _owner_alive(store: Ownership, owner: str | None) -> bool:
    if not owner:
        return False
    try:
        return bool(store.owner_alive(owner))
    except ValueError:  # an owner id the store cannot even hold: nobody alive has it
        return False

