"""Saga events: the records of a saga's log (DESIGN.md §6, EVENT).

Every event carries ``seq`` (from 1 per saga), ``event_id``, ``causation_id`` (the event or
command that caused it) and ``at`` (a Unix timestamp), so any event can be traced to its source.
Recovery needs nothing beyond the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

__all__ = [
    "BRANCH_COMPENSATED", "BRANCH_COMPLETED", "BRANCH_FAILED", "BRANCH_HALTED", "CHOICE_MADE",
    "COMPENSATION_FAILED", "COMPENSATION_RETRYING", "COMPENSATION_STARTED",
    "COMPENSATION_SUCCEEDED", "COMPENSATION_TIMED_OUT", "EVENT_TYPES", "REPLY_IGNORED",
    "SAGA_CANCELLED", "SAGA_COMPENSATED", "SAGA_COMPLETED", "SAGA_DEADLINE_EXCEEDED",
    "SAGA_FAILED", "SAGA_RETRIED", "SAGA_STARTED", "STEP_FAILED", "STEP_RETRYING",
    "STEP_STARTED", "STEP_SUCCEEDED", "STEP_TIMED_OUT", "TERMINAL_EVENTS", "BranchData",
    "Event", "FailedData", "IgnoredData", "RequestData", "RetryingData", "SagaEndData",
    "SagaStartedData", "StartedData", "SucceededData", "TimedOutData",
]

# the vocabulary: one name per event type (DESIGN's EVENT list, with the later constructs')
SAGA_STARTED = "saga.started"
STEP_STARTED = "step.started"
STEP_SUCCEEDED = "step.succeeded"
STEP_FAILED = "step.failed"
STEP_TIMED_OUT = "step.timed_out"
STEP_RETRYING = "step.retrying"
COMPENSATION_STARTED = "compensation.started"
COMPENSATION_SUCCEEDED = "compensation.succeeded"
COMPENSATION_FAILED = "compensation.failed"
COMPENSATION_TIMED_OUT = "compensation.timed_out"
COMPENSATION_RETRYING = "compensation.retrying"
REPLY_IGNORED = "reply.ignored"
CHOICE_MADE = "choice.made"
BRANCH_HALTED = "branch.halted"
BRANCH_COMPLETED = "branch.completed"
BRANCH_COMPENSATED = "branch.compensated"
BRANCH_FAILED = "branch.failed"
SAGA_DEADLINE_EXCEEDED = "saga.deadline_exceeded"
SAGA_CANCELLED = "saga.cancelled"
SAGA_RETRIED = "saga.retried"
SAGA_COMPLETED = "saga.completed"
SAGA_COMPENSATED = "saga.compensated"
SAGA_FAILED = "saga.failed"

EVENT_TYPES = (
    SAGA_STARTED, STEP_STARTED, STEP_SUCCEEDED, STEP_FAILED, STEP_TIMED_OUT, STEP_RETRYING,
    COMPENSATION_STARTED, COMPENSATION_SUCCEEDED, COMPENSATION_FAILED, COMPENSATION_TIMED_OUT,
    COMPENSATION_RETRYING, REPLY_IGNORED, CHOICE_MADE, BRANCH_HALTED, BRANCH_COMPLETED,
    BRANCH_COMPENSATED, BRANCH_FAILED, SAGA_DEADLINE_EXCEEDED, SAGA_CANCELLED, SAGA_RETRIED,
    SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_FAILED,
)
TERMINAL_EVENTS = {SAGA_COMPLETED: "completed", SAGA_COMPENSATED: "compensated",
                   SAGA_FAILED: "failed"}


# -- the shape of each event's data (a JSON object; more keys may be added) --------------------
# Typed dictionaries: free at run time (the log's data stays a plain dict), checked statically.
class SagaStartedData(TypedDict, total=False):
    """``saga.started``."""

    input: Any
    deadline_at: float | None


class StartedData(TypedDict, total=False):
    """``step.started`` / ``compensation.started``: ``wait_for`` for a wait step, ``parallel``
    (its branches' track ids) for a block."""

    payload: Any
    timeout_at: float | None
    wait_for: dict[str, str]
    parallel: list[str]


class SucceededData(TypedDict, total=False):
    """``step.succeeded`` / ``compensation.succeeded``."""

    output: dict[str, Any] | None


class FailedData(TypedDict, total=False):
    """``step.failed`` / ``compensation.failed``: ``kind`` is ``rejected`` or ``error``."""

    error: str
    kind: str


class TimedOutData(TypedDict, total=False):
    """``step.timed_out`` / ``compensation.timed_out``: ``reason`` when a deadline or a cancel
    cut the attempt short."""

    timeout_at: float | None
    reason: str


class RetryingData(TypedDict, total=False):
    """``step.retrying`` / ``compensation.retrying``."""

    next_attempt_at: float


class IgnoredData(TypedDict, total=False):
    """``reply.ignored``."""

    phase: str
    attempt: int
    outcome: str


class BranchData(TypedDict, total=False):
    """``choice.made`` (the branch taken) and ``branch.*`` (the branch's track id)."""

    branch: str


class RequestData(TypedDict, total=False):
    """``saga.cancelled`` / ``saga.retried`` (``phase``: where the retry resumes)."""

    requested_by: str | None
    phase: str


class SagaEndData(TypedDict, total=False):
    """``saga.failed`` (and the other ends, with no reason)."""

    reason: str


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """One event of a saga's log. ``data`` is a JSON object; ``position`` is set by a store."""

    seq: int
    type: str
    step: str | None
    attempt: int | None
    at: float
    event_id: str
    causation_id: str | None
    data: dict[str, Any]
    position: int | None  # assigned by the store when written

    def __init__(self, seq: int, type: str, step: str | None, attempt: int | None, at: float,
                 event_id: str, causation_id: str | None, data: dict[str, Any],
                 position: int | None = None) -> None:
        # Ten of these per saga: each field is set through its slot, skipping the frozen
        # dataclass's object.__setattr__ per field (half the cost of building one).
        _set_seq(self, seq)
        _set_type(self, type)
        _set_step(self, step)
        _set_attempt(self, attempt)
        _set_at(self, at)
        _set_event_id(self, event_id)
        _set_causation_id(self, causation_id)
        _set_data(self, data)
        _set_position(self, position)

    def to_json(self) -> dict[str, Any]:
        """The EVENT shape of DESIGN.md §6."""
        return {
            "seq": self.seq,
            "type": self.type,
            "step": self.step,
            "attempt": self.attempt,
            "at": self.at,
            "event_id": self.event_id,
            "causation_id": self.causation_id,
            "data": self.data,
        }


(_set_seq, _set_type, _set_step, _set_attempt, _set_at, _set_event_id, _set_causation_id,
 _set_data, _set_position) = (Event.__dict__[name].__set__ for name in (
     "seq", "type", "step", "attempt", "at", "event_id", "causation_id", "data", "position"))
