"""The pure saga core: ``handle(saga, signal, env) -> (events, commands)``.

No IO, no threads, no clock or randomness of its own: the time and the jitter draw come from
``env``; event ids are ``<saga_id>/<seq>``. Given the same saga state, signal and env, it
returns the same events and commands — which is what makes virtual-time tests fast and recovery
a replay.

* A **signal** is something that happened to a saga from outside: :class:`Start`,
  :class:`ReplyReceived`, :class:`TimerFired`, :class:`Cancel`, :class:`Retry`.
* The core answers with **events** (appended to the saga's log; the caller commits them before
  acting on any command, DESIGN.md §4.7) and **commands** derived from those events:
  :class:`Execute` (send an attempt to a service), :class:`SetTimer`, :class:`Ended`.
* :func:`apply` folds one event into a :class:`Saga`; :func:`replay` rebuilds a saga from its
  log, and :func:`resume` derives the commands that put a replayed saga back in motion.

A :class:`Saga` is mutable and owned by one thread (its shard); ``handle`` updates it in place
as it emits events. A ``choice`` is decided when the saga reaches it (``choice.made``; the
saga's ``route`` then picks the compiled table). Each branch of a ``parallel`` block is a
:class:`Track`: the per-branch part of the state (attempts, timers), driven by the same
decisions as the main sequence, whose own track is the saga itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..events import (
    BRANCH_COMPENSATED,
    BRANCH_COMPLETED,
    BRANCH_FAILED,
    BRANCH_HALTED,
    CHOICE_MADE,
    COMPENSATION_FAILED,
    COMPENSATION_RETRYING,
    COMPENSATION_STARTED,
    COMPENSATION_SUCCEEDED,
    COMPENSATION_TIMED_OUT,
    REPLY_IGNORED,
    SAGA_CANCELLED,
    SAGA_COMPENSATED,
    SAGA_COMPLETED,
    SAGA_DEADLINE_EXCEEDED,
    SAGA_FAILED,
    SAGA_RETRIED,
    SAGA_STARTED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    TERMINAL_EVENTS,
    Event,
)
from ..language.compiler import (
    CHOICE_PREFIX,
    STEP_PREFIX,
    TERMINAL_STATES,
    CompiledFlow,
    StateInfo,
    compensation_state,
    step_state,
)
from ..language.model import Step
from ..language.paths import evaluate

__all__ = [
    "Cancel",
    "Command",
    "Ended",
    "Env",
    "Execute",
    "ReplyReceived",
    "Retry",
    "Saga",
    "SetTimer",
    "Signal",
    "Start",
    "TimerFired",
    "apply",
    "context_of",
    "handle",
    "park_unavailable",
    "replay",
    "resume",
    "start",
]

RETRY_FOREVER_CAP = 60.0  # seconds between compensation attempts under retry_forever, at most


class Env(Protocol):
    """What the core may ask of the world: the time, and draws in [0, 1) for jitter.

    ``random(key)`` must return the same number for the same key (the core passes
    ``<saga_id>/<seq>``), so a saga's jitter does not depend on how sagas interleave.
    """

    def now(self) -> float: ...

    def random(self, key: str) -> float: ...


# -- signals ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """Start a saga (the caller has checked the input against the flow's schema)."""

    input: Any


class ReplyReceived(NamedTuple):
    """A service's reply to the attempt ``(phase, step, attempt)``."""

    phase: str  # "action" | "compensation"
    step: str
    attempt: int
    outcome: str  # "succeeded" | "rejected" | "error"
    output: dict[str, Any] | None = None
    error: str | None = None
    command_id: str | None = None


class TimerFired(NamedTuple):
    """A timer set by :class:`SetTimer` is due."""

    kind: str  # "timeout" | "backoff" | "deadline" | "delay"
    phase: str | None
    step: str | None
    attempt: int | None
    causation_id: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the saga (DESIGN.md §4.4); nothing happens to a terminal saga.

    ``causation_id`` names what asked for it (e.g. ``request/7``, a store request)."""

    requested_by: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Re-drive a ``failed`` saga from where it stopped (DESIGN.md §4.2–4.3)."""

    requested_by: str | None = None
    causation_id: str | None = None


class EventReceived(NamedTuple):
    """An external event sent to the saga (``saga send``), for the wait ``(event, key)``."""

    event: str
    key: str
    data: dict[str, Any]
    event_id: str


Signal = Start | ReplyReceived | TimerFired | Cancel | Retry | EventReceived


# -- commands -----------------------------------------------------------------------------------
class Execute(NamedTuple):
    """Send one attempt of a step's action or compensation to its service."""

    command_id: str
    saga_id: str
    step: str
    phase: str
    service: str
    name: str  # the handler: the step's action or compensation
    attempt: int
    key: str
    payload: Mapping[str, Any]
    result: Mapping[str, Any] | None
    timeout_at: float


class SetTimer(NamedTuple):
    """Deliver ``TimerFired(kind, phase, step, attempt, causation_id)`` to the saga at ``at``."""

    saga_id: str
    at: float
    kind: str
    phase: str | None
    step: str | None
    attempt: int | None
    causation_id: str | None

    def fired(self) -> TimerFired:
        return TimerFired(self.kind, self.phase, self.step, self.attempt, self.causation_id)


class Ended(NamedTuple):
    """The saga reached a terminal state."""

    saga_id: str
    status: str
    reason: str | None


class Await(NamedTuple):
    """The saga waits for the external event ``(event, key)`` (a ``wait_for`` step): deliver
    :class:`EventReceived` once one is there, whether it was sent before or after."""

    saga_id: str
    step: str
    attempt: int
    event: str
    key: str


Command = Execute | SetTimer | Ended | Await


# -- the saga's state ---------------------------------------------------------------------------
class Saga:
    """The state of one saga instance, folded from its events. Owned by one thread."""

    __slots__ = (
        "attempt",
        "base_attempt",
        "cancelled",
        "command_id",
        "compiled",
        "deadline_at",
        "deadline_passed",
        "halting",
        "in_flight",
        "input",
        "key_suffix",
        "last_event_id",
        "last_kind",
        "next_attempt_at",
        "outputs",
        "payloads",
        "pivot_done",
        "reason",
        "retries",
        "retrying_id",
        "route",
        "saga_id",
        "seq",
        "started_at",
        "state",
        "status",
        "timed_out",
        "timeout_at",
        "tracks",
        "updated_at",
        "waiting",
    )

    def __init__(self, saga_id: str, compiled: CompiledFlow):
        self.saga_id = saga_id
        self.compiled = compiled
        self.input: Any = None
        self.outputs: dict[str, Any] = {}
        self.payloads: dict[str, Any] = {}
        self.status = "running"
        self.reason: str | None = None
        self.state = compiled.initial
        self.seq = 0
        self.attempt = 0  # the current (phase, step)'s latest attempt
        self.base_attempt = 0  # attempts before this epoch (a `saga retry` starts a new one)
        self.in_flight = False
        self.timeout_at: float | None = None
        self.timed_out: set[int] = set()
        self.next_attempt_at: float | None = None
        self.deadline_at: float | None = None
        self.deadline_passed = False
        self.cancelled = False
        self.pivot_done = False
        self.last_event_id: str | None = None
        self.command_id: str | None = None  # the *.started event of the latest attempt
        self.retrying_id: str | None = None  # the *.retrying event that armed the backoff
        # how the latest attempt ended: "rejected" | "error" (its *.failed) or "timeout"
        self.last_kind: str | None = None
        self.retries = 0  # saga.retried events so far
        self.key_suffix: dict[str, str] = {}  # step -> suffix of its action key after a retry
        self.started_at = 0.0
        self.updated_at = 0.0
        self.waiting: tuple[str, str] | None = None  # (event, key) of the wait in progress
        self.route: tuple[str, ...] = ()  # the branches its choices took, in order
        self.tracks: dict[str, Track] = {}  # the branches of the parallel blocks it entered
        self.halting = False  # (a branch's flag: the main sequence is never halted)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def info(self) -> StateInfo | None:
        return self.compiled.info.get(self.state)

    def context(self) -> dict[str, Any]:
        return context_of(self.input, self.outputs)


class Track:
    """One branch of a parallel block: the part of a saga's state that is per branch.

    A saga itself is the track of its main sequence (it has the same attributes), so the
    decisions below work on either. ``route`` is the branch's track id ``<block>.<branch>``
    (the saga's is the tuple of branches its choices took); ``status`` is ``running``,
    ``completed`` (all its steps succeeded: it waits for the others), ``compensating``,
    ``compensated`` or ``failed``; ``halting`` means another branch failed, so it stops at its
    next step boundary.
    """

    __slots__ = ("attempt", "base_attempt", "command_id", "compiled", "halting", "in_flight",
                 "last_kind", "next_attempt_at", "retrying_id", "route", "state", "status",
                 "timed_out", "timeout_at", "waiting")

    def __init__(self, route: str, compiled: CompiledFlow, state: str):
        self.route = route
        self.compiled = compiled
        self.state = state
        self.status = "running"
        self.halting = False
        self.attempt = 0
        self.base_attempt = 0
        self.in_flight = False
        self.timeout_at: float | None = None
        self.timed_out: set[int] = set()
        self.next_attempt_at: float | None = None
        self.command_id: str | None = None
        self.retrying_id: str | None = None
        self.last_kind: str | None = None
        self.waiting: tuple[str, str] | None = None

    @property
    def info(self) -> StateInfo | None:
        return self.compiled.info.get(self.state)

    @property
    def ended(self) -> bool:
        return self.status in ("compensated", "failed")


AnyTrack = Saga | Track


def _live(t: AnyTrack, phase: str) -> bool:
    """Whether a branch is still in ``phase`` (a saga is: its terminal state is checked
    before anything). An ended branch keeps its last state, so a late reply or a stale timer
    for it would otherwise look current."""
    if not isinstance(t, Track):
        return True
    return t.status == ("running" if phase == "action" else "compensating")


def _track(saga: Saga, step: str | None) -> AnyTrack:
    """The track a step's events belong to: its parallel branch's, or the saga's own."""
    route = saga.compiled.track_of.get(step) if step is not None else None
    return saga if route is None else saga.tracks[route]


def wait_key(step: Step, context: Mapping[str, Any]) -> str:
    """The correlation key of a ``wait_for`` step in ``context``: the text its path names (a
    number is written as JSON; a path that names nothing gives ``"null"``), or its literal."""
    key = step.wait_key
    if isinstance(key, str) and key.startswith("$"):
        key = evaluate(key, context)
    return key if isinstance(key, str) else json.dumps(key, sort_keys=True)


def context_of(saga_input: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The saga context of DESIGN.md §2: ``{"input": ..., "steps": {step: output}}``."""
    return {"input": saga_input, "steps": dict(outputs)}


# -- folding events -----------------------------------------------------------------------------
def _apply_started(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    kind, step = event.type, event.step
    assert step is not None and event.attempt is not None
    t = _track(saga, step)
    state = step_state(step) if kind == STEP_STARTED else compensation_state(step)
    if state != t.state:
        t.state = state
        t.timed_out = set()
        t.base_attempt = 0
    status = "running" if kind == STEP_STARTED else "compensating"
    if t is saga:
        saga.status = status
    else:
        t.status = status
    t.attempt = event.attempt
    t.command_id = event.event_id
    t.in_flight = True
    t.timeout_at = data.get("timeout_at")
    t.next_attempt_at = None
    if kind == STEP_STARTED:
        saga.payloads[step] = data.get("payload")
        wait = data.get("wait_for")
        t.waiting = (wait["event"], wait["key"]) if wait else None
    branches = data.get("parallel")
    if branches is not None:
        for route in branches:
            if route not in saga.tracks:
                saga.tracks[route] = Track(route, saga.compiled,
                                           saga.compiled.track_initial[route])


def _apply_outcome(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    kind = event.type
    t = _track(saga, event.step)
    if kind == STEP_SUCCEEDED:
        assert event.step is not None
        saga.outputs[event.step] = data.get("output")
        info = saga.compiled.info.get(step_state(event.step))
        if info is not None and info.step.pivot:
            saga.pivot_done = True
    elif kind in (STEP_FAILED, COMPENSATION_FAILED):
        t.last_kind = data.get("kind")
    if event.attempt == t.attempt:
        t.in_flight = False
        t.timeout_at = None


def _apply_timed_out(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    assert event.attempt is not None
    t = _track(saga, event.step)
    t.timed_out.add(event.attempt)
    if event.attempt == t.attempt:
        t.in_flight = False
        t.timeout_at = None
        # the latest attempt ended without a "no": a retry after it keeps the key
        t.last_kind = "timeout"


def _apply_retrying(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    t = _track(saga, event.step)
    t.next_attempt_at = data.get("next_attempt_at")
    t.retrying_id = event.event_id


def _apply_choice(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.route = (*saga.route, data["branch"])


def _apply_halted(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.tracks[data["branch"]].halting = True


def _apply_branch_end(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.tracks[data["branch"]].status = event.type[len("branch."):]


def _apply_saga_started(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.input = data.get("input")
    saga.deadline_at = data.get("deadline_at")
    saga.started_at = event.at
    saga.status = "running"


def _apply_deadline(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.deadline_passed = True


def _apply_cancelled(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.cancelled = True


def _apply_retried(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.reason = None
    saga.base_attempt = saga.attempt
    saga.timed_out = set()
    saga.retries += 1
    info = saga.info
    if info is not None and info.phase == "action" and saga.last_kind == "rejected":
        # the inbox holds the definitive "no" under the old key: a retry asks anew
        saga.key_suffix[info.step.name] = f":retry{saga.retries}"
    saga.status = "compensating" if info and info.phase == "compensation" else "running"
    for track in saga.tracks.values():
        if track.status in ("running", "compensating", "failed"):  # driven again
            track.base_attempt = track.attempt
            track.timed_out = set()
            track.next_attempt_at = None


def _apply_end(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    saga.status = TERMINAL_EVENTS[event.type]
    saga.reason = data.get("reason")
    saga.in_flight = False
    saga.next_attempt_at = None
    saga.timeout_at = None


def _apply_nothing(saga: Saga, event: Event, data: dict[str, Any]) -> None:
    """reply.ignored changes nothing."""


_APPLY: dict[str, Callable[[Saga, Event, dict[str, Any]], None]] = {
    STEP_STARTED: _apply_started, COMPENSATION_STARTED: _apply_started,
    STEP_SUCCEEDED: _apply_outcome, STEP_FAILED: _apply_outcome,
    COMPENSATION_SUCCEEDED: _apply_outcome, COMPENSATION_FAILED: _apply_outcome,
    STEP_TIMED_OUT: _apply_timed_out, COMPENSATION_TIMED_OUT: _apply_timed_out,
    STEP_RETRYING: _apply_retrying, COMPENSATION_RETRYING: _apply_retrying,
    CHOICE_MADE: _apply_choice, BRANCH_HALTED: _apply_halted,
    BRANCH_COMPLETED: _apply_branch_end, BRANCH_COMPENSATED: _apply_branch_end,
    BRANCH_FAILED: _apply_branch_end,
    SAGA_STARTED: _apply_saga_started, SAGA_DEADLINE_EXCEEDED: _apply_deadline,
    SAGA_CANCELLED: _apply_cancelled, SAGA_RETRIED: _apply_retried,
    SAGA_COMPLETED: _apply_end, SAGA_COMPENSATED: _apply_end, SAGA_FAILED: _apply_end,
    REPLY_IGNORED: _apply_nothing,
}


def apply(saga: Saga, event: Event) -> None:
    """Fold ``event`` into ``saga``. Pure bookkeeping: never decides anything. One function
    per event type (:data:`_APPLY`); an unknown type changes nothing but the position."""
    saga.seq = event.seq
    saga.last_event_id = event.event_id
    saga.updated_at = event.at
    fold = _APPLY.get(event.type)
    if fold is not None:
        fold(saga, event, event.data)


def replay(saga_id: str, compiled: CompiledFlow, events: Iterable[Event]) -> Saga:
    """Rebuild a saga from its log."""
    saga = Saga(saga_id, compiled)
    for event in events:
        apply(saga, event)
    return saga


# -- deciding -----------------------------------------------------------------------------------
class _Decision:
    """Collects the events and commands of one call to :func:`handle`.

    Methods that drive one sequence of steps take its track ``t``: the saga itself for the main
    sequence, or a :class:`Track` for a branch of a parallel block.
    """

    __slots__ = ("commands", "env", "events", "now", "saga")

    def __init__(self, saga: Saga, env: Env):
        self.saga = saga
        self.env = env
        self.now = env.now()
        self.events: list[Event] = []
        self.commands: list[Command] = []

    def emit(self, kind: str, step: str | None, attempt: int | None, data: dict[str, Any],
             causation_id: str | None) -> Event:
        saga = self.saga
        seq = saga.seq + 1
        event = Event(seq, kind, step, attempt, self.now, f"{saga.saga_id}/{seq}", causation_id,
                      data)
        apply(saga, event)
        self.events.append(event)
        return event

    # -- entering states ------------------------------------------------------------------------
    def enter(self, state: str, reason: str | None, cause: str | None, t: AnyTrack) -> None:
        saga = self.saga
        if t is not saga:
            assert isinstance(t, Track)
            if state in saga.compiled.branch_terminals:
                self.branch_ended(t, state.rsplit(":", 1)[1], cause)
                return
        elif state in TERMINAL_STATES:
            data: dict[str, Any] = {"reason": reason} if state == "failed" else {}
            self.emit(f"saga.{state}", None, None, data, cause)
            self.commands.append(Ended(saga.saga_id, state, reason))
            return
        elif state.startswith(CHOICE_PREFIX):
            self.choose(state, cause)
            return
        info = saga.compiled.info[state]
        if info.step.is_parallel:
            self.start_block(info, 1, cause)
            return
        self.start_attempt(info, 1, cause, t)

    def choose(self, state: str, cause: str | None) -> None:
        """A choice: the first branch whose condition holds (the default has none)."""
        saga = self.saga
        choice = saga.compiled.choices[state[len(CHOICE_PREFIX):]]
        context = saga.context()
        branch = next(b for b in choice.branches if b.when is None or b.when.holds(context))
        event = self.emit(CHOICE_MADE, choice.name, None, {"branch": branch.name}, cause)
        move = saga.compiled.next(state, "chosen", saga.route)
        assert move is not None, f"no route from {state} through {branch.name}"
        self.enter(move[0], move[1], event.event_id, saga)

    def start_block(self, info: StateInfo, attempt: int, cause: str | None) -> None:
        """Run a parallel block's branches (action), or undo the branches that completed
        (compensation)."""
        saga = self.saga
        block = info.step
        routes = saga.compiled.blocks[block.name]
        kind = STEP_STARTED if info.phase == "action" else COMPENSATION_STARTED
        event = self.emit(kind, block.name, attempt,
                          {"payload": None, "timeout_at": None, "parallel": list(routes)}, cause)
        aborted = saga.cancelled or saga.deadline_passed
        reason = ("deadline" if saga.deadline_passed else "cancelled") if aborted else None
        for route in routes:
            t = saga.tracks[route]
            if info.phase == "action":
                self.enter(t.state, None, event.event_id, t)
            else:  # undo what completed; stop what still runs (at its next step boundary,
                # or at once after a cancel or the deadline)
                self.halt(t, event.event_id, reason)
        self.join(block, event.event_id)

    def start_attempt(self, info: StateInfo, attempt: int, cause: str | None,
                      t: AnyTrack) -> None:
        saga = self.saga
        step = info.step
        timeout_at = self.now + step.timeout
        if step.is_delay:  # a pause: its "attempt" ends when its time has passed
            self.emit(STEP_STARTED, step.name, attempt,
                      {"payload": None, "timeout_at": timeout_at, "delay": step.delay}, cause)
        elif step.is_wait:  # a wait: its "attempt" ends when its event arrives, or times out
            self.emit(STEP_STARTED, step.name, attempt,
                      {"payload": None, "timeout_at": timeout_at,
                       "wait_for": {"event": step.wait_event,
                                    "key": wait_key(step, saga.context())}}, cause)
        elif info.phase == "action":
            template = saga.compiled.payload_of.get(step.name)
            payload = template(saga.context()) if template is not None else saga.input
            self.emit(STEP_STARTED, step.name, attempt,
                      {"payload": payload, "timeout_at": timeout_at}, cause)
        else:
            self.emit(COMPENSATION_STARTED, step.name, attempt,
                      {"payload": saga.payloads.get(step.name), "timeout_at": timeout_at}, cause)
        self.send_attempt(info, t)

    def send_attempt(self, info: StateInfo, t: AnyTrack) -> None:
        """The commands of the track's latest attempt: its timeout first, then the call (so a
        call that cannot be sent still times out and is retried)."""
        saga = self.saga
        step = info.step
        assert t.timeout_at is not None and t.command_id is not None
        if step.is_delay:
            self.commands.append(SetTimer(saga.saga_id, t.timeout_at, "delay", info.phase,
                                          step.name, t.attempt, t.command_id))
            return
        if step.is_wait:
            assert t.waiting is not None
            self.commands.append(SetTimer(saga.saga_id, t.timeout_at, "timeout", info.phase,
                                          step.name, t.attempt, t.command_id))
            self.commands.append(Await(saga.saga_id, step.name, t.attempt, *t.waiting))
            return
        if info.phase == "action":
            key = f"{saga.saga_id}:{step.name}{saga.key_suffix.get(step.name, '')}"
            name, result = step.action, None
        else:
            key = f"{saga.saga_id}:{step.name}:compensation"
            name, result = step.compensation or "", saga.outputs.get(step.name)
        self.commands.append(SetTimer(saga.saga_id, t.timeout_at, "timeout", info.phase,
                                      step.name, t.attempt, t.command_id))
        self.commands.append(Execute(t.command_id, saga.saga_id, step.name, info.phase,
                                     step.service, name, t.attempt, key,
                                     saga.payloads.get(step.name), result, t.timeout_at))

    def advance(self, trigger: str, cause: str | None, t: AnyTrack) -> None:
        saga = self.saga
        failing = (t is not saga and trigger != "succeeded" and not t.halting
                   and t.state.startswith(STEP_PREFIX))
        move = saga.compiled.next(t.state, trigger, t.route)
        if move is None:  # pragma: no cover - the compiler guarantees every needed edge
            raise RuntimeError(f"saga {saga.saga_id}: no {trigger!r} transition from {t.state}")
        self.enter(move[0], move[1], cause, t)
        if failing:  # a branch failed: so does the block, which undoes its branches
            assert isinstance(t, Track)
            self.block_failed(t, cause)

    def retry_or_give_up(self, info: StateInfo, cause: str | None, t: AnyTrack) -> None:
        saga = self.saga
        step = info.step
        policy = step.retry
        done = t.attempt - t.base_attempt
        forever = info.phase == "compensation" and step.on_compensation_failure == "retry_forever"
        if (not forever and done >= policy.attempts) or (t.halting and info.phase == "action"):
            self.advance("exhausted", cause, t)
            return
        draw = self.env.random(f"{saga.saga_id}/{saga.seq}") if policy.jitter else None
        delay = policy.delay(min(done, 64), draw)
        if forever:
            delay = min(delay, policy.max_backoff or RETRY_FOREVER_CAP)
        at = self.now + delay
        prefix = "step" if info.phase == "action" else "compensation"
        event = self.emit(f"{prefix}.retrying", step.name, t.attempt,
                          {"next_attempt_at": at}, cause)
        if delay <= 0:
            self.start_attempt(info, t.attempt + 1, event.event_id, t)
        else:
            self.commands.append(SetTimer(saga.saga_id, at, "backoff", info.phase, step.name,
                                          t.attempt, event.event_id))

    def abort_forward(self, cause: str | None) -> None:
        """Deadline or cancel before the pivot succeeded: the step in progress counts as timed
        out, pending backoff is dropped, and recovery proceeds as for an exhausted step. In a
        parallel block, every branch still going forward is stopped that way at once."""
        saga = self.saga
        info = saga.info
        assert info is not None and info.phase == "action"
        reason = "deadline" if saga.deadline_passed else "cancelled"
        if saga.in_flight:  # (a parallel block too: undoing it stops its branches at once)
            event = self.emit(STEP_TIMED_OUT, info.step.name, saga.attempt,
                              {"timeout_at": saga.timeout_at, "reason": reason}, cause)
            cause = event.event_id
        self.advance("exhausted", cause, saga)

    # -- parallel blocks ------------------------------------------------------------------------
    def block_failed(self, failed: Track, cause: str | None) -> None:
        """A branch failed going forward: the block fails as a step whose effect is unknown
        (some branches may have done their part), so it is compensated — which stops the
        other branches and undoes what they did."""
        saga = self.saga
        info = saga.info
        block = failed.route.rsplit(".", 1)[0]
        if info is None or info.phase != "action" or info.step.name != block \
                or not saga.in_flight:
            return
        event = self.emit(STEP_FAILED, block, saga.attempt,
                          {"error": f"branch {failed.route} failed", "kind": "error"}, cause)
        self.advance("exhausted", event.event_id, saga)

    def halt(self, t: Track, cause: str | None, reason: str | None) -> None:
        """Stop a branch going forward. ``reason`` None (another branch failed): a step in
        flight finishes first; "cancelled" or "deadline": it counts as timed out now."""
        if t.status == "completed":
            self.enter(self.saga.compiled.undo_entry[t.route], None, cause, t)
            return
        if t.status != "running":
            return  # already compensating, or ended
        block = t.route.rsplit(".", 1)[0]
        if not t.halting:
            self.emit(BRANCH_HALTED, block, None, {"branch": t.route}, cause)
        info = t.info
        assert info is not None and info.phase == "action"
        if t.in_flight:
            if reason is None and not info.step.is_delay:
                return  # stops when its reply (or timeout) comes
            event = self.emit(STEP_TIMED_OUT, info.step.name, t.attempt,
                              {"timeout_at": t.timeout_at, "reason": reason or "halted"}, cause)
            cause = event.event_id
        self.advance("exhausted", cause, t)

    def branch_ended(self, t: Track, end: str, cause: str | None) -> None:
        block = t.route.rsplit(".", 1)[0]
        event = self.emit(f"branch.{end}", block, None, {"branch": t.route}, cause)
        self.join(self.saga.compiled.flow.step(block), event.event_id)

    def join(self, block: Step, cause: str | None) -> None:
        """After a branch of ``block`` ended: once every branch has, the block ends too."""
        saga = self.saga
        info = saga.info
        if info is None or info.step is not block or not saga.in_flight:
            return
        statuses = [saga.tracks[r].status for r in saga.compiled.blocks[block.name]]
        if info.phase == "action":
            if all(s == "completed" for s in statuses):
                event = self.emit(STEP_SUCCEEDED, block.name, saga.attempt, {"output": {}},
                                  cause)
                self.advance("succeeded", event.event_id, saga)
            return
        if not all(s in ("compensated", "failed") for s in statuses):
            return
        parked = [r for r in saga.compiled.blocks[block.name]
                  if saga.tracks[r].status == "failed"]
        if parked:
            event = self.emit(COMPENSATION_FAILED, block.name, saga.attempt,
                              {"error": f"compensation failed in branch {', '.join(parked)}",
                               "kind": "error"}, cause)
            self.advance("exhausted", event.event_id, saga)
        else:
            event = self.emit(COMPENSATION_SUCCEEDED, block.name, saga.attempt,
                              {"output": None}, cause)
            self.advance("succeeded", event.event_id, saga)

    # -- signals --------------------------------------------------------------------------------
    def reply(self, signal: ReplyReceived) -> None:
        saga = self.saga
        t = _track(saga, signal.step)
        info = t.info
        current = (info is not None and signal.phase == info.phase
                   and signal.step == info.step.name and _live(t, info.phase))
        cause = signal.command_id
        if current and signal.attempt == t.attempt and t.in_flight:
            assert info is not None
            self.outcome(info, signal, cause, t)
        elif (current and signal.attempt in t.timed_out
              and (signal.outcome == "succeeded"
                   or (signal.outcome == "rejected" and signal.phase == "action"))):
            # a late, definitive reply from a timed-out attempt of the step in progress ends it
            assert info is not None
            self.outcome(info, signal, cause, t)
        else:
            self.emit(REPLY_IGNORED, signal.step, signal.attempt,
                      {"phase": signal.phase, "attempt": signal.attempt,
                       "outcome": signal.outcome}, cause)

    def outcome(self, info: StateInfo, signal: ReplyReceived, cause: str | None,
                t: AnyTrack) -> None:
        prefix = "step" if info.phase == "action" else "compensation"
        step = info.step.name
        if signal.outcome == "succeeded":
            event = self.emit(f"{prefix}.succeeded", step, signal.attempt,
                              {"output": signal.output}, cause)
            halted = t.halting and info.phase == "action"  # done, but to be undone
            self.advance("exhausted" if halted else "succeeded", event.event_id, t)
            return
        kind = "rejected" if signal.outcome == "rejected" else "error"
        event = self.emit(f"{prefix}.failed", step, signal.attempt,
                          {"error": signal.error or kind, "kind": kind}, cause)
        if kind == "rejected" and info.phase == "action":
            self.advance("rejected", event.event_id, t)
        else:
            self.retry_or_give_up(info, event.event_id, t)

    def timer(self, signal: TimerFired) -> None:
        saga = self.saga
        if signal.kind == "deadline":
            if saga.status != "running" or saga.deadline_passed:
                return  # disarmed while compensating
            event = self.emit(SAGA_DEADLINE_EXCEEDED, None, None,
                              {"deadline_at": saga.deadline_at}, signal.causation_id)
            if not saga.pivot_done:
                self.abort_forward(event.event_id)
            return
        t = _track(saga, signal.step)
        info = t.info
        if info is None or signal.phase != info.phase or signal.step != info.step.name \
                or signal.attempt != t.attempt or not _live(t, info.phase):
            return  # a stale timer
        if signal.kind == "timeout":
            if not t.in_flight:
                return
            prefix = "step" if info.phase == "action" else "compensation"
            event = self.emit(f"{prefix}.timed_out", info.step.name, t.attempt,
                              {"timeout_at": t.timeout_at, "reason": "timeout"},
                              signal.causation_id)
            self.retry_or_give_up(info, event.event_id, t)
        elif signal.kind == "backoff":
            if t.in_flight or t.next_attempt_at is None:
                return
            self.start_attempt(info, t.attempt + 1, signal.causation_id, t)
        elif signal.kind == "delay":
            if not t.in_flight:
                return
            event = self.emit(STEP_SUCCEEDED, info.step.name, t.attempt,
                              {"output": {}}, signal.causation_id)
            self.advance("exhausted" if t.halting else "succeeded", event.event_id, t)

    def event(self, signal: EventReceived) -> None:
        """The awaited event: the wait succeeds with the event's data as its output. Anything
        else (no wait in progress, another event or key) changes nothing."""
        saga = self.saga
        info = saga.info
        if (info is None or not info.step.is_wait or not saga.in_flight
                or saga.waiting != (signal.event, signal.key)):
            return
        event = self.emit(STEP_SUCCEEDED, info.step.name, saga.attempt,
                          {"output": signal.data, "event_id": signal.event_id},
                          saga.command_id)
        self.advance("succeeded", event.event_id, saga)

    def cancel(self, signal: Cancel) -> None:
        """Record ``saga.cancelled``; before the pivot has succeeded, roll back as a deadline
        does. While compensating (the deadline is disarmed), or after the pivot, nothing else
        changes."""
        saga = self.saga
        if saga.cancelled:
            return
        event = self.emit(SAGA_CANCELLED, None, None,
                          {"requested_by": signal.requested_by}, signal.causation_id)
        if saga.status == "running" and not saga.pivot_done:
            self.abort_forward(event.event_id)

    def retry(self, signal: Retry) -> None:
        saga = self.saga
        if saga.status != "failed":
            return
        info = saga.info
        assert info is not None
        event = self.emit(SAGA_RETRIED, info.step.name, None,
                          {"requested_by": signal.requested_by, "phase": info.phase},
                          signal.causation_id)
        if not info.step.is_parallel:
            self.start_attempt(info, saga.attempt + 1, event.event_id, saga)
            return
        # a block: each branch that had not ended (or whose compensation parked) is driven
        # again where it stopped, with a new attempt (as the saga's own step would be)
        kind = STEP_STARTED if info.phase == "action" else COMPENSATION_STARTED
        started = self.emit(kind, info.step.name, saga.attempt + 1,
                            {"payload": None, "timeout_at": None,
                             "parallel": list(saga.compiled.blocks[info.step.name])},
                            event.event_id)
        for route in saga.compiled.blocks[info.step.name]:
            t = saga.tracks[route]
            t_info = t.info
            if t.status in ("running", "compensating", "failed") and t_info is not None:
                self.start_attempt(t_info, t.attempt + 1, started.event_id, t)
        self.join(info.step, started.event_id)


def start(compiled: CompiledFlow, saga_id: str, saga_input: Any, env: Env,
          traceparent: str | None = None) -> tuple[Saga, list[Event], list[Command]]:
    """A new saga: ``saga.started``, its first step started, its deadline armed.
    ``traceparent``: the W3C context of the caller's span, kept in ``saga.started``'s data
    (the saga's trace links to it)."""
    saga = Saga(saga_id, compiled)
    decision = _Decision(saga, env)
    deadline = compiled.flow.deadline
    deadline_at = decision.now + deadline if deadline is not None else None
    data: dict[str, Any] = {"input": saga_input, "deadline_at": deadline_at}
    if traceparent is not None:
        data["traceparent"] = traceparent
    event = decision.emit(SAGA_STARTED, None, None, data, None)
    if deadline_at is not None:
        decision.commands.append(SetTimer(saga_id, deadline_at, "deadline", None, None, None,
                                          event.event_id))
    decision.enter(compiled.initial, None, event.event_id, saga)
    return saga, decision.events, decision.commands


_HANDLERS: dict[type, Callable[[_Decision, Any], None]] = {
    ReplyReceived: _Decision.reply,
    TimerFired: _Decision.timer,
    EventReceived: _Decision.event,
    Cancel: _Decision.cancel,
    Retry: _Decision.retry,
}


def handle(saga: Saga, signal: Signal, env: Env) -> tuple[list[Event], list[Command]]:
    """Decide what ``signal`` means for ``saga``: the events to append and the commands to send.

    ``saga`` is updated in place. Nothing is ever recorded after a terminal event, except what a
    :class:`Retry` starts.
    """
    if saga.terminal and not isinstance(signal, Retry):
        return [], []
    decision = _Decision(saga, env)
    _HANDLERS[type(signal)](decision, signal)
    return decision.events, decision.commands


def park_unavailable(saga_id: str, last_seq: int, last_event_id: str | None, error: str,
                     env: Env) -> Event:
    """The event that ends a saga whose definition can no longer run (its text does not load
    or its services do not import): ``saga.failed``, reason ``definition_unavailable``
    (DESIGN.md §4.8). Needs no compiled flow, since there may be none."""
    seq = last_seq + 1
    return Event(seq, SAGA_FAILED, None, None, env.now(), f"{saga_id}/{seq}", last_event_id,
                 {"reason": "definition_unavailable", "error": error})


def resume(saga: Saga, env: Env) -> tuple[list[Event], list[Command]]:
    """Put a replayed saga back in motion (DESIGN.md §4.7).

    A deadline that passed while nothing ran is handled first. Then an attempt past its
    ``timeout_at`` is recorded as timed out; otherwise the same attempt is sent again (same key)
    with the time it has left. Backoff and the deadline are re-armed from their stored
    absolute times, caused by the events that armed them.
    """
    if saga.terminal:
        return [], []
    decision = _Decision(saga, env)
    info = saga.info
    if info is None:  # pragma: no cover - a non-terminal saga is always in a step state
        return [], []
    deadline_cause = f"{saga.saga_id}/1"  # saga.started armed it
    before = {route: t.command_id for route, t in saga.tracks.items()}
    if saga.deadline_at is not None and saga.status == "running" and not saga.deadline_passed:
        if saga.deadline_at <= decision.now:
            decision.timer(TimerFired("deadline", None, None, None, deadline_cause))
            if saga.info is not info or saga.terminal or saga.status != "running":
                return decision.events, decision.commands  # recovery took another path
        else:
            decision.commands.append(SetTimer(saga.saga_id, saga.deadline_at, "deadline", None,
                                              None, None, deadline_cause))
    if info.step.is_parallel:
        for route in saga.compiled.blocks[info.step.name]:
            track = saga.tracks[route]
            track_info = track.info
            if (track_info is not None and not track.ended and track.status != "completed"
                    and track.command_id == before.get(route)):  # (not moved by the deadline)
                _resume_track(decision, track_info, track)
    else:
        _resume_track(decision, info, saga)
    return decision.events, decision.commands


def _resume_track(decision: _Decision, info: StateInfo, t: AnyTrack) -> None:
    """Re-send a track's attempt in flight (or time it out), or re-arm its backoff."""
    saga = decision.saga
    if t.in_flight:
        assert t.timeout_at is not None
        if t.timeout_at <= decision.now:  # past its time: a delay is over, a call timed out
            kind = "delay" if info.step.is_delay else "timeout"
            decision.timer(TimerFired(kind, info.phase, info.step.name, t.attempt,
                                      t.command_id))
        else:
            decision.send_attempt(info, t)
    elif t.next_attempt_at is not None:
        decision.commands.append(SetTimer(saga.saga_id, t.next_attempt_at, "backoff",
                                          info.phase, info.step.name, t.attempt,
                                          t.retrying_id))
