"""The wire protocol between orchestrators and workers over Redis Streams (version 1).

Everything on the wire is a stream entry with one field, ``body``: a JSON object (UTF-8). A
worker in any language needs only this module's description and a Redis client.

**Streams** (``prefix`` is ``sagactor`` unless configured; ``<service>`` is the service's name
as the flow declares it, the same in every flow that shares a broker):

- ``<prefix>:commands:<service>`` — commands for a service; workers read them in the consumer
  group ``<prefix>:workers`` (``XREADGROUP``), each worker a consumer named after itself.
- ``<prefix>:replies:<partition>`` — replies, one stream per partition of the saga store
  (``partition = crc32(saga_id as UTF-8) % partitions``); the orchestrator holding the partition
  reads it in the consumer group ``<prefix>:orchestrators``. A command names its stream in
  ``reply_to``: reply there, whatever the partition count.
- ``<prefix>:dead:<service>`` — commands delivered too many times (dead letters).
- ``<prefix>:inbox:<service>`` — a hash, the worker side's durable inbox: idempotency key ->
  the definitive reply's JSON; beside it ``<prefix>:inbox-times:<service>``, a sorted set of
  the same keys scored by the Unix time each entry was written (``ZADD``, or ``ZADD NX``
  beside a tombstone's ``HSETNX``, in the entry's ``MULTI``). Workers remove entries older
  than the retention (default 7 days) from both; one without a time gets one when a sagactor
  worker first sees it.

Command and reply streams are trimmed (``XTRIM MINID``), never past an entry pending in any
group or not delivered yet: a reader must not rely on acknowledged entries staying. A dead
letter's fields are ``body``, ``reason``, ``deliveries``, ``worker`` and ``entry``; a replay is
a new command entry with the same body (same key, ``command_id`` and attempt).

**Command** (orchestrator -> worker)::

    {"protocol": 1, "command_id": "...", "key": "<saga_id>:<step>[:compensation]",
     "saga_id": "...", "step": "...", "phase": "action" | "compensation", "attempt": 1,
     "service": "inventory", "handler": "reserve", "payload": {...},
     "result": {...} | null,            # a compensation's view of its action's output
     "reply_to": "sagactor:replies:17", "deadline": 1765000000.5 | null,   # Unix seconds
     "traceparent": "00-<trace>-<span>-01",   # W3C: the attempt's span in the saga's trace
     "tracestate": "..." | null}

**Reply** (worker -> orchestrator)::

    {"protocol": 1, "command_id": "...", "key": "...", "saga_id": "...", "step": "...",
     "phase": "...", "attempt": 1, "service": "...", "outcome": "ok" | "rejected" | "error",
     "result": {...} | null,            # the handler's JSON object, for "ok"
     "reason": "one line" | null,       # for "rejected" (a business no) and "error"
     "replayed": false, "worker": "host:pid"}

A worker that gets a command of a protocol version it does not know replies ``error`` saying
so. ``ok`` and ``rejected`` are definitive: a worker keeps them in its inbox under the key and
answers a redelivered command from there without running the handler again; ``error`` is
transient (the orchestrator retries by the flow's policy). A worker records the definitive
reply, adds the reply to ``reply_to`` and acknowledges the command (``XACK``) in one
``MULTI``/``EXEC``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_PREFIX",
    "OUTCOMES",
    "PROTOCOL",
    "ProtocolError",
    "command_stream",
    "dead_stream",
    "decode",
    "encode",
    "encode_body",
    "inbox_key",
    "make_reply",
    "orchestrators_group",
    "partition_of",
    "reply_stream",
    "saga_span_id",
    "saga_trace_id",
    "step_span_id",
    "traceparent",
    "workers_group",
]

PROTOCOL = 1
DEFAULT_PREFIX = "sagactor"
OUTCOMES = ("ok", "rejected", "error")

COMMAND_FIELDS = ("protocol", "command_id", "key", "saga_id", "step", "phase", "attempt",
                  "service", "handler", "payload", "result", "reply_to", "deadline",
                  "traceparent", "tracestate")
REPLY_FIELDS = ("protocol", "command_id", "key", "saga_id", "step", "phase", "attempt",
                "service", "outcome", "result", "reason", "replayed", "worker")


class ProtocolError(ValueError):
    """An entry that is not a message of this protocol (one line saying why)."""


def command_stream(service: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:commands:{service}"


def reply_stream(partition: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:replies:{partition}"


def dead_stream(service: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:dead:{service}"


def inbox_key(service: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:inbox:{service}"


def workers_group(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:workers"


def orchestrators_group(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:orchestrators"


def partition_of(saga_id: str, partitions: int) -> int:
    """As :func:`sagas.stores.partition_of`: crc32 of the id's UTF-8 bytes, modulo."""
    return zlib.crc32(saga_id.encode("utf-8")) % partitions


def saga_trace_id(saga_id: str) -> str:
    """The W3C trace id of a saga (32 lowercase hex digits), derived from its id: the same in
    every process and run, so a resumed or taken-over saga goes on in the same trace."""
    return hashlib.sha256(f"sagactor trace {saga_id}".encode()).hexdigest()[:32]


def saga_span_id(saga_id: str) -> str:
    """The span id (16 hex digits) of the saga's root span."""
    return hashlib.sha256(f"sagactor span {saga_id}".encode()).hexdigest()[:16]


def step_span_id(saga_id: str, step: str, phase: str, attempt: int) -> str:
    """The span id of one attempt of a step's action or compensation."""
    key = f"sagactor span {saga_id}|{step}|{phase}|{attempt}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def traceparent(saga_id: str, step: str, phase: str, attempt: int) -> str:
    """The W3C ``traceparent`` a command carries: its attempt's span in its saga's trace, so a
    worker's handler span is a child of the attempt's."""
    return f"00-{saga_trace_id(saga_id)}-{step_span_id(saga_id, step, phase, attempt)}-01"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_body(message: Mapping[str, Any]) -> str:
    """``message`` as an entry's ``body``: compact JSON, UTF-8 as it is, no NaN."""
    return _ENCODER.encode(message)


def encode(message: Mapping[str, Any]) -> dict[str, str]:
    """A stream entry's fields for ``message``."""
    return {"body": _ENCODER.encode(message)}


def decode(fields: Mapping[Any, Any], kind: str = "command") -> dict[str, Any]:
    """The message of a stream entry (``kind``: ``command`` or ``reply``), checked to have
    every field of its kind; :class:`ProtocolError` otherwise. A message of another protocol
    version is returned as it is (``protocol`` tells), for the receiver to answer."""
    raw = fields.get("body", fields.get(b"body"))
    if raw is None:
        raise ProtocolError("a stream entry without a body field")
    try:
        message = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"a body that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a body that is not a JSON object")
    if message.get("protocol") != PROTOCOL:
        return message
    wanted = COMMAND_FIELDS if kind == "command" else REPLY_FIELDS
    missing = [name for name in wanted if name not in message]
    if missing:
        raise ProtocolError(f"a {kind} without {', '.join(missing)}")
    return message


def make_reply(command: Mapping[str, Any], outcome: str, *, result: Any = None,
               reason: str | None = None, replayed: bool = False,
               worker: str = "") -> dict[str, Any]:
    """The reply to ``command`` (a decoded command message)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"an outcome is one of {', '.join(OUTCOMES)}, got {outcome!r}")
    return {
        "protocol": PROTOCOL,
        "command_id": command.get("command_id"), "key": command.get("key"),
        "saga_id": command.get("saga_id"), "step": command.get("step"),
        "phase": command.get("phase"), "attempt": command.get("attempt"),
        "service": command.get("service"), "outcome": outcome,
        "result": result if outcome == "ok" else None,
        "reason": reason if outcome != "ok" else None,
        "replayed": replayed, "worker": worker,
    }
