"""The SQLite store's leases (:class:`~sagas.stores.Leases`): table ``leases`` (a row per
partition, made with the schema), ``members``, and the writers recorded in ``events``.

Each change is one ``BEGIN IMMEDIATE`` transaction: it reads the rows it judges and writes
them under SQLite's one write lock, so of concurrent acquirers (any connection or process)
exactly one takes a partition, and a fenced write or a ``claim``, which reads its leases
under that lock too (``_fence``), sees them as they are until it commits. The store's clock
is ``time.time()`` (the processes sharing a file share a host, and its clock).
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Sequence
from typing import Any

from sagas.errors import StoreUnavailable, UnknownSaga
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

from ._connection import _Connection
from ._fence import _check_fence, _Held, _lease_rows
from ._log import _TERMINAL
from ._ownership import _SELECT_UNFINISHED, _SET_OWNER

_UPDATE_LEASE = (
    "UPDATE leases SET member = ?, epoch = ?, expires_at = ?, renewed_at = ? WHERE partition = ?"
)
_RELEASE = "UPDATE leases SET member = NULL, expires_at = ? WHERE partition = ? AND member = ?"
_SELECT_LEASES = (
    "SELECT partition, member, epoch, expires_at, renewed_at FROM leases ORDER BY partition"
)
_HEARTBEAT = (
    "INSERT INTO members (member, started_at, last_seen, info) VALUES (?, ?, ?, "
    "COALESCE(?, '{}')) ON CONFLICT (member) DO UPDATE SET last_seen = excluded.last_seen, "
    "info = COALESCE(?, info)"
)
_SELECT_MEMBERS = "SELECT member, started_at, last_seen, info FROM members ORDER BY member"
_SELECT_WRITERS = "SELECT seq, member, epoch FROM events WHERE saga_id = ? ORDER BY seq"

def _live(member: str | None, expires_at: float | None, now: float) -> bool:
    return member is not None and expires_at is not None and expires_at > now


class _Leases(_Connection):
    """Changes in one transaction each on the write connection; reads on the thread's read
    connection."""

    def partitions(self) -> int:
        with self._lock:
            self._connection()  # StoreUnavailable once closed
        return self._partition_count

    def acquire(self, member: str, partitions: Sequence[int], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_partitions(partitions, self._partition_count)

        def take(db: sqlite3.Connection) -> list[Lease]:
            now = time.time()
            held = self._judged(db, wanted)
            changes: list[tuple[Any, ...]] = []
            taken: list[Lease] = []
            for partition in wanted:
                holder, epoch, expires_at = held[partition]
                live = _live(holder, expires_at, now)
                if live and holder != member:
                    continue
                if not live:
                    epoch += 1  # a new tenure
                changes.append((member, epoch, now + seconds, now, partition))
                taken.append(Lease(partition, member, epoch, now + seconds, start + seconds))
            db.executemany(_UPDATE_LEASE, changes)
            return taken

        return self._transaction(take) if wanted else self._nothing()

    def renew(self, member: str, leases: Sequence[Lease], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_renewals(member, leases, self._partition_count)

        def extend(db: sqlite3.Connection) -> list[Lease]:
            now = time.time()
            held = self._judged(db, [partition for partition, _ in wanted])
            changes: list[tuple[Any, ...]] = []
            renewed: list[Lease] = []
            for partition, epoch in wanted:
                holder, held_epoch, expires_at = held[partition]
                if holder != member or held_epoch != epoch or not _live(holder, expires_at, now):
                    continue
                changes.append((member, epoch, now + seconds, now, partition))
                renewed.append(Lease(partition, member, epoch, now + seconds, start + seconds))
            db.executemany(_UPDATE_LEASE, changes)
            return renewed

        return self._transaction(extend) if wanted else self._nothing()

    def release(self, member: str, partitions: Sequence[int]) -> None:
        check_member(member)
        wanted = check_partitions(partitions, self._partition_count)

        def give_back(db: sqlite3.Connection) -> None:
            now = time.time()
            db.executemany(_RELEASE, [(now, partition, member) for partition in wanted])

        if wanted:
            self._transaction(give_back)
        else:
            self._nothing()

    def claim(self, fence: Fence, partitions: Sequence[int]) -> list[str]:
        """One ``BEGIN IMMEDIATE`` transaction: the leases are checked and the sagas taken
        under SQLite's write lock (the non-terminal sagas are read by status, as
        ``in_flight`` reads them, and their partitions computed here)."""
        plan = check_partition_claim(fence, partitions, self._partition_count)
        if not plan.partitions:
            self._nothing()
            return []
        member, count, crc32 = plan.member, self._partition_count, zlib.crc32

        def take(db: sqlite3.Connection) -> list[tuple[str, str | None, float]]:
            _check_fence(db, plan)
            rows = [row for row in db.execute(_SELECT_UNFINISHED, _TERMINAL)
                    if crc32(row[0].encode("utf-8")) % count in plan.partitions]
            db.executemany(_SET_OWNER, [(member, saga_id) for saga_id, owner, _ in rows
                                        if owner != member])
            return rows

        claimed = self._transaction(take)
        claimed.sort(key=lambda row: (row[2], row[0]))
        return [saga_id for saga_id, _, _ in claimed]

    def leases(self) -> list[LeaseInfo]:
        rows = self._fetch(_SELECT_LEASES, ())
        now = time.time()
        return [LeaseInfo(partition, member, epoch, expires_at, renewed_at,
                          _live(member, expires_at, now))
                for partition, member, epoch, expires_at, renewed_at in rows]

    def heartbeat(self, member: str, info: dict[str, Any] | None = None) -> None:
        check_member(member)
        text = check_member_info(info)
        now = time.time()
        self._write(_HEARTBEAT, (member, now, now, text, text))

    def members(self) -> list[MemberInfo]:
        rows = self._fetch(_SELECT_MEMBERS, ())
        now = time.time()
        return [MemberInfo(member, started_at, last_seen, now - last_seen, _decode(info))
                for member, started_at, last_seen, info in rows]

    def leave(self, member: str) -> None:
        check_member(member)

        def forget(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM members WHERE member = ?", (member,))
            db.execute("UPDATE leases SET member = NULL, expires_at = ? WHERE member = ?",
                       (time.time(), member))

        self._transaction(forget)

    def writers(self, saga_id: str) -> list[Writer]:
        def read(db: sqlite3.Connection) -> list[Any]:
            if db.execute("SELECT 1 FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone() is None:
                raise UnknownSaga(saga_id)
            return db.execute(_SELECT_WRITERS, (saga_id,)).fetchall()

        return [Writer(*row) for row in self._read(read)]

    def _judged(self, db: sqlite3.Connection, partitions: list[int]) -> dict[int, _Held]:
        """The leases of ``partitions``; ``StoreUnavailable`` if a row is missing."""
        held = _lease_rows(db, partitions)
        if len(held) != len(partitions):
            missing = min(set(partitions) - set(held))
            raise StoreUnavailable(f"saga store {self.path} is damaged: partition {missing} "
                                   "has no row in leases")
        return held

    def _nothing(self) -> list[Lease]:
        """What a call for no partition returns, once it has checked the store is open."""
        with self._lock:
            self._connection()
        return []
