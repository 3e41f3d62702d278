"""A deterministic harness: one saga, one fault schedule, no threads, virtual time.

It drives the pure core (:mod:`sagas.core`) itself and calls the flow's real service objects
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
===============  ================================================================================

and ``crash_after=N`` restarts the runtime once the log holds N events: whatever was in flight is
lost, the saga is rebuilt from its log and resumed (DESIGN.md §4.7).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import random as random_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors import Command, Dispatcher, Fault, MemoryInbox, Reply, Service

from .. import core
from ..compiler import CompiledFlow, compile_flow
from ..events import Event
from ..loader import load_flow
from ..model import Flow
from ..runtime import validate_input
from ..services import import_service
from ..stores import SagaHeader, SagaRecord

__all__ = ["FAULTS", "BatchRun", "HarnessRun", "Schedule", "run_batch", "run_schedule"]

FAULTS = ("error", "reject", "timeout", "late", "duplicate", "redeliver")
START = 1_700_000_000.0
MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Schedule:
    """What goes wrong in one run: faults by ``(phase, step, attempt)``, and an optional crash."""

    faults: Mapping[tuple[str, str, int], str] = field(default_factory=dict)
    crash_after: int | None = None

    def __post_init__(self) -> None:
        for key, kind in self.faults.items():
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r} at {key}: use one of {FAULTS}")

    @property
    def size(self) -> int:
        """How many things go wrong (faults, plus one for a crash)."""
        return len(self.faults) + (self.crash_after is not None)

    def describe(self) -> str:
        """One line per fault, in flow order, for counterexamples."""
        lines = [f"{phase} {step} attempt {attempt}: {kind}"
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

    @property
    def flow(self) -> Flow:
        return self.compiled.flow

    @property
    def status(self) -> str:
        last = self.events[-1].type if self.events else ""
        return {"saga.completed": "completed", "saga.compensated": "compensated",
                "saga.failed": "failed"}.get(last, "running")

    @property
    def reason(self) -> str | None:
        last = self.events[-1] if self.events else None
        return last.data.get("reason") if last is not None and last.type == "saga.failed" \
            else None

    def compensated(self) -> list[str]:
        return [e.step or "" for e in self.events if e.type == "compensation.succeeded"]

    def record(self) -> SagaRecord:
        """The run as a store would hold it (for :mod:`sagas.audit`)."""
        flow = self.flow
        last = self.events[-1]
        header = SagaHeader(self.saga_id, flow.name, flow.version, flow.definition, self.input,
                            self.status, self.reason, self.events[0].at, last.at, last.seq)
        return SagaRecord(header, flow.text, tuple(self.events))

    def history(self) -> str:
        """The log, one line per event."""
        lines = []
        for e in self.events:
            where = f"{e.step} #{e.attempt}" if e.step and e.attempt else (e.step or "")
            detail = e.data.get("kind") or e.data.get("reason") or ""
            lines.append(f"  {e.seq:>3} {e.type:<24} {where:<24} {detail}".rstrip())
        return "\n".join(lines)


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


def _snapshot(service: Service) -> Any:
    try:
        return service.snapshot()
    except Exception as exc:  # a snapshot that fails is itself a finding
        return f"<snapshot raised {type(exc).__name__}: {exc}>"


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
            services[name] = chosen()
        elif spec.import_path in by_path:
            services[name] = by_path[spec.import_path]  # one object per class, as the runtime
        else:
            services[name] = by_path[spec.import_path] = import_service(spec.import_path)()
    return services


def run_schedule(flow: Flow | str | os.PathLike[str], input: Any,
                 schedule: Schedule | None = None, *,
                 services: Mapping[str, Any] | None = None, seed: int = 0,
                 saga_id: str = "saga-1", start: float = START) -> HarnessRun:
    """Run one saga of ``flow`` under ``schedule`` to its end, on virtual time, and return it.

    ``services`` maps service names to objects, classes or factories (default: a fresh object of
    each declared class). Deterministic: the same arguments give the same run.
    """
    schedule = schedule or Schedule()
    batch = run_batch(flow, [(input, Schedule(schedule.faults))], services=services, seed=seed,
                      crash_after=schedule.crash_after, start=start, ids=[saga_id])
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
              ids: Sequence[str] | None = None) -> BatchRun:
    """Run several sagas of ``flow`` at once on shared services, each under its own schedule
    (its ``crash_after`` is ignored: ``crash_after`` here counts the events of all sagas, and
    the crash hits them all). Their steps interleave in virtual time."""
    if not isinstance(flow, Flow):
        flow = load_flow(flow)
    compiled = compile_flow(flow)
    objects = make_services(flow, services)
    harness = _Harness(compiled, objects, seed, start, crash_after)
    ids = list(ids) if ids is not None else [f"saga-{n + 1}" for n in range(len(sagas))]
    before = {name: _snapshot(obj) for name, obj in objects.items()}
    for saga_id, (saga_input, schedule) in zip(ids, sagas, strict=True):
        harness.start(saga_id, validate_input(flow, saga_input), schedule)
    harness.run()
    after = {name: _snapshot(obj) for name, obj in objects.items()}
    runs = [HarnessRun(compiled, saga_id, harness.inputs[saga_id], harness.schedules[saga_id],
                       harness.events[saga_id], objects, before, after,
                       harness.invocations[saga_id]) for saga_id in ids]
    return BatchRun(runs, objects, crash_after)


class _Harness:
    """The event loop: a heap of replies and timers in virtual time, the pure core, the inbox."""

    def __init__(self, compiled: CompiledFlow, objects: dict[str, Service], seed: int,
                 start: float, crash_after: int | None):
        self.compiled = compiled
        inbox = MemoryInbox()
        self.injector = _OneFault()
        self.dispatchers = {name: Dispatcher(obj, service_name=name, instance=0, inbox=inbox,
                                             faults=self.injector)
                            for name, obj in objects.items()}
        self.env = _Env(start, seed)
        self.crash_after = crash_after
        self.crashed = False
        self.total = 0
        self.sagas: dict[str, core.Saga] = {}
        self.inputs: dict[str, Any] = {}
        self.schedules: dict[str, Schedule] = {}
        self.events: dict[str, list[Event]] = {}
        self.invocations: dict[str, list[tuple[str, str, int]]] = {}
        self.pending: list[tuple[float, int, Any]] = []
        self.order = itertools.count()

    def start(self, saga_id: str, saga_input: Any, schedule: Schedule) -> None:
        self.inputs[saga_id], self.schedules[saga_id] = saga_input, schedule
        self.events[saga_id], self.invocations[saga_id] = [], []
        saga, new, commands = core.start(self.compiled, saga_id, saga_input, self.env)
        self.sagas[saga_id] = saga
        self.commit(saga_id, new, commands)

    def commit(self, saga_id: str, new: list[Event], commands: list[core.Command]) -> None:
        """Record a decision's events; crash right after, if it is time; else act on it."""
        self.events[saga_id].extend(new)
        self.total += len(new)
        if self.total > MAX_EVENTS:
            raise RuntimeError(f"the sagas did not end within {MAX_EVENTS} events")
        if (not self.crashed and self.crash_after is not None and new
                and self.total >= self.crash_after):
            self.crashed = True
            self.crash_and_resume()
            return
        self.act(commands)

    def crash_and_resume(self) -> None:
        self.pending.clear()  # everything in flight is lost with the process
        for saga_id in self.sagas:
            saga = core.replay(saga_id, self.compiled, self.events[saga_id])
            self.sagas[saga_id] = saga
            new, commands = core.resume(saga, self.env)
            self.events[saga_id].extend(new)
            self.total += len(new)
            self.act(commands)

    def act(self, commands: list[core.Command]) -> None:
        for command in commands:
            if isinstance(command, core.Execute):
                self.deliver(command)
            elif isinstance(command, core.SetTimer):
                heapq.heappush(self.pending, (command.at, next(self.order),
                                              (command.saga_id, command.fired())))
            elif isinstance(command, core.Await):
                self.await_event(command)

    def await_event(self, command: core.Await) -> None:
        """A wait_for step: its event arrives at once (data ``{}``), unless the schedule puts
        a fault (of any kind) on it: then it never comes and the wait times out."""
        key = ("action", command.step, command.attempt)
        if self.schedules[command.saga_id].faults.get(key) is not None:
            return
        event_id = f"{command.saga_id}/{command.step}/{command.attempt}"
        signal = core.EventReceived(command.event, command.key, {}, event_id)
        heapq.heappush(self.pending, (self.env.t, next(self.order), (command.saga_id, signal)))

    def deliver(self, command: core.Execute) -> None:
        key = (command.phase, command.step, command.attempt)
        kind = self.schedules[command.saga_id].faults.get(key)
        invocations = self.invocations[command.saga_id]
        message = Command(command.command_id, command.saga_id, command.step,
                          command.phase, command.name, command.attempt, command.key,
                          command.payload if command.payload is not None else {},
                          command.result, command.timeout_at)
        if kind == "timeout":
            return
        dispatcher = self.dispatchers[command.service]
        if kind == "redeliver":
            invocations.append(key)
            # the effect happens; the reply (or whatever it raised) is lost with the process
            with contextlib.suppress(Exception):
                dispatcher.service.handler(command.name)(message)
        if kind in ("error", "reject", "duplicate"):
            self.injector.next = Fault(kind)
        for reply in dispatcher.process(message):
            if not reply.replayed and kind not in ("error", "reject"):
                invocations.append(key)
            at = command.timeout_at + 0.001 if kind == "late" else self.env.t
            heapq.heappush(self.pending, (at, next(self.order), (command.saga_id, reply)))

    def run(self) -> None:
        while self.pending:
            at, _, (saga_id, item) = heapq.heappop(self.pending)
            saga = self.sagas[saga_id]
            if saga.terminal:
                continue
            self.env.t = max(self.env.t, at)
            if isinstance(item, Reply):
                c = item.command
                signal: core.Signal = core.ReplyReceived(c.phase, c.step, c.attempt,
                                                         item.outcome, item.output, item.error,
                                                         c.command_id)
            else:
                signal = item
            new, commands = core.handle(saga, signal, self.env)
            self.commit(saga_id, new, commands)
