"""The saga store port: records and the protocol every backend implements.

A store keeps, per saga, a header (flow, definition, status, ...) and an append-only event log
whose ``seq`` counts from 1. An append names the ``seq`` it expects to write next; if another
writer took it, the store raises :class:`~sagas.errors.SeqConflict` and writes nothing of that
batch. Every event also gets a global ``position`` (increasing across all sagas) for readers
such as an event bus.

``write`` is the one way in: creates and appends of many sagas in one transaction, so a shard
commits a whole mailbox drain at once (``create`` and ``append`` are its one-kind forms).
``load_many`` reads many sagas in one snapshot, for recovery.

Flow definitions are stored once per sha256 (``definitions``), so every saga can be resumed on
the exact text it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..events import Event as StoredEvent

__all__ = [
    "TERMINAL",
    "Append",
    "NewSaga",
    "Request",
    "SagaHeader",
    "SagaRecord",
    "SagaStore",
    "StoredEvent",
]

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
    owner: str | None = None  # the runtime driving it (see ``SagaStore.register_owner``)


@dataclass(frozen=True, slots=True)
class Request:
    """A command for a saga written by another process (``saga cancel``, ``saga retry``...).

    The saga's owner picks it up and completes it; ``kind`` is ``cancel`` or ``retry`` (later
    features add their own), ``data`` a JSON object.
    """

    request_id: int
    saga_id: str
    kind: str
    data: dict[str, Any]
    created_at: float


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
    owner: str | None = None


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

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append]
    ) -> list[tuple[bool, SagaHeader]]:
        """Create sagas, then append to sagas, in one transaction (one commit): the group
        commit of a shard's mailbox drain.

        Each create has :meth:`create`'s semantics and gets one result, in order:
        ``(True, header)`` when created, ``(False, existing_header)`` when the id exists (then
        nothing of that create is written and the call goes on); of two creates of one id in
        the call, the second gets ``(False, header of the first)``. The headers are those
        right after the creates, before the call's appends.

        The appends follow, with :meth:`append`'s semantics (they may extend sagas created by
        this call). If any append fails (``SeqConflict``, ``UnknownSaga``) or any create or
        append is refused (``ValueError`` / ``TypeError``), the error is raised and nothing of
        the whole call is written, creates included.
        """
        ...

    def create(self, saga: NewSaga) -> tuple[bool, SagaHeader]:
        """Create the saga with its first events, atomically: ``write([saga], [])[0]``.

        Returns ``(True, header)`` when created, ``(False, existing_header)`` when the id exists
        (nothing is written then). Of two concurrent creates of one id, exactly one creates.
        """
        ...

    def append(self, batch: Sequence[Append]) -> None:
        """Append to several sagas in one commit (a group commit): ``write([], batch)``.

        Raises ``SeqConflict`` (nothing of the batch written) if an append's first seq is not the
        saga's next one; ``UnknownSaga`` if a saga does not exist.
        """
        ...

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and full log; ``UnknownSaga`` if absent."""
        ...

    def load_many(self, saga_ids: Sequence[str]) -> list[SagaRecord]:
        """The records of the sagas in ``saga_ids``, read as one snapshot (grouped recovery).

        In the order of ``saga_ids``, each saga once (at its first place); ids that do not exist
        are left out (no ``UnknownSaga``). ``TypeError`` for a lone string.
        """
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

    # -- ownership (DESIGN.md §5: a store shared by several processes) ------------------------
    def register_owner(self, owner: str) -> None:
        """Declare ``owner`` (a runtime's id) alive for as long as this store object is open.

        SQLite: an exclusive OS file lock on ``<db>.owners/<owner>.lock``, released by the OS
        when the process dies, however it dies. Memory: alive until ``close()``.
        """
        ...

    def owner_alive(self, owner: str) -> bool:
        """Whether a runtime registered as ``owner`` is still alive (in any process)."""
        ...

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> list[str]:
        """Make ``owner`` the owner of every non-terminal saga (or of those in ``saga_ids``)
        whose owner is gone or unset; returns the ids adopted. Two concurrent adopters never
        both get one saga. Sagas with a live owner are never adopted. With ``include_failed``,
        ``failed`` sagas are adopted too (``saga retry`` takes a saga before re-driving it)."""
        ...

    # -- requests from other processes --------------------------------------------------------
    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Record a request for a saga (``UnknownSaga`` if absent); returns its id."""
        ...

    def requests(self, owner: str, after: int = 0) -> list[Request]:
        """Pending requests, ``request_id > after``, for sagas owned by ``owner``, in order."""
        ...

    def requests_for(self, saga_id: str) -> list[Request]:
        """Pending requests for one saga, in order (whoever owns it)."""
        ...

    def complete_request(self, request_id: int) -> None:
        """Mark a request handled; it is no longer returned as pending."""
        ...

    @property
    def inbox(self) -> Any:
        """The store's :class:`actors.InboxStore` (durable for SQLite): service actors' record of
        definitive replies and tombstones, keyed by idempotency key."""
        ...

    def close(self) -> None:
        """Release the store's resources (and owner registrations); further use raises
        ``StoreUnavailable``."""
        ...
