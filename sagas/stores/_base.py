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

External events (``saga send PaymentConfirmed --key o-1``) are kept apart from the sagas'
logs, each with a global ``position`` of its own: ``send_event`` records one (at most once per
``event_id``) whether or not a saga waits for it yet, owners poll ``events_after``, and a
waiting saga takes one with ``claim_event``, which hands each event to one saga only.

Readers of the log (the event bus, :mod:`sagas.bus`) page through it with ``read_log``, which
gives each event with its saga's flow name in one read, and keep a durable *cursor* per
subscriber name (``cursor`` / ``save_cursor``): the position of the last event the subscriber
has handled, so it resumes there after a restart or a crash.
"""

from __future__ import annotations

import builtins
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..events import Event as StoredEvent
from ._common import encode

__all__ = [
    "TERMINAL",
    "Append",
    "ExternalEvent",
    "LogEntry",
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


SUBSCRIBER = re.compile(r"[A-Za-z0-9_.:/-]{1,256}")
"""What a subscriber name (the key of a durable cursor) is: 1 to 256 of ``A-Za-z0-9_.:/-``,
e.g. ``notifications`` or ``flows.shop:Notifications.on_completed``."""


def check_subscriber(name: object) -> str:
    """``name`` if it is a valid subscriber name (:data:`SUBSCRIBER`), else ``TypeError`` /
    ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"a subscriber name is a string, got {_kind(name)}")
    if not SUBSCRIBER.fullmatch(name):
        raise ValueError(
            f"a subscriber name is 1 to 256 of A-Z a-z 0-9 _ . : / -, got {_shown(name)}"
        )
    return name


def check_position(position: object) -> int:
    """``position`` if it is a log position a cursor may hold (an int >= 0), else
    ``TypeError`` / ``ValueError``."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"a log position is an int, got {_kind(position)}")
    if position < 0:
        raise ValueError(f"a log position is >= 0, got {position}")
    return position


EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
"""What an external event's type is: a letter, then up to 127 of ``A-Za-z0-9_.-``."""

EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""What an external event's id is: 1 to 128 of ``A-Za-z0-9_.:-``."""

MAX_KEY = 512
"""The longest correlation key, in characters."""


def _shown(value: object) -> str:
    """``repr(value)``, cut short for an error message of one line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def _kind(value: object) -> str:
    """The name of ``value``'s class, for messages (``type`` is a parameter below)."""
    return builtins.type(value).__name__


def check_event_match(type: str, key: str) -> None:
    """``ValueError`` / ``TypeError`` unless ``type`` is a valid external event type and
    ``key`` a valid correlation key (messages fit for a command-line user)."""
    if not isinstance(type, str):
        raise TypeError(f"an event type is a string, got {_kind(type)}")
    if not EVENT_TYPE.fullmatch(type):
        raise ValueError(
            "an event type is a letter then up to 127 of A-Z a-z 0-9 _ . - "
            f"(e.g. PaymentConfirmed), got {_shown(type)}"
        )
    if not isinstance(key, str):
        raise TypeError(f"an event key is a string, got {_kind(key)}")
    if not key or len(key) > MAX_KEY:
        raise ValueError(
            f"an event key is a non-empty string of at most {MAX_KEY} characters, "
            f"got {_shown(key)}"
        )
    _check_text("an event key", key)


def _check_text(what: str, text: str) -> None:
    """``ValueError`` if ``text`` has no UTF-8 form (a lone surrogate, as undecodable bytes
    of a command line become): SQLite could not store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it has a lone surrogate)") from None


def check_time(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number (of seconds), else ``TypeError`` /
    ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is a number of seconds, got {_kind(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} is a finite number of seconds, got {value!r}")
    return float(value)


def check_claim(type: str, key: str, saga_id: str, at: float) -> float:
    """``at`` as a float if ``claim_event``'s arguments are valid, else ``ValueError`` /
    ``TypeError``."""
    check_event_match(type, key)
    if not isinstance(saga_id, str):
        raise TypeError(f"a saga id is a string, got {_kind(saga_id)}")
    if not saga_id:
        raise ValueError(f"a saga id is a non-empty string, got {_shown(saga_id)}")
    return check_time("at", at)


def external_event_fields(
    type: str, key: str, data: dict[str, Any] | None, event_id: str | None, sent_at: float
) -> tuple[str, str, str, str, float]:
    """What ``send_event`` writes, checked: ``(event_id, type, key, data as JSON text,
    sent_at)``, with a fresh uuid4 hex id when ``event_id`` is ``None``.

    ``ValueError`` / ``TypeError``, with a message fit for a command-line user, for an
    invalid type, key or id, data that is not a JSON object (``None`` means ``{}``; NaN and
    infinity are refused) and a ``sent_at`` that is not a finite number.
    """
    check_event_match(type, key)
    if event_id is None:
        event_id = new_event_id()
    elif not isinstance(event_id, str):
        raise TypeError(f"an event id is a string, got {_kind(event_id)}")
    elif not EVENT_ID.fullmatch(event_id):
        raise ValueError(f"an event id is 1 to 128 of A-Z a-z 0-9 _ . : -, got {_shown(event_id)}")
    if data is None:
        data_json = "{}"
    elif not isinstance(data, dict):
        raise TypeError(f"event data must be a JSON object, got {_kind(data)}")
    else:
        try:
            data_json = encode(data)
        except TypeError as err:
            raise TypeError(f"event data is not JSON: {err}") from err
        except ValueError as err:
            raise ValueError(f"event data is not JSON: {err}") from err
        _check_text("event data", data_json)
    return event_id, type, key, data_json, check_time("sent_at", sent_at)


def new_event_id() -> str:
    """A fresh external event id: a uuid4 in hex."""
    return uuid.uuid4().hex


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

    def read_log(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """:meth:`read_all` with each saga's flow name: at most ``limit`` entries
        ``(saga_id, flow, event)`` with ``position > after``, in position order, read in one
        query (an event bus pages through the log with it).

        A position becomes visible only after every smaller one has (positions are given out
        under the store's write lock and committed in that order), so a reader that has seen
        position ``p`` never sees a new event below ``p`` later.
        """
        ...

    def last_position(self) -> int:
        """The position of the newest saga event (0 if none): where a subscriber that starts
        "from the end" starts."""
        ...

    def definition(self, sha256: str) -> str:
        """The flow text stored under that sha256; ``KeyError`` if absent."""
        ...

    # -- subscribers' cursors (the event bus) --------------------------------------------------
    def cursor(self, subscriber: str) -> int | None:
        """The position of the last event ``subscriber`` has handled, or ``None`` if it has
        no cursor (a new subscriber). ``ValueError`` / ``TypeError`` for an invalid name."""
        ...

    def save_cursor(self, subscriber: str, position: int) -> None:
        """Set ``subscriber``'s cursor to ``position`` (created if absent), committed before it
        returns. The cursor is set as given, even below its current value (a deliberate
        replay). ``ValueError`` / ``TypeError`` for an invalid name or position."""
        ...

    def cursors(self) -> dict[str, int]:
        """Every subscriber's cursor, by name."""
        ...

    def delete_cursor(self, subscriber: str) -> None:
        """Forget ``subscriber``'s cursor (it starts afresh next time); an unknown name is
        ignored."""
        ...

    # -- ownership (DESIGN.md §5: a store shared by several processes) ------------------------
    def register_owner(self, owner: str) -> None:
        """Declare ``owner`` (a runtime's id) alive for as long as this store object is open
        and its process lives.

        SQLite: an exclusive OS file lock on ``<db>.owners/<owner>.lock``, released by the OS
        when the process dies, however it dies, and a registration of the process (pid, start
        time, boot) in the database, so that a deleted lock file takes nothing from a live
        owner (see :mod:`sagas.stores.sqlite`). Memory: alive until ``close()``.
        """
        ...

    def owner_alive(self, owner: str) -> bool:
        """Whether a runtime registered as ``owner`` is still alive (in any process). Never
        ``False`` for a live owner, whatever happened to files beside the store; ``True`` when
        it cannot be known (a live owner's sagas are never adopted)."""
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

    # -- external events (``saga send``) -------------------------------------------------------
    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """Record an external event, committed before it returns, whether or not a saga waits
        for it yet: ``(event, True)``; or ``(the existing event, False)`` when an event with
        that ``event_id`` exists already (then nothing is written, whatever the rest of the
        arguments: a duplicate is ignored). Without ``event_id`` a uuid4 hex one is made.

        The arguments are checked first (see :func:`external_event_fields`): ``ValueError`` /
        ``TypeError`` with a message fit for a command-line user, nothing written.
        """
        ...

    def events_after(self, position: int = 0, limit: int = 1000) -> list[ExternalEvent]:
        """At most ``limit`` external events with a position above ``position``, in position
        order (the owners' pollers)."""
        ...

    def last_event_position(self) -> int:
        """The position of the newest external event (0 if none): where a poller starts."""
        ...

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """Atomically take the external event a waiting saga consumes.

        The event of that type and key this ``saga_id`` claimed already, if any (idempotent:
        a saga that crashed after claiming gets the same event again, even if newer ones
        arrived); else the oldest unclaimed one, now marked ``consumed_by=saga_id``,
        ``consumed_at=at``; ``None`` if there is none. Of concurrent claimers (threads or
        processes) no two ever get one event.
        """
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
