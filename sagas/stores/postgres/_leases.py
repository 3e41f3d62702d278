"""The PostgreSQL store's leases (:class:`~sagas.stores.Leases`): tables ``leases`` (a row per
partition, made with the schema) and ``members``, and the writers recorded in ``events``.

The store's clock is the server's (``clock_timestamp()`` in Unix seconds, ``NOW``), so the
members' hosts need not agree on the time. Each change of leases is one ``UPDATE`` whose
``WHERE`` says which rows it may take: of concurrent acquirers of a partition, in any session,
the server lets one update the row; the others wait for its row lock, then find the row taken
(held, unexpired, by another member) and leave it. A fenced write locks the leases it checks
(``FOR SHARE``, in ``_log``), so an acquirer waits for it to end, and the write commits while
its fence still holds; a ``claim`` locks them so too.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

import psycopg

from sagas.errors import UnknownSaga
from sagas.stores._checks import (
    check_member,
    check_member_info,
    check_partition_claim,
    check_partitions,
    check_renewals,
    check_ttl,
)
from sagas.stores._json import decode as _decode
from sagas.stores._port import Fence, Lease, LeaseInfo, MemberInfo, Writer

from ._connection import NOW, _Connection
from ._log import _TERMINAL, _check_fence
from ._schema import TERMINAL_SQL


def _locked(which: str) -> str:
    """The CTE ``locked``: the rows of the partitions asked for that satisfy ``which``, locked
    in partition order, as fenced writes lock theirs (``FOR SHARE``), so that two changes never
    wait for each other in a cycle (a deadlock), and the live leases of other members are not
    locked at all (their writes never wait for this change)."""
    return (f"locked AS (SELECT l.partition FROM leases AS l, clock WHERE "
            f"l.partition = ANY(%(partitions)s) AND {which} ORDER BY l.partition "
            "FOR UPDATE OF l)")


_TAKEABLE = "(l.member IS NULL OR l.expires_at <= clock.now OR l.member = %(member)s)"
_MINE = "l.member = %(member)s"
# Take the leases of the partitions that are free, released, expired or the member's own: a
# new tenure (the epoch + 1) unless the member holds it unexpired (a renewal).
_ACQUIRE = (
    f"WITH clock AS (SELECT {NOW} AS now), {_locked(_TAKEABLE)} "
    "UPDATE leases AS l SET "
    "epoch = CASE WHEN l.member = %(member)s AND l.expires_at > clock.now THEN l.epoch "
    "ELSE l.epoch + 1 END, "
    "member = %(member)s, expires_at = clock.now + %(ttl)s, renewed_at = clock.now "
    f"FROM clock, locked WHERE l.partition = locked.partition AND {_TAKEABLE} "
    "RETURNING l.partition, l.epoch, l.expires_at"
)
_RENEW = (
    f"WITH clock AS (SELECT {NOW} AS now), {_locked(_MINE)} "
    "UPDATE leases AS l SET expires_at = clock.now + %(ttl)s, renewed_at = clock.now "
    "FROM clock, locked, unnest(%(partitions)s::integer[], %(epochs)s::bigint[]) "
    "AS r(partition, epoch) "
    "WHERE l.partition = locked.partition AND r.partition = locked.partition "
    "AND l.member = %(member)s AND l.epoch = r.epoch AND l.expires_at > clock.now "
    "RETURNING l.partition, l.epoch, l.expires_at"
)
_RELEASE = (
    f"WITH clock AS (SELECT {NOW} AS now), {_locked(_MINE)} "
    "UPDATE leases AS l SET member = NULL, expires_at = clock.now "
    "FROM clock, locked WHERE l.partition = locked.partition AND l.member = %(member)s"
)
_RELEASE_ALL = f"UPDATE leases SET member = NULL, expires_at = {NOW} WHERE member = %s"
_SELECT_LEASES = (
    "SELECT partition, member, epoch, expires_at, renewed_at, "
    f"(member IS NOT NULL AND expires_at > {NOW}) FROM leases ORDER BY partition"
)
_HEARTBEAT = (
    "INSERT INTO members (member, started_at, last_seen, info) "
    f"VALUES (%(member)s, {NOW}, {NOW}, COALESCE(%(info)s, '{{}}')) "
    "ON CONFLICT (member) DO UPDATE SET last_seen = excluded.last_seen, "
    "info = COALESCE(%(info)s, members.info)"
)
_SELECT_MEMBERS = (
    f"SELECT member, started_at, last_seen, {NOW} - last_seen, info FROM members "
    "ORDER BY member"
)
_SELECT_WRITERS = "SELECT seq, member, epoch FROM events WHERE saga_id = %s ORDER BY seq"
# A claim: the sagas not terminal (read as in_flight reads them; their partitions are computed
# here), then those of them owned by others taken, their rows locked in id order as writers
# lock theirs, each only if it is still not terminal once locked.
_SELECT_UNFINISHED = (
    f"SELECT saga_id, owner, started_at FROM sagas WHERE status NOT IN {TERMINAL_SQL}"
)
_CLAIM = (
    "WITH locked AS (SELECT saga_id FROM sagas WHERE saga_id = ANY(%(ids)s) "
    "AND status <> ALL(%(terminal)s) ORDER BY saga_id FOR UPDATE) "
    "UPDATE sagas AS s SET owner = %(member)s FROM locked WHERE s.saga_id = locked.saga_id "
    "RETURNING s.saga_id, s.started_at"
)


def _leases(rows: list[Any], member: str, start: float, ttl: float) -> list[Lease]:
    """The leases of ``rows`` (partition, epoch, expires_at) in partition order, each with
    its holder's deadline: ``start`` (read before the request was sent) + ``ttl``."""
    return [Lease(partition, member, epoch, expires_at, start + ttl)
            for partition, epoch, expires_at in sorted(rows)]


class _Leases(_Connection):
    """Each change is one statement in autocommit (``leave``: one transaction) on the write
    connection; reads on a read connection."""

    def partitions(self) -> int:
        with self._lock:
            self._connection()  # StoreUnavailable once closed
        return self._partition_count

    def acquire(self, member: str, partitions: Sequence[int], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_partitions(partitions, self._partition_count)
        if not wanted:
            return self._nothing()
        self._member_use = True  # fenced from now on: the write connection may be made again
        _, rows = self._write(_ACQUIRE, {"member": member, "ttl": seconds,
                                         "partitions": wanted})
        return _leases(rows, member, start, seconds)

    def renew(self, member: str, leases: Sequence[Lease], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_renewals(member, leases, self._partition_count)
        if not wanted:
            return self._nothing()
        _, rows = self._write(_RENEW, {
            "member": member, "ttl": seconds, "partitions": [p for p, _ in wanted],
            "epochs": [epoch for _, epoch in wanted]})
        return _leases(rows, member, start, seconds)

    def release(self, member: str, partitions: Sequence[int]) -> None:
        check_member(member)
        wanted = check_partitions(partitions, self._partition_count)
        if wanted:
            self._write(_RELEASE, {"partitions": wanted, "member": member})
        else:
            self._nothing()

    def claim(self, fence: Fence, partitions: Sequence[int]) -> list[str]:
        """One transaction: the leases are checked and locked (``FOR SHARE``, as a fenced
        write locks them, so an acquirer waits for the claim to end), then the sagas taken."""
        plan = check_partition_claim(fence, partitions, self._partition_count)
        if not plan.partitions:
            self._nothing()
            return []
        member, count, crc32 = plan.member, self._partition_count, zlib.crc32

        def take(db: psycopg.Connection[Any]) -> list[tuple[str, float]]:
            _check_fence(db, plan)
            mine: list[tuple[str, float]] = []
            others: list[str] = []
            for saga_id, owner, started_at in db.execute(_SELECT_UNFINISHED):
                if crc32(saga_id.encode("utf-8")) % count not in plan.partitions:
                    continue  # partition_of, inlined
                if owner == member:
                    mine.append((saga_id, started_at))
                else:
                    others.append(saga_id)
            if others:
                mine += db.execute(_CLAIM, {"ids": others, "terminal": _TERMINAL,
                                            "member": member}).fetchall()
            return mine

        claimed = self._transaction(take)
        claimed.sort(key=lambda row: (row[1], row[0]))
        return [saga_id for saga_id, _ in claimed]

    def leases(self) -> list[LeaseInfo]:
        return [LeaseInfo(*row) for row in self._fetch(_SELECT_LEASES, ())]

    def heartbeat(self, member: str, info: dict[str, Any] | None = None) -> None:
        check_member(member)
        self._write(_HEARTBEAT, {"member": member, "info": check_member_info(info)})

    def members(self) -> list[MemberInfo]:
        return [MemberInfo(member, started_at, last_seen, seen_ago, _decode(info))
                for member, started_at, last_seen, seen_ago, info
                in self._fetch(_SELECT_MEMBERS, ())]

    def leave(self, member: str) -> None:
        check_member(member)

        def forget(db: psycopg.Connection[Any]) -> None:
            db.execute("DELETE FROM members WHERE member = %s", (member,))
            db.execute(_RELEASE_ALL, (member,))

        self._transaction(forget)

    def writers(self, saga_id: str) -> list[Writer]:
        def read(db: psycopg.Connection[Any]) -> list[Any]:
            if db.execute("SELECT 1 FROM sagas WHERE saga_id = %s", (saga_id,)).fetchone() is None:
                raise UnknownSaga(saga_id)
            return db.execute(_SELECT_WRITERS, (saga_id,)).fetchall()

        return [Writer(*row) for row in self._read(read)]

    def _nothing(self) -> list[Lease]:
        """What a call for no partition returns, once it has checked the store is open."""
        with self._lock:
            self._connection()
        return []
