"""Orchestrator shards: the actors that host saga instances (many per shard, never one each).

A saga belongs to shard ``crc32(saga_id) % shards``, so all of its signals — replies, timers,
cancels — pass through one mailbox and are handled one at a time, in order (DESIGN.md §4.6). For
each signal the shard asks the pure core what it means, commits the resulting events to the
store, and only then sends the commands they cause (write-ahead, §4.7). The events decided while
the mailbox holds more messages are committed together (a group commit) once it is empty.

Everything here runs on the shard's own thread; nothing in it blocks on another actor.
"""

from __future__ import annotations

import heapq
import json
import logging
import random as random_module
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pykka

from actors import (
    Activity,
    Clock,
    Command,
    CountingRef,
    DeadLetters,
    Replies,
    Reply,
    Scheduler,
    SchedulerStopped,
    fast_inbox,
)

from ..errors import (
    DefinitionUnavailable,
    FlowErrors,
    IdConflict,
    LeaseLost,
)
from ..events import Event
from ..language.compiler import CompiledFlow, compile_flow
from ..language.loader import parse_flow
from ..stores import TERMINAL, Append, NewSaga
from . import core

if TYPE_CHECKING:
    from typing import Protocol

    from ..stores import EventLog, ExternalEvents
    from .membership import Membership

    class _ShardStore(EventLog, ExternalEvents, Protocol):
        """The store's facets a shard uses: the sagas' logs, and claiming external events."""

__all__ = ["DropPartitions", "EventPosted", "LoadSaga", "LoadSagas", "RemoteReplies",
           "SagaSignal", "Shard", "StartSaga", "Ticket", "shard_of"]

log = logging.getLogger(__name__)


def shard_of(saga_id: str, shards: int) -> int:
    """The shard hosting ``saga_id``: stable across processes and runs."""
    return zlib.crc32(saga_id.encode("utf-8")) % shards


def canonical(value: Any) -> str:
    """A canonical JSON text, to compare saga inputs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Ticket:
    """A one-shot answer handed from a shard to a caller: waited on, or called back.

    ``then(ticket)``, if given, runs on the resolving (shard) thread once the answer is set,
    before a waiter wakes.
    """

    __slots__ = ("_done", "error", "then", "value")

    def __init__(self, then: Callable[[Ticket], None] | None = None) -> None:
        self._done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.then = then

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        if self.then is not None:
            try:
                self.then(self)
            except Exception:
                log.exception("a start callback failed")
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

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
    traceparent: str | None = None  # the caller's span, if tracing

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
class RemoteReplies:
    """Replies read from the broker (:mod:`sagas.remote`): handled as :class:`Replies`, then
    ``ack()`` once what they caused is committed (a reply is acknowledged only then)."""

    replies: tuple[Reply, ...]
    ack: Callable[[], None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class DropPartitions:
    """Forget every saga of ``partitions`` (their leases are gone: another member drives them
    now), after committing what was decided; the ticket resolves to the ids forgotten."""

    partitions: frozenset[int]
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


@dataclass(frozen=True, slots=True)
class LoadSagas:
    """Host many sagas from the store at once (recovery): one read, one commit, then sends.

    The ticket resolves to the number of sagas put back in motion.
    """

    saga_ids: tuple[str, ...]
    ticket: Ticket = field(compare=False)


@dataclass(frozen=True, slots=True)
class EventPosted:
    """An external event ``(event, key)`` was recorded in the store: a saga hosted here that
    waits for it claims it."""

    event: str
    key: str


class _Wake:
    """The scheduler's nudge: some of the shard's timers may be due."""

    __slots__ = ()


WAKE = _Wake()

MAX_BATCH_EVENTS = 1024
"""A shard commits once its mailbox is empty, or once this many events wait for a commit..."""

MAX_BATCH_DELAY = 0.005
"""... or once the oldest decision has waited this many seconds (a busy mailbox never empties:
without a bound, a caller waiting for its start would wait for the whole batch)."""


class _Pending:
    """What a shard has decided since its last commit, and what to do once it is durable.

    ``after`` holds, in decision order, ``(saga, events, commands, ticket, answer)``: once the
    commit succeeds, listeners see the events, the commands are sent, and the ticket (if any)
    gets its answer.
    """

    __slots__ = ("acks", "after", "appends", "creates", "events", "handled", "new_ids",
                 "since")

    def __init__(self) -> None:
        self.creates: list[tuple[NewSaga, StartSaga]] = []
        self.new_ids: set[str] = set()
        self.appends: list[Append] = []
        self.after: list[tuple[core.Saga | None, list[Event], list[core.Command],
                               Ticket | None, Any]] = []
        self.events = 0
        self.since: float | None = None  # when the first decision of the batch was staged
        self.handled = 0  # messages handled since the last commit (Activity.end once sent)
        self.acks: list[Callable[[], None]] = []  # broker replies to acknowledge once committed


class Shard(pykka.ThreadingActor):
    """Hosts the sagas of one shard. Runs on its own thread; never raises out of a message.

    Write-ahead group commit: decisions are taken one message at a time, in mailbox order, but
    their events are committed together once the mailbox is empty (or the batch is large); only
    then are listeners told, commands sent (one batch per service instance) and callers
    answered. A failed commit loses nothing: the sagas concerned are dropped from memory and
    `saga resume` finishes them from what the store holds.
    """

    def __init__(self, index: int, *, store: _ShardStore, clock: Clock, scheduler: Scheduler,
                 seed: str, pools: Callable[[CompiledFlow], dict[str, Any]],
                 on_end: Callable[[str, str, str | None], None], activity: Activity,
                 dead_letters: DeadLetters,
                 listeners: tuple[Callable[[str, list[Event]], None], ...] = (),
                 owner: str | None = None,
                 on_lost: Callable[[str, str], None] | None = None,
                 membership: Membership | None = None):
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
        # On a shared store: the member's leases fence every commit, and commands of a saga
        # are sent only while its partition's lease has not run out locally.
        self.membership = membership
        self.me: CountingRef | None = None  # set on start: replies come back through it
        self.sagas: dict[str, core.Saga] = {}
        self._definitions: dict[str, CompiledFlow] = {}  # stored flow texts, compiled once
        # The sagas' timers live here, not in the scheduler: a heap (with lazy deletion) of
        # (due time, seq, (saga_id, "step" | "deadline")) and the live timer of each key. The
        # scheduler holds one timer per shard, the wake-up for the earliest of them.
        self._timer_heap: list[tuple[float, int, tuple[str, str]]] = []
        self._timers: dict[tuple[str, str], tuple[int, core.TimerFired]] = {}
        self._timer_seq = 0
        self._wake_at: float | None = None
        self._wake_handle: Any = None
        self._pending = _Pending()
        # sagas in a wait_for step: (event, key) -> saga ids, and saga id -> (event, key)
        self._awaiting: dict[tuple[str, str], set[str]] = {}
        self._waits: dict[str, tuple[str, str]] = {}

    @staticmethod
    def _create_actor_inbox() -> Any:
        return fast_inbox()

    def on_start(self) -> None:
        self.me = self.activity.counting(self.actor_ref)

    # -- the mailbox ----------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        try:
            kind = type(message)
            if kind is Replies:
                for reply in message.replies:
                    try:  # one reply's trouble must not drop the others
                        self._reply(reply)
                    except Exception:
                        log.exception("shard %d: failed to handle %r", self.index, reply)
            elif kind is Reply:
                self._reply(message)
            elif kind is SagaSignal:
                self._signal(message)
            elif kind is _Wake:
                self._fire_timers()
            elif kind is StartSaga:
                self._start(message)
            elif kind is LoadSaga:
                self._load(message)
            elif kind is LoadSagas:
                self._load_many(message)
            elif kind is EventPosted:
                self._claim_for((message.event, message.key))
            elif kind is DropPartitions:
                self._drop(message)
            elif kind is RemoteReplies:
                for reply in message.replies:
                    try:
                        self._reply(reply)
                    except Exception:
                        log.exception("shard %d: failed to handle %r", self.index, reply)
                self._pending.acks.append(message.ack)
            else:
                log.warning("shard %d: unexpected message %r", self.index, message)
        except Exception:  # never let one saga's trouble stop the shard
            log.exception("shard %d: failed to handle %r", self.index, message)
        pending = self._pending
        pending.handled += 1
        if (pending.events >= MAX_BATCH_EVENTS or self.actor_inbox.empty()
                or (pending.since is not None
                    and time.monotonic() - pending.since >= MAX_BATCH_DELAY)):
            self._safe_flush()
        return None

    def on_stop(self) -> None:
        self._safe_flush()

    def _safe_flush(self) -> None:
        try:
            self._flush()
        except Exception:  # a bug: logged, and the shard lives on (pykka would stop it)
            log.exception("shard %d: acting on a commit failed", self.index)

    def _reply(self, reply: Reply) -> None:
        command = reply.command
        if command.saga_id in self._pending.new_ids:
            return  # a saga whose start is not committed has sent nothing: a stray reply
        saga = self.sagas.get(command.saga_id)
        if saga is None:
            return  # the saga has ended (or is driven elsewhere): nothing is recorded
        output = dict(reply.output) if reply.output is not None else None
        signal = core.ReplyReceived(command.phase, command.step, command.attempt, reply.outcome,
                                    output, reply.error, command.command_id)
        self._decide(saga, signal)

    def _signal(self, message: SagaSignal) -> None:
        if message.saga_id in self._pending.new_ids:
            self._flush()  # its creation must be durable (or refused) before anything else
        saga = self.sagas.get(message.saga_id)
        if saga is None:
            if message.ticket is not None:
                message.ticket.resolve(None)
            return
        if not self._decide(saga, message.signal, message.ticket) and message.ticket is not None:
            message.ticket.resolve(saga.status)

    def _start(self, message: StartSaga) -> None:
        ticket = message.ticket
        try:
            saga_id, compiled = message.saga_id, message.compiled
            existing = self.sagas.get(saga_id)
            if existing is not None:
                self._same_or_conflict(saga_id, existing.compiled.definition, existing.input,
                                       compiled, message.input)
                if saga_id in self._pending.new_ids:
                    self._pending.after.append((existing, [], [], ticket, (saga_id, False)))
                else:
                    ticket.resolve((saga_id, False))
                return
            saga, events, commands = core.start(compiled, saga_id, message.input, self.env,
                                                message.traceparent)
            flow = compiled.flow
            new = NewSaga(
                saga_id=saga_id, flow=flow.name, version=flow.version,
                definition=flow.definition, definition_text=flow.text, input=message.input,
                status=saga.status, reason=saga.reason, started_at=saga.started_at,
                events=tuple(events), owner=self.owner)
        except BaseException as exc:
            ticket.resolve(error=exc)
            return
        pending = self._pending
        pending.creates.append((new, message))
        pending.new_ids.add(saga_id)
        pending.after.append((saga, events, commands, ticket, (saga_id, True)))
        pending.events += len(events)
        if pending.since is None:
            pending.since = time.monotonic()
        self.sagas[saga_id] = saga

    def _load(self, message: LoadSaga) -> None:
        self._flush()  # hosting reads the store: what was decided is committed first
        ticket = message.ticket
        try:
            saga = self.sagas.get(message.saga_id)
            if saga is None:
                saga = self._host(message.saga_id)
            if saga is not None and message.then is not None:
                self._decide(saga, message.then)
                self._flush()
            if saga is not None and saga.terminal:
                self._forget(message.saga_id)
            status = saga.status if saga is not None else \
                self.store.header(message.saga_id).status
            ticket.resolve(status)
        except BaseException as exc:
            ticket.resolve(error=exc)

    def _load_many(self, message: LoadSagas) -> None:
        self._flush()
        try:
            wanted = [saga_id for saga_id in message.saga_ids if saga_id not in self.sagas]
            records = self.store.load_many(wanted)
        except BaseException as exc:
            message.ticket.resolve(error=exc)
            return
        hosted = 0
        for record in records:
            if record.header.status in TERMINAL:
                continue  # ended since it was asked for (by another process)
            try:  # one saga that cannot be hosted must not strand the rest of the chunk
                if self._host_record(record, flush=False) is not None:
                    hosted += 1
            except Exception:
                log.exception("shard %d: saga %s could not be put back in motion",
                              self.index, record.header.saga_id)
        self._pending.after.append((None, [], [], message.ticket, hosted))

    def _host(self, saga_id: str) -> core.Saga | None:
        """Load, replay and resume a saga from the store; None if it cannot run here."""
        saga = self._host_record(self.store.load(saga_id), flush=True)
        return saga

    def _host_record(self, record: Any, *, flush: bool) -> core.Saga | None:
        header = record.header
        saga_id = header.saga_id
        try:
            compiled = self._definitions.get(header.definition)
            if compiled is None:
                flow = parse_flow(record.definition_text,
                                  source=f"<{header.flow} {header.definition[:12]}>")
                compiled = self._definitions[header.definition] = compile_flow(flow)
            self.pools(compiled)  # import and start its services
        except (FlowErrors, DefinitionUnavailable) as exc:
            if self.membership is not None and header.status not in TERMINAL:
                # another member may run it: left in flight, and reported (saga members)
                self.membership.undriven(saga_id, header.flow)
                log.warning("shard %d: saga %s is left to a member that can run it: %s",
                            self.index, saga_id, exc)
                return None
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
        if self.membership is not None:
            self.membership.runs(header.flow)
        saga = core.replay(saga_id, compiled, record.events)
        self.sagas[saga_id] = saga
        events, commands = core.resume(saga, self.env)
        if events:
            self._stage(saga, events, commands, None)
        else:
            self._pending.after.append((saga, [], commands, None, None))
        if flush:
            self._flush()
            if saga_id not in self.sagas:  # its commit failed
                return None
        return saga

    @staticmethod
    def _same_or_conflict(saga_id: str, definition: str, saga_input: Any,
                          compiled: CompiledFlow, new_input: Any) -> None:
        if definition != compiled.definition:
            raise IdConflict(f"saga id {saga_id!r} exists with a different flow definition")
        if canonical(saga_input) != canonical(new_input):
            raise IdConflict(f"saga id {saga_id!r} exists with different input")

    # -- deciding -------------------------------------------------------------------------------
    def _decide(self, saga: core.Saga, signal: core.Signal, ticket: Ticket | None = None) -> bool:
        """Decide on one signal; whether anything was staged (the ticket then rides along)."""
        events, commands = core.handle(saga, signal, self.env)
        if not events:
            return False
        self._stage(saga, events, commands, ticket)
        return True

    def _stage(self, saga: core.Saga, events: list[Event], commands: list[core.Command],
               ticket: Ticket | None) -> None:
        pending = self._pending
        pending.appends.append(Append(saga.saga_id, tuple(events), saga.status, saga.reason,
                                      saga.updated_at))
        pending.after.append((saga, events, commands, ticket, saga.status))
        pending.events += len(events)
        if pending.since is None:
            pending.since = time.monotonic()

    # -- committing and acting ------------------------------------------------------------------
    def _flush(self) -> None:
        """Commit what was decided, then act on it (listeners, sends, timers, answers)."""
        pending = self._pending
        if not pending.after and not pending.creates and not pending.appends:
            self._ack(pending)
            if pending.handled:
                self.activity.end(pending.handled)
                pending.handled = 0
            return
        self._pending = _Pending()
        try:
            refused = self._commit(pending)
            sends: dict[Any, list[Command]] = {}
            for saga, events, commands, ticket, answer in pending.after:
                try:
                    self._after_commit(saga, events, commands, ticket, answer, refused, sends)
                except Exception:  # a bug in one saga's follow-up must not skip the others'
                    log.exception("shard %d: acting on saga %s failed", self.index,
                                  saga.saga_id if saga is not None else None)
            for pool, messages in sends.items():
                try:
                    pool.tell_many(messages, self.me)
                except Exception:  # their timeouts are armed: the attempts time out and retry
                    log.exception("shard %d: could not send %d commands", self.index,
                                  len(messages))
            self._ack(pending)
        finally:
            if pending.handled:
                self.activity.end(pending.handled)

    def _ack(self, pending: _Pending) -> None:
        """Acknowledge the broker replies handled in ``pending`` (their effects are durable,
        or were refused: a refused saga is driven again from its log, its replies re-sent)."""
        acks, pending.acks = pending.acks, []
        for ack in acks:
            try:
                ack()
            except Exception:
                log.exception("shard %d: acknowledging replies failed", self.index)

    def _after_commit(self, saga: core.Saga | None, events: list[Event],
                      commands: list[core.Command], ticket: Ticket | None, answer: Any,
                      refused: dict[str, tuple[Any, BaseException | None]],
                      sends: dict[Any, list[Command]]) -> None:
        if saga is not None:
            saga_id = saga.saga_id
            if saga_id in refused:
                if ticket is not None:
                    ticket.resolve(*refused[saga_id])
                return
            if events:
                self._notify(saga_id, events)
        if ticket is not None:
            ticket.resolve(answer)
        if commands:
            self._act(commands, sends)

    def _commit(self, pending: _Pending) -> dict[str, tuple[Any, BaseException | None]]:
        """Write the batch in one transaction; the sagas refused, with their ticket's answer.

        If the batch as a whole fails, each creation and each saga's appends are retried on
        their own, so one bad saga does not sink the others. A member's batch is fenced with
        its leases' epochs (:meth:`_write`): a partition whose lease is found lost is dropped
        (its sagas forgotten here: whoever holds it now drives them from the log) and the rest
        of the batch is committed without it.
        """
        refused: dict[str, tuple[Any, BaseException | None]] = {}
        while True:
            creates = [new for new, _ in pending.creates]
            if not creates and not pending.appends:
                return refused
            try:
                results = self._write(creates, pending.appends)
            except LeaseLost as exc:  # only a member's (fenced) write is refused so
                self.membership.lost(exc.partition)  # type: ignore[union-attr]
                refused.update(self._leave_partition(pending, exc))
                continue
            except Exception as exc:
                if len(creates) + len(pending.appends) == 1:
                    refused.update(self._refuse_all(pending, exc))
                else:
                    refused.update(self._commit_one_by_one(pending))
                return refused
            refused.update(self._refused_creates(pending, results))
            return refused

    def _leave_partition(self, pending: _Pending,
                         exc: LeaseLost) -> dict[str, tuple[Any, BaseException | None]]:
        """Take the sagas of ``exc``'s partition out of the batch and out of memory; their
        tickets (starts, signals from this process) get the error."""
        partition_of = self.membership.partition_of  # type: ignore[union-attr]
        gone = exc.partition
        refused: dict[str, tuple[Any, BaseException | None]] = {}
        kept_creates = []
        for new, message in pending.creates:
            if partition_of(new.saga_id) == gone:
                self.sagas.pop(new.saga_id, None)
                pending.new_ids.discard(new.saga_id)
                refused[new.saga_id] = (None, exc)
            else:
                kept_creates.append((new, message))
        pending.creates = kept_creates
        kept_appends = []
        for append in pending.appends:
            if partition_of(append.saga_id) == gone:
                refused[append.saga_id] = (None, exc)
            else:
                kept_appends.append(append)
        pending.appends = kept_appends
        for saga_id in [s for s in self.sagas if partition_of(s) == gone]:
            self._forget(saga_id)
        return refused

    def _refused_creates(self, pending: _Pending,
                         results: list[tuple[bool, Any]]) -> dict[str, tuple[Any, Any]]:
        refused: dict[str, tuple[Any, BaseException | None]] = {}
        for (new, message), (created, header) in zip(pending.creates, results, strict=True):
            if created:
                continue
            self.sagas.pop(new.saga_id, None)
            try:
                self._same_or_conflict(new.saga_id, header.definition, header.input,
                                       message.compiled, message.input)
            except IdConflict as exc:
                refused[new.saga_id] = (None, exc)
            else:
                refused[new.saga_id] = ((new.saga_id, False), None)
        return refused

    def _refuse_all(self, pending: _Pending, exc: BaseException) -> dict[str, tuple[Any, Any]]:
        refused: dict[str, tuple[Any, BaseException | None]] = {}
        for new, _ in pending.creates:
            self.sagas.pop(new.saga_id, None)
            refused[new.saga_id] = (None, exc)
        for append in pending.appends:
            self._lost(append.saga_id, exc)
            refused[append.saga_id] = (None, exc)
        return refused

    def _commit_one_by_one(self, pending: _Pending) -> dict[str, tuple[Any, Any]]:
        refused: dict[str, tuple[Any, BaseException | None]] = {}
        for new, message in pending.creates:
            try:
                results = self._write([new], [])
            except Exception as exc:
                self.sagas.pop(new.saga_id, None)
                refused[new.saga_id] = (None, exc)
            else:
                one = _Pending()
                one.creates.append((new, message))
                refused.update(self._refused_creates(one, results))
        by_saga: dict[str, list[Append]] = {}
        for append in pending.appends:
            by_saga.setdefault(append.saga_id, []).append(append)
        for saga_id, appends in by_saga.items():
            if saga_id in refused:
                continue
            try:
                self._write([], appends)
            except LeaseLost as exc:  # another member drives it now
                self.membership.lost(exc.partition)  # type: ignore[union-attr]
                self._forget(saga_id)
                refused[saga_id] = (None, exc)
            except Exception as exc:
                self._lost(saga_id, exc)
                refused[saga_id] = (None, exc)
        return refused

    def _write(self, creates: list[NewSaga], appends: list[Append]) -> Any:
        membership = self.membership
        if membership is None:
            return self.store.write(creates, appends)
        fence = membership.fence
        if fence is None:
            first = creates[0].saga_id if creates else appends[0].saga_id
            raise LeaseLost(membership.partition_of(first), membership.member, None, first)
        return self.store.write(creates, appends, fence=fence)

    def _lost(self, saga_id: str, exc: BaseException) -> None:
        # What was decided is not durable: forget the saga here; `saga resume` picks it up from
        # what the store holds.
        log.error("shard %d: saga %s: could not commit its events (%s); dropping it from "
                  "memory", self.index, saga_id, exc)
        self._forget(saga_id)
        if self.on_lost is not None:
            self.on_lost(saga_id, str(exc))

    def _notify(self, saga_id: str, events: list[Event]) -> None:
        for listener in self.listeners:
            try:
                listener(saga_id, events)
            except Exception:
                log.exception("shard %d: event listener %r failed", self.index, listener)

    def _act(self, commands: list[core.Command], sends: dict[Any, list[Command]]) -> None:
        for command in commands:
            kind = type(command)
            if kind is core.Execute:
                if self.membership is not None and \
                        not self.membership.may_send(command.saga_id):
                    continue  # its lease ran out here: the next holder re-sends it
                try:
                    pool, message = self._message(command)  # type: ignore[arg-type]
                except Exception:  # its timeout is armed: the attempt times out and is retried
                    log.exception("shard %d: could not send %s", self.index, command)
                    continue
                batch = sends.get(pool)
                if batch is None:
                    sends[pool] = [message]
                else:
                    batch.append(message)
            elif kind is core.SetTimer:
                self._set_timer(command)  # type: ignore[arg-type]
            elif kind is core.Await:
                self._await(command)  # type: ignore[arg-type]
            elif kind is core.Ended:
                self._forget(command.saga_id)
                try:
                    self.on_end(command.saga_id, command.status, command.reason)
                except Exception:
                    log.exception("shard %d: end callback for %s failed", self.index,
                                  command.saga_id)

    def _message(self, command: core.Execute) -> tuple[Any, Command]:
        saga = self.sagas[command.saga_id]
        pool = self.pools(saga.compiled)[command.service]
        return pool, Command(
            command_id=command.command_id, saga_id=command.saga_id, step=command.step,
            phase=command.phase, name=command.name, attempt=command.attempt, key=command.key,
            payload=command.payload if command.payload is not None else {},
            result=command.result,
            timeout_at=command.timeout_at)

    # -- timers ---------------------------------------------------------------------------------
    def _set_timer(self, command: core.SetTimer) -> None:
        """Arm the saga's step (or deadline) timer, replacing the one it had. Each branch of
        a parallel block has a step timer of its own."""
        self._timer_seq += 1
        seq = self._timer_seq
        if command.kind == "deadline":
            key = (command.saga_id, "deadline")
        else:
            saga = self.sagas.get(command.saga_id)
            track = saga.compiled.track_of.get(command.step) if saga is not None and \
                command.step is not None else None
            key = (command.saga_id, track or "step")
        self._timers[key] = (seq, command.fired())
        heap = self._timer_heap
        heapq.heappush(heap, (command.at, seq, key))
        if len(heap) > 2 * len(self._timers) + 1024:  # mostly replaced timers: rebuild
            self._timer_heap = heap = [(at, seq_, key_) for at, seq_, key_ in heap
                                       if self._timers.get(key_, (None,))[0] == seq_]
            heapq.heapify(heap)
        if self._wake_at is None or command.at < self._wake_at:
            self._arm_wake(command.at)

    def _arm_wake(self, at: float) -> None:
        try:
            handle = self.scheduler.schedule(at, self.actor_ref, WAKE)
        except SchedulerStopped:  # the runtime is closing: the timers die with it (resume)
            return
        old, self._wake_handle, self._wake_at = self._wake_handle, handle, at
        if old is not None:
            self.scheduler.cancel(old)

    def _fire_timers(self) -> None:
        """Handle every live timer due by now, in due order, then re-arm the wake-up."""
        self._wake_at = None
        try:
            self._fire_due()
        finally:  # whatever happened, the remaining timers keep a wake-up
            self._rearm()

    def _fire_due(self) -> None:
        now = self.env.now()
        heap, timers = self._timer_heap, self._timers
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            live = timers.get(key)
            if live is None or live[0] != seq:
                continue  # replaced or cancelled
            del timers[key]
            saga_id = key[0]
            try:
                if saga_id in self._pending.new_ids:
                    self._flush()
                saga = self.sagas.get(saga_id)
                if saga is not None:
                    self._decide(saga, live[1])
            except Exception:
                log.exception("shard %d: saga %s: its timer failed", self.index, saga_id)

    def _rearm(self) -> None:
        heap, timers = self._timer_heap, self._timers
        while heap:
            _, seq, key = heap[0]
            live = timers.get(key)
            if live is not None and live[0] == seq:
                self._arm_wake(heap[0][0])
                return
            heapq.heappop(heap)

    # -- waits for external events ------------------------------------------------------------
    def _await(self, command: core.Await) -> None:
        """A saga now waits for ``(event, key)`` (its wait_for step started, committed): take
        an event already in the store, or be told when one is posted."""
        wanted = (command.event, command.key)
        self._unwait(command.saga_id)
        self._waits[command.saga_id] = wanted
        self._awaiting.setdefault(wanted, set()).add(command.saga_id)
        self.me.tell(EventPosted(*wanted))  # type: ignore[union-attr]  # check the store soon

    def _unwait(self, saga_id: str) -> None:
        wanted = self._waits.pop(saga_id, None)
        if wanted is not None:
            waiting = self._awaiting.get(wanted)
            if waiting is not None:
                waiting.discard(saga_id)
                if not waiting:
                    del self._awaiting[wanted]

    def _claim_for(self, wanted: tuple[str, str]) -> None:
        """Hand stored events of ``(event, key)`` to the sagas here that wait for one."""
        for saga_id in sorted(self._awaiting.get(wanted, ())):
            saga = self.sagas.get(saga_id)
            if saga is None or saga.waiting != wanted or not saga.in_flight:
                self._unwait(saga_id)
                continue
            found = self.store.claim_event(wanted[0], wanted[1], saga_id, at=self.env.now())
            if found is None:
                return  # none left for the others either
            self._unwait(saga_id)
            self._decide(saga, core.EventReceived(found.type, found.key, dict(found.data),
                                                  found.event_id))

    def _drop(self, message: DropPartitions) -> None:
        self._flush()
        dropped: list[str] = []
        try:
            partition_of = self.membership.partition_of  # type: ignore[union-attr]
            dropped = [s for s in self.sagas if partition_of(s) in message.partitions]
            for saga_id in dropped:
                self._forget(saga_id)
        finally:
            message.ticket.resolve(dropped)

    def _forget(self, saga_id: str) -> None:
        self._unwait(saga_id)
        saga = self.sagas.pop(saga_id, None)
        self._timers.pop((saga_id, "step"), None)
        self._timers.pop((saga_id, "deadline"), None)
        if saga is not None:
            for track in saga.compiled.tracks:
                self._timers.pop((saga_id, track), None)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        log.error("shard %d stopped by %s", self.index, exception_value)
