"""A process's logs as people read them (``human``) or as log pipelines do (``json``), and a
listener that logs every committed saga event.

``configure_logging("json", logging.INFO)`` writes one JSON object a line on stderr::

    {"ts": "2025-06-01T12:00:00.123Z", "level": "INFO", "logger": "sagas.events",
     "message": "saga o-17: step.failed charge_payment (attempt 1): card declined",
     "saga_id": "o-17", "step": "charge_payment", "event": "step.failed",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "attempt": 1, "seq": 5,
     "error": "card declined", "kind": "rejected"}

The first eight keys are in every line, in that order: ``null`` when a record does not know them
(a log line of the library that is not about one saga), so every line has the same shape.
``ts`` is the record's time in UTC (ISO 8601, milliseconds), ``level`` Python's level name.
``trace_id`` is the one the record carries (``extra={"trace_id": ...}``), else the saga's trace
id when it names a saga (:func:`sagas.remote.protocol.saga_trace_id`: the id the saga's trace
has, and every command for it carries, derived from the saga id), else the current
OpenTelemetry span's if OpenTelemetry is already imported and a span is recording, else
``null``. Any other field a record carries (``extra={...}``) follows them, as JSON (``str()`` of
what JSON cannot hold); an exception's traceback is ``exception``, a stack ``stack``.

``human`` is the format the ``saga`` commands have always had: ``LEVEL logger: message``, by
``logging.basicConfig`` (so it does nothing when the process configured logging already).

:func:`event_log_listener` (``Runtime(listeners=[event_log_listener])``) logs each committed
saga event at INFO on the ``sagas.events`` logger, with ``saga_id``, ``step``, ``event`` (the
event type), ``trace_id``, ``attempt`` and ``seq`` set, and of the event's data only what says
why (``error``, ``kind``, ``reason``, ``branch``, ``requested_by``, ``next_attempt_at``), never
inputs, payloads or outputs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, Any

from ..events import Event
from ..remote.protocol import saga_trace_id

__all__ = [
    "EVENT_LOGGER",
    "HUMAN_FORMAT",
    "LOG_FORMATS",
    "JsonFormatter",
    "configure_logging",
    "event_log_listener",
]

LOG_FORMATS = ("human", "json")
HUMAN_FORMAT = "%(levelname)s %(name)s: %(message)s"
EVENT_LOGGER = "sagas.events"
"""The logger :func:`event_log_listener` logs on."""

CORE_FIELDS = ("ts", "level", "logger", "message", "saga_id", "step", "event", "trace_id")

# what every LogRecord has: not "extra" fields
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
_WHY = ("error", "kind", "reason", "branch", "requested_by", "next_attempt_at", "phase")
_HANDLER_MARK = "_sagactor_log_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        saga_id = fields.get("saga_id")
        trace_id = fields.get("trace_id")
        if trace_id is None:
            trace_id = _trace_id(saga_id)
        line: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "saga_id": saga_id,
            "step": fields.get("step"),
            "event": fields.get("event"),
            "trace_id": trace_id,
        }
        for key, value in fields.items():
            if key not in _RECORD_ATTRIBUTES and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _utc(created: float) -> str:
    when = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


def _trace_id(saga_id: Any) -> str | None:
    if isinstance(saga_id, str) and saga_id:
        return saga_trace_id(saga_id)
    otel = sys.modules.get("opentelemetry.trace")  # never imported here: only if in use
    if otel is not None:
        try:
            context = otel.get_current_span().get_span_context()
            if context.is_valid:
                return f"{context.trace_id:032x}"
        except Exception:
            return None
    return None


def configure_logging(fmt: str = "human", level: int | str = logging.INFO, *,
                      stream: IO[str] | None = None) -> None:
    """Set up the process's logging: ``fmt`` ``"human"`` (``logging.basicConfig`` with
    :data:`HUMAN_FORMAT`, as the commands always have) or ``"json"`` (a handler on the root
    logger writing :class:`JsonFormatter` lines to ``stream``, stderr by default); ``level`` a
    level or its name. Called again, it replaces the handler it installed before (and only
    that one). ``ValueError`` for an unknown format or level."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, "
                             "ERROR, CRITICAL")
        level = named
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    if fmt == "human":
        had = list(root.handlers)
        logging.basicConfig(level=level, format=HUMAN_FORMAT, stream=stream)
        for handler in root.handlers:
            if handler not in had:
                setattr(handler, _HANDLER_MARK, True)
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)


_event_log = logging.getLogger(EVENT_LOGGER)


def event_log_listener(saga_id: str, events: Sequence[Event]) -> None:
    """A runtime listener: log each of ``events`` (just committed for ``saga_id``) at INFO on
    the ``sagas.events`` logger, one record an event (see the module's docstring)."""
    if not _event_log.isEnabledFor(logging.INFO):
        return
    trace_id = saga_trace_id(saga_id)
    for event in events:
        extra: dict[str, Any] = {"saga_id": saga_id, "step": event.step, "event": event.type,
                                 "trace_id": trace_id, "attempt": event.attempt,
                                 "seq": event.seq}
        data = event.data if isinstance(event.data, dict) else {}
        for key in _WHY:
            if key in data:
                extra[key] = data[key]
        _event_log.info("%s", _describe(saga_id, event, data), extra=extra)


def _describe(saga_id: str, event: Event, data: dict[str, Any]) -> str:
    """``saga ID: TYPE [STEP] [(attempt N)][: why]``."""
    text = f"saga {saga_id}: {event.type}"
    if event.step:
        text += f" {event.step}"
        if event.attempt is not None:
            text += f" (attempt {event.attempt})"
    why = data.get("error") or data.get("reason") or data.get("branch")
    if why:
        text += f": {why}"
    return text
