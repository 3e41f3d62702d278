"""Checks of the port's arguments, shared by the backends: what a subscriber name, a log
position, a read's limit, a list of saga ids, an owner id, an external event (type, key, id,
data, time), a request, a member id, a lease's length, a list of partitions and a fence are.

Each check raises ``ValueError`` / ``TypeError`` with a one-line message fit for a command-line
user (the facets of :mod:`sagas.stores._port` promise that), before anything is written.
"""

from __future__ import annotations

import builtins
import math
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from sagas.errors import LeaseLost

from ._json import encode

if TYPE_CHECKING:
    from ._port import Fence, Lease

__all__ = [
    "EVENT_ID",
    "EVENT_TYPE",
    "MAX_KEY",
    "OWNER_ID",
    "SUBSCRIBER",
    "FencePlan",
    "check_claim",
    "check_event_match",
    "check_fence",
    "check_limit",
    "check_member",
    "check_member_info",
    "check_owner",
    "check_partition_claim",
    "check_partition_count",
    "check_partitions",
    "check_position",
    "check_renewals",
    "check_saga_ids",
    "check_subscriber",
    "check_time",
    "check_ttl",
    "external_event_fields",
    "new_event_id",
    "request_json",
]

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


def check_limit(limit: int) -> int:
    """``limit`` if it is a number of rows a read may return (>= 0), else ``ValueError``."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit


def check_saga_ids(saga_ids: Sequence[str]) -> builtins.list[str]:
    """``saga_ids`` without repeats, in order, refusing a lone string (a slip for
    ``[saga_id]``) with ``TypeError``."""
    if isinstance(saga_ids, str):
        raise TypeError("saga_ids is a sequence of ids, not one id")
    return builtins.list(dict.fromkeys(saga_ids))


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


OWNER_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What an owner id (a runtime's) is: 1 to 128 of ``A-Za-z0-9_.-``."""


def check_owner(owner: object) -> str:
    """``owner`` if it is a valid owner id (``[A-Za-z0-9_.-]{1,128}``), else ``ValueError``."""
    if not isinstance(owner, str) or not OWNER_ID.fullmatch(owner):
        raise ValueError(f"an owner id is 1 to 128 of A-Z a-z 0-9 _ . -, got {owner!r}")
    return owner


def request_json(kind: str, data: dict[str, Any] | None) -> str:
    """A request's data as JSON text; ``ValueError`` / ``TypeError`` for a bad kind or data."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a request kind is a non-empty string, got {kind!r}")
    if data is None:
        return "{}"
    if not isinstance(data, dict):
        raise TypeError(f"request data must be a JSON object (a dict), got {type(data).__name__}")
    return encode(data)


def check_member(member: object) -> str:
    """``member`` if it is a valid member id (as an owner id: ``[A-Za-z0-9_.-]{1,128}``),
    else ``ValueError``."""
    if not isinstance(member, str) or not OWNER_ID.fullmatch(member):
        raise ValueError(f"a member id is 1 to 128 of A-Z a-z 0-9 _ . -, got {_shown(member)}")
    return member


def check_ttl(ttl: object) -> float:
    """``ttl`` as a float if it is a lease's length: a finite number of seconds > 0, else
    ``TypeError`` / ``ValueError``."""
    seconds = check_time("a lease's ttl", ttl)  # type: ignore[arg-type]
    if seconds <= 0:
        raise ValueError(f"a lease's ttl is a number of seconds > 0, got {ttl!r}")
    return seconds


def check_partition_count(partitions: object) -> int:
    """``partitions`` if it is a store's number of partitions (an int from 1 to
    ``MAX_PARTITIONS``), else ``TypeError`` / ``ValueError``."""
    from ._port import MAX_PARTITIONS

    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise TypeError(f"a number of partitions is an int, got {_kind(partitions)}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(
            f"a number of partitions is from 1 to {MAX_PARTITIONS}, got {partitions}"
        )
    return partitions


def check_partitions(partitions: Sequence[int], count: int) -> builtins.list[int]:
    """The distinct partitions of ``partitions``, sorted, if each is one of a store of
    ``count`` partitions (an int from 0 to count - 1), else ``TypeError`` / ``ValueError``
    (a lone int too: a slip for ``[partition]``)."""
    if isinstance(partitions, (int, str)) or not isinstance(partitions, Iterable):
        raise TypeError(f"partitions is a sequence of ints, got {_kind(partitions)}")
    for partition in partitions:
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise TypeError(f"a partition is an int, got {_kind(partition)}")
        if not 0 <= partition < count:
            raise ValueError(f"a partition is from 0 to {count - 1} (the store has {count}), "
                             f"got {partition}")
    return sorted(set(partitions))


def check_renewals(member: str, leases: Sequence[Lease], count: int) -> builtins.list[
        tuple[int, int]]:
    """``(partition, epoch)`` of each of ``leases``, in partition order, if each is a
    :class:`~sagas.stores.Lease` of ``member`` in a store of ``count`` partitions, else
    ``TypeError`` / ``ValueError``."""
    from ._port import Lease

    if isinstance(leases, Lease) or not isinstance(leases, Sequence):
        raise TypeError(f"leases is a sequence of Lease, got {_kind(leases)}")
    wanted: dict[int, int] = {}
    for lease in leases:
        if not isinstance(lease, Lease):
            raise TypeError(f"a lease to renew is a Lease, got {_kind(lease)}")
        if lease.member != member:
            raise ValueError(f"member {member!r} cannot renew a lease of member "
                             f"{lease.member!r}")
        check_partitions([lease.partition], count)
        wanted[lease.partition] = lease.epoch
    return sorted(wanted.items())


def check_member_info(info: Mapping[str, Any] | None) -> str | None:
    """A member's ``info`` as JSON text (``None`` stays ``None``: keep what it said), if it is
    a JSON object; else ``TypeError`` / ``ValueError``."""
    if info is None:
        return None
    if not isinstance(info, dict):
        raise TypeError(f"a member's info is a JSON object (a dict), got {_kind(info)}")
    try:
        text = encode(info)
    except TypeError as err:
        raise TypeError(f"a member's info is not JSON: {err}") from err
    except ValueError as err:
        raise ValueError(f"a member's info is not JSON: {err}") from err
    _check_text("a member's info", text)
    return text


class FencePlan(NamedTuple):
    """What a fenced write must check, worked out from its arguments before the store is
    asked (:func:`check_fence`)."""

    member: str
    # partition -> (the fence's epoch, the first saga the call names in it), in call order
    partitions: dict[int, tuple[int, str]]
    # saga id -> the epoch its events are written with
    epochs: dict[str, int]

    def lost(self, partition: int) -> LeaseLost:
        """The error for a partition whose lease the member does not hold at its epoch."""
        epoch, saga_id = self.partitions[partition]
        return LeaseLost(partition, self.member, epoch, saga_id)


def check_fence(fence: Fence, saga_ids: Iterable[str], count: int) -> FencePlan:
    """What a write fenced with ``fence`` in a store of ``count`` partitions checks, for the
    sagas it names (``saga_ids``, in call order); ``TypeError`` if ``fence`` is no
    :class:`~sagas.stores.Fence`, ``ValueError`` if it names a partition the store does not
    have, and :class:`~sagas.errors.LeaseLost` (epoch ``None``) for the first saga in a
    partition the fence has no epoch for."""
    epochs = _check_fence_type(fence, count).epochs
    partitions: dict[int, tuple[int, str]] = {}
    by_saga: dict[str, int] = {}
    crc32 = zlib.crc32
    for saga_id in saga_ids:
        if saga_id in by_saga:
            continue
        partition = crc32(saga_id.encode("utf-8")) % count  # partition_of, inlined
        epoch = epochs.get(partition)
        if epoch is None:
            raise LeaseLost(partition, fence.member, None, saga_id)
        by_saga[saga_id] = epoch
        partitions.setdefault(partition, (epoch, saga_id))
    return FencePlan(fence.member, partitions, by_saga)


def check_partition_claim(fence: Fence, partitions: Sequence[int], count: int) -> FencePlan:
    """What a ``claim`` of ``partitions`` fenced with ``fence`` in a store of ``count``
    partitions checks: a plan naming each of ``partitions`` once, in the order given, with the
    fence's epoch for it and the saga id ``""`` (a claim is refused for a partition, not for
    a saga), and no sagas. ``TypeError`` if ``fence`` is no :class:`~sagas.stores.Fence` or
    ``partitions`` no sequence of ints (a lone int too), ``ValueError`` for a partition the
    store does not have (in ``partitions`` or in the fence), and
    :class:`~sagas.errors.LeaseLost` (epoch ``None``, saga ``""``) for the first of
    ``partitions`` the fence has no epoch for."""
    epochs = _check_fence_type(fence, count).epochs
    if isinstance(partitions, Iterable) and not isinstance(partitions, (str, bytes)):
        partitions = builtins.list(partitions)  # iterated twice below
    check_partitions(partitions, count)
    plan: dict[int, tuple[int, str]] = {}
    for partition in partitions:
        epoch = epochs.get(partition)
        if epoch is None:
            raise LeaseLost(partition, fence.member, None, "")
        plan.setdefault(partition, (epoch, ""))
    return FencePlan(fence.member, plan, {})


def _check_fence_type(fence: object, count: int) -> Fence:
    """``fence`` if it is a :class:`~sagas.stores.Fence` (else ``TypeError``) naming only
    partitions of a store of ``count`` (else ``ValueError``)."""
    from ._port import Fence

    if not isinstance(fence, Fence):
        raise TypeError(f"a fence is a sagas.stores.Fence, got {_kind(fence)}")
    for partition in fence.epochs:
        if partition >= count:
            raise ValueError(f"a fence names partition {partition}; the store has {count} "
                             f"(0 to {count - 1})")
    return fence
