"""Orchestrator shards: the actors that host saga instances (many per shard, never one each).

A saga belongs to shard ``crc32(saga_id) % shards``, so all of its signals — replies, timers,
cancels — pass through one mailbox and are handled one at a time, in order (DESIGN.md §4.6). For
each signal the shard asks the pure core what it means, commits the resulting events to the
store, and only then sends the commands they cause (write-ahead, §4.7).

Everything here runs on the shard's own thread; nothing in it blocks on another actor.
"""

from __future__ import annotations

import json
import logging
import random as random_module
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors import Activity, Clock, Command, CountingRef, DeadLetters, Reply, Scheduler

from . import core
from .compiler import CompiledFlow, compile_flow
from .errors import (
    DefinitionUnavailable,
    FlowErrors,
    IdConflict,
    SagactorError,
    StoreError,
)
from .events import Event
from .loader import parse_flow
from .stores import TERMINAL, Append, NewSaga, SagaStore

__all__ = ["LoadSaga", "SagaSignal", "Shard", "StartSaga", "Ticket", "shard_of"]

log = logging.getLogger(__name__)


def shard_of(saga_id: str, shards: int) -> int:
    """The shard hosting ``saga_id``: stable across processes and runs."""
    return zlib.crc32(saga_id.encode("utf-8")) % shards


def canonical(value: Any) -> str:
    """A canonical JSON text, to compare saga inputs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Ticket:
    """A one-shot answer handed from a shard to a waiting caller thread."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self._done.set()

    def wait(self, timeout: float | None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError("no answer from the shard in time")
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True, slots=True)
class StartSaga:
    saga_id: str
    compiled: CompiledFlow
    input: Any
    ticket: Ticket = field(compare=False)


@dataclass(frozen=True, slots=True)
class LoadSaga:
    """Host a saga from the store (recovery, or a retry from outside), then handle ``then``.

    A non-terminal saga is put back in motion (DESIGN.md §4.7); one whose definition no longer
    loads is parked ``failed`` (``definition_unavailable``). The ticket resolves to its status.
    """

    saga_id: str
    then: core.Signal | None
    ticket: Ticket = field(compare=False)


@dataclass(frozen=True, slots=True)
class SagaSignal:
    saga_id: str
    signal: core.Signal
    ticket: Ticket | None = field(default=None, compare=False)


class _Env:
    """The core's view of the world: the runtime's clock, and jitter draws keyed by a seed."""

    __slots__ = ("_clock", "_seed")

    def __init__(self, clock: Clock, seed: str):
        self._clock = clock
        self._seed = seed

    def now(self) -> float:
        return self._clock.now()

    def random(self, key: str) -> float:
        return random_module.Random(f"{self._seed}:{key}").random()


class Shard(pykka.ThreadingActor):
    """Hosts the sagas of one shard. Runs on its own thread; never raises out of a message."""

    def __init__(self, index: int, *, store: SagaStore, clock: Clock, scheduler: Scheduler,
                 seed: str, pools: Callable[[CompiledFlow], dict[str, Any]],
                 on_end: Callable[[str, str, str | None], None], activity: Activity,
                 dead_letters: DeadLetters,
                 listeners: tuple[Callable[[str, list[Event]], None], ...] = (),
                 owner: str | None = None,
                 on_lost: Callable[[str, str], None] | None = None):
        super().__init__()
        self.index = index
        self.store = store
        self.env = _Env(clock, seed)
        self.scheduler = scheduler
        self.pools = pools
        self.on_end = on_end
        self.activity = activity
        self.dead_letters = dead_letters
        self.listeners = listeners
        self.owner = owner
        self.on_lost = on_lost
        self.me: CountingRef | None = None  # set on start: replies come back through it
        self.sagas: dict[str, core.Saga] = {}
        self._definitions: dict[str, CompiledFlow] = {}  # stored flow texts, compiled once
        self.step_timers: dict[str, Any] = {}
        self.deadline_timers: dict[str, Any] = {}

    def on_start(self) -> None:
        self.me = self.activity.counting(self.actor_ref)

    # -- the mailbox ----------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, Reply):
                self._reply(message)
            elif isinstance(message, SagaSignal):
                self._signal(message)
            elif isinstance(message, StartSaga):
                self._start(message)
            elif isinstance(message, LoadSaga):
                self._load(message)
            else:
                log.warning("shard %d: unexpected message %r", self.index, message)
        except Exception:  # never let one saga's trouble stop the shard
            log.exception("shard %d: failed to handle %r", self.index, message)
        finally:
            self.activity.end()
        return None

    def _reply(self, reply: Reply) -> None:
        command = reply.command
        saga = self.sagas.get(command.saga_id)
        if saga is None:
            return  # the saga has ended (or is driven elsewhere): nothing is recorded
        output = dict(reply.output) if reply.output is not None else None
        signal = core.ReplyReceived(command.phase, command.step, command.attempt, reply.outcome,
                                    output, reply.error, command.command_id)
        self._decide(saga, signal)

    def _signal(self, message: SagaSignal) -> None:
        saga = self.sagas.get(message.saga_id)
        if saga is None:
            if message.ticket is not None:
                message.ticket.resolve(None)
            return
        self._decide(saga, message.signal)
        if message.ticket is not None:
            message.ticket.resolve(saga.status)

    def _start(self, message: StartSaga) -> None:
        ticket = message.ticket
        try:
            saga_id, compiled = message.saga_id, message.compiled
            existing = self.sagas.get(saga_id)
            if existing is not None:
                self._same_or_conflict(saga_id, existing.compiled.definition, existing.input,
                                       compiled, message.input)
                ticket.resolve((saga_id, False))
                return
            saga, events, commands = core.start(compiled, saga_id, message.input, self.env)
            flow = compiled.flow
            created, header = self.store.create(NewSaga(
                saga_id=saga_id, flow=flow.name, version=flow.version,
                definition=flow.definition, definition_text=flow.text, input=message.input,
                status=saga.status, reason=saga.reason, started_at=saga.started_at,
                events=tuple(events), owner=self.owner))
            if not created:
                self._same_or_conflict(saga_id, header.definition, header.input, compiled,
                                       message.input)
                ticket.resolve((saga_id, False))
                return
            self.sagas[saga_id] = saga
            self._notify(saga_id, events)
            ticket.resolve((saga_id, True))
            self._send(saga, commands)
        except BaseException as exc:
            ticket.resolve(error=exc)

    def _load(self, message: LoadSaga) -> None:
        ticket = message.ticket
        try:
            saga = self.sagas.get(message.saga_id)
            if saga is None:
                saga = self._host(message.saga_id)
            if saga is not None and message.then is not None:
                self._decide(saga, message.then)
            if saga is not None and saga.terminal:
                self._forget(message.saga_id)
            status = saga.status if saga is not None else \
                self.store.header(message.saga_id).status
            ticket.resolve(status)
        except BaseException as exc:
            ticket.resolve(error=exc)

    def _host(self, saga_id: str) -> core.Saga | None:
        """Load, replay and resume a saga from the store; None if it cannot run here."""
        record = self.store.load(saga_id)
        header = record.header
        try:
            compiled = self._definitions.get(header.definition)
            if compiled is None:
                flow = parse_flow(record.definition_text,
                                  source=f"<{header.flow} {header.definition[:12]}>")
                compiled = self._definitions[header.definition] = compile_flow(flow)
            self.pools(compiled)  # import and start its services
        except (FlowErrors, DefinitionUnavailable) as exc:
            if header.status not in TERMINAL:
                last = record.events[-1] if record.events else None
                event = core.park_unavailable(saga_id, header.last_seq,
                                              last.event_id if last else None, str(exc),
                                              self.env)
                self.store.append([Append(saga_id, (event,), "failed",
                                          "definition_unavailable", event.at)])
                self._notify(saga_id, [event])
                self.on_end(saga_id, "failed", "definition_unavailable")
            log.warning("shard %d: saga %s cannot run: %s", self.index, saga_id, exc)
            return None
        saga = core.replay(saga_id, compiled, record.events)
        self.sagas[saga_id] = saga
        events, commands = core.resume(saga, self.env)
        if events and not self._commit(saga, events, saga.status):
            return None
        self._send(saga, commands)
        return saga

    @staticmethod
    def _same_or_conflict(saga_id: str, definition: str, saga_input: Any,
                          compiled: CompiledFlow, new_input: Any) -> None:
        if definition != compiled.definition:
            raise IdConflict(f"saga id {saga_id!r} exists with a different flow definition")
        if canonical(saga_input) != canonical(new_input):
            raise IdConflict(f"saga id {saga_id!r} exists with different input")

    # -- deciding and acting --------------------------------------------------------------------
    def _decide(self, saga: core.Saga, signal: core.Signal) -> None:
        status_before = saga.status
        events, commands = core.handle(saga, signal, self.env)
        if not events:
            return
        if not self._commit(saga, events, status_before):
            return
        self._send(saga, commands)

    def _commit(self, saga: core.Saga, events: list[Event], status_before: str) -> bool:
        try:
            self.store.append([Append(saga.saga_id, tuple(events), saga.status, saga.reason,
                                      saga.updated_at)])
        except (StoreError, SagactorError) as exc:
            # What was decided is not durable: forget the saga here; `saga resume` picks it up
            # from what the store holds.
            log.error("shard %d: saga %s: could not commit %d events (%s); dropping it from "
                      "memory", self.index, saga.saga_id, len(events), exc)
            self._forget(saga.saga_id)
            if self.on_lost is not None:
                self.on_lost(saga.saga_id, str(exc))
            return False
        self._notify(saga.saga_id, events)
        return True

    def _notify(self, saga_id: str, events: list[Event]) -> None:
        for listener in self.listeners:
            try:
                listener(saga_id, events)
            except Exception:
                log.exception("shard %d: event listener %r failed", self.index, listener)

    def _send(self, saga: core.Saga, commands: list[core.Command]) -> None:
        for command in commands:
            if isinstance(command, core.Execute):
                try:
                    self._execute(command)
                except Exception:  # its timeout is armed: the attempt times out and is retried
                    log.exception("shard %d: could not send %s", self.index, command)
            elif isinstance(command, core.SetTimer):
                self._set_timer(command)
            elif isinstance(command, core.Ended):
                self._forget(command.saga_id)
                try:
                    self.on_end(command.saga_id, command.status, command.reason)
                except Exception:
                    log.exception("shard %d: end callback for %s failed", self.index,
                                  command.saga_id)

    def _execute(self, command: core.Execute) -> None:
        saga = self.sagas[command.saga_id]
        pool = self.pools(saga.compiled)[command.service]
        message = Command(
            command_id=command.command_id, saga_id=command.saga_id, step=command.step,
            phase=command.phase, name=command.name, attempt=command.attempt, key=command.key,
            payload=command.payload if command.payload is not None else {},
            result=command.result,
            timeout_at=command.timeout_at)
        pool.tell(message, self.me)

    def _set_timer(self, command: core.SetTimer) -> None:
        message = SagaSignal(command.saga_id, command.fired())
        handle = self.scheduler.schedule(command.at, self.actor_ref, message)
        timers = self.deadline_timers if command.kind == "deadline" else self.step_timers
        old = timers.get(command.saga_id)
        timers[command.saga_id] = handle
        if old is not None:
            self.scheduler.cancel(old)

    def _forget(self, saga_id: str) -> None:
        self.sagas.pop(saga_id, None)
        for timers in (self.step_timers, self.deadline_timers):
            handle = timers.pop(saga_id, None)
            if handle is not None:
                self.scheduler.cancel(handle)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        log.error("shard %d stopped by %s", self.index, exception_value)
