"""The saga store port: records and the protocol every backend implements.

A store keeps, per saga, a header (flow, definition, status, ...) and an append-only event log
whose ``seq`` counts from 1. An append names the ``seq`` it expects to write next; if another
writer took it, the store raises :class:`~sagas.errors.SeqConflict` and writes nothing of that
batch. Every event also gets a global ``position`` (increasing across all sagas) for readers
such as an event bus.

Flow definitions are stored once per sha256 (``definitions``), so every saga can be resumed on
the exact text it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..events import Event as StoredEvent

__all__ = ["TERMINAL", "Append", "NewSaga", "SagaHeader", "SagaRecord", "SagaStore", "StoredEvent"]

TERMINAL = frozenset({"completed", "compensated", "failed"})


@dataclass(frozen=True, slots=True)
class SagaHeader:
    """What the store knows of a saga without reading its log."""

    saga_id: str
    flow: str
    version: int
    definition: str  # sha256 of the flow text
    input: Any
    status: str
    reason: str | None
    started_at: float
    updated_at: float
    last_seq: int


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga's header, its flow text and its whole log."""

    header: SagaHeader
    definition_text: str
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class NewSaga:
    """A saga to create, with its first events (``saga.started`` and whatever it caused)."""

    saga_id: str
    flow: str
    version: int
    definition: str
    definition_text: str
    input: Any
    status: str
    reason: str | None
    started_at: float
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """Events to append to one saga, the first at ``events[0].seq == header.last_seq + 1``."""

    saga_id: str
    events: tuple[StoredEvent, ...]
    status: str
    reason: str | None
    updated_at: float


@runtime_checkable
class SagaStore(Protocol):
    """Where sagas live. Every method is safe to call from several threads."""

    url: str

    def create(self, saga: NewSaga) -> tuple[bool, SagaHeader]:
        """Create the saga with its first events, atomically.

        Returns ``(True, header)`` when created, ``(False, existing_header)`` when the id exists
        (nothing is written then). Of two concurrent creates of one id, exactly one creates.
        """
        ...

    def append(self, batch: Sequence[Append]) -> None:
        """Append to several sagas in one commit (a group commit).

        Raises ``SeqConflict`` (nothing of the batch written) if an append's first seq is not the
        saga's next one; ``UnknownSaga`` if a saga does not exist.
        """
        ...

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and full log; ``UnknownSaga`` if absent."""
        ...

    def header(self, saga_id: str) -> SagaHeader:
        """The saga's header; ``UnknownSaga`` if absent."""
        ...

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> list[SagaHeader]:
        """Sagas newest first (by ``started_at``, then id), filtered by status and flow name."""
        ...

    def in_flight(self) -> list[str]:
        """Ids of every saga whose status is not terminal."""
        ...

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[str, StoredEvent]]:
        """Events of all sagas with ``position > after``, in position order.

        Returns at most ``limit`` pairs ``(saga_id, event)``.
        """
        ...

    def definition(self, sha256: str) -> str:
        """The flow text stored under that sha256; ``KeyError`` if absent."""
        ...

    def close(self) -> None:
        """Release the store's resources; further use raises ``StoreUnavailable``."""
        ...
