"""The Python API: a :class:`Runtime` that starts sagas and waits for them (DESIGN.md §5).

::

    from sagas import Runtime

    with Runtime() as runtime:                        # memory:// store, real clock
        result = runtime.run("flows/order_inventory.yaml",
                             {"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25})
        print(result.status, result.context["steps"])

A runtime owns a fixed set of shard actors (hosting every saga it drives), one actor or pool
per declared service, one timer scheduler, and a store. Inject ``clock=VirtualClock()`` and a
seeded ``random`` to run time-dependent behaviour without sleeping (see :mod:`sagas.testing`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random as random_module
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pykka

from actors import (
    Activity,
    Clock,
    DeadLetters,
    FaultInjector,
    InboxStore,
    Service,
    SystemClock,
    make_scheduler,
)

from ..bus import Delivery, EventBus, Start, Subscriber, Subscription
from ..errors import (
    BadStoreUrl,
    SagactorError,
    SagaOrphaned,
    SagaTimeout,
    StoreError,
)
from ..events import TERMINAL_EVENTS, Event
from ..language.compiler import CompiledFlow, compile_flow
from ..language.loader import load_flow
from ..language.model import Flow
from ..stores import TERMINAL, NewSaga, SagaStore, open_store, partition_of
from . import core
from .handoff import DRIVE, Handoff, StartHandoff
from .inputs import SAGA_ID, remote_names, validate_input, validate_saga_id
from .membership import DEFAULT_LEASE_TTL, Membership
from .results import START_TIMEOUT, SagaResult, Submitted, load_result
from .services import ServiceRegistry
from .shard import (
    DropPartitions,
    EventPosted,
    LoadSaga,
    LoadSagas,
    RemoteReplies,
    Shard,
    StartSaga,
    Ticket,
    _Env,
    shard_of,
)
from .triggers import TriggerStarter

__all__ = ["SAGA_ID", "Runtime", "SagaResult", "Submitted", "remote_names", "validate_input",
           "validate_saga_id"]

log = logging.getLogger(__name__)

RECOVERY_CHUNK = 500
"""Sagas a shard loads, replays and resumes in one go when recovering (one read, one commit)."""
BUSY_POLL = 0.02
"""Seconds between polls of the store while it has work for this runtime (see
:meth:`Runtime._poll_requests`)."""
SHARED_SCHEMES = ("postgresql:", "postgres:")
"""Stores shared by several orchestrator processes: a runtime on one is a member by default."""


class Runtime:
    """Runs sagas: shard actors, service actors, a scheduler and a store.

    Use it as a context manager (or call :meth:`close`). ``store`` is a URL (``memory://`` by
    default, ``sqlite:///path``) or a store object; ``clock`` and ``random`` (a
    ``random.Random`` or a seed) are injected for deterministic tests; ``faults`` injects
    failures into service calls; ``services`` supplies service objects by import path or
    service name instead of importing them. ``subscribers`` are subscribed to the runtime's
    event bus (:attr:`bus`, :mod:`sagas.bus`) as it starts; :meth:`subscribe` adds more.

    ``shards`` is how many shard actors host the sagas. One is the default and the fastest:
    with one interpreter lock, more shards add no parallelism, and they split the mailbox so
    each group commit carries fewer decisions (on SQLite, 4 shards ran at a third of the speed
    of 1 in BENCHMARKS.md). Scale out with processes sharing a store instead.

    On a store shared by several processes (PostgreSQL) a runtime is a *member*
    (``member=None`` decides by the store; ``True`` or ``False`` forces it): it holds leases on
    a fair share of the store's partitions (:mod:`sagas.engine.membership`, ``lease_ttl``
    seconds each), drives the sagas of those and takes over a dead member's. A saga it starts
    in a partition another member holds is written to the store for that member to drive.
    ``client=True`` makes a runtime drive nothing: every saga it starts, cancels or retries is
    handed to the members through the store, and waited for by following the log.
    """

    def __init__(
        self,
        store: str | SagaStore = "memory://",
        *,
        clock: Clock | None = None,
        random: random_module.Random | int | None = None,
        shards: int = 1,
        ids: Callable[[], str] | None = None,
        faults: FaultInjector | None = None,
        services: Mapping[str, Service | Sequence[Service]] | None = None,
        inbox: InboxStore | None = None,
        listeners: Sequence[Callable[[str, Sequence[Event]], None]] = (),
        owner: str | None = None,
        recover: bool = False,
        poll_interval: float = 0.1,
        subscribers: Sequence[Subscriber] = (),
        member: bool | None = None,
        client: bool = False,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        broker: str | None = None,
        remote: Sequence[str] | str = (),
        publish: str | None = None,
        tracing: Any = None,
    ):
        if shards < 1:
            raise ValueError("a runtime needs at least one shard")
        if isinstance(store, str):
            self.store = open_store(store)
            self._owns_store = True
        elif isinstance(store, SagaStore):
            self.store = store
            self._owns_store = False
        else:
            raise BadStoreUrl(f"not a store URL or store: {store!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._rng = random if isinstance(random, random_module.Random) else \
            random_module.Random(random)
        self._seed = f"{self._rng.getrandbits(64):016x}"
        self._ids = ids or (lambda: uuid.uuid4().hex)
        self.activity = Activity()
        self.dead_letters = DeadLetters()
        self.scheduler = make_scheduler(self.clock, activity=self.activity,
                                        dead_letters=self.dead_letters)
        self._lock = threading.Lock()
        self._waiters: dict[str, list[threading.Event]] = {}
        self._callbacks: dict[str, list[Callable[[str, str, str | None], None]]] = {}
        self._lost: dict[str, str] = {}  # sagas whose events could not be committed
        self._closed = False
        self.owner = owner or f"runtime-{uuid.uuid4().hex[:16]}"
        # what close() stops: set as each part starts, so a failure part-way stops the rest
        self._shards: list[Any] = []
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self.bus: EventBus | None = None
        self.services: ServiceRegistry | None = None
        if member and client:
            raise ValueError("a runtime is a member or a client, not both")
        if member is None:
            member = not client and self.store.url.lower().startswith(SHARED_SCHEMES)
        self.client = client
        self.membership: Membership | None = None
        self._lease_ttl = lease_ttl
        self._member = member
        self._env = _Env(self.clock, self._seed)
        self._remote: set[str] = set()  # sagas waited for here that another process drives
        self._follow_position = 0
        self._requests_after = 0
        self._holders: tuple[float, dict[int, str]] = (0.0, {})
        self._broker_url = broker
        self._remote_names = remote_names(remote)
        if self._remote_names and broker is None:
            raise ValueError("services placed remote need a broker (broker='redis://...')")
        self.broker: Any = None  # the BrokerLink, once started
        self._publisher: Any = None
        # tracing: a sagas.observe.tracing.SagaTracer (duck-typed: the engine imports none of
        # it): spans from the committed events, the caller's span linked from each start
        self._tracing = tracing
        if tracing is not None:
            tracing.bind(self.store)
            listeners = (*listeners, tracing.listener)
        if publish is not None:  # saga events to the broker's streams, from the log
            from ..remote.publish import EventPublisher

            self._publisher = EventPublisher(publish)
            subscribers = (*subscribers, self._publisher.subscriber())
        self._remote_pools: dict[str, Any] = {}
        self._handoff = StartHandoff(self.store, self.owner, on_written=self._follow_saga,
                                     on_refused=self._unfollow_saga)
        try:
            self._start(inbox, faults, services, listeners, shards, poll_interval, subscribers,
                        recover)
        except BaseException:  # a damaged store, a refused subscriber...: stop what started
            self.close()
            raise

    def _start(self, inbox: InboxStore | None, faults: FaultInjector | None,
               services: Mapping[str, Service | Sequence[Service]] | None,
               listeners: Sequence[Callable[[str, Sequence[Event]], None]], shards: int,
               poll_interval: float, subscribers: Sequence[Subscriber], recover: bool) -> None:
        self.store.register_owner(self.owner)
        inbox = inbox if inbox is not None else self.store.inbox
        self.services = ServiceRegistry(inbox=inbox, faults=faults, activity=self.activity,
                                        dead_letters=self.dead_letters, overrides=services,
                                        remote=self._placed_remote)
        if self._member:
            self.membership = Membership(
                self.store, self.owner, ttl=self._lease_ttl, on_gained=self._gained,
                on_lost=self._dropped,
                describe=lambda: {"shards": len(self._shards)})
        if self._member or self.client:
            self._follow_position = self.store.last_position()
        for i in range(shards):
            self._shards.append(
                Shard.start(i, store=self.store, clock=self.clock, scheduler=self.scheduler,
                            seed=self._seed, pools=self._pools,
                            on_end=self._ended, activity=self.activity,
                            dead_letters=self.dead_letters, listeners=tuple(listeners),
                            owner=self.owner, on_lost=self._lost_commit,
                            membership=self.membership))
        self._shard_refs = [self.activity.counting(ref) for ref in self._shards]
        if self._broker_url is not None:
            from ..remote.outbound import BrokerLink

            self.broker = BrokerLink(self._broker_url, self.owner,
                                     partition_count=self._partition_count(),
                                     partitions=self._reply_partitions,
                                     deliver=self._deliver_replies, faults=faults)
        self._poll_interval = poll_interval
        self._triggers = TriggerStarter(
            self.store, lambda compiled, data, saga_id: self.submit(compiled.flow, data, saga_id))
        self._event_position = self._last_event_position()
        self._poller = threading.Thread(target=self._poll_requests, daemon=True,
                                        name=f"sagactor-requests-{self.owner}")
        self._poller.start()
        # -- event bus (sagas.bus): saga events published to subscribers from the log --------
        self.bus = EventBus(self.store, services=self.services.pools)
        for subscriber in subscribers:
            self.bus.subscribe(subscriber.name, subscriber.topics, subscriber.handler,
                               start=subscriber.start, attempts=subscriber.attempts,
                               backoff=subscriber.backoff)
        # -- end of event bus --------------------------------------------------------------------
        if self.membership is not None:
            self.membership.start()  # the first share is held (and its sagas loaded) on return
        if recover:
            self.recover()

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the scheduler, shards and services, then the store if the runtime opened it.

        Sagas still running stay in the store as they are (``saga resume`` finishes them).
        """
        if self._closed:
            return
        self._closed = True
        if self.membership is not None:  # takes nothing more; its leases are given back below
            self.membership.stop(timeout)
        self._handoff.close(timeout)  # the starts handed over are written before the end
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout)
        if self._publisher is not None:  # a wait for an unreachable broker ends now
            self._publisher.close()
        if self.bus is not None:  # subscribers' cursors saved before the store closes
            self.bus.close(timeout)
        self.scheduler.stop()
        for ref in self._shards:
            try:
                ref.stop(timeout=timeout)
            except Exception:  # pragma: no cover - already dead
                log.debug("shard already stopped", exc_info=True)
        if self.membership is not None:  # what the shards held is committed: hand it over
            self.membership.leave()
        if self.broker is not None:
            self.broker.close(timeout)
        if self.services is not None:
            self.services.stop(timeout)
        if self._owns_store:
            self.store.close()

    # -- flows ----------------------------------------------------------------------------------
    def compile(self, flow: Flow | str | os.PathLike[str]) -> CompiledFlow:
        """Load (if given a path), compile, and bind a flow's services."""
        if not isinstance(flow, Flow):
            flow = load_flow(Path(flow))
        compiled = compile_flow(flow)
        if self.client:
            return compiled  # a client drives nothing: the members import the services
        self.services.bind(flow)
        if self.membership is not None:
            self.membership.runs(flow.name)
        return compiled

    def _pools(self, compiled: CompiledFlow) -> dict[str, Any]:
        return self.services.bind(compiled.flow)

    # -- sagas ----------------------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh saga id from the runtime's id source."""
        return self._ids()

    def start(self, flow: Flow | str | os.PathLike[str], input: Any, saga_id: str | None = None,
              *, on_end: Callable[[str, str, str | None], None] | None = None) -> str:
        """Start a saga and return its id once ``saga.started`` is committed.

        ``input`` is checked against the flow's schema and copied: changing it afterwards
        changes nothing. With a caller-chosen ``saga_id`` that exists already, the same
        definition and input return the existing saga; anything else raises
        :class:`IdConflict`. ``on_end(saga_id, status, reason)`` is called when a saga this
        runtime drives ends (on a shard thread; before ``start`` returns if it had already
        ended).
        """
        submitted = self.submit(flow, input, saga_id, on_end=on_end)
        try:
            submitted.result(START_TIMEOUT)
        except BaseException:
            self._drop_callback(submitted.saga_id, on_end)
            raise
        return submitted.saga_id

    def submit(self, flow: Flow | str | os.PathLike[str], input: Any,
               saga_id: str | None = None, *,
               on_end: Callable[[str, str, str | None], None] | None = None) -> Submitted:
        """Start a saga without waiting for ``saga.started`` to be committed.

        What :meth:`start` does, except that it returns at once: the input is checked here
        (``InputError``), the rest of the answer comes through the :class:`Submitted`. Use it
        to keep many sagas in flight from one thread: their starts share the shards' group
        commits. ``on_end`` is called as for :meth:`start`, and never if the start is refused
        (an ``IdConflict``, a store failure: :meth:`Submitted.result` raises it).
        """
        self._check_open()
        compiled = self.compile(flow)
        input = validate_input(compiled.flow, input)
        saga_id = validate_saga_id(saga_id) if saga_id is not None else self._ids()
        if on_end is not None:
            with self._lock:
                self._callbacks.setdefault(saga_id, []).append(on_end)

        def answered(ticket: Ticket) -> None:
            if on_end is None:
                return
            if ticket.error is not None:
                self._drop_callback(saga_id, on_end)
                return
            _, created = ticket.value
            if not created:
                header = self.store.header(saga_id)
                if header.status in TERMINAL and self._drop_callback(saga_id, on_end):
                    on_end(saga_id, header.status, header.reason)

        ticket = Ticket(answered)
        caller = self._tracing.caller_traceparent() if self._tracing is not None else None
        if not self._drives(saga_id):
            self._start_elsewhere(compiled, input, saga_id, ticket, caller)
            return Submitted(saga_id, ticket)
        try:
            self._tell_shard(saga_id, StartSaga(saga_id, compiled, input, ticket, caller))
        except BaseException:
            self._drop_callback(saga_id, on_end)
            raise
        return Submitted(saga_id, ticket)

    # -- a store shared by several processes ---------------------------------------------------
    def _drives(self, saga_id: str) -> bool:
        """Whether this runtime drives ``saga_id`` itself: always on a store of one process;
        a member drives the sagas of the partitions it holds; a client drives none."""
        if self.client:
            return False
        membership = self.membership
        return membership is None or membership.holds(membership.partition_of(saga_id))

    def _start_elsewhere(self, compiled: CompiledFlow, saga_input: Any, saga_id: str,
                         ticket: Ticket, traceparent: str | None = None) -> None:
        """Hand the saga's start to the member holding its partition (or the next one):
        written in the next batch of :class:`StartHandoff`, with a ``drive`` request."""
        try:
            saga, events, _ = core.start(compiled, saga_id, saga_input, self._env, traceparent)
            flow = compiled.flow
            new = NewSaga(
                saga_id=saga_id, flow=flow.name, version=flow.version,
                definition=flow.definition, definition_text=flow.text, input=saga_input,
                status=saga.status, reason=saga.reason, started_at=saga.started_at,
                events=tuple(events), owner=self._holder_of(saga_id))
        except BaseException as exc:
            ticket.resolve(error=exc)
            return
        self._handoff.put(Handoff(new, compiled.definition, saga_input, ticket))

    def _follow_saga(self, saga_id: str) -> None:
        with self._lock:
            self._remote.add(saga_id)

    def _unfollow_saga(self, saga_id: str) -> None:
        with self._lock:
            self._remote.discard(saga_id)

    def _holder_of(self, saga_id: str) -> str | None:
        """The member holding the saga's partition now (``None`` if none does), from a view
        of the leases at most a quarter of a lease old."""
        read_at, holders = self._holders
        now = time.monotonic()
        if now - read_at > self._lease_ttl / 4:
            holders = {info.partition: info.member for info in self.store.leases()
                       if info.held and info.member is not None}
            self._holders = (now, holders)
        return holders.get(partition_of(saga_id, self._partition_count()))

    # -- services in workers (sagas.remote) ---------------------------------------------------
    def _placed_remote(self, name: str, spec: Any) -> Any | None:
        """The stand-in for service ``name`` if it runs in workers: placed remote, or declared
        without a Python class; ``None`` to run it here."""
        if self.broker is None:
            return None
        if not (spec.import_path == "" or "all" in self._remote_names
                or name in self._remote_names):
            return None
        pool = self._remote_pools.get(name)
        if pool is None:
            from ..remote.outbound import RemoteService

            pool = self._remote_pools[name] = RemoteService(self.broker, name)
        return pool

    def _reply_partitions(self) -> Sequence[int]:
        if self.membership is not None:
            return self.membership.held()
        return range(self._partition_count())

    def _deliver_replies(self, replies: list[tuple[Any, str]],
                         ack: Callable[[list[str]], None]) -> None:
        """Broker replies (with their entry ids) to their sagas' shards, one message each;
        a shard acknowledges its entries once what they caused is committed."""
        shards = len(self._shards)
        by_shard: dict[int, list[tuple[Any, str]]] = {}
        for pair in replies:
            by_shard.setdefault(shard_of(pair[0].command.saga_id, shards), []).append(pair)
        for index, pairs in by_shard.items():
            message = RemoteReplies(tuple(reply for reply, _ in pairs),
                                    functools.partial(ack, [entry for _, entry in pairs]))
            # closing: left unacknowledged, read again by whoever drives the saga next
            with contextlib.suppress(pykka.ActorDeadError):
                self._shard_refs[index].tell(message)

    def _partition_count(self) -> int:
        if self.membership is not None:
            return self.membership.partitions
        count = getattr(self, "_partitions", None)
        if count is None:
            count = self._partitions = self.store.partitions()
        return count

    def _members_alive(self) -> bool:
        if self.membership is not None:
            return True
        return any(m.seen_ago < self._lease_ttl for m in self.store.members())

    def _gained(self, partitions: list[int]) -> None:
        """Partitions just taken (on the membership thread): claim their in-flight sagas and
        put them back in motion from their logs, as ``saga resume`` does."""
        fence = self.membership.fence  # type: ignore[union-attr]
        if fence is None:
            return
        claimed = self.store.claim(fence, partitions)
        self._requests_after = 0  # requests written before the claim are ours now
        claimed = [s for s in claimed if not self.membership.is_undriven(s)]  # type: ignore
        if claimed:  # not waited for: the membership thread must go on renewing
            self._load(claimed, None)

    def _dropped(self, partitions: list[int]) -> None:
        """Partitions no longer held: every shard forgets their sagas (another member drives
        them now); those waited for here are followed through the log."""
        wanted = frozenset(partitions)
        tickets = []
        for ref in self._shard_refs:
            ticket = Ticket()
            try:
                ref.tell(DropPartitions(wanted, ticket))
            except pykka.ActorDeadError:
                continue
            tickets.append(ticket)
        for ticket in tickets:
            try:
                dropped = ticket.wait(START_TIMEOUT)
            except Exception:
                log.exception("member %s: a shard did not drop partitions in time", self.owner)
                continue
            with self._lock:
                self._remote.update(s for s in dropped
                                    if s in self._waiters or s in self._callbacks)

    def _follow(self) -> None:
        """End the waits of sagas driven elsewhere: their terminal events, read from the log."""
        if not self._remote:
            return
        while True:
            entries = self.store.read_log(self._follow_position, 1000)
            for saga_id, _, event in entries:
                self._follow_position = max(self._follow_position, event.position or 0)
                if event.type in TERMINAL_EVENTS and saga_id in self._remote:
                    with self._lock:
                        self._remote.discard(saga_id)
                    header = self.store.header(saga_id)
                    self._ended(saga_id, header.status, header.reason)
            if len(entries) < 1000:
                return

    def _drop_callback(self, saga_id: str, callback: Any) -> bool:
        """Forget one registration of ``callback``; whether it was still registered."""
        if callback is None:
            return False
        with self._lock:
            callbacks = self._callbacks.get(saga_id, [])
            if callback not in callbacks:
                return False
            callbacks.remove(callback)
            if not callbacks:
                self._callbacks.pop(saga_id, None)
            return True

    def run(self, flow: Flow | str | os.PathLike[str], input: Any, saga_id: str | None = None,
            *, timeout: float | None = None) -> SagaResult:
        """Start a saga and block until it ends; its :class:`SagaResult`."""
        return self.wait(self.start(flow, input, saga_id), timeout)

    def wait(self, saga_id: str, timeout: float | None = None) -> SagaResult:
        """Block until the saga is terminal; its :class:`SagaResult`.

        Raises ``SagaTimeout`` after ``timeout`` seconds, ``StoreError`` if this runtime could
        not commit the saga's events (``saga resume`` finishes it from what the store holds),
        and ``SagaOrphaned`` if the saga is in flight with no live runtime driving it.
        """
        done = threading.Event()
        with self._lock:
            self._waiters.setdefault(saga_id, []).append(done)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            poll = 0.01
            # The shard hosting the saga wakes us when it ends; a saga driven by another process
            # (or not driven at all) is noticed by looking at the store now and then.
            while True:
                lost = self._lost.get(saga_id)
                if lost is not None:
                    raise StoreError(f"saga {saga_id}: events could not be saved ({lost}); "
                                     "`saga resume` finishes it from what the store holds")
                header = self.store.header(saga_id)
                if header.status in TERMINAL:
                    break
                if self._member or self.client:
                    if not self._members_alive():
                        raise SagaOrphaned(f"saga {saga_id} is {header.status} but no member "
                                           "is running: start `saga serve`, or `saga resume` "
                                           "finishes it")
                elif header.owner != self.owner and (
                        header.owner is None or not self.store.owner_alive(header.owner)):
                    raise SagaOrphaned(f"saga {saga_id} is {header.status} but no running "
                                       "process drives it: `saga resume` finishes it")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise SagaTimeout(f"saga {saga_id} did not end within {timeout}s")
                if done.wait(poll if left is None else min(poll, left)):
                    continue
                poll = min(poll * 2, 0.5)
        finally:
            with self._lock:
                waiters = self._waiters.get(saga_id)
                if waiters is not None:
                    if done in waiters:
                        waiters.remove(done)
                    if not waiters:
                        del self._waiters[saga_id]
        return self.result(saga_id)

    def result(self, saga_id: str) -> SagaResult:
        """The saga as stored now (``UnknownSaga`` if there is none)."""
        return load_result(self.store, saga_id)

    def cancel(self, saga_id: str, timeout: float = START_TIMEOUT) -> SagaResult:
        """Cancel a running saga (DESIGN.md §4.4); a terminal one is left as it is.

        A saga driven by another live runtime gets the cancel through the store (its owner acts
        on it); one with no live owner is adopted and driven here.
        """
        return self._act(saga_id, core.Cancel(self.owner), "cancel", timeout)

    def retry(self, saga_id: str, timeout: float = START_TIMEOUT) -> SagaResult:
        """Re-drive a ``failed`` saga from where it stopped (DESIGN.md §4.2–4.3): the parked
        compensation, or forward recovery. Anything else is left as it is."""
        return self._act(saga_id, core.Retry(self.owner), "retry", timeout)

    def _act(self, saga_id: str, signal: core.Signal, kind: str, timeout: float) -> SagaResult:
        self._check_open()
        header = self.store.header(saga_id)  # UnknownSaga
        if header.status in TERMINAL and not (kind == "retry" and header.status == "failed"):
            return self.result(saga_id)  # left as it is
        owner = header.owner
        if self._member or self.client:
            if not self._drives(saga_id):
                request_id = self.store.request(saga_id, kind, {"requested_by": self.owner})
                self._await_request(saga_id, request_id, timeout)
                return self.result(saga_id)
        elif owner is not None and owner != self.owner and self.store.owner_alive(owner):
            request_id = self.store.request(saga_id, kind, {"requested_by": self.owner})
            self._await_request(saga_id, request_id, timeout)
            return self.result(saga_id)
        if self.membership is None and (owner != self.owner or header.status in TERMINAL):
            self.store.adopt(self.owner, [saga_id], include_failed=True)
        ticket = Ticket()
        self._tell_shard(saga_id, LoadSaga(saga_id, signal, ticket))
        ticket.wait(timeout)
        return self.result(saga_id)

    def _await_request(self, saga_id: str, request_id: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        poll = 0.01
        while any(r.request_id == request_id for r in self.store.requests_for(saga_id)):
            if time.monotonic() > deadline:
                raise SagaTimeout(f"the owner of saga {saga_id} did not take the request "
                                  f"within {timeout}s")
            self._stop_polling.wait(poll)
            poll = min(poll * 2, 0.25)

    def recover(self, saga_ids: Sequence[str] | None = None,
                timeout: float = START_TIMEOUT) -> list[str]:
        """Adopt every in-flight saga whose owner is gone (or those in ``saga_ids``) and put
        them back in motion (DESIGN.md §4.7); returns the ids adopted. Sagas whose owner is
        alive are never taken."""
        self._check_open()
        if self.client:
            return []
        if self.membership is not None:  # the sagas of the partitions held are loaded already
            wanted = None if saga_ids is None else set(saga_ids)
            return [saga_id for saga_id in self.store.in_flight()
                    if self._drives(saga_id) and (wanted is None or saga_id in wanted)]
        adopted = self.store.adopt(self.owner, saga_ids)
        self._load(adopted, timeout)
        return adopted

    def _load(self, saga_ids: Sequence[str], timeout: float | None) -> None:
        """Put ``saga_ids`` back in motion from their logs, in chunks per shard; waits for
        them to be loaded unless ``timeout`` is ``None``."""
        by_shard: dict[int, list[str]] = {}
        for saga_id in saga_ids:
            by_shard.setdefault(shard_of(saga_id, len(self._shards)), []).append(saga_id)
        tickets = []
        for index, ids in by_shard.items():
            for first in range(0, len(ids), RECOVERY_CHUNK):
                ticket = Ticket()
                chunk = tuple(ids[first:first + RECOVERY_CHUNK])
                self._shard_refs[index].tell(LoadSagas(chunk, ticket))
                tickets.append(ticket)
        if timeout is not None:
            for ticket in tickets:
                ticket.wait(timeout)

    def _poll_requests(self) -> None:
        """Act on requests (cancel, retry) that other processes wrote for sagas owned here, and
        pass on the external events they sent (``saga send``). Polls every ``poll_interval``
        seconds, and every :data:`BUSY_POLL` while there is work: requests found, or sagas
        driven elsewhere waited for here."""
        interval = self._poll_interval
        while not self._stop_polling.wait(interval):
            interval = BUSY_POLL if self._remote else self._poll_interval
            try:
                self._poll_events()
                if self._triggers.active:
                    self._triggers.poll()
                self._follow()
                if self.client:
                    continue
                requests = self.store.requests(self.owner, self._requests_after)
                if requests:
                    interval = BUSY_POLL
                drives = [r for r in requests if r.kind == DRIVE]
                if drives:  # sagas a client started in partitions held here
                    self._load([r.saga_id for r in drives if self._drives(r.saga_id)],
                               START_TIMEOUT)
                for request in requests:
                    self._requests_after = max(self._requests_after, request.request_id)
                    if request.kind == DRIVE:
                        self.store.complete_request(request.request_id)
                        continue
                    if not self._drives(request.saga_id):
                        continue  # its partition was lost meanwhile: for its next holder
                    cause = f"request/{request.request_id}"
                    by = request.data.get("requested_by")
                    signal = {"cancel": core.Cancel(by, cause),
                              "retry": core.Retry(by, cause)}.get(request.kind)
                    if signal is not None:
                        ticket = Ticket()
                        self._tell_shard(request.saga_id,
                                         LoadSaga(request.saga_id, signal, ticket))
                        ticket.wait(START_TIMEOUT)
                    self.store.complete_request(request.request_id)
            except Exception:  # keep polling: a store hiccup must not stop the runtime
                if self._stop_polling.is_set():
                    return
                log.exception("runtime %s: handling requests failed", self.owner)

    # -- triggers: flows started by external events ---------------------------------------------
    def add_trigger(self, flow: Flow | str | os.PathLike[str], *,
                    on_start: Callable[[str], None] | None = None,
                    on_skip: Callable[[str, str], None] | None = None) -> CompiledFlow:
        """Start a saga of ``flow`` for every external event of its ``trigger``'s type, sent
        before or after this call (see :mod:`sagas.engine.triggers`); ``on_start(saga_id)`` is
        called (on the runtime's poller thread) for each, ``on_skip(event_id, why)`` for an event
        that can start none (data failing the input schema, no usable id). ``SagactorError``
        if the flow has no trigger."""
        self._check_open()
        compiled = self.compile(flow)
        self._triggers.add(compiled, on_start, on_skip)
        return compiled

    # -- external events (wait_for) -------------------------------------------------------------
    def send(self, event: str, key: str, data: Mapping[str, Any] | None = None, *,
             event_id: str | None = None) -> tuple[str, bool]:
        """Send an external event to whichever saga waits (or will wait) for ``(event, key)``.

        The event is recorded in the store first, so it is kept until a saga's ``wait_for``
        step consumes it (one event, one saga), even if none waits yet, and whatever process
        drives that saga. ``event_id`` makes it idempotent: an id already recorded is ignored.
        Returns ``(event_id, recorded)``; ``ValueError`` / ``TypeError`` for a malformed event.
        """
        self._check_open()
        data_copy = dict(data) if data is not None else {}
        try:
            recorded, created = self.store.send_event(event, key, data_copy, event_id=event_id,
                                                      sent_at=self.clock.now())
        except RecursionError:
            raise ValueError(f"event {event!r}: its data is nested too deeply") from None
        if created:
            self._post(EventPosted(recorded.type, recorded.key))
        return recorded.event_id, created

    def _post(self, message: EventPosted) -> None:
        for ref in self._shard_refs:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:  # closing: the event waits in the store
                return

    def _last_event_position(self) -> int:
        """Where the poller starts: events sent before this runtime are found by the waits
        themselves (they look in the store when they start)."""
        return self.store.last_event_position()

    def _poll_events(self) -> None:
        for recorded in self.store.events_after(self._event_position):
            self._event_position = recorded.position
            self._post(EventPosted(recorded.type, recorded.key))

    def _ended(self, saga_id: str, status: str, reason: str | None) -> None:
        with self._lock:
            waiters = self._waiters.pop(saga_id, [])
            callbacks = self._callbacks.pop(saga_id, [])
        for done in waiters:
            done.set()
        for callback in callbacks:
            try:
                callback(saga_id, status, reason)
            except Exception:
                log.exception("on_end callback for saga %s failed", saga_id)

    def _lost_commit(self, saga_id: str, error: str) -> None:
        if self.membership is not None:
            # Not lost for good: the saga is in the store as it was, and the member holding
            # its partition (this one at its next sweep, or a successor) drives it on.
            with self._lock:
                if saga_id in self._waiters or saga_id in self._callbacks:
                    self._remote.add(saga_id)
            return
        with self._lock:
            self._lost[saga_id] = error
            waiters = self._waiters.pop(saga_id, [])
        for done in waiters:
            done.set()

    def _check_open(self) -> None:
        if self._closed:
            raise SagactorError("this runtime is closed")

    def _tell_shard(self, saga_id: str, message: Any) -> None:
        try:
            self._shard_refs[shard_of(saga_id, len(self._shards))].tell(message)
        except pykka.ActorDeadError:
            raise SagactorError("this runtime's shards have stopped") from None

    # -- event bus (sagas.bus) -----------------------------------------------------------------
    def subscribe(self, name: str, topics: Sequence[str],
                  handler: Callable[[Delivery], object], *, start: Start = "beginning",
                  attempts: int = 5, backoff: float = 0.1) -> Subscription:
        """Subscribe ``handler(delivery)`` to the saga events whose topic
        (``<flow>.<event type>``) matches one of ``topics``, from the durable cursor ``name``
        (see :mod:`sagas.bus`: at-least-once, in log order, none missing, across restarts).
        ``start`` is where a new subscriber starts: ``"beginning"`` or ``"end"`` of the log."""
        self._check_open()
        return self.bus.subscribe(name, topics, handler, start=start, attempts=attempts,
                                  backoff=backoff)

    # -- introspection --------------------------------------------------------------------------
    def instances(self, import_path: str) -> list[Service]:
        """The service objects started for ``module:Class`` (``KeyError`` if not started)."""
        return list(self.services.pool(import_path).instances)

    def snapshot(self, import_path: str, timeout: float = 10.0) -> list[Any]:
        """``snapshot()`` of each instance of a service, taken on the service's own thread."""
        pool = self.services.pool(import_path)
        return [pool.call(i, lambda service: service.snapshot(), timeout)
                for i in range(len(pool.instances))]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no message is waiting or being handled anywhere in this runtime."""
        return self.activity.wait_idle(timeout)

    def __repr__(self) -> str:
        return f"Runtime(store={self.store.url!r}, shards={len(self._shards)})"

