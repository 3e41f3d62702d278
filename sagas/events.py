"""Saga events: the records of a saga's log (DESIGN.md §6, EVENT).

Every event carries ``seq`` (from 1 per saga), ``event_id``, ``causation_id`` (the event or
command that caused it) and ``at`` (a Unix timestamp), so any event can be traced to its source.
Recovery needs nothing beyond the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EVENT_TYPES", "TERMINAL_EVENTS", "Event"]

EVENT_TYPES = (
    "saga.started",
    "step.started",
    "step.succeeded",
    "step.failed",
    "step.timed_out",
    "step.retrying",
    "compensation.started",
    "compensation.succeeded",
    "compensation.failed",
    "compensation.timed_out",
    "compensation.retrying",
    "reply.ignored",
    "choice.made",
    "branch.halted",
    "branch.completed",
    "branch.compensated",
    "branch.failed",
    "saga.deadline_exceeded",
    "saga.cancelled",
    "saga.retried",
    "saga.completed",
    "saga.compensated",
    "saga.failed",
)
TERMINAL_EVENTS = {"saga.completed": "completed", "saga.compensated": "compensated",
                   "saga.failed": "failed"}


@dataclass(frozen=True, slots=True)
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
    position: int | None = None  # assigned by the store when written

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


