"""A deterministic harness: one saga, one fault schedule, no threads, virtual time.

It drives the pure core (:mod:`sagas.engine.core`) itself and calls the flow's real service objects
through the same idempotent inbox the actors use (:class:`actors.Dispatcher`), so what it finds is
what the runtime would do — only thousands of times faster and always the same way.

A :class:`Schedule` says what goes wrong, per ``(phase, step, attempt)``:

===============  ================================================================================
``error``        the handler is not run; the attempt fails as if it raised (transient, retried)
``reject``       the handler is not run; the attempt is answered ``Rejected`` (stored as definitive)
``timeout``      the command is lost before it runs: no reply, the attempt times out
``late``         the handler runs, but its reply arrives only after the attempt timed out
``duplicate``    the command is delivered twice (the inbox answers the second from the first)
``redeliver``    the handler's effect happens, then the process dies before the reply is
                 recorded: the command is delivered again and the handler runs a second time
``lost``         the handler runs (its effect happens) but its reply is lost: the attempt times
                 out, and the engine cannot know the effect happened
===============  ================================================================================

A *persistent* fault (``Schedule(persistent={(phase, step): kind})``) strikes every attempt of
one action or compensation: a service that is down, or a network that loses every reply. It is
one fault however many attempts the step has; it holds across a crash and resume; under
``on_compensation_failure: retry_forever`` it lasts the step's ``retry.attempts`` attempts (so the
saga can end). A saga that ends ``failed`` while a persistent fault was in force is retried once,
as an operator would with ``saga retry`` once the trouble is over: the fault lifts there.

``crash_after=N`` restarts the runtime once the log holds N events: whatever was in flight is
lost, the saga is rebuilt from its log and resumed (see the README's Guarantees).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import heapq
import itertools
import os
import random as random_module
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors import Command, Dispatcher, Fault, MemoryInbox, Service

from ..engine import core
from ..engine.inputs import validate_input
from ..errors import DefinitionUnavailable
from ..events import Event
from ..language.compiler import CompiledFlow, compile_flow
from ..language.loader import load_flow
from ..language.model import Flow
from ..language.service_classes import import_service
from ..stores import SagaHeader, SagaRecord
from ._guard import DEFAULT_HANDLER_TIMEOUT, HandlerHung, Watch, current_watch, guarded

__all__ = ["FAULTS", "PERSISTENT_FAULTS", "BatchRun", "HarnessRun", "Schedule", "hung_run",
           "make_services", "run_batch", "run_schedule"]

FAULTS = ("error", "reject", "timeout", "late", "duplicate", "redeliver", "lost")
PERSISTENT_FAULTS = ("error", "timeout", "lost")  # the ones that exhaust a step's attempts
_DESCRIBE = {
    "error": "fails with an error (the handler does not run)",
    "reject": "is answered Rejected (the handler does not run)",
    "timeout": "is lost before it runs (no reply: timed out)",
    "late": "runs; its reply arrives after the attempt timed out",
    "duplicate": "is delivered twice (the second answered by the inbox)",
    "redeliver": "runs, the process dies before its reply is recorded, and it runs again",
    "lost": "runs (or the inbox answers for it), its reply is lost (timed out)",
}
START = 1_700_000_000.0
MAX_EVENTS = 10_000
HISTORY_SHOWN = 90  # lines of a history shown; a longer one is cut in the middle


@dataclass(frozen=True)
class Schedule:
    """What goes wrong in one run: faults by ``(phase, step, attempt)``, and an optional crash."""

    faults: Mapping[tuple[str, str, int], str] = field(default_factory=dict)
    crash_after: int | None = None
    persistent: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.faults and not self.persistent:
            return
        for key, kind in [*self.faults.items(), *self.persistent.items()]:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r} at {key}: use one of {FAULTS}")
        for key in [*self.faults, *self.persistent]:
            if key[0] not in ("action", "compensation"):
                raise ValueError(f"unknown phase {key[0]!r} at {key}: action or compensation")

    @property
    def size(self) -> int:
        """How many things go wrong: faults (a persistent one counts once), plus a crash."""
        return len(self.faults) + len(self.persistent) + (self.crash_after is not None)

    @property
    def key(self) -> tuple[Any, ...]:
        """A hashable identity: two schedules with the same key run the same way."""
        return (tuple(sorted(self.faults.items())), self.crash_after,
                tuple(sorted(self.persistent.items())))

    def without(self, part: Any) -> Schedule:
        """This schedule less one fault (a key of ``faults`` or ``persistent``) or, for
        ``"crash"``, the crash: how a counterexample is made smaller."""
        if part == "crash":
            return Schedule(self.faults, None, self.persistent)
        return Schedule({k: v for k, v in self.faults.items() if k != part}, self.crash_after,
                        {k: v for k, v in self.persistent.items() if k != part})

    def parts(self) -> list[Any]:
        """What :meth:`without` can take away, one at a time."""
        crash = ["crash"] if self.crash_after is not None else []
        return [*sorted(self.persistent), *sorted(self.faults), *crash]

    def merged(self, other: Schedule) -> Schedule:
        """Both schedules' faults (``other`` wins where they name the same attempt)."""
        crash = other.crash_after if other.crash_after is not None else self.crash_after
        return Schedule({**self.faults, **other.faults}, crash,
                        {**self.persistent, **other.persistent})

    def describe(self) -> str:
        """One line per fault, in flow order, for counterexamples."""
        lines = [f"{phase} {step} every attempt: {kind} (persistent)"
                 for (phase, step), kind in sorted(self.persistent.items())]
        lines += [f"{phase} {step} attempt {attempt}: {kind}"
                  for (phase, step, attempt), kind in sorted(self.faults.items())]
        if self.crash_after is not None:
            lines.append(f"runtime crash after event {self.crash_after}")
        return "\n".join(lines) if lines else "no faults"


@dataclass
class HarnessRun:
    """What one run did: the saga's log and the services before and after."""

    compiled: CompiledFlow
    saga_id: str
    input: Any
    schedule: Schedule
    events: list[Event]
    services: dict[str, Service]
    snapshots_before: dict[str, Any]
    snapshots_after: dict[str, Any]
    invocations: list[tuple[str, str, int]]  # (phase, step, attempt) per handler call
    struck: list[tuple[int, str]] = field(default_factory=list)  # (events before it, what)
    hung: str | None = None  # the call into service code that never returned, if one did
    # as a reference for "effects as without faults": the services whose snapshot() two runs
    # without faults agree on (None: all of them)
    stable: frozenset[str] | None = None

    @property
    def flow(self) -> Flow:
        return self.compiled.flow

    @property
    def status(self) -> str:
        return _status(self.events)

    @property
    def reason(self) -> str | None:
        return _reason(self.events)

    @property
    def first_end(self) -> int:
        """How many events the log held when the saga first ended (before a ``saga retry``
        the harness made after a persistent fault); all of them if it never ended."""
        for n, event in enumerate(self.events, 1):
            if event.type in _TERMINAL:
                return n
        return len(self.events)

    @property
    def first_status(self) -> str:
        """The status the saga first ended in (before any retry)."""
        return _status(self.events[:self.first_end])

    @property
    def first_reason(self) -> str | None:
        return _reason(self.events[:self.first_end])

    @property
    def retried(self) -> bool:
        return any(e.type == "saga.retried" for e in self.events)

    def compensated(self, *, until_first_end: bool = False) -> list[str]:
        events = self.events[:self.first_end] if until_first_end else self.events
        return [e.step or "" for e in events if e.type == "compensation.succeeded"]

    def route(self) -> tuple[str, ...]:
        """The branches its choices took, in order."""
        return tuple(str(e.data.get("branch")) for e in self.events if e.type == "choice.made")

    def record(self) -> SagaRecord:
        """The run as a store would hold it (for :mod:`sagas.audit`)."""
        flow = self.flow
        last = self.events[-1]
        header = SagaHeader(self.saga_id, flow.name, flow.version, flow.definition, self.input,
                            self.status, self.reason, self.events[0].at, last.at, last.seq)
        return SagaRecord(header, flow.text, tuple(self.events))

    def history(self) -> str:
        """The log, one line per event, with the faults shown where they struck."""
        notes: dict[int, list[str]] = {}
        for after, note in self.struck:
            notes.setdefault(after, []).append(note)
        lines = [f"        !! {note}" for note in notes.get(0, [])]
        for n, e in enumerate(self.events, 1):
            where = f"{e.step} #{e.attempt}" if e.step and e.attempt else (e.step or "")
            if e.type.startswith("branch.") or e.type == "choice.made":
                where = f"{where} [{e.data.get('branch')}]"
            detail = e.data.get("kind") or e.data.get("reason") or ""
            if e.type.endswith(".failed") and e.data.get("error") and e.type != "saga.failed":
                detail = f"{detail}: {e.data['error']}"
            lines.append(f"  {e.seq:>3} {e.type:<24} {where:<24} {detail}".rstrip())
            lines.extend(f"        !! {note}" for note in notes.get(n, []))
        if self.hung:
            lines.append(f"        !! {self.hung}")
        if len(lines) > HISTORY_SHOWN:  # a saga that never ended: its start and its end
            head, tail = HISTORY_SHOWN * 2 // 3, HISTORY_SHOWN // 3
            lines = [*lines[:head], f"        ... {len(lines) - head - tail} more lines ...",
                     *lines[-tail:]]
        return "\n".join(lines)


_TERMINAL = {"saga.completed": "completed", "saga.compensated": "compensated",
             "saga.failed": "failed"}


def _status(events: Sequence[Event]) -> str:
    return _TERMINAL.get(events[-1].type, "running") if events else "running"


def _reason(events: Sequence[Event]) -> str | None:
    last = events[-1] if events else None
    return last.data.get("reason") if last is not None and last.type == "saga.failed" else None


class _TooLong(Exception):
    """The sagas did not end within :data:`MAX_EVENTS` events (plus room for every attempt)."""


class _Env:
    def __init__(self, now: float, seed: int):
        self.t = now
        self.seed = seed

    def now(self) -> float:
        return self.t

    def random(self, key: str) -> float:
        return random_module.Random(f"{self.seed}:{key}").random()


class _OneFault:
    """Hands the dispatcher the fault chosen for the delivery at hand."""

    def __init__(self) -> None:
        self.next: Fault | None = None

    def decide(self, command: Command) -> Fault | None:
        fault, self.next = self.next, None
        return fault


def _snapshots(objects: Mapping[str, Service], watch: Watch | None) -> dict[str, Any]:
    """Every service's ``snapshot()``, by name. One that keeps :meth:`Service.snapshot` (which
    returns ``None``) is not called: it has nothing to copy, and cannot hang."""
    snapshots: dict[str, Any] = {}
    for name, obj in objects.items():
        if (getattr(type(obj), "snapshot", None) is _DEFAULT_SNAPSHOT
                and "snapshot" not in getattr(obj, "__dict__", ())):
            snapshots[name] = None
        else:
            snapshots[name] = _snapshot(name, obj, watch)
    return snapshots


_DEFAULT_SNAPSHOT = Service.snapshot


def _snapshot(name: str, service: Service, watch: Watch | None) -> Any:
    if watch is not None:
        watch.enter(f"{name}.snapshot()")
    try:
        # a copy: a snapshot that hands out the service's own dict would change with it
        return copy.deepcopy(service.snapshot())
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a snapshot that fails (SystemExit too) is itself a finding
        return f"<snapshot raised {type(exc).__name__}: {exc}>"
    finally:
        if watch is not None:
            watch.leave()


def make_services(flow: Flow, given: Mapping[str, Any] | None = None) -> dict[str, Service]:
    """Fresh service objects for a run: ``given`` (by service name: an object or a class, or
    a zero-argument factory), else the flow's declared classes."""
    services: dict[str, Service] = {}
    by_path: dict[str, Service] = {}
    for name, spec in flow.services.items():
        chosen = (given or {}).get(name)
        if isinstance(chosen, Service):
            services[name] = chosen
        elif chosen is not None:
            services[name] = _create(name, repr(chosen), chosen)
        elif spec.import_path in by_path:
            services[name] = by_path[spec.import_path]  # one object per class, as the runtime
        else:
            services[name] = by_path[spec.import_path] = _create(
                name, spec.import_path, import_service(spec.import_path))
    return services


def _create(name: str, what: str, factory: Any) -> Service:
    """One service object; ``DefinitionUnavailable`` (one line) when its constructor fails."""
    try:
        return factory()  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a constructor must not end saga test
        raise DefinitionUnavailable(f"service {name!r} ({what}) could not be created: "
                                    f"{type(exc).__name__}: {exc}") from None


def run_schedule(flow: Flow | str | os.PathLike[str], input: Any,
                 schedule: Schedule | None = None, *,
                 services: Mapping[str, Any] | None = None, seed: int = 0,
                 saga_id: str = "saga-1", start: float = START,
                 handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT) -> HarnessRun:
    """Run one saga of ``flow`` under ``schedule`` to its end, on virtual time, and return it.

    ``services`` maps service names to objects, classes or factories (default: a fresh object of
    each declared class). Deterministic: the same arguments give the same run. A call into a
    service that does not return within ``handler_timeout`` wall-clock seconds ends the run
    there, with :attr:`HarnessRun.hung` naming it (``None``: no guard).
    """
    schedule = schedule or Schedule()
    batch = run_batch(flow, [(input, schedule)], services=services, seed=seed,
                      crash_after=schedule.crash_after, start=start, ids=[saga_id],
                      handler_timeout=handler_timeout)
    run = batch.runs[0]
    run.schedule = schedule
    return run


@dataclass
class BatchRun:
    """Several sagas run concurrently on the same services."""

    runs: list[HarnessRun]
    services: dict[str, Service]
    crash_after: int | None = None


def run_batch(flow: Flow | str | os.PathLike[str], sagas: Sequence[tuple[Any, Schedule]], *,
              services: Mapping[str, Any] | None = None, seed: int = 0,
              crash_after: int | None = None, start: float = START,
              ids: Sequence[str] | None = None,
              handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT) -> BatchRun:
    """Run several sagas of ``flow`` at once on shared services, each under its own schedule
    (its ``crash_after`` is ignored: ``crash_after`` here counts the events of all sagas, and
    the crash hits them all). Their steps interleave in virtual time."""
    if not isinstance(flow, Flow):
        flow = load_flow(flow)
    compiled = compile_flow(flow)
    ids = list(ids) if ids is not None else [f"saga-{n + 1}" for n in range(len(sagas))]
    state: dict[str, Any] = {}

    def work() -> BatchRun:
        watch = current_watch()
        if watch is not None:
            watch.enter(f"creating the services of {flow.name}")
        objects = make_services(flow, services)
        if watch is not None:
            watch.leave()
        state["objects"] = objects
        given = services or {}
        reused = {name for name, obj in objects.items() if given.get(name) is obj}
        harness = _Harness(compiled, objects, seed, start, crash_after, watch, reused)
        state["harness"] = harness
        before = _snapshots(objects, watch)
        state["before"] = harness.before = before
        for saga_id, (saga_input, schedule) in zip(ids, sagas, strict=True):
            harness.start(saga_id, validate_input(flow, saga_input), schedule)
        with contextlib.suppress(_TooLong):  # e.g. a retry_forever undo that never succeeds
            harness.run()
        after = _snapshots(objects, watch)
        harness.spare_dispatchers()
        return _batch(harness, objects, before, after, ids, crash_after,
                      copy_lists=False)

    try:
        return guarded(work, handler_timeout)
    except HandlerHung as hung:
        harness = state.get("harness")
        if harness is None:  # a service's constructor hung: nothing ran
            harness = _Harness(compiled, {}, seed, start, crash_after, None)
            for saga_id, (saga_input, schedule) in zip(ids, sagas, strict=True):
                harness.add(saga_id, saga_input, schedule)
        before = state.get("before", {})
        batch = _batch(harness, state.get("objects", {}), before, dict(before), ids,
                       crash_after)
        culprit = hung.context[1] if isinstance(hung.context, tuple) else None
        for run in batch.runs:
            if culprit in (None, run.saga_id):
                run.hung = _hung_text(hung)
        return batch


def _hung_text(hung: HandlerHung) -> str:
    return f"{hung.label} did not return within {hung.timeout:g}s (wall clock)"


def hung_run(hung: HandlerHung, flow: Flow | None = None) -> HarnessRun | None:
    """The run a :class:`HandlerHung` raised from guarded work interrupted, as far as it got
    (with ``flow``: an empty run when the call hung outside any run, e.g. in a constructor)."""
    context = hung.context
    if isinstance(context, HarnessRun):  # an invariant or snapshot after the run
        context.hung = _hung_text(hung)
        return context
    if not (isinstance(context, tuple) and isinstance(context[0], _Harness)):
        if flow is None:
            return None
        empty = _Harness(compile_flow(flow), {}, 0, START, None, None)
        empty.add("saga-1", None, Schedule())
        run = _batch(empty, {}, {}, {}, ["saga-1"], None).runs[0]
        run.hung = _hung_text(hung)
        return run
    harness, saga_id = context
    objects = {name: d.service for name, d in harness.dispatchers.items()}
    before = harness.before
    run = _batch(harness, objects, before, dict(before), [saga_id], harness.crash_after).runs[0]
    run.hung = _hung_text(hung)
    return run


def _batch(harness: _Harness, objects: dict[str, Service], before: dict[str, Any],
           after: dict[str, Any], ids: list[str], crash_after: int | None,
           copy_lists: bool = True) -> BatchRun:
    """The runs' results (with ``copy_lists``, of lists the harness may still change: a worker
    abandoned in a call that hung may return from it later and carry on)."""
    runs = []
    for saga_id in ids:
        one = harness.runs[saga_id]
        events, invocations, struck = one.events, one.invocations, one.struck
        if copy_lists:
            events, invocations, struck = list(events), list(invocations), list(struck)
        runs.append(HarnessRun(harness.compiled, saga_id, one.input, one.schedule, events,
                               objects, before, after, invocations, struck))
    return BatchRun(runs, objects, crash_after)


@functools.lru_cache(maxsize=64)
def _max_events(compiled: CompiledFlow) -> int:
    """How many events a run of ``compiled`` may record before its sagas count as never ending:
    room for every attempt of every step (a step may allow 10,000 under a persistent fault)."""
    return MAX_EVENTS + 4 * sum(2 * step.retry.attempts for step in compiled.flow.steps)


MAX_SPARE = 64
_spare: dict[tuple[str, int], Dispatcher] = {}  # (service name, id(object)) -> idle dispatcher


def _dispatcher(name: str, obj: Service, inbox: MemoryInbox, faults: _OneFault,
                reuse: bool) -> Dispatcher:
    """A dispatcher of ``obj`` on ``inbox``: an idle one a run left (``reuse``: ``obj`` is
    the caller's, so it is passed again), else a new one. Taken out of the spares while in use,
    so two threads running sagas on the same objects never share one."""
    if reuse:
        spare = _spare.pop((name, id(obj)), None)
        if spare is not None and spare.service is obj:
            spare.inbox, spare.faults = inbox, faults
            return spare
    return Dispatcher(obj, service_name=name, instance=0, inbox=inbox, faults=faults)


class _Run:
    """One saga of a harness: the core's state of it, its schedule, what was recorded."""

    __slots__ = ("events", "faulty", "input", "invocations", "lifted", "saga", "saga_id",
                 "schedule", "struck")

    def __init__(self, saga_id: str, saga_input: Any, schedule: Schedule):
        self.saga_id = saga_id
        self.input = saga_input
        self.schedule = schedule
        self.faulty = bool(schedule.faults or schedule.persistent)  # else no attempt has one
        self.lifted = False  # retried after a persistent fault: it is over
        self.saga: core.Saga | None = None
        self.events: list[Event] = []
        self.invocations: list[tuple[str, str, int]] = []  # (phase, step, attempt)
        self.struck: list[tuple[int, str]] = []


class _Harness:
    """The event loop: a heap of replies and timers in virtual time, the pure core, the inbox.

    The heap holds ``(at, order, run, signal)``: a reply or event as the core's signal, a timer
    as its :class:`core.SetTimer` (made a signal when it fires: most never do, the saga having
    moved on)."""

    def __init__(self, compiled: CompiledFlow, objects: dict[str, Service], seed: int,
                 start: float, crash_after: int | None, watch: Watch | None,
                 reused: Collection[str] = ()):
        self.compiled = compiled
        inbox = MemoryInbox()
        self.injector = _OneFault()
        self.dispatchers = {name: _dispatcher(name, obj, inbox, self.injector, name in reused)
                            for name, obj in objects.items()}
        self.reused = reused
        self.watch = watch
        self.before: dict[str, Any] = {}
        self.max_events = _max_events(compiled)
        self.env = _Env(start, seed)
        self.crash_after = crash_after
        self.crashed = False
        self.total = 0
        self.runs: dict[str, _Run] = {}
        self.pending: list[tuple[float, int, _Run, Any]] = []
        self.order = itertools.count()

    def spare_dispatchers(self) -> None:
        """Once the run is over: keep the dispatchers of the services the caller passed in
        for the next run on them (building one binds each of its handlers)."""
        if len(_spare) > MAX_SPARE:
            _spare.clear()
        for name in self.reused:
            dispatcher = self.dispatchers[name]
            _spare[(name, id(dispatcher.service))] = dispatcher

    def add(self, saga_id: str, saga_input: Any, schedule: Schedule) -> _Run:
        """A saga of this harness, not started."""
        run = self.runs[saga_id] = _Run(saga_id, saga_input, schedule)
        return run

    def start(self, saga_id: str, saga_input: Any, schedule: Schedule) -> None:
        run = self.add(saga_id, saga_input, schedule)
        run.saga, new, commands = core.start(self.compiled, saga_id, saga_input, self.env)
        self.commit(run, new, commands)

    def commit(self, run: _Run, new: list[Event], commands: list[core.Command]) -> None:
        """Record a decision's events; crash right after, if it is time; else act on it."""
        run.events.extend(new)
        self.total += len(new)
        if self.total > self.max_events:
            raise _TooLong  # the runs are returned as they are: not ended
        if (self.crash_after is not None and not self.crashed and new
                and self.total >= self.crash_after):
            self.crashed = True
            self.note(run, "runtime crash: everything in flight is lost; resumed from the log")
            self.crash_and_resume()
            return
        self.act(run, commands)

    def note(self, run: _Run, text: str) -> None:
        run.struck.append((len(run.events), text))

    def crash_and_resume(self) -> None:
        self.pending.clear()  # everything in flight is lost with the process
        for run in self.runs.values():
            run.saga = saga = core.replay(run.saga_id, self.compiled, run.events)
            new, commands = core.resume(saga, self.env)
            run.events.extend(new)
            self.total += len(new)
            self.act(run, commands)

    def act(self, run: _Run, commands: list[core.Command]) -> None:
        """Carry out the commands the core gave for ``run``'s saga."""
        for command in commands:
            if isinstance(command, core.Execute):
                self.deliver(run, command)
            elif isinstance(command, core.SetTimer):
                heapq.heappush(self.pending, (command.at, next(self.order), run, command))
            elif isinstance(command, core.Await):
                self.await_event(run, command)

    def fault(self, run: _Run, phase: str, step_name: str, attempt: int) -> str | None:
        """The fault for one attempt: the schedule's, or its persistent fault's while that is
        in force (not after the retry that lifts it; under retry_forever, for the step's
        ``retry.attempts`` attempts)."""
        schedule = run.schedule
        kind = schedule.faults.get((phase, step_name, attempt))
        if kind is not None or run.lifted:
            return kind
        kind = schedule.persistent.get((phase, step_name))
        if kind is not None and phase == "compensation":
            step = self.compiled.flow.step(step_name)
            if step.on_compensation_failure == "retry_forever" and attempt > step.retry.attempts:
                return None
        return kind

    def await_event(self, run: _Run, command: core.Await) -> None:
        """A wait_for step: its event arrives at once (data ``{}``), unless the schedule puts
        a fault (of any kind) on it: then it never comes and the wait times out."""
        if run.faulty and self.fault(run, "action", command.step, command.attempt) is not None:
            self.note(run, f"{command.step}: the event {command.event} never comes")
            return
        event_id = f"{command.saga_id}/{command.step}/{command.attempt}"
        signal = core.EventReceived(command.event, command.key, {}, event_id)
        heapq.heappush(self.pending, (self.env.t, next(self.order), run, signal))

    def deliver(self, run: _Run, command: core.Execute) -> None:
        kind = (self.fault(run, command.phase, command.step, command.attempt) if run.faulty
                else None)
        message = Command(command.command_id, run.saga_id, command.step,
                          command.phase, command.name, command.attempt, command.key,
                          command.payload if command.payload is not None else {},
                          command.result, command.timeout_at)
        if kind is None:  # no fault: one delivery, its reply now
            watch = self.watch
            if watch is not None:
                watch.enter(f"{command.service}.{command.name}", (self, run.saga_id))
            for reply in self.dispatchers[command.service].process(message):
                if not reply.replayed:
                    run.invocations.append((command.phase, command.step, command.attempt))
                signal = core.ReplyReceived(command.phase, command.step, command.attempt,
                                            reply.outcome, reply.output, reply.error,
                                            command.command_id)
                heapq.heappush(self.pending, (self.env.t, next(self.order), run, signal))
            if watch is not None:
                watch.leave()
            return
        self.deliver_faulty(run, command, message, kind)

    def deliver_faulty(self, run: _Run, command: core.Execute, message: Command,
                       kind: str) -> None:
        key = (command.phase, command.step, command.attempt)
        invocations = run.invocations
        label = f"{command.service}.{command.name}"
        self.note(run, f"{command.phase} {command.step} attempt {command.attempt}: "
                       f"{label} {_DESCRIBE[kind]}")
        if kind == "timeout":
            return
        dispatcher = self.dispatchers[command.service]
        watch = self.watch
        if kind == "redeliver":
            invocations.append(key)
            # the effect happens; the reply (or whatever it raised) is lost with the process
            if watch is not None:
                watch.enter(label, (self, run.saga_id))
            try:
                dispatcher.service.handler(command.name)(message)
            except KeyboardInterrupt:
                raise
            except BaseException:  # whatever it raised (SystemExit too) is lost with it
                pass
            if watch is not None:
                watch.leave()
        if kind in ("error", "reject", "duplicate"):
            self.injector.next = Fault(kind)
        elif kind == "lost":
            self.injector.next = Fault("run_then_drop")
        if watch is not None:
            watch.enter(label, (self, run.saga_id))
        replies = list(dispatcher.process(message))
        if watch is not None:
            watch.leave()
        for reply in replies:
            if not reply.replayed and kind not in ("error", "reject"):
                invocations.append(key)
            at = command.timeout_at + 0.001 if kind == "late" else self.env.t
            signal = core.ReplyReceived(command.phase, command.step, command.attempt,
                                        reply.outcome, reply.output, reply.error,
                                        command.command_id)
            heapq.heappush(self.pending, (at, next(self.order), run, signal))
        if kind == "lost":
            invocations.append(key)  # delivered and processed (run, or answered by the inbox)

    def run(self) -> None:
        pending, env, timer = self.pending, self.env, core.SetTimer
        while True:
            while pending:
                at, _, run, item = heapq.heappop(pending)
                saga = run.saga
                if saga is None or saga.terminal:
                    continue
                if at > env.t:
                    env.t = at
                signal = item.fired() if isinstance(item, timer) else item
                new, commands = core.handle(saga, signal, env)
                self.commit(run, new, commands)
            if not self.retry_after_persistent_faults():
                return

    def retry_after_persistent_faults(self) -> bool:
        """``saga retry`` for each saga that ended failed under a persistent fault: the trouble
        is over (the fault lifts). Whether any was retried."""
        retried = False
        for run in self.runs.values():
            saga = run.saga
            if (run.lifted or not run.schedule.persistent or saga is None
                    or saga.status != "failed"):
                continue
            run.lifted = True
            self.note(run, "the persistent fault is over; `saga retry` by an operator")
            new, commands = core.handle(saga, core.Retry("saga test"), self.env)
            self.commit(run, new, commands)
            retried = True
        return retried
