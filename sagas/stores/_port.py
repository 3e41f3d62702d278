"""The saga store port: the records a store keeps, and its facets.

A store keeps, per saga, a header (flow, definition, status, ...) and an append-only event log
whose ``seq`` counts from 1; beside them, durable cursors for readers of the log, the
registrations of the runtimes that own sagas, the leases of its partitions, requests from other
processes, external events, and the service inbox. The port is cut into small protocols, one
per concern, each of which documents its contract here and nowhere else:

==================  ==========================================================================
facet               what it holds
==================  ==========================================================================
:class:`EventLog`   sagas and their logs: ``write`` (``create``, ``append``), ``load``,
                    ``load_many``, ``header``, ``list``, ``in_flight``, ``definition``
:class:`Cursors`    durable positions, one per subscriber name
:class:`LogReader`  the global log in position order (``read_all``, ``read_log``,
                    ``last_position``), and :class:`Cursors` to keep one's place in it
:class:`Ownership`  which runtime drives which saga: ``register_owner``, ``owner_alive``,
                    ``adopt``
:class:`Leases`     the store's fixed partitions, their leases with epochs (``acquire``,
                    ``renew``, ``release``, ``leases``), the sagas a holder takes over
                    (``claim``), the members that hold them, and who wrote each event (the
                    fence of :meth:`EventLog.write`)
:class:`Requests`   commands for a saga from other processes (``saga cancel``, ``retry``)
:class:`ExternalEvents`  events sent from outside (``saga send``) and claimed by sagas
:class:`ServiceInbox`    the service actors' :class:`actors.InboxStore`
:class:`SagaStore`  all of them, plus ``close``: what a backend implements
==================  ==========================================================================

Every facet has the store's ``url`` (:class:`StoreFacet`). A component names the facets it
uses (the event bus a :class:`LogReader`, a shard an :class:`EventLog` and
:class:`ExternalEvents`...); a backend implements :class:`SagaStore`, and proves it with the
contract suite :mod:`sagas.stores.contract`.

What every method of every facet promises besides its own contract: it is safe to call from
several threads at once; once the store is closed it raises
:class:`~sagas.errors.StoreUnavailable` (the inbox of a memory store excepted), as it does when
the store cannot be used (a file locked, damaged...); and it checks its arguments before it
writes anything, raising ``ValueError`` / ``TypeError`` with a one-line message fit for a
command-line user. Data handed in or out (inputs, event data, request data) is JSON: a store
keeps a copy, and every read returns a fresh one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ..events import Event as StoredEvent
from ._checks import check_member

if TYPE_CHECKING:
    from actors import InboxStore

__all__ = [
    "DEFAULT_PARTITIONS",
    "MAX_PARTITIONS",
    "TERMINAL",
    "Append",
    "Cursors",
    "EventLog",
    "ExternalEvent",
    "ExternalEvents",
    "Fence",
    "Lease",
    "LeaseInfo",
    "Leases",
    "LogEntry",
    "LogReader",
    "MemberInfo",
    "NewSaga",
    "Ownership",
    "Request",
    "Requests",
    "SagaHeader",
    "SagaRecord",
    "SagaStore",
    "ServiceInbox",
    "StoreFacet",
    "StoredEvent",
    "Writer",
    "partition_of",
]

TERMINAL = frozenset({"completed", "compensated", "failed"})

DEFAULT_PARTITIONS = 64
"""The number of partitions of a store created without choosing one."""

MAX_PARTITIONS = 16384
"""The most partitions a store may have (a lease row each)."""


def partition_of(saga_id: str, partitions: int) -> int:
    """The partition of saga ``saga_id`` in a store of ``partitions`` partitions: the CRC-32
    (zlib's, the IEEE 802.3 polynomial, as ``binascii.crc32``) of the id's UTF-8 bytes, modulo
    ``partitions``. Stable across processes, hosts, versions and languages, so anyone can
    compute it (``crc32("order-1") % 64`` is 47)."""
    return zlib.crc32(saga_id.encode("utf-8")) % partitions

# -- records ---------------------------------------------------------------------------------------


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
    owner: str | None = None  # the runtime driving it (see :class:`Ownership`)


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


@dataclass(frozen=True, slots=True)
class ExternalEvent:
    """An event sent to sagas from outside (``saga send``), as the store keeps it.

    ``type`` and ``key`` say which waiting saga may take it (one waiting for that event type
    with that correlation key); ``consumed_by`` is the saga that took it, if one has.
    """

    position: int  # global order of arrival, from 1, increasing
    event_id: str  # the sender's id, or a generated one (uuid4 hex)
    type: str  # e.g. "PaymentConfirmed"
    key: str  # the correlation key, e.g. "o-1"
    data: dict[str, Any]  # a JSON object (a private copy on every read)
    sent_at: float
    consumed_by: str | None  # the saga that took it, or None
    consumed_at: float | None


class LogEntry(NamedTuple):
    """An event of the global log with its saga's id and flow name: what an event bus reads
    (the flow name makes the event's topic, ``<flow>.<event type>``)."""

    saga_id: str
    flow: str
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class Lease:
    """A partition's lease as its holder got it from :meth:`Leases.acquire` or
    :meth:`Leases.renew`.

    ``expires_at`` is when the store will consider it expired, on the store's clock (Unix
    seconds: PostgreSQL's ``clock_timestamp()``, ``time.time()`` for SQLite and memory).
    ``deadline`` is the holder's own: a :func:`time.monotonic` value, the one read just before
    the request was sent plus the lease's length, so that it is never later than the store's
    expiry (clocks that run at one rate assumed): a holder that stops writing and sending
    commands for the partition at ``deadline`` has stopped before anyone else may hold it.
    """

    partition: int
    member: str
    epoch: int
    expires_at: float
    deadline: float


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A partition's lease as :meth:`Leases.leases` shows it, whoever holds it.

    ``member`` is the last holder (``None`` if it was released or never held), ``epoch`` the
    number of tenures it has had (0 if never held), ``expires_at`` and ``renewed_at`` times on
    the store's clock (``None`` if never held), and ``held`` whether ``member`` holds it now by
    the store's clock (an expired lease keeps its member, not held).
    """

    partition: int
    member: str | None
    epoch: int
    expires_at: float | None
    renewed_at: float | None
    held: bool


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as :meth:`Leases.members` shows it: when it first announced itself and was last
    seen (store clock), ``seen_ago`` seconds before the read, and what it said of itself."""

    member: str
    started_at: float
    last_seen: float
    seen_ago: float
    info: dict[str, Any]  # a JSON object (a private copy on every read)


class Writer(NamedTuple):
    """Who wrote an event of a saga (:meth:`Leases.writers`): the fenced write's member and
    its epoch of the saga's partition, or ``None`` and ``None`` for a write without a fence."""

    seq: int
    member: str | None
    epoch: int | None


@dataclass(frozen=True, slots=True)
class Fence:
    """What a member's write is fenced with (:meth:`EventLog.write`): its id and the epoch
    of each partition it holds, ``{partition: epoch}`` (a read-only copy is kept).

    Checked when made: ``member`` is a member id (as an owner id: 1 to 128 of
    ``A-Za-z0-9_.-``), partitions ints >= 0 and epochs ints >= 1; ``ValueError`` /
    ``TypeError`` otherwise.
    """

    member: str
    epochs: Mapping[int, int]

    def __post_init__(self) -> None:
        check_member(self.member)
        if not isinstance(self.epochs, Mapping):
            raise TypeError(f"a fence's epochs are a mapping {{partition: epoch}}, got "
                            f"{type(self.epochs).__name__}")
        epochs = dict(self.epochs)
        for partition, epoch in epochs.items():
            for name, value, low in (("partition", partition, 0), ("epoch", epoch, 1)):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"a fence's {name} is an int, got {type(value).__name__}")
                if value < low:
                    raise ValueError(f"a fence's {name} is >= {low}, got {value}")
        object.__setattr__(self, "epochs", MappingProxyType(epochs))

    @classmethod
    def of(cls, member: str, leases: Iterable[Lease]) -> Fence:
        """The fence of ``member``'s ``leases`` (``ValueError`` for a lease of another
        member)."""
        epochs: dict[int, int] = {}
        for lease in leases:
            if lease.member != member:
                raise ValueError(f"a lease of member {lease.member!r} in the fence of member "
                                 f"{member!r}")
            epochs[lease.partition] = lease.epoch
        return cls(member, epochs)


# -- facets ----------------------------------------------------------------------------------------


@runtime_checkable
class StoreFacet(Protocol):
    """What every facet has: the URL of the store it is a view of (``memory://``,
    ``sqlite:////abs/path.db``...), for messages and logs."""

    url: str


@runtime_checkable
class EventLog(StoreFacet, Protocol):
    """Sagas: a header each, and an append-only log of events.

    A saga's log is appended to only at its next ``seq`` (``last_seq + 1``): an append that
    names another seq (another writer took it) raises :class:`~sagas.errors.SeqConflict` and
    writes nothing of its call. Every event written gets a global ``position``, increasing
    across all sagas (see :class:`LogReader`). Flow definitions are stored once per sha256,
    so every saga can be resumed on the exact text it started with.

    ``write`` is the one way in: creates and appends of many sagas in one transaction, so a
    shard commits a whole mailbox drain at once (``create`` and ``append`` are its one-kind
    forms). ``load_many`` reads many sagas in one snapshot, for recovery.

    A write may be *fenced* (``fence=``, see :class:`Leases`): a member's commits carry its
    id and its epochs, and the store refuses, inside the write's own transaction, any whose
    member no longer holds a partition it writes to. Without a fence a write is checked
    against no lease (a store used by one process, the commands of a person).
    """

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append], *,
        fence: Fence | None = None,
    ) -> list[tuple[bool, SagaHeader]]:
        """Create sagas, then append to sagas, atomically (one transaction, one commit): all
        of it is written or none of it. The group commit of a shard's mailbox drain.

        Each create gets one result, in order: ``(True, header)`` when created (its ``input``
        is the create's own object: a store need not decode what it was just given),
        ``(False, existing_header)`` (a copy) when the id exists, already or by an earlier create of
        this call (then nothing of that create is written, not even its definition, and the
        call goes on). The headers are those right after the creates, before the call's
        appends. Of concurrent creates of one id (any thread, connection or process), exactly
        one creates.

        Then each append's first seq must be its saga's next one, counting this call's
        creates and earlier appends to the same saga, else ``SeqConflict``; an unknown saga
        raises :class:`~sagas.errors.UnknownSaga`. Each saga's status, reason and
        ``updated_at`` become those of its last append in the call; its ``started_at`` and
        owner are kept.

        Refused, with nothing of the call written, creates included: a create whose events'
        seqs are not 1..n or whose ``owner`` is not a valid owner id, and an append without
        events or with non-consecutive seqs (``ValueError``); an input or event data that is
        not JSON (``TypeError`` / ``ValueError``); and any append that fails as above.
        ``write([], [])`` writes nothing and returns ``[]``.

        With a ``fence`` (a :class:`Fence`, else ``TypeError``), every saga the call names,
        created or appended to (one whose id exists included), must be in a partition
        (:func:`partition_of`) whose lease the fence's member holds, unexpired by the store's
        clock, at the fence's epoch for it, checked in the write's transaction: otherwise
        :class:`~sagas.errors.LeaseLost` names the first such partition (in the order the
        call names the sagas) and nothing of the call is written. A partition the fence has
        no epoch for is refused so too, before the store is asked. Every event a fenced call
        writes records the member and the epoch of its saga's partition, every event of an
        unfenced one ``None`` twice (:meth:`Leases.writers`). A lease check comes after the
        argument checks and before the seqs are compared: a stale member is told
        ``LeaseLost``, never ``SeqConflict``.
        """
        ...

    def create(self, saga: NewSaga, *, fence: Fence | None = None) -> tuple[bool, SagaHeader]:
        """Create the saga with its first events (seqs 1..n): ``write([saga], [],
        fence=fence)[0]``."""
        ...

    def append(self, batch: Sequence[Append], *, fence: Fence | None = None) -> None:
        """Append to several sagas atomically (a group commit): ``write([], batch,
        fence=fence)``."""
        ...

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and whole log in seq order, read as one
        snapshot; ``UnknownSaga`` if absent."""
        ...

    def load_many(self, saga_ids: Sequence[str]) -> list[SagaRecord]:
        """The records of the sagas in ``saga_ids``, read as one snapshot (grouped recovery):
        in the order of ``saga_ids``, each saga once (at its first place); ids that do not
        exist are left out (no ``UnknownSaga``). ``TypeError`` for a lone string (a slip for
        ``[saga_id]``)."""
        ...

    def header(self, saga_id: str) -> SagaHeader:
        """The saga's header; ``UnknownSaga`` if absent."""
        ...

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> list[SagaHeader]:
        """Sagas newest first (``started_at``, then id, both descending), filtered by status
        and flow name; at most ``limit`` of them (all if ``None``; ``ValueError`` if
        negative)."""
        ...

    def in_flight(self) -> list[str]:
        """Ids of every saga whose status is not terminal (:data:`TERMINAL`), oldest first
        (``started_at``, then id)."""
        ...

    def definition(self, sha256: str) -> str:
        """The flow text stored under that sha256; ``KeyError`` if absent."""
        ...


@runtime_checkable
class Cursors(StoreFacet, Protocol):
    """Durable positions, one per subscriber name: where a reader of a log (the event bus, a
    flow's trigger) resumes after a restart or a crash.

    A subscriber name is 1 to 256 of ``A-Za-z0-9_.:/-`` (e.g. ``notifications`` or
    ``flows.shop:Notifications.on_completed``), a position an int >= 0; anything else is
    refused with ``ValueError`` / ``TypeError``.
    """

    def cursor(self, subscriber: str) -> int | None:
        """The position saved for ``subscriber``, or ``None`` if it has none (a new
        subscriber)."""
        ...

    def save_cursor(self, subscriber: str, position: int) -> None:
        """Set ``subscriber``'s cursor to ``position`` (created if absent), committed before
        it returns. It is set as given, even below its current value (a deliberate replay)."""
        ...

    def cursors(self) -> dict[str, int]:
        """Every subscriber's cursor, by name."""
        ...

    def delete_cursor(self, subscriber: str) -> None:
        """Forget ``subscriber``'s cursor (it starts afresh next time); an unknown name is
        ignored."""
        ...


@runtime_checkable
class LogReader(Cursors, Protocol):
    """The global log: every saga's events in ``position`` order, paged through by readers
    such as the event bus (:mod:`sagas.bus`), which keep their place with a cursor.

    A position becomes visible only after every smaller one has (positions are given out under
    the store's write lock and committed in that order), so a reader that has seen position
    ``p`` never sees a new event below ``p`` later: it may move its cursor past everything it
    has read. External events have positions of their own (:class:`ExternalEvents`).
    """

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[str, StoredEvent]]:
        """At most ``limit`` pairs ``(saga_id, event)`` with ``position > after``, in position
        order (``ValueError`` for a negative ``limit``)."""
        ...

    def read_log(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """:meth:`read_all` with each saga's flow name: at most ``limit`` entries
        ``(saga_id, flow, event)`` with ``position > after``, in position order, read at once
        (an event bus pages through the log with it)."""
        ...

    def last_position(self) -> int:
        """The position of the newest saga event (0 if none): where a subscriber that starts
        "from the end" starts."""
        ...


@runtime_checkable
class Ownership(StoreFacet, Protocol):
    """Which runtime drives which saga, when several processes share a store (DESIGN.md §5).

    Each runtime registers an owner id (1 to 128 of ``A-Za-z0-9_.-``; another id is a
    ``ValueError`` in every method) and owns the sagas it creates; ownership is released
    automatically when the owner dies, however it dies. Only an adopter (``saga resume``, a
    runtime asked to recover) takes the sagas whose owner is gone, and a live owner's sagas
    are never taken.
    """

    def register_owner(self, owner: str) -> None:
        """Declare ``owner`` alive for as long as this store object is open and its process
        lives. Registering an owner twice on one store object is fine; an owner registered by
        another live store object or process is ``StoreUnavailable``."""
        ...

    def owner_alive(self, owner: str) -> bool:
        """Whether a runtime registered as ``owner`` is still alive (in any process). Never
        ``False`` for a live owner, whatever happened to files beside the store; ``True`` when
        it cannot be known (a live owner's sagas are never adopted)."""
        ...

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> list[str]:
        """Make ``owner`` the owner of every non-terminal saga (of ``saga_ids`` only, if
        given) whose owner is unset or gone; the ids adopted, oldest first.

        ``owner`` itself counts as alive (its own sagas are not returned) even if it never
        registered; ids in ``saga_ids`` that do not exist or are terminal are ignored
        (``TypeError`` for a lone string). With ``include_failed``, ``failed`` sagas are
        adopted too (``saga retry`` takes a saga before re-driving it). Atomic: of concurrent
        adopters (any process), one takes each saga.
        """
        ...


@runtime_checkable
class Leases(StoreFacet, Protocol):
    """Partitions, their leases, the members that hold them, and the fence of their writes:
    how several orchestrator processes share one store (DESIGN.md §7), each driving the sagas
    of the partitions it holds, none writing to a saga another may drive.

    A store has a fixed number of partitions, chosen when it is created (default
    :data:`DEFAULT_PARTITIONS`, at most :data:`MAX_PARTITIONS`) and never changed; a saga's
    partition is :func:`partition_of` its id. A *member* (an orchestrator process; its id is
    1 to 128 of ``A-Za-z0-9_.-``, as an owner id, else ``ValueError`` in every method) holds
    the *lease* of a partition for a while (``ttl`` seconds, a finite number > 0, else
    ``ValueError`` / ``TypeError``), renews it, and gives it back. Each lease has an *epoch*,
    its number of tenures: a member that takes a partition free, released or expired gets the
    previous epoch + 1 (itself after its own lease expired included: a new tenure); renewing
    keeps it. A member writes with a :class:`Fence` of its epochs (:meth:`EventLog.write`),
    and the store refuses, in the write's transaction, a write for a partition whose lease
    it does not hold at that epoch, unexpired: a member that was paused, cut off or slow past
    its lease writes nothing once another may have taken over. Its :attr:`Lease.deadline`
    tells it when to stop on its own clock. Once it holds partitions, a member takes their
    sagas over with :meth:`claim`, fenced as its writes are.

    Expiry is judged by the store's clock (PostgreSQL's ``clock_timestamp()``; SQLite's and
    the memory store's ``time.time()``), so the members' clocks need not agree. Of
    concurrent acquirers of a partition (any thread, store object or process) exactly one
    gets it. Partitions outside ``0 .. partitions() - 1`` are ``ValueError``.

    Members also announce themselves (``heartbeat``), so that each can tell how many share
    the store and take its fair share of the partitions, and say what they can run
    (``info``); ``leave`` is a clean stop.
    """

    def partitions(self) -> int:
        """The store's number of partitions (fixed when it was created)."""
        ...

    def acquire(self, member: str, partitions: Sequence[int], ttl: float) -> list[Lease]:
        """Take the lease of each of ``partitions`` that is free, released, expired, or held
        by ``member`` already (renewed, its epoch kept), for ``ttl`` seconds from now; the
        leases taken, in partition order (a partition another member holds is left out),
        committed before it returns. Each partition is taken atomically: of concurrent
        acquirers exactly one gets it."""
        ...

    def renew(self, member: str, leases: Sequence[Lease], ttl: float) -> list[Lease]:
        """Extend to ``ttl`` seconds from now each of ``leases`` that ``member`` still holds,
        unexpired, at its epoch; the leases renewed, in partition order (one lost, because
        it expired, was taken or released, is left out). ``ValueError`` for a lease of
        another member."""
        ...

    def release(self, member: str, partitions: Sequence[int]) -> None:
        """Give back the leases of ``partitions`` that ``member`` holds or held last (expired
        ones included), committed before it returns: they are free at once, their epochs
        kept for the next holder to bump. The others are left as they are."""
        ...

    def claim(self, fence: Fence, partitions: Sequence[int]) -> list[str]:
        """Make ``fence.member`` the owner (as :meth:`Ownership.adopt` does) of every saga of
        ``partitions`` (:func:`partition_of`) whose status is not terminal (the sagas
        :meth:`EventLog.in_flight` returns), whoever owned it before, alive or not: a takeover
        by lease, not an adoption. The ids of those sagas, oldest first (``started_at``, then
        id), the member's own included: every saga the member must drive there. One
        transaction, committed before it returns.

        Checked in that transaction, as a fenced write is: each of ``partitions`` must be
        held by the fence's member, unexpired by the store's clock, at the fence's epoch for
        it; otherwise :class:`~sagas.errors.LeaseLost` names the first that is not, in the
        order given (its ``saga_id`` is always ``""``: the refusal is the partition's), and
        nothing is changed. A partition the fence has no epoch for is refused so too
        (``epoch`` ``None``), before the store is asked. ``TypeError`` for a ``fence`` that is
        no :class:`Fence` and for ``partitions`` that are no sequence of ints (a lone int
        too), ``ValueError`` for a partition the store does not have (in ``partitions`` or
        in the fence). ``claim(fence, [])`` changes nothing and returns ``[]``."""
        ...

    def leases(self) -> list[LeaseInfo]:
        """Every partition's lease, in partition order, read at once (``saga members``, and a
        member computing its fair share)."""
        ...

    def heartbeat(self, member: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``member`` is alive now (store clock), committed before it returns:
        a new member is registered with ``started_at`` now; ``info`` (a JSON object, e.g.
        host, pid and the flows it runs) replaces what it said before, and ``None`` keeps it
        (``{}`` for a new member)."""
        ...

    def members(self) -> list[MemberInfo]:
        """Every registered member, by id (alive or not: ``seen_ago`` tells)."""
        ...

    def leave(self, member: str) -> None:
        """A clean stop: forget ``member`` and release every lease it holds, in one
        transaction committed before it returns (an unknown member is ignored)."""
        ...

    def writers(self, saga_id: str) -> list[Writer]:
        """Who wrote each event of the saga, in seq order (see :meth:`EventLog.write`);
        ``UnknownSaga`` if absent. For ``saga audit``: within one partition epochs only grow,
        and a member writes only while it holds the lease."""
        ...


@runtime_checkable
class Requests(StoreFacet, Protocol):
    """Commands for a saga from another process (``saga cancel``, ``saga retry``): written to
    the store, picked up by the saga's owner (:class:`Ownership`), then completed."""

    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Record a pending request for the saga, committed before it returns; its id. Ids
        increase and are never reused.

        ``kind`` is a non-empty string and ``data`` (``None`` means ``{}``) a JSON object:
        ``ValueError`` / ``TypeError`` otherwise; ``UnknownSaga`` if the saga does not exist.
        """
        ...

    def requests(self, owner: str, after: int = 0) -> list[Request]:
        """Pending requests with ``request_id > after`` for the sagas ``owner`` owns now, in
        id order."""
        ...

    def requests_for(self, saga_id: str) -> list[Request]:
        """Pending requests for one saga, whoever owns it, in id order (none for an unknown
        saga)."""
        ...

    def complete_request(self, request_id: int) -> None:
        """Mark a request handled, committed before it returns: it is no longer pending. An
        unknown or already completed id is ignored."""
        ...


@runtime_checkable
class ExternalEvents(StoreFacet, Protocol):
    """Events sent to sagas from outside (``saga send PaymentConfirmed --key o-1``), kept apart
    from the sagas' logs, each with a global ``position`` of its own (from 1, in order of
    arrival; visible in order, as in :class:`LogReader`).

    ``send_event`` records one (at most once per ``event_id``) whether or not a saga waits for
    it yet; owners poll ``events_after``; a waiting saga takes one with ``claim_event``, which
    hands each event to one saga only. Events are never deleted, only marked consumed.

    What is valid: an event type is a letter, then up to 127 of ``A-Za-z0-9_.-``; a key a
    non-empty string of at most 512 characters (valid Unicode); an event id 1 to 128 of
    ``A-Za-z0-9_.:-`` (case-sensitive); data a JSON object (NaN and infinity refused); times
    finite numbers of seconds. Anything else is ``ValueError`` / ``TypeError``, nothing
    written.
    """

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """Record an external event, committed before it returns: ``(event, True)``; or
        ``(the existing event, False)`` when an event with that ``event_id`` exists already
        (then nothing is written, whatever the other arguments: a duplicate is ignored). Of
        concurrent sends of one id (any connection or process), exactly one records it.
        Without ``event_id`` a fresh uuid4 hex one is made; ``data=None`` means ``{}``."""
        ...

    def events_after(self, position: int = 0, limit: int = 1000) -> list[ExternalEvent]:
        """At most ``limit`` external events with a position above ``position``, in position
        order (the owners' pollers); ``ValueError`` for a negative ``limit``."""
        ...

    def last_event_position(self) -> int:
        """The position of the newest external event (0 if none): where a poller starts."""
        ...

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """Atomically take the external event a waiting saga consumes.

        The event of that type and key this ``saga_id`` claimed already, if any (idempotent:
        a saga that crashed after claiming gets the same event again, even if newer ones
        arrived); else the oldest unclaimed one, now marked ``consumed_by=saga_id``,
        ``consumed_at=at`` and committed before it returns; else ``None``. Of concurrent
        claimers (threads or processes) no two ever get one event. ``saga_id`` is a non-empty
        string.
        """
        ...


@runtime_checkable
class ServiceInbox(StoreFacet, Protocol):
    """The store's service inbox: service actors' record of definitive replies and
    tombstones, keyed by idempotency key (its contract is :class:`actors.InboxStore`'s)."""

    @property
    def inbox(self) -> InboxStore:
        """The store's :class:`actors.InboxStore`, always the same object (durable when the
        store is)."""
        ...


@runtime_checkable
class SagaStore(EventLog, LogReader, Ownership, Leases, Requests, ExternalEvents, ServiceInbox,
                Protocol):
    """Where sagas live: every facet, and the store's lifecycle. What a backend implements
    (and proves with :mod:`sagas.stores.contract`), and what a runtime holds.

    A backend's schema, if it has one, is versioned and migrated forward when the store is
    opened (see :func:`sagas.stores.open_store`).
    """

    def close(self) -> None:
        """Release the store's resources and its owner registrations (the owners registered
        on it are dead from then on); further use raises ``StoreUnavailable``. Closing twice
        is fine."""
        ...
