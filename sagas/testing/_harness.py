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
from collections.abc import Mapping
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

__all__ = ["FAULTS", "HarnessRun", "Schedule", "run_schedule"]

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
    if not isinstance(flow, Flow):
        flow = load_flow(flow)
    compiled = compile_flow(flow)
    saga_input = validate_input(flow, input)
    schedule = schedule or Schedule()
    objects = make_services(flow, services)
    inbox = MemoryInbox()
    injector = _OneFault()
    dispatchers = {name: Dispatcher(obj, service_name=name, instance=0, inbox=inbox,
                                    faults=injector) for name, obj in objects.items()}
    before = {name: _snapshot(obj) for name, obj in objects.items()}
    env = _Env(start, seed)
    events: list[Event] = []
    invocations: list[tuple[str, str, int]] = []
    pending: list[tuple[float, int, Any]] = []
    order = itertools.count()
    crashed = False

    def deliver(command: core.Execute) -> None:
        kind = schedule.faults.get((command.phase, command.step, command.attempt))
        message = Command(command.command_id, command.saga_id, command.step,
                          command.phase, command.name, command.attempt, command.key,
                          command.payload if command.payload is not None else {},
                          command.result, command.timeout_at)
        if kind == "timeout":
            return
        dispatcher = dispatchers[command.service]
        if kind == "redeliver":
            invocations.append((command.phase, command.step, command.attempt))
            # the effect happens; the reply (or whatever it raised) is lost with the process
            with contextlib.suppress(Exception):
                dispatcher.service.handler(command.name)(message)
        if kind in ("error", "reject", "duplicate"):
            injector.next = Fault(kind)
        for reply in dispatcher.process(message):
            if not reply.replayed and kind not in ("error", "reject"):
                invocations.append((command.phase, command.step, command.attempt))
            at = command.timeout_at + 0.001 if kind == "late" else env.t
            heapq.heappush(pending, (at, next(order), reply))

    def act(commands: list[core.Command]) -> None:
        for command in commands:
            if isinstance(command, core.Execute):
                deliver(command)
            elif isinstance(command, core.SetTimer):
                heapq.heappush(pending, (command.at, next(order), command.fired()))

    def record(new: list[Event]) -> bool:
        """Append events; True if the runtime crashes right after committing them."""
        nonlocal crashed
        events.extend(new)
        if len(events) > MAX_EVENTS:
            raise RuntimeError(f"saga did not end within {MAX_EVENTS} events")
        if (not crashed and schedule.crash_after is not None
                and len(events) >= schedule.crash_after and new):
            crashed = True
            return True
        return False

    def crash_and_resume() -> tuple[core.Saga, list[core.Command]]:
        pending.clear()  # everything in flight is lost with the process
        saga = core.replay(saga_id, compiled, events)
        new, commands = core.resume(saga, env)
        events.extend(new)
        return saga, commands

    saga, new, commands = core.start(compiled, saga_id, saga_input, env)
    if record(new):
        saga, commands = crash_and_resume()
    act(commands)
    while pending and not saga.terminal:
        at, _, item = heapq.heappop(pending)
        env.t = max(env.t, at)
        if isinstance(item, Reply):
            c = item.command
            signal: core.Signal = core.ReplyReceived(c.phase, c.step, c.attempt, item.outcome,
                                                     item.output, item.error, c.command_id)
        else:
            signal = item
        new, commands = core.handle(saga, signal, env)
        if record(new):
            saga, commands = crash_and_resume()
        act(commands)
    after = {name: _snapshot(obj) for name, obj in objects.items()}
    return HarnessRun(compiled, saga_id, saga_input, schedule, events, objects, before, after,
                      invocations)

