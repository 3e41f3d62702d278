"""A saga's outcome as callers see it: :class:`SagaResult` (what the store holds, in
DESIGN.md §6's shape), :class:`Submitted` (a start sent, answered later) and
:func:`load_result`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..events import STEP_SUCCEEDED, Event
from ..stores import TERMINAL, EventLog
from . import core
from .shard import Ticket

__all__ = ["START_TIMEOUT", "SagaResult", "Submitted", "load_result"]

START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class SagaResult:
    """A saga as the store holds it: status, reason, context and full history."""

    saga_id: str
    flow: str
    version: int
    definition: str
    status: str
    reason: str | None
    context: dict[str, Any]
    history: tuple[Event, ...]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The saga shape of DESIGN.md §6."""
        return {
            "saga_id": self.saga_id,
            "flow": self.flow,
            "version": self.version,
            "definition": self.definition,
            "status": self.status,
            "reason": self.reason,
            "context": self.context,
            "history": [event.to_json() for event in self.history],
        }


class Submitted:
    """A saga start sent with :meth:`Runtime.submit`: its id now, its outcome later."""

    __slots__ = ("_ticket", "saga_id")

    def __init__(self, saga_id: str, ticket: Ticket):
        self.saga_id = saga_id
        self._ticket = ticket

    def done(self) -> bool:
        """Whether the shard has answered (``saga.started`` committed, or the start refused)."""
        return self._ticket.done()

    def exception(self) -> BaseException | None:
        """The error the start was refused with, if it has been answered so; else ``None``."""
        return self._ticket.error if self._ticket.done() else None

    def result(self, timeout: float | None = START_TIMEOUT) -> bool:
        """Wait for the answer: ``True`` if the saga was created, ``False`` if it existed with
        the same definition and input. Raises what :meth:`Runtime.start` would
        (``IdConflict``, ``StoreError``...), or ``TimeoutError``."""
        _, created = self._ticket.wait(timeout)
        return bool(created)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"Submitted({self.saga_id!r}, {state})"


def load_result(store: EventLog, saga_id: str) -> SagaResult:
    """Read a saga from ``store`` (``UnknownSaga`` if absent)."""
    record = store.load(saga_id)
    header = record.header
    outputs: dict[str, Any] = {}
    for event in record.events:
        if event.type == STEP_SUCCEEDED and event.step is not None:
            outputs[event.step] = event.data.get("output")
    return SagaResult(header.saga_id, header.flow, header.version, header.definition,
                      header.status, header.reason, core.context_of(header.input, outputs),
                      record.events)
