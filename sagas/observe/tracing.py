"""OpenTelemetry traces of sagas (the optional extra ``sagactor[otel]``).

Each saga is one trace. Its spans are made from its log, when their outcome is committed, with
the start and end times the log records and ids derived from the saga id
(:mod:`sagas.remote.protocol`), so whichever process commits an outcome emits the span, and a
resumed or taken-over saga completes the same trace:

- **the saga's root span** ``saga <flow>`` (``saga`` when the flow is not known here): trace id
  :func:`~sagas.remote.protocol.saga_trace_id`, span id
  :func:`~sagas.remote.protocol.saga_span_id`, from ``saga.started``'s time to its end's,
  emitted when the end is committed. Every event of the saga is one of its span events (name:
  the event type; attributes ``saga.seq``, ``saga.step``, ``saga.attempt`` and the data's short
  facts: ``error``, ``kind``, ``reason``, ``branch``, ``outcome``, ``phase`` — never inputs,
  payloads or outputs). Status: ``completed`` is OK; ``compensated`` is OK too, with the
  attribute ``saga.status=compensated`` (a rollback is the saga working as designed: the step
  that said no is the span in error); ``failed`` (a person is needed) is ERROR, described
  ``failed: <reason>``. ``saga.status`` and ``saga.reason`` are set on every root. When
  ``saga.started``'s data has a ``traceparent`` (the span current where the saga was started,
  :func:`current_traceparent`), the root has a **link** to it: a saga started inside a web
  request links to the request's span, in its own trace.
- **a span per attempt** of a step's action (``step <name>``) or compensation
  (``compensation <name>``): span id :func:`~sagas.remote.protocol.step_span_id` (the span the
  command's ``traceparent`` names), child of the root, from its ``*.started`` to its outcome
  (``*.succeeded``: OK; ``*.failed``: ERROR ``rejected: …`` / ``error: …``; ``*.timed_out``:
  ERROR ``timed out``). Attributes ``saga.id``, ``saga.step``, ``saga.phase``,
  ``saga.attempt``, ``saga.step.kind`` (``call``, ``wait``, ``delay``, ``parallel``),
  ``saga.outcome`` (``succeeded``, ``rejected``, ``error``, ``timed_out``, or ``unfinished`` for
  one still open when the saga ended) and ``saga.error``. Kind CLIENT for a call to a service,
  INTERNAL otherwise. A late outcome of an attempt already ended (a success after its time-out)
  is only a span event of the root.
- **after a** ``saga retry``: the root was emitted at the first end, so the part from
  ``saga.retried`` to the next end is a span ``saga.retry`` under the root (its id derived from
  the saga id and ``saga.retried``'s seq, :func:`retry_span_id`), with that part's events;
  attempts stay under the root (attempt numbers go on across a retry, so their ids never repeat).
- **a worker's handler span** (:func:`handler_span`): a child of the attempt span its command's
  ``traceparent`` names (kind CONSUMER, random id: each delivery that runs the handler is one).

**Ids.** The OpenTelemetry SDK gives every span created through a ``Tracer`` an id from its
``IdGenerator``, and the SDK has no public way to create a span with a given context. So a
:class:`SagaTracer` takes its own tracer from the provider (instrumentation scope
``sagactor``) and sets that tracer's ``id_generator`` (a public attribute of the SDK's
``Tracer``) to one that hands out the derived ids while this module creates a span, and
defers to the provider's own generator otherwise. Everything else is the standard pipeline:
the provider's sampler, span limits, resource and span processors see these spans like any
other. Writing ``ReadableSpan``\\ s to the provider's span processors would need its private
``_active_span_processor`` and would skip the sampler and limits; constructing SDK ``Span``\\ s
directly is refused by the SDK (``Span must be instantiated via a tracer``). With a tracer
provider that is not the SDK's, spans are still emitted, under their derived parents, but their
own ids are that provider's (a warning says so once). Trace ids are hashes of the saga id: a
ratio sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``) keeps or drops the same sagas
in every process.

**What a process that never saw a saga's start does.** A :class:`SagaTracer` keeps, per saga in
flight, what it has seen of the log since this process started driving it (bounded:
``max_sagas``, least recently used dropped, their later spans rebuilt the same way). When an
outcome comes for an attempt whose start it did not see, or an end whose start it did not see
(a resumed or taken-over saga), it reads the saga's log once through ``load_events(saga_id)``
(e.g. ``lambda saga_id: store.load(saga_id).events``). Without one, such an attempt is left
out and such a root starts at the first event seen here (attribute ``saga.partial=true``).

Spans are best-effort: an outcome committed by a process that dies before its listener ran is
in the log but never emitted (no process will commit it again).

**Nothing when it is off.** Importing this module imports no OpenTelemetry; every function
imports it when called. :func:`tracing_enabled` says whether a runtime should trace (only then
add :meth:`SagaTracer.listener`), and :func:`configure_from_env` sets up the global tracer
provider from the standard ``OTEL_*`` variables when the application has not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..events import (
    COMPENSATION_FAILED,
    COMPENSATION_STARTED,
    COMPENSATION_SUCCEEDED,
    COMPENSATION_TIMED_OUT,
    SAGA_RETRIED,
    SAGA_STARTED,
    STEP_FAILED,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    TERMINAL_EVENTS,
    Event,
)
from ..remote import protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "SCOPE",
    "SagaTracer",
    "configure_from_env",
    "current_traceparent",
    "export_to_file",
    "handler_span",
    "json_lines_exporter",
    "parse_traceparent",
    "read_spans",
    "retry_span_id",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

SCOPE = "sagactor"  # the instrumentation scope of every span this module makes
SWITCH = "SAGA_TRACING"  # 1/true/on: trace; 0/false/off: never
TRACES_FILE = "SAGA_TRACES_FILE"  # a path: also write finished spans there as JSON lines
_ON = ("1", "true", "on", "yes")
_OFF = ("0", "false", "off", "no")

_STARTED = {STEP_STARTED: "action", COMPENSATION_STARTED: "compensation"}
# outcome event -> (phase, saga.outcome or None for a *.failed (its data's kind says))
_OUTCOMES = {
    STEP_SUCCEEDED: ("action", "succeeded"), STEP_FAILED: ("action", None),
    STEP_TIMED_OUT: ("action", "timed_out"),
    COMPENSATION_SUCCEEDED: ("compensation", "succeeded"),
    COMPENSATION_FAILED: ("compensation", None),
    COMPENSATION_TIMED_OUT: ("compensation", "timed_out"),
}
_EVENT_FACTS = ("error", "kind", "reason", "branch", "outcome", "phase", "requested_by")
_Key = tuple[str, str, int]  # (phase, step, attempt)


# -- ids and W3C trace context (no OpenTelemetry needed) -------------------------------------------
def retry_span_id(saga_id: str, seq: int) -> str:
    """The span id (16 hex digits) of the ``saga.retry`` span that the ``saga.retried`` event
    at ``seq`` opens."""
    return hashlib.sha256(f"sagactor span {saga_id}|retry|{seq}".encode()).hexdigest()[:16]


def parse_traceparent(value: Any) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C ``traceparent`` header, or ``None`` when it is
    not one (or names the invalid all-zero trace or span)."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    version, trace, span, flags = parts[:4]
    if len(trace) != 32 or len(span) != 16 or len(flags) != 2:
        return None
    try:
        int(version, 16)
        numbers = int(trace, 16), int(span, 16), int(flags, 16)
    except ValueError:
        return None
    if value.strip().lower() != value.strip() or not numbers[0] or not numbers[1]:
        return None
    return numbers


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current OpenTelemetry span (on this thread / context), or
    ``None`` when there is none: to store with a saga as it starts, so its root span links to
    the caller's. Free when OpenTelemetry was never imported (then nobody has a span)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


# -- on or off -------------------------------------------------------------------------------------
def _installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except (ImportError, ValueError):
        return False


def _global_sdk_provider() -> Any:
    """The global tracer provider if OpenTelemetry is imported and it is the SDK's, else None."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    try:
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    except ImportError:
        return None
    return provider if isinstance(provider, SdkProvider) else None


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether sagas should be traced here: only then add a :class:`SagaTracer`'s listener.

    Off when ``SAGA_TRACING`` is ``0``/``false``/``off``, when ``OTEL_SDK_DISABLED=true``, or
    when the OpenTelemetry SDK is not installed. Otherwise on when ``SAGA_TRACING`` is
    ``1``/``true``/``on``, when ``SAGA_TRACES_FILE`` names a file, when ``OTEL_TRACES_EXPORTER``
    is set to anything but ``none``, or when the application already set an SDK tracer provider
    as the global one (e.g. under ``opentelemetry-instrument``). Merely having the package
    installed turns nothing on. Reads only the environment (and ``sys.modules``) until it is on.
    """
    env = os.environ if environ is None else environ
    switch = env.get(SWITCH, "").strip().lower()
    if switch in _OFF or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER")
    wanted = (switch in _ON or bool(env.get(TRACES_FILE))
              or (exporter is not None and exporter.strip().lower() not in ("", "none"))
              or _global_sdk_provider() is not None)
    return wanted and _installed()


def configure_from_env(environ: Mapping[str, str] | None = None, *,
                       service_name: str = "sagactor") -> bool:
    """Set up the global tracer provider from the standard ``OTEL_*`` variables, for a process
    of ours (``saga serve``, ``saga worker``, ``saga run``) when :func:`tracing_enabled`.

    A global SDK provider set already (by the application, or ``opentelemetry-instrument``) is
    kept as it is. Otherwise a ``TracerProvider`` is made (it reads ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]`` and the span limits itself;
    ``service.name`` is ``service_name`` unless those name one) with a batch span processor per
    exporter ``OTEL_TRACES_EXPORTER`` names (comma-separated, looked up as the SDK does, in the
    ``opentelemetry_traces_exporter`` entry points: ``otlp`` needs
    ``opentelemetry-exporter-otlp``, ``console`` is built in; the default is ``otlp`` unless only
    ``SAGA_TRACES_FILE`` asked for tracing) and set as the global provider. In both cases
    ``SAGA_TRACES_FILE`` adds :func:`export_to_file`. Returns whether tracing is on; raises
    ``ValueError`` (one line) for an exporter that is not installed.
    """
    env = os.environ if environ is None else environ
    if not tracing_enabled(env):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = _global_sdk_provider()
    if provider is None:
        attributes = {} if (env.get("OTEL_SERVICE_NAME") or "service.name=" in
                            env.get("OTEL_RESOURCE_ATTRIBUTES", "")) \
            else {"service.name": service_name}
        provider = SdkProvider(resource=Resource.create(attributes))
        default = "none" if env.get(TRACES_FILE) and env.get(SWITCH, "").strip().lower() \
            not in _ON else "otlp"
        named = env.get("OTEL_TRACES_EXPORTER")
        for name in (default if named is None else named).split(","):
            name = name.strip().lower()
            if name and name != "none":
                provider.add_span_processor(BatchSpanProcessor(
                    _exporter(name, default=named is None)()))
        trace.set_tracer_provider(provider)
    path = env.get(TRACES_FILE)
    if path:
        export_to_file(path, provider)
    return True


def _exporter(name: str, *, default: bool = False) -> Any:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="opentelemetry_traces_exporter") if ep.name == name]
    if not found:
        hint = " (pip install opentelemetry-exporter-otlp)" if name.startswith("otlp") else ""
        names = (f"unset, means {name!r}" if default else f"names {name!r}")
        raise ValueError(f"OTEL_TRACES_EXPORTER {names}, which is not installed{hint}"
                         + (" (or set it to console, or none with SAGA_TRACES_FILE)"
                            if default else ""))
    return found[0].load()


# -- the orchestrator's side: spans from the log ---------------------------------------------------
def _ns(at: float) -> int:
    """A log time (Unix seconds) as OpenTelemetry's nanoseconds."""
    return round(at * 1_000_000_000)


class _Ids:
    """An ``IdGenerator`` that hands out the ids set for the span being created on this thread,
    and defers to the provider's generator otherwise."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self._local = threading.local()

    def set(self, trace_id: int | None, span_id: int) -> None:
        self._local.ids = (trace_id, span_id)

    def clear(self) -> None:
        self._local.ids = None

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        if ids is not None and ids[0] is not None:
            return ids[0]
        return self.fallback.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        if ids is not None:
            return ids[1]
        return self.fallback.generate_span_id()

    def is_trace_id_random(self) -> bool:
        # A derived trace id is not W3C-random (its flags stay 01, as in every command's
        # traceparent); the provider's own ids say for themselves.
        if getattr(self._local, "ids", None) is not None:
            return False
        check = getattr(self.fallback, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


def _derived_ids_class() -> type:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class DerivedIds(_Ids, IdGenerator):
        pass

    return DerivedIds


class _Saga:
    """What a :class:`SagaTracer` holds of one saga in flight."""

    __slots__ = ("closed", "events", "first_seq", "last_seq", "loaded", "open", "retried",
                 "sampled", "started")

    def __init__(self, max_events: int) -> None:
        self.started: Event | None = None  # saga.started, once seen or loaded
        self.retried: Event | None = None  # the latest saga.retried
        self.events: deque[Event] = deque(maxlen=max_events)  # the root's span events
        self.open: dict[_Key, Event] = {}  # attempts started, no outcome yet
        self.closed: set[_Key] = set()  # attempts whose span was emitted here
        self.first_seq = 0  # the first seq held (0: none yet)
        self.last_seq = 0
        self.loaded = False
        self.sampled: bool | None = None

    def take(self, event: Event) -> None:
        """Fold one event in (bookkeeping only)."""
        if not self.first_seq:
            self.first_seq = event.seq
        self.last_seq = event.seq
        self.events.append(event)
        kind = event.type
        if kind == SAGA_STARTED:
            self.started = event
        elif kind == SAGA_RETRIED:
            self.retried = event
        elif kind in _STARTED and event.step is not None and event.attempt is not None:
            self.open[(_STARTED[kind], event.step, event.attempt)] = event


def _outcome_of(event: Event) -> tuple[str, str | None, str | None]:
    """``(saga.outcome, status description or None for OK, error text)`` of an outcome event."""
    phase_outcome = _OUTCOMES[event.type][1]
    data = event.data or {}
    if phase_outcome == "succeeded":
        return "succeeded", None, None
    if phase_outcome == "timed_out":
        reason = data.get("reason")
        text = f"timed out ({reason})" if reason else "timed out"
        return "timed_out", text, text
    kind = data.get("kind") if data.get("kind") in ("rejected", "error") else "error"
    error = str(data.get("error") or "")
    return kind, f"{kind}: {error}" if error else kind, error or None


def _step_kind(started: Event) -> str:
    data = started.data or {}
    if "parallel" in data:
        return "parallel"
    if "wait_for" in data:
        return "wait"
    if "delay" in data:
        return "delay"
    return "call"


def _event_attributes(event: Event) -> dict[str, Any]:
    attributes: dict[str, Any] = {"saga.seq": event.seq}
    if event.step is not None:
        attributes["saga.step"] = event.step
    if event.attempt is not None:
        attributes["saga.attempt"] = event.attempt
    data = event.data or {}
    for name in _EVENT_FACTS:
        value = data.get(name)
        if isinstance(value, (str, int, float, bool)):
            attributes[f"saga.{name}"] = value
    return attributes


class SagaTracer:
    """Turns committed saga events into spans: pass :attr:`listener` to
    ``Runtime(listeners=[...])``.

    ``tracer_provider``: the provider to emit through (the global one, looked up when the first
    span is made, by default). ``load_events(saga_id)``: the saga's whole log, read when an
    outcome or end arrives whose start this process never saw (see the module's text).
    ``flow_of(saga_id)``: the saga's flow name, for the root's name and ``saga.flow`` (asked once
    per saga, when its root is emitted; ``saga.started``'s data ``flow``, if any, is used first).
    ``max_sagas``: how many sagas in flight it remembers; ``max_events``: how many of a saga's
    latest events it keeps for the root's span events (the SDK's own limit,
    ``OTEL_SPAN_EVENT_COUNT_LIMIT``, 128 by default, applies after).

    Thread-safe: the listener is called on every shard's thread.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, *,
                 load_events: Callable[[str], Sequence[Event]] | None = None,
                 flow_of: Callable[[str], str | None] | None = None,
                 max_sagas: int = 10_000, max_events: int = 1_000) -> None:
        self._provider = tracer_provider
        self.load_events = load_events
        self.flow_of = flow_of
        self.max_sagas = max_sagas
        self.max_events = max_events
        self._sagas: OrderedDict[str, _Saga] = OrderedDict()
        self._lock = threading.Lock()
        self._tracer: Any = None
        self._ids: _Ids | None = None
        self._warned = False

    def bind(self, store: Any) -> SagaTracer:
        """Read what this process never saw from ``store`` (a saga store): sets ``load_events``
        to its logs and ``flow_of`` to its headers' flow names, unless they were given. Returns
        ``self``. (A runtime passes its store: ``SagaTracer().bind(runtime.store)``.)"""
        if self.load_events is None:
            self.load_events = lambda saga_id: store.load(saga_id).events
        if self.flow_of is None:
            self.flow_of = lambda saga_id: store.header(saga_id).flow
        return self

    def attach(self, runtime: Any) -> SagaTracer:
        """:meth:`bind` to ``runtime``'s store (as ``SagaMetrics.attach``)."""
        return self.bind(runtime.store)

    @staticmethod
    def caller_traceparent() -> str | None:
        """:func:`current_traceparent`: what a runtime stores in ``saga.started``'s data under
        ``traceparent`` as it starts a saga, read on the thread that starts it."""
        return current_traceparent()

    # -- the listener ---------------------------------------------------------------------------
    def listener(self, saga_id: str, events: Sequence[Event]) -> None:
        """``Runtime(listeners=[tracer.listener])``: called after each commit with the saga's
        events just committed; emits the spans whose outcome is among them."""
        saga: _Saga | None = None
        for event in events:
            if saga is None:
                saga = self._saga(saga_id)
            if saga.last_seq and event.seq <= saga.last_seq:
                continue  # seen already (a log loaded in the meantime held it)
            kind = event.type
            if kind in _OUTCOMES:
                self._outcome(saga_id, saga, event)
                saga.take(event)
            elif kind in TERMINAL_EVENTS:
                saga.take(event)
                self._end(saga_id, saga, event)
                with self._lock:
                    self._sagas.pop(saga_id, None)
                saga = None
            else:
                saga.take(event)

    def _saga(self, saga_id: str) -> _Saga:
        with self._lock:
            saga = self._sagas.get(saga_id)
            if saga is None:
                saga = self._sagas[saga_id] = _Saga(self.max_events)
                while len(self._sagas) > self.max_sagas:
                    self._sagas.popitem(last=False)
            else:
                self._sagas.move_to_end(saga_id)
            return saga

    def _load(self, saga_id: str, saga: _Saga, before: int) -> None:
        """Complete what ``saga`` holds with the log's events before the first one held (or
        before ``before``), once."""
        if saga.loaded or self.load_events is None:
            return
        saga.loaded = True
        first = saga.first_seq or before
        if first <= 1:
            return
        try:
            loaded = [e for e in self.load_events(saga_id) if e.seq < first]
        except Exception:
            log.exception("tracing: could not read the log of saga %s", saga_id)
            return
        earlier = _Saga(self.max_events)
        for event in loaded:
            earlier.take(event)
            if event.type in _OUTCOMES and event.step is not None and \
                    event.attempt is not None:
                earlier.open.pop((_OUTCOMES[event.type][0], event.step, event.attempt), None)
        saga.started = saga.started or earlier.started
        if saga.retried is None:
            saga.retried = earlier.retried
        saga.open = {**earlier.open, **saga.open}
        held = list(saga.events)
        saga.events.clear()
        saga.events.extend(loaded)
        saga.events.extend(held)
        if loaded:
            saga.first_seq = loaded[0].seq
            saga.last_seq = max(saga.last_seq, loaded[-1].seq)

    def _outcome(self, saga_id: str, saga: _Saga, event: Event) -> None:
        if event.step is None or event.attempt is None:
            return
        key = (_OUTCOMES[event.type][0], event.step, event.attempt)
        if key in saga.closed:
            return  # a late outcome of an attempt ended already: a span event of the root
        started = saga.open.pop(key, None)
        if started is None:
            self._load(saga_id, saga, event.seq)
            started = saga.open.pop(key, None)
            if started is None:
                return
        saga.closed.add(key)
        outcome, description, error = _outcome_of(event)
        self._attempt_span(saga_id, saga, key, started, event.at, outcome, description, error)

    def _attempt_span(self, saga_id: str, saga: _Saga, key: _Key, started: Event, end: float,
                      outcome: str, description: str | None, error: str | None) -> None:
        phase, step, attempt = key
        kind = _step_kind(started)
        attributes: dict[str, Any] = {
            "saga.id": saga_id, "saga.step": step, "saga.phase": phase,
            "saga.attempt": attempt, "saga.step.kind": kind, "saga.outcome": outcome}
        if error:
            attributes["saga.error"] = error
        self._emit(
            "step " + step if phase == "action" else "compensation " + step,
            saga_id, saga, int(protocol.step_span_id(saga_id, step, phase, attempt), 16),
            parent=int(protocol.saga_span_id(saga_id), 16), start=started.at, end=end,
            client=kind == "call", attributes=attributes,
            error=description if outcome != "succeeded" else None,
            ok=outcome == "succeeded")

    def _end(self, saga_id: str, saga: _Saga, end: Event) -> None:
        if saga.retried is None and saga.started is None:
            self._load(saga_id, saga, end.seq)
        for key, started in sorted(saga.open.items(), key=lambda item: item[1].seq):
            self._attempt_span(saga_id, saga, key, started, end.at, "unfinished", None, None)
        saga.open.clear()
        status = TERMINAL_EVENTS[end.type]
        reason = (end.data or {}).get("reason")
        attributes: dict[str, Any] = {"saga.id": saga_id, "saga.status": status}
        if reason:
            attributes["saga.reason"] = str(reason)
        error = f"failed: {reason}" if reason else "failed"
        retried = saga.retried
        if retried is not None and retried.seq < end.seq:
            events = [e for e in saga.events if e.seq >= retried.seq]
            attributes["saga.retried_seq"] = retried.seq
            self._emit("saga.retry", saga_id, saga, int(retry_span_id(saga_id, retried.seq), 16),
                       parent=int(protocol.saga_span_id(saga_id), 16), start=retried.at,
                       end=end.at, attributes=attributes, events=events,
                       error=error if status == "failed" else None, ok=status != "failed")
            return
        started = saga.started
        first = started if started is not None else (saga.events[0] if saga.events else end)
        if started is None:
            attributes["saga.partial"] = True
        flow = (started.data or {}).get("flow") if started is not None else None
        if not flow and self.flow_of is not None:
            try:
                flow = self.flow_of(saga_id)
            except Exception:
                log.debug("tracing: no flow name for saga %s", saga_id, exc_info=True)
        if flow:
            attributes["saga.flow"] = str(flow)
        caller = parse_traceparent((started.data or {}).get("traceparent")) \
            if started is not None else None
        self._emit(f"saga {flow}" if flow else "saga", saga_id, saga,
                   int(protocol.saga_span_id(saga_id), 16), parent=None, start=first.at,
                   end=end.at, attributes=attributes, events=list(saga.events),
                   error=error if status == "failed" else None, ok=status != "failed",
                   link=caller, link_state=(started.data or {}).get("tracestate")
                   if started is not None else None)

    # -- emitting -------------------------------------------------------------------------------
    def _get_tracer(self) -> tuple[Tracer, _Ids | None]:
        if self._tracer is not None:
            return self._tracer, self._ids
        from opentelemetry import trace

        provider = self._provider if self._provider is not None else \
            trace.get_tracer_provider()
        tracer = provider.get_tracer(SCOPE, _version())
        ids = _adopt_ids(tracer)
        if ids is None:
            if isinstance(provider, trace.ProxyTracerProvider):
                return tracer, None  # no provider set yet: look again at the next span
            if not self._warned:
                self._warned = True
                log.warning("tracing: %s is not the OpenTelemetry SDK's tracer provider: saga "
                            "spans get its ids, not the ids derived from the saga",
                            type(provider).__name__)
        self._tracer, self._ids = tracer, ids
        return tracer, ids

    def _sampled(self, saga_id: str, saga: _Saga, tracer: Any, trace_id: int) -> bool:
        """Whether the saga's root is sampled (so its children's parent context says so): the
        provider's sampler asked once per saga, as the root will be."""
        if saga.sampled is None:
            sampler = getattr(tracer, "sampler", None)
            try:
                from opentelemetry.context import Context

                saga.sampled = sampler is None or sampler.should_sample(
                    Context(), trace_id, "saga").decision.is_sampled()
            except Exception:
                saga.sampled = True
        return saga.sampled

    def _emit(self, name: str, saga_id: str, saga: _Saga, span_id: int, *, parent: int | None,
              start: float, end: float, attributes: dict[str, Any],
              events: Sequence[Event] = (), error: str | None = None, ok: bool = False,
              client: bool = False, link: tuple[int, int, int] | None = None,
              link_state: Any = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.context import Context
            from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

            tracer, ids = self._get_tracer()
            trace_id = int(protocol.saga_trace_id(saga_id), 16)
            if parent is None:
                context = Context()  # a root: never under whatever span is current here
            else:
                flags = trace.TraceFlags(
                    trace.TraceFlags.SAMPLED if self._sampled(saga_id, saga, tracer, trace_id)
                    else trace.TraceFlags.DEFAULT)
                context = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
                    trace_id, parent, is_remote=False, trace_flags=flags)), Context())
            links = []
            if link is not None:
                links.append(Link(SpanContext(link[0], link[1], is_remote=True,
                                              trace_flags=trace.TraceFlags(link[2] & 0xFF),
                                              trace_state=_trace_state(link_state)),
                                  {"saga.link": "caller"}))
            if ids is not None:
                ids.set(trace_id if parent is None else None, span_id)
            try:
                span = tracer.start_span(name, context=context,
                                         kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
                                         attributes=attributes, links=links,
                                         start_time=_ns(start))
            finally:
                if ids is not None:
                    ids.clear()
            if span.is_recording():
                for event in events:
                    span.add_event(event.type, _event_attributes(event), _ns(event.at))
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error))
                elif ok:
                    span.set_status(Status(StatusCode.OK))
            span.end(end_time=_ns(max(end, start)))
        except Exception:  # tracing never stops a saga
            log.exception("tracing: could not emit span %r of saga %s", name, saga_id)


def _trace_state(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return None
    from opentelemetry.trace import TraceState

    try:
        return TraceState.from_header([value])
    except Exception:
        return None


def _adopt_ids(tracer: Any) -> _Ids | None:
    """Give the SDK tracer of our scope the id generator that hands out derived ids (once:
    the provider keeps one tracer per scope); ``None`` for a tracer that is not the SDK's."""
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
    except ImportError:
        return None
    if not isinstance(tracer, SdkTracer):
        return None
    current = tracer.id_generator
    if isinstance(current, _Ids):
        return current
    ids = _derived_ids_class()(current)
    tracer.id_generator = ids
    return ids


@functools.lru_cache(maxsize=1)
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sagactor")
    except Exception:
        return ""


# -- the worker's side -----------------------------------------------------------------------------
def _command_context(command: Any, service: str | None, handler: str | None
                     ) -> tuple[str | None, str | None, dict[str, Any], str | None, str | None]:
    """``(traceparent, tracestate, attributes, service, handler)`` of a command: a
    ``traceparent`` string, a decoded wire command (a mapping), or an ``actors.Command`` (whose
    traceparent is derived from its saga id, step, phase and attempt, as the wire's is)."""
    if command is None or isinstance(command, str):
        return command, None, {}, service, handler
    if isinstance(command, Mapping):
        get = command.get
        attributes = {name: get(field) for name, field in (
            ("saga.id", "saga_id"), ("saga.step", "step"), ("saga.phase", "phase"),
            ("saga.attempt", "attempt")) if get(field) is not None}
        return (get("traceparent"), get("tracestate"), attributes,
                service or get("service"), handler or get("handler"))
    saga_id = getattr(command, "saga_id", None)
    step = getattr(command, "step", None)
    phase = getattr(command, "phase", None)
    attempt = getattr(command, "attempt", None)
    if None in (saga_id, step, phase, attempt):
        return None, None, {}, service, handler
    attributes = {"saga.id": saga_id, "saga.step": step, "saga.phase": phase,
                  "saga.attempt": attempt}
    return (protocol.traceparent(saga_id, step, phase, attempt), None, attributes, service,
            handler or getattr(command, "name", None))


@contextmanager
def handler_span(command: Any, service: str | None = None, handler: str | None = None, *,
                 tracer_provider: TracerProvider | None = None) -> Iterator[Span | None]:
    """A worker's span around one handler call: ``with handler_span(command, service,
    handler): ...``. ``command`` is the command's ``traceparent``, the decoded wire command (its
    ``traceparent`` and ``tracestate``, and ``service`` / ``handler`` when not given) or an
    ``actors.Command``. The span (``handle <service>.<handler>``, kind CONSUMER) is a child of
    the attempt span that traceparent names and the current span inside, so spans the handler
    makes nest under it; an exception escaping marks it ERROR (and goes on). Without a valid
    traceparent it is a root. Yields ``None`` and costs nothing when OpenTelemetry is not
    installed."""
    try:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanContext, SpanKind
    except ImportError:
        yield None
        return
    traceparent, tracestate, attributes, service, handler = \
        _command_context(command, service, handler)
    if service:
        attributes["saga.service"] = service
    if handler:
        attributes["saga.handler"] = handler
    parent = Context()
    parsed = parse_traceparent(traceparent)
    if parsed is not None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
            parsed[0], parsed[1], is_remote=True, trace_flags=trace.TraceFlags(parsed[2]),
            trace_state=_trace_state(tracestate))), parent)
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = provider.get_tracer(SCOPE, _version())
    name = "handle " + ".".join(part for part in (service, handler) if part) if \
        (service or handler) else "handle"
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


# -- spans to a file (tests across processes, debugging) -------------------------------------------
def _span_json(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    status = span.status
    resource = getattr(span, "resource", None)
    scope = getattr(span, "instrumentation_scope", None)
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "parent_remote": bool(parent.is_remote) if parent is not None else None,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": {"code": status.status_code.name, "description": status.description},
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "time": e.timestamp, "attributes": dict(e.attributes or {})}
                   for e in span.events],
        "links": [{"trace_id": f"{link.context.trace_id:032x}",
                   "span_id": f"{link.context.span_id:016x}",
                   "attributes": dict(link.attributes or {})} for link in span.links],
        "service": (resource.attributes.get("service.name") if resource is not None else None),
        "scope": scope.name if scope is not None else None,
        "pid": os.getpid(),
    }


_JSON_LINES: type | None = None


def json_lines_exporter(path: str | os.PathLike[str]) -> Any:
    """A span exporter (the SDK's ``SpanExporter``) writing each finished span as one JSON
    object a line to ``path`` (appended; one ``write`` per span, so several processes may share
    a file). The object: ``name``, ``trace_id`` (32 hex), ``span_id`` / ``parent_span_id`` (16
    hex, ``null`` for a root), ``parent_remote``, ``kind``, ``start`` / ``end`` (Unix
    nanoseconds), ``status`` (``code``: ``UNSET``/``OK``/``ERROR``, ``description``),
    ``attributes``, ``events`` (``name``, ``time``, ``attributes``), ``links`` (``trace_id``,
    ``span_id``, ``attributes``), ``service`` (the resource's ``service.name``), ``scope`` and
    ``pid``. :func:`export_to_file` adds one to a provider; :func:`read_spans` reads them."""
    global _JSON_LINES
    if _JSON_LINES is None:
        _JSON_LINES = _json_lines_class()
    return _JSON_LINES(path)


def _json_lines_class() -> type:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLinesSpanExporter(SpanExporter):
        def __init__(self, path: str | os.PathLike[str]) -> None:
            self.path = os.fspath(path)
            self._lock = threading.Lock()
            self._closed = False

        def export(self, spans: Sequence[Any]) -> Any:
            if self._closed:
                return SpanExportResult.FAILURE
            lines = [json.dumps(_span_json(span), default=str, separators=(",", ":")) + "\n"
                     for span in spans]
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    for line in lines:
                        os.write(fd, line.encode())
                finally:
                    os.close(fd)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self._closed = True

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return JsonLinesSpanExporter


def export_to_file(path: str | os.PathLike[str],
                   tracer_provider: TracerProvider | None = None) -> SpanProcessor:
    """Write every span ``tracer_provider`` finishes (the global provider by default: an SDK
    one is made and set if none is) to ``path`` as JSON lines (:func:`json_lines_exporter`),
    synchronously as each ends; returns the span processor added."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider: Any = tracer_provider
    if provider is None:
        provider = _global_sdk_provider()
        if provider is None:
            provider = SdkProvider()
            trace.set_tracer_provider(provider)
    if not isinstance(provider, SdkProvider):
        raise TypeError(f"spans can be written to a file from the SDK's tracer provider, not "
                        f"{type(provider).__name__}")
    processor = SimpleSpanProcessor(json_lines_exporter(path))
    provider.add_span_processor(processor)
    return processor


def read_spans(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The spans a :func:`json_lines_exporter` wrote to ``path`` (none if it is missing)."""
    try:
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]
    except FileNotFoundError:
        return []
