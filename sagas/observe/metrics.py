"""Prometheus metrics of a runtime or a saga worker, and the HTTP endpoint that serves them.

Needs ``prometheus-client`` (the ``sagactor[metrics]`` extra), imported when a
:class:`SagaMetrics` is made: importing this module costs nothing more than ``sagas`` does.

A :class:`SagaMetrics` has a registry of its own (never the client's global one) and is fed by a
runtime's event listeners, on the shard's thread, after each commit::

    metrics = SagaMetrics()
    with Runtime(store, listeners=[metrics.listener]) as runtime:
        metrics.attach(runtime)          # flows by saga, gauges read when scraped
        server = serve_metrics(metrics, "127.0.0.1:9464", health=runtime_health(runtime))
        ...
        server.close()

What it exposes (Prometheus conventions: a ``saga_`` prefix, base units, counters end in
``_total``; a label never holds a saga id, only flow, step, phase, outcome, status, reason and
service names, all bounded by the flows and services deployed):

==========================================  =========  ==========================================
``saga_sagas_started_total``                counter    ``flow``: a ``saga.started`` committed here
``saga_sagas_ended_total``                  counter    ``flow``, ``status``: a terminal event
                                                       (``completed``, ``compensated``, ``failed``)
``saga_sagas_parked_total``                 counter    ``flow``, ``reason``: the ends ``failed``
``saga_sagas_in_flight``                    gauge      ``flow``: hosted here and not ended
``saga_sagas_duration_seconds``             histogram  ``flow``, ``status``: ``saga.started`` to its
                                                       end, for the sagas started here
``saga_step_duration_seconds``              histogram  ``flow``, ``step``, ``phase``, ``outcome``
``saga_step_retries_total``                 counter    ``flow``, ``step``, ``phase``
``saga_store_commit_duration_seconds``      histogram  a group commit (:meth:`observe_commit`)
``saga_broker_command_queue_seconds``       histogram  ``service``: from a command's entry to its
                                                       delivery (:meth:`observe_queue_time`)
``saga_broker_commands_waiting``            gauge      ``service``: not yet read by any worker
``saga_broker_commands_pending``            gauge      ``service``: read, not yet acknowledged
``saga_broker_oldest_command_age_seconds``  gauge      ``service``: the oldest of those two
``saga_broker_up``                          gauge      1 if the broker answered this scrape's reads
``saga_dead_letters``                       gauge      ``service``: dead-lettered commands held
``saga_members_alive``                      gauge      members of a shared store seen within a
                                                       lease's length
``saga_partitions_owned``                   gauge      partitions whose lease this member holds
``saga_actor_dead_letters_total``           counter    messages no actor could take (the
                                                       runtime's ``dead_letters``)
==========================================  =========  ==========================================

A step's duration runs from its ``step.started`` (or ``compensation.started``: ``phase`` is
``action`` or ``compensation``) to the outcome of that attempt, both times from the log
(``Event.at``). ``outcome`` is ``succeeded``, ``rejected`` or ``error`` (a ``failed`` event's
``kind``), ``timed_out``, or for an attempt cut short by the saga rather than by its timeout the
reason: ``cancelled``, ``deadline`` or ``halted``. An attempt whose start was committed before
this process hosted the saga (a resumed or taken-over saga) has no duration here.

The flow of a saga is not in its events: the first time a saga is seen it is asked of
``flow_of(saga_id)`` (after :meth:`SagaMetrics.attach`: the store's header of the saga, one read
per saga, kept until it ends) unless the engine passes it (:meth:`SagaMetrics.on_saga_events`).
Events that arrive before there is a way to know the flow (a runtime that recovers sagas as it
starts, before ``attach``) are held and counted once it is attached.

``saga_sagas_ended_total`` may exceed ``saga_sagas_started_total``: a saga parked ``failed`` and
retried (``saga retry``) ends again, and a saga resumed here ends here though it started
elsewhere.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from ..errors import SagactorError
from ..events import (
    COMPENSATION_FAILED,
    COMPENSATION_RETRYING,
    COMPENSATION_STARTED,
    COMPENSATION_SUCCEEDED,
    COMPENSATION_TIMED_OUT,
    SAGA_STARTED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    TERMINAL_EVENTS,
    Event,
)
from ..remote import protocol

if TYPE_CHECKING:
    from ..engine.runtime import Runtime

__all__ = [
    "COMMIT_BUCKETS",
    "DURATION_BUCKETS",
    "Backlog",
    "BadAddress",
    "MetricsServer",
    "MetricsServerError",
    "MetricsUnavailable",
    "SagaMetrics",
    "broker_backlog",
    "broker_dead_letters",
    "broker_health",
    "metrics_app",
    "parse_address",
    "runtime_health",
    "serve_metrics",
]

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
"""Buckets (seconds) of the step, saga and queue durations: from a local call's millisecond to
a wait step's day."""

COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5, 5.0)
"""Buckets (seconds) of a store commit."""

MAX_EARLY_EVENTS = 100_000
"""Events held while no flow can be known (before :meth:`SagaMetrics.attach`); beyond, the
excess is dropped (and said once, at WARNING)."""

UNKNOWN_FLOW = "unknown"
"""The ``flow`` label of a saga whose flow could not be read (the store failed)."""

_STARTS = {STEP_STARTED: "action", COMPENSATION_STARTED: "compensation"}
_OUTCOMES = {
    STEP_SUCCEEDED: ("action", "succeeded"), STEP_FAILED: ("action", "failed"),
    STEP_TIMED_OUT: ("action", "timed_out"),
    COMPENSATION_SUCCEEDED: ("compensation", "succeeded"),
    COMPENSATION_FAILED: ("compensation", "failed"),
    COMPENSATION_TIMED_OUT: ("compensation", "timed_out"),
}
_RETRIES = {STEP_RETRYING: "action", COMPENSATION_RETRYING: "compensation"}
_FAILURE_KINDS = frozenset({"rejected", "error"})
_CUT_SHORT = frozenset({"cancelled", "deadline", "halted"})


# -- errors ----------------------------------------------------------------------------------
class MetricsUnavailable(SagactorError):
    """``prometheus-client`` is not installed."""


class BadAddress(SagactorError, ValueError):
    """An address to listen on that is not ``HOST:PORT`` (one line saying why)."""


class MetricsServerError(SagactorError):
    """The metrics endpoint could not listen where asked (one line: the address and why)."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable("metrics need prometheus-client: pip install "
                                 "'sagactor[metrics]' (or prometheus-client>=0.20)") from None
    return prometheus_client


# -- what the listener keeps of each saga in flight ------------------------------------------
class _Saga:
    __slots__ = ("flow", "open", "started_at")

    def __init__(self, flow: str) -> None:
        self.flow = flow
        self.started_at: float | None = None
        self.open: dict[tuple[str, str], tuple[float, int | None]] = {}  # (phase, step) -> at


@dataclass(frozen=True, slots=True)
class Backlog:
    """The commands of one service in the broker (:func:`broker_backlog`): ``waiting`` not yet
    read by any worker, ``pending`` read by a worker and not acknowledged, ``oldest_age`` the
    seconds since the oldest of those was added (``None`` when there are none)."""

    waiting: int
    pending: int
    oldest_age: float | None


class SagaMetrics:
    """The metrics of one process, in a registry of its own (:attr:`registry`).

    ``flow_of(saga_id)`` names a saga's flow (default: set by :meth:`attach`, from the store);
    ``buckets`` are the duration histograms' (seconds), ``commit_buckets`` the store commit's.
    Thread-safe: shards, the scrape and the callers of ``observe_*`` may be on any threads.
    Raises :class:`MetricsUnavailable` when ``prometheus-client`` is not installed.
    """

    def __init__(self, *, flow_of: Callable[[str], str] | None = None,
                 buckets: Sequence[float] = DURATION_BUCKETS,
                 commit_buckets: Sequence[float] = COMMIT_BUCKETS) -> None:
        prometheus = _prometheus()
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        counter, histogram = prometheus.Counter, prometheus.Histogram
        r = self.registry
        self.sagas_started = counter("saga_sagas_started", "Sagas started, by flow.",
                                     ["flow"], registry=r)
        self.sagas_ended = counter("saga_sagas_ended", "Sagas that reached a terminal status, "
                                   "by flow and status.", ["flow", "status"], registry=r)
        self.sagas_parked = counter("saga_sagas_parked", "Sagas that ended failed (parked for "
                                    "a person), by flow and reason.", ["flow", "reason"],
                                    registry=r)
        self.saga_duration = histogram(
            "saga_sagas_duration_seconds", "From a saga's start to its end, for the sagas "
            "started in this process.", ["flow", "status"], buckets=buckets, registry=r)
        self.step_duration = histogram(
            "saga_step_duration_seconds", "From a step attempt's start to its outcome (action "
            "or compensation), by flow, step, phase and outcome.",
            ["flow", "step", "phase", "outcome"], buckets=buckets, registry=r)
        self.step_retries = counter("saga_step_retries", "Step attempts retried, by flow, step "
                                    "and phase.", ["flow", "step", "phase"], registry=r)
        self.commit_duration = histogram(
            "saga_store_commit_duration_seconds", "A store commit (a shard's group commit) "
            "from the call to its return.", buckets=commit_buckets, registry=r)
        self.queue_time = histogram(
            "saga_broker_command_queue_seconds", "From a command's entry in the broker to a "
            "worker reading it, by service.", ["service"], buckets=buckets, registry=r)
        self._lock = threading.Lock()
        self._sagas: dict[str, _Saga] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._flows_seen: set[str] = set()
        self._flow_of = flow_of
        self._early: list[tuple[str, Sequence[Event]]] = []
        self._early_events = 0
        self._early_dropped = 0
        self._partitions: Callable[[], Any] | None = None  # (held set, partition_of) to prune
        self._members: Callable[[], int] | None = None
        self._owned: Callable[[], int] | None = None
        self._dead_letters: Callable[[], Mapping[str, int]] | None = None
        self._backlog: Callable[[], Mapping[str, Backlog]] | None = None
        self._actor_dead_letters: Callable[[], int] | None = None
        self._failing: set[str] = set()  # the gauges whose last read failed (said once)
        self.registry.register(_Gauges(self))

    # -- the listener ------------------------------------------------------------------------
    @property
    def listener(self) -> Callable[[str, Sequence[Event]], None]:
        """What to pass in ``Runtime(listeners=[...])``: :meth:`on_events`."""
        return self.on_events

    def on_events(self, saga_id: str, events: Sequence[Event]) -> None:
        """A runtime's listener: ``events`` of ``saga_id`` were just committed."""
        flow = None
        if self._flow_of is None:
            with self._lock:
                if self._flow_of is None:
                    self._hold(saga_id, events)
                    return
        if saga_id not in self._sagas:  # only its own shard's thread adds or drops it
            flow = self._resolve(saga_id)
        with self._lock:
            self._apply(saga_id, flow, events)

    def on_saga_events(self, saga_id: str, flow: str, events: Sequence[Event]) -> None:
        """As :meth:`on_events`, told the saga's flow (no store read): what a shard that knows
        it would call."""
        with self._lock:
            self._apply(saga_id, flow, events)

    def set_flow_of(self, flow_of: Callable[[str], str]) -> None:
        """Name the sagas' flows with ``flow_of(saga_id)`` from now on, and count the events
        held until now."""
        with self._lock:  # the held events first: a shard's newer ones wait for the lock
            self._flow_of = flow_of
            early, self._early, self._early_events = self._early, [], 0
            for saga_id, events in early:
                self._apply(saga_id, None, events)

    def _hold(self, saga_id: str, events: Sequence[Event]) -> None:
        if self._early_events + len(events) > MAX_EARLY_EVENTS:
            if not self._early_dropped:
                log.warning("metrics: more than %d saga events before SagaMetrics.attach(); "
                            "the rest are not counted", MAX_EARLY_EVENTS)
            self._early_dropped += len(events)
            return
        self._early.append((saga_id, tuple(events)))
        self._early_events += len(events)

    def _resolve(self, saga_id: str) -> str:
        flow_of = self._flow_of
        try:
            return flow_of(saga_id) if flow_of is not None else UNKNOWN_FLOW
        except Exception as exc:
            log.warning("metrics: the flow of saga %s could not be read (%s); counted as %r",
                        saga_id, exc, UNKNOWN_FLOW)
            return UNKNOWN_FLOW

    def _apply(self, saga_id: str, flow: str | None, events: Iterable[Event]) -> None:
        """Count ``events`` (under the lock)."""
        saga = self._sagas.get(saga_id)
        child = self._child
        for event in events:
            kind = event.type
            if saga is None:
                saga = _Saga(flow if flow is not None else self._resolve(saga_id))
                self._sagas[saga_id] = saga
                self._flows_seen.add(saga.flow)
            if kind in _STARTS:
                saga.open[(_STARTS[kind], event.step or "")] = (event.at, event.attempt)
            elif kind in _OUTCOMES:
                phase, outcome = _OUTCOMES[kind]
                step = event.step or ""
                opened = saga.open.pop((phase, step), None)
                if opened is not None and opened[1] == event.attempt:
                    child(self.step_duration, saga.flow, step, phase,
                          _outcome(outcome, event.data)).observe(max(0.0, event.at - opened[0]))
            elif kind in _RETRIES:
                child(self.step_retries, saga.flow, event.step or "", _RETRIES[kind]).inc()
            elif kind == SAGA_STARTED:
                saga.started_at = event.at
                child(self.sagas_started, saga.flow).inc()
            elif kind in TERMINAL_EVENTS:
                status = TERMINAL_EVENTS[kind]
                child(self.sagas_ended, saga.flow, status).inc()
                if status == "failed":
                    reason = event.data.get("reason") if isinstance(event.data, dict) else None
                    child(self.sagas_parked, saga.flow, str(reason or "unknown")).inc()
                if saga.started_at is not None:
                    child(self.saga_duration, saga.flow, status).observe(
                        max(0.0, event.at - saga.started_at))
                del self._sagas[saga_id]
                flow = saga.flow  # a later event of this batch (a retry) is the same flow's
                saga = None

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept (the client's own lookup costs more than this)."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def in_flight(self) -> dict[str, int]:
        """The sagas hosted here and not ended, by flow (every flow seen, 0 included)."""
        held = None
        if self._partitions is not None:
            held = self._read("the partitions held", self._partitions)
        with self._lock:
            if held is not None:
                self._prune(*held)
            counts = dict.fromkeys(self._flows_seen, 0)
            for saga in self._sagas.values():
                counts[saga.flow] += 1
        return counts

    def _prune(self, held: set[int], partition_of: Callable[[str], int]) -> None:
        """Forget the sagas of partitions no longer held: their new holder drives them."""
        for saga_id in [s for s in self._sagas if partition_of(s) not in held]:
            del self._sagas[saga_id]

    # -- what the engine and the worker would call -------------------------------------------
    def observe_commit(self, seconds: float) -> None:
        """A store commit took ``seconds``."""
        self.commit_duration.observe(seconds)

    def observe_queue_time(self, service: str, seconds: float) -> None:
        """A command for ``service`` waited ``seconds`` in the broker before a worker read it."""
        self.queue_time.labels(service).observe(max(0.0, seconds))

    def time_commits(self, store: Any) -> Callable[[], None]:
        """Time every ``store.write`` (a shard's group commit, a client's hand-off) into
        ``saga_store_commit_duration_seconds``, by wrapping the method on this store object;
        returns what undoes it. The stand-in for a shard that calls :meth:`observe_commit`
        itself. Idempotent."""
        original = store.write
        if getattr(original, "_sagactor_timed", False):
            return lambda: None
        observe, clock = self.commit_duration.observe, time.perf_counter

        def write(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return original(*args, **kwargs)
            finally:
                observe(clock() - began)

        write._sagactor_timed = True  # type: ignore[attr-defined]
        store.write = write

        def undo() -> None:
            if store.__dict__.get("write") is write:
                del store.write

        return undo

    # -- gauges read when scraped ------------------------------------------------------------
    def watch_members(self, alive: Callable[[], int]) -> None:
        """``saga_members_alive`` is ``alive()``."""
        self._members = alive

    def watch_partitions(self, owned: Callable[[], int]) -> None:
        """``saga_partitions_owned`` is ``owned()``."""
        self._owned = owned

    def watch_dead_letters(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """``saga_dead_letters{service}`` from ``counts()`` (service -> dead letters held)."""
        self._dead_letters = counts

    def watch_broker(self, backlog: Callable[[], Mapping[str, Backlog]]) -> None:
        """``saga_broker_commands_*{service}`` from ``backlog()`` (:func:`broker_backlog`),
        and ``saga_broker_up``."""
        self._backlog = backlog

    def watch_actor_dead_letters(self, total: Callable[[], int]) -> None:
        """``saga_actor_dead_letters_total`` is ``total()``."""
        self._actor_dead_letters = total

    def attach(self, runtime: Runtime, *, broker_services: Sequence[str] | None = None,
               time_commits: bool = True) -> SagaMetrics:
        """Read from ``runtime`` what its listener cannot see: the flows of its sagas (from
        its store, unless ``flow_of`` was given), its partitions and the members alive (a
        member), its actors' dead letters, the broker's backlog and dead letters of the
        services it placed remote (``broker_services``, default those it has sent to so far),
        and with ``time_commits`` its store's commit latency (:meth:`time_commits`)."""
        store = runtime.store
        if self._flow_of is None:
            self.set_flow_of(lambda saga_id: store.header(saga_id).flow)
        membership = runtime.membership
        if membership is not None:
            self._partitions = lambda: (set(membership.held()), membership.partition_of)
            self.watch_partitions(lambda: len(membership.held()))
            self.watch_members(lambda: sum(1 for member in store.members()
                                           if member.seen_ago < membership.ttl))
        dead_letters = getattr(runtime, "dead_letters", None)
        if dead_letters is not None:
            self.watch_actor_dead_letters(lambda: dead_letters.total)
        broker = runtime.broker
        if broker is not None:
            if broker_services is not None:
                fixed = list(broker_services)

                def services() -> list[str]:
                    return fixed
            else:
                def services() -> list[str]:  # the remote pools made so far (no public name)
                    return sorted(getattr(runtime, "_remote_pools", {}))
            self.watch_redis(broker.redis, services, prefix=broker.prefix)
        if time_commits:
            self.time_commits(store)
        return self

    def attach_worker(self, worker: Any, client: Any) -> SagaMetrics:
        """A saga worker's gauges: the backlog and dead letters of the services it hosts
        (``worker.services``, read with redis ``client``: :func:`sagas.remote.broker.connect`
        of the worker's broker URL); and the queue time of each command it reads (its
        ``on_delivery``)."""
        services = list(worker.services)
        self.watch_redis(client, lambda: services, prefix=worker.prefix)
        if hasattr(worker, "on_delivery"):
            worker.on_delivery = self.observe_queue_time
        return self

    def watch_redis(self, client: Any, services: Callable[[], Sequence[str]], *,
                    prefix: str = protocol.DEFAULT_PREFIX) -> None:
        """The broker gauges and dead letters of ``services()`` from a redis-py ``client``."""
        self.watch_broker(lambda: broker_backlog(client, services(), prefix=prefix))
        self.watch_dead_letters(lambda: broker_dead_letters(client, services(), prefix=prefix))

    def _read(self, name: str, read: Callable[[], Any]) -> Any:
        """``read()``, or ``None`` (said at WARNING the first time in a row) if it fails."""
        try:
            value = read()
        except Exception as exc:
            if name not in self._failing:
                self._failing.add(name)
                log.warning("metrics: %s could not be read: %s", name, exc)
            else:
                log.debug("metrics: %s could not be read: %s", name, exc)
            return None
        self._failing.discard(name)
        return value

    def render(self) -> bytes:
        """The exposition text (Prometheus format 0.0.4) of every metric."""
        return _prometheus().generate_latest(self.registry)  # type: ignore[no-any-return]


def _outcome(outcome: str, data: Any) -> str:
    if outcome == "failed":
        kind = data.get("kind") if isinstance(data, dict) else None
        return kind if kind in _FAILURE_KINDS else "failed"
    if outcome == "timed_out":
        reason = data.get("reason") if isinstance(data, dict) else None
        return reason if reason in _CUT_SHORT else "timed_out"
    return outcome


class _Gauges:
    """The custom collector: the values read when scraped."""

    def __init__(self, metrics: SagaMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []  # values read only when collected (and never while registering)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self._metrics
        in_flight = GaugeMetricFamily("saga_sagas_in_flight", "Sagas hosted in this process "
                                      "and not ended, by flow.", labels=["flow"])
        for flow, count in sorted(m.in_flight().items()):
            in_flight.add_metric([flow], count)
        yield in_flight
        for name, read, doc in (
                ("saga_members_alive", m._members, "Members of the shared store seen within "
                 "a lease's length."),
                ("saga_partitions_owned", m._owned, "Partitions whose lease this member "
                 "holds.")):
            if read is not None:
                value = m._read(name, read)
                if value is not None:
                    yield GaugeMetricFamily(name, doc, value=value)
        if m._actor_dead_letters is not None:
            total = m._read("saga_actor_dead_letters_total", m._actor_dead_letters)
            if total is not None:
                yield CounterMetricFamily("saga_actor_dead_letters", "Messages no actor could "
                                          "take (the runtime's dead letters).", value=total)
        if m._dead_letters is not None:
            counts = m._read("saga_dead_letters", m._dead_letters)
            if counts is not None:
                family = GaugeMetricFamily("saga_dead_letters", "Dead-lettered commands held "
                                           "in the broker, by service.", labels=["service"])
                for service, count in sorted(counts.items()):
                    family.add_metric([service], count)
                yield family
        if m._backlog is not None:
            yield from self._broker(m._read("saga_broker_commands", m._backlog))

    @staticmethod
    def _broker(backlog: Mapping[str, Backlog] | None) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("saga_broker_up", "1 if the broker answered the reads of this "
                                "scrape, else 0.", value=0 if backlog is None else 1)
        if backlog is None:
            return
        waiting = GaugeMetricFamily("saga_broker_commands_waiting", "Commands in the broker "
                                    "no worker has read yet, by service.", labels=["service"])
        pending = GaugeMetricFamily("saga_broker_commands_pending", "Commands a worker has "
                                    "read and not acknowledged, by service.",
                                    labels=["service"])
        oldest = GaugeMetricFamily("saga_broker_oldest_command_age_seconds", "Age of the "
                                   "oldest command waiting or pending, by service.",
                                   labels=["service"])
        for service, entry in sorted(backlog.items()):
            waiting.add_metric([service], entry.waiting)
            pending.add_metric([service], entry.pending)
            oldest.add_metric([service], entry.oldest_age or 0.0)
        yield waiting
        yield pending
        yield oldest


# -- the broker ------------------------------------------------------------------------------
def _entry_seconds(entry_id: str) -> float:
    """The time (Unix seconds) a stream entry was added: its id's milliseconds."""
    return int(str(entry_id).partition("-")[0]) / 1000.0


def _no_stream(exc: BaseException) -> bool:
    return "no such key" in str(exc).lower()


def broker_backlog(client: Any, services: Iterable[str], *,
                   prefix: str = protocol.DEFAULT_PREFIX) -> dict[str, Backlog]:
    """The commands of each of ``services`` in the broker: their streams
    (:func:`sagas.remote.protocol.command_stream`) as the workers' consumer group sees them
    (``XINFO GROUPS``: ``lag`` and ``pending``; ``XPENDING`` and ``XRANGE`` for the oldest).
    ``client`` is a redis-py client answering ``str`` (:func:`sagas.remote.broker.connect`).
    A stream not made yet counts as empty; a group not made yet (no worker started) leaves
    every entry waiting."""
    group = protocol.workers_group(prefix)
    seconds, micros = client.time()
    now = int(seconds) + int(micros) / 1e6
    found: dict[str, Backlog] = {}
    for service in services:
        stream = protocol.command_stream(service, prefix)
        try:
            groups = client.xinfo_groups(stream)
        except Exception as exc:
            if not _no_stream(exc):
                raise
            found[service] = Backlog(0, 0, None)
            continue
        info = next((g for g in groups if g.get("name") == group), None)
        oldest: list[float] = []
        if info is None:
            waiting, pending, after = int(client.xlen(stream)), 0, "-"
        else:
            pending = int(info.get("pending") or 0)
            last = str(info.get("last-delivered-id") or "0-0")
            after = "(" + last
            lag = info.get("lag")
            if lag is None:  # Redis before 7, or a lag Redis cannot tell (entries deleted)
                lag = len(client.xrange(stream, min=after, max="+", count=100_000))
            waiting = int(lag)
            if pending:
                summary = client.xpending(stream, group)
                if summary.get("min"):
                    oldest.append(_entry_seconds(summary["min"]))
        if waiting:
            first = client.xrange(stream, min=after, max="+", count=1)
            if first:
                oldest.append(_entry_seconds(first[0][0]))
        found[service] = Backlog(waiting, pending,
                                 max(0.0, now - min(oldest)) if oldest else None)
    return found


def broker_dead_letters(client: Any, services: Iterable[str], *,
                        prefix: str = protocol.DEFAULT_PREFIX) -> dict[str, int]:
    """The dead letters held for each of ``services`` (``XLEN`` of
    :func:`sagas.remote.protocol.dead_stream`)."""
    return {service: int(client.xlen(protocol.dead_stream(service, prefix)))
            for service in services}


# -- health ----------------------------------------------------------------------------------
def runtime_health(runtime: Runtime) -> Callable[[], str | None]:
    """A ``health`` for :func:`serve_metrics`: not ready once the runtime is closed, while its
    store does not answer (one cheap read) or its broker does not (``PING``)."""

    def health() -> str | None:
        if getattr(runtime, "_closed", False):
            return "the runtime is stopped"
        try:
            runtime.store.last_position()
        except Exception as exc:
            return f"the store does not answer: {_one_line(exc)}"
        broker = runtime.broker
        if broker is not None:
            try:
                broker.redis.ping()
            except Exception as exc:
                return f"the broker does not answer: {_one_line(exc)}"
        return None

    return health


def broker_health(client: Any) -> Callable[[], str | None]:
    """A ``health`` for :func:`serve_metrics` of a saga worker: not ready while the broker
    does not answer a ``PING`` on redis-py ``client``."""

    def health() -> str | None:
        try:
            client.ping()
        except Exception as exc:
            return f"the broker does not answer: {_one_line(exc)}"
        return None

    return health


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- the endpoint ----------------------------------------------------------------------------
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT``) as ``(host, port)``; port 0 picks a free one.
    :class:`BadAddress` (one line) for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise BadAddress(f"{text!r} is not an address: use HOST:PORT, e.g. 127.0.0.1:9464")
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise BadAddress(f"{text!r} is not an address: use [IPv6]:PORT, e.g. [::1]:9464")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise BadAddress(f"{text!r} has no port: use HOST:PORT, e.g. 127.0.0.1:9464")
        if ":" in host:
            raise BadAddress(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:9464")
    if not host:
        raise BadAddress(f"{text!r} has no host: use HOST:PORT, e.g. 127.0.0.1:9464 "
                         "(0.0.0.0:9464 for every interface)")
    if not port_text.isdigit() or not port_text.isascii():
        raise BadAddress(f"{text!r}: the port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise BadAddress(f"{text!r}: the port {port} is above 65535")
    return host, port


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # as WSGIServer's, without HTTPServer's socket.getfqdn (a reverse DNS lookup)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics endpoint: " + format, *args)


class MetricsServer:
    """The metrics endpoint, serving on a thread of its own; :meth:`close` stops it."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = server.server_address[0]
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and free the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url})"


def _health_answer(health: Callable[[], Any] | None) -> tuple[str, str]:
    if health is None:
        return "200 OK", "ready\n"
    try:
        why = health()
    except Exception as exc:
        why = f"health check failed: {_one_line(exc)}"
    if why is None or why is True:
        return "200 OK", "ready\n"
    why = "unhealthy" if why is False else " ".join(str(why).split()) or "unhealthy"
    return "503 Service Unavailable", f"not ready: {why}\n"


def metrics_app(metrics: SagaMetrics, health: Callable[[], str | None] | None = None
                ) -> Callable[..., Any]:
    """The WSGI application :func:`serve_metrics` serves: ``/metrics`` (the client's own
    exposition: text format, OpenMetrics if asked, gzip if accepted), ``/healthz`` (``200
    ready`` while ``health()`` returns ``None``, ``503 not ready: <why>`` while it returns
    why, or raises), ``/`` (what is where); 404 otherwise, 405 for a method but GET or HEAD."""
    exposition = _prometheus().make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "GET or HEAD only\n",
                         [("Allow", "GET, HEAD")])
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            status, body = _health_answer(health)
            return _text(start_response, status, body)
        if path == "/":
            return _text(start_response, "200 OK",
                         "sagactor: /metrics (Prometheus), /healthz (readiness)\n")
        return _text(start_response, "404 Not Found", "not found: try /metrics or /healthz\n")

    return app


def _text(start_response: Callable[..., Any], status: str, body: str,
          headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *headers])
    return [data]


def serve_metrics(metrics: SagaMetrics, address: str | tuple[str, int], *,
                  health: Callable[[], str | None] | None = None) -> MetricsServer:
    """Serve ``metrics`` over HTTP at ``address`` (``"HOST:PORT"``, :func:`parse_address`)
    on a daemon thread: ``/metrics`` and ``/healthz`` (:func:`metrics_app`). Returns the
    running :class:`MetricsServer` (its :attr:`~MetricsServer.port` is the one bound, for
    port 0). Raises :class:`BadAddress` for an address that is not ``HOST:PORT`` and
    :class:`MetricsServerError` (one line) when it cannot listen there."""
    host, port = parse_address(address) if isinstance(address, str) else address
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    app = metrics_app(metrics, health)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        server_class = type("_MetricsServer", (_Server,), {"address_family": family})
        server = server_class((host, port), _Quiet)
    except OSError as exc:
        why = exc.strerror or _one_line(exc)
        raise MetricsServerError(f"cannot serve metrics on {shown}: {why}") from None
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name=f"sagactor-metrics-{server.server_address[1]}", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
