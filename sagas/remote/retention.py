"""Keeping the broker from growing forever: streams trimmed of what every reader has
acknowledged, and a worker's inbox entries removed once older than their retention.

**Streams.** :func:`trim_acknowledged` removes the entries of a stream that no consumer group
of it can still need: ``XTRIM <stream> MINID <id>``, where ``id`` is, over every group of the
stream, the smaller of the oldest entry still pending (read, not acknowledged: ``XPENDING``'s
summary) and the successor of the group's ``last-delivered-id`` (what comes after it has never
been delivered). So an entry pending in a group, or never delivered to one, is never removed;
an entry every group has acknowledged is. A stream without the group named is left alone
(nobody has read it yet). The bound only moves forward while the function runs (a group
delivers ever newer entries, an acknowledgement only takes one off its pending list), so the
``XTRIM`` sent after reading it removes nothing still needed; only an administrator moving a
group back (``XGROUP SETID``) or creating one from ``0`` meanwhile could race it. Workers call
it for their services' command streams (group ``<prefix>:workers``), orchestrators for their
partitions' reply streams (group ``<prefix>:orchestrators``).

**Inbox.** Beside a service's inbox hash ``<prefix>:inbox:<service>`` (idempotency key ->
definitive reply, or a compensation's tombstone) a sorted set ``<prefix>:inbox-times:<service>``
holds each key with the Unix time it was written as its score, written in the same
``MULTI``/``EXEC`` as the hash entry (``ZADD``, or ``ZADD NX`` beside a tombstone's ``HSETNX``:
an entry kept keeps its time). :func:`expire_inbox` removes the keys written before a cutoff
from both, a batch at a time (``ZRANGEBYSCORE`` then one ``MULTI`` with ``HDEL`` and
``ZREM``): an entry that old is never rewritten meanwhile (a key in the inbox is answered from
there, never run again), so the keys read are still the ones to remove.
:func:`time_untimed` gives the entries found without a time (written before there were times,
or by a worker that does not keep them) the time it is given, so that they expire too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import protocol

__all__ = [
    "EXPIRE_BATCH",
    "expire_inbox",
    "inbox_times_key",
    "stamp",
    "time_untimed",
    "trim_acknowledged",
]

EXPIRE_BATCH = 500
"""Inbox keys removed per ``MULTI``."""
MAX_SEQ = 2**64 - 1


def inbox_times_key(service: str, prefix: str = protocol.DEFAULT_PREFIX) -> str:
    """The sorted set of when each entry of ``service``'s inbox was written."""
    return f"{prefix}:inbox-times:{service}"


# -- streams ---------------------------------------------------------------------------------


def trim_acknowledged(client: Any, stream: str, group: str) -> int:
    """Remove the entries of ``stream`` that every consumer group of it has acknowledged
    (none pending, none undelivered: see the module's docstring); how many were removed.
    Nothing is removed while ``stream`` or its group ``group`` does not exist. Errors of the
    broker are raised as redis-py raises them."""
    try:
        groups = client.xinfo_groups(stream)
    except Exception as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    bound: tuple[int, int] | None = None
    named = False
    for info in groups:
        info = {_text(k): v for k, v in info.items()}
        name = _text(info.get("name", ""))
        named = named or name == group
        limit = _successor(_entry_id(_text(info.get("last-delivered-id", "0-0"))))
        if int(info.get("pending") or 0) > 0:
            summary = client.xpending(stream, name)
            oldest = summary.get("min") if summary and summary.get("pending") else None
            if oldest is not None:
                limit = min(limit, _entry_id(_text(oldest)))
        bound = limit if bound is None else min(bound, limit)
    if not named or bound is None or bound <= (0, 1):
        return 0
    return int(client.xtrim(stream, minid=f"{bound[0]}-{bound[1]}", approximate=False) or 0)


def _entry_id(text: str) -> tuple[int, int]:
    millis, _, seq = text.partition("-")
    return int(millis), int(seq or 0)


def _successor(entry: tuple[int, int]) -> tuple[int, int]:
    millis, seq = entry
    return (millis + 1, 0) if seq >= MAX_SEQ else (millis, seq + 1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the inbox -------------------------------------------------------------------------------


def stamp(pipe: Any, times: str, key: str, at: float, *, keep_older: bool = False) -> None:
    """Queue on ``pipe`` (the ``MULTI`` that writes the inbox entry) that ``key`` was written
    at ``at``; ``keep_older``: unless it has a time already (beside an ``HSETNX``)."""
    if keep_older:
        pipe.zadd(times, {key: at}, nx=True)
    else:
        pipe.zadd(times, {key: at})


def expire_inbox(client: Any, inbox: str, times: str, before: float, *,
                 batch: int = EXPIRE_BATCH, max_batches: int | None = None) -> int:
    """Remove the entries of ``inbox`` written before ``before`` (Unix seconds), with their
    times in ``times``, ``batch`` keys per ``MULTI`` (at most ``max_batches`` of them, the
    rest next time); how many were removed."""
    removed = 0
    rounds = 0
    while max_batches is None or rounds < max_batches:
        keys: Sequence[str] = client.zrangebyscore(times, "-inf", f"({before!r}", start=0,
                                                   num=batch)
        if not keys:
            break
        pipe = client.pipeline(transaction=True)
        pipe.hdel(inbox, *keys)
        pipe.zrem(times, *keys)
        pipe.execute()
        removed += len(keys)
        rounds += 1
        if len(keys) < batch:
            break
    return removed


def time_untimed(client: Any, inbox: str, times: str, cursor: int, at: float, *,
                 count: int = EXPIRE_BATCH) -> int:
    """One step of ``HSCAN`` over ``inbox`` from ``cursor``: the keys found get the time
    ``at`` unless they have one (``ZADD NX``). The cursor to go on from (0: done)."""
    cursor, found = client.hscan(inbox, cursor, count=count)
    keys = list(found)
    if keys:
        client.zadd(times, dict.fromkeys(keys, at), nx=True)
    return int(cursor)
