"""The memory store's leases (:class:`~sagas.stores.Leases`): the partitions' leases in a dict
from partition to ``(member, epoch, expires_at, renewed_at)`` (kept in ``_state``, since the
log's fenced writes check them), the members in a dict from id to ``(started_at, last_seen,
info JSON)``; the store's clock is ``time.time()``."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

from sagas.stores._checks import (
    check_member,
    check_member_info,
    check_partition_claim,
    check_partitions,
    check_renewals,
    check_ttl,
)
from sagas.stores._json import decode as _decode
from sagas.stores._port import TERMINAL, Fence, Lease, LeaseInfo, MemberInfo, Writer

from ._state import (
    _EPOCH,
    _EVENTS,
    _MEMBER,
    _NEVER_HELD,
    _OWNER,
    _SAGA_ID,
    _age,
    _Saga,
    _State,
    _with_owner,
)

# A member as kept: (started_at, last_seen, info JSON).
_Member = tuple[float, float, str]


class _Leases(_State):
    """Leases taken, renewed and released under the store's lock (so each call is atomic)."""

    def __init__(self) -> None:
        super().__init__()
        self._members: dict[str, _Member] = {}

    def _forget(self) -> None:
        super()._forget()
        self._members.clear()

    def partitions(self) -> int:
        with self._lock:
            self._check_open()
            return self._partition_count

    def acquire(self, member: str, partitions: Sequence[int], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_partitions(partitions, self._partition_count)
        taken: list[Lease] = []
        with self._lock:
            self._check_open()
            now = time.time()
            leases = self._leases
            for partition in wanted:
                holder, epoch, expires_at, _ = leases.get(partition, _NEVER_HELD)
                live = holder is not None and expires_at is not None and expires_at > now
                if live and holder != member:
                    continue
                if not live:
                    epoch += 1  # a new tenure
                leases[partition] = (member, epoch, now + seconds, now)
                taken.append(Lease(partition, member, epoch, now + seconds, start + seconds))
        return taken

    def renew(self, member: str, leases: Sequence[Lease], ttl: float) -> list[Lease]:
        start = time.monotonic()
        check_member(member)
        seconds = check_ttl(ttl)
        wanted = check_renewals(member, leases, self._partition_count)
        renewed: list[Lease] = []
        with self._lock:
            self._check_open()
            now = time.time()
            kept = self._leases
            for partition, epoch in wanted:
                holder, held_epoch, expires_at, _ = kept.get(partition, _NEVER_HELD)
                if (holder != member or held_epoch != epoch or expires_at is None
                        or expires_at <= now):
                    continue
                kept[partition] = (member, epoch, now + seconds, now)
                renewed.append(Lease(partition, member, epoch, now + seconds, start + seconds))
        return renewed

    def release(self, member: str, partitions: Sequence[int]) -> None:
        check_member(member)
        wanted = check_partitions(partitions, self._partition_count)
        with self._lock:
            self._check_open()
            self._release(member, wanted)

    def _release(self, member: str, partitions: Sequence[int]) -> None:
        """Free those of ``partitions`` whose last holder is ``member`` (under the lock)."""
        now = time.time()
        leases = self._leases
        for partition in partitions:
            holder, epoch, _, renewed_at = leases.get(partition, _NEVER_HELD)
            if holder == member:
                leases[partition] = (None, epoch, now, renewed_at)

    def claim(self, fence: Fence, partitions: Sequence[int]) -> list[str]:
        """The leases checked and the sagas taken under the store's lock."""
        plan = check_partition_claim(fence, partitions, self._partition_count)
        member, count, crc32 = plan.member, self._partition_count, zlib.crc32
        claimed: list[_Saga] = []
        with self._lock:
            self._check_open()
            if not plan.partitions:
                return []
            self._check_fence(plan)
            sagas = self._sagas
            for status, ids in self._by_status.items():
                if status in TERMINAL:
                    continue
                for saga_id in ids:
                    if crc32(saga_id.encode("utf-8")) % count not in plan.partitions:
                        continue  # partition_of, inlined
                    entry = sagas[saga_id]
                    if entry[_OWNER] != member:
                        sagas[saga_id] = _with_owner(entry, member)
                    claimed.append(entry)
        claimed.sort(key=_age)
        return [entry[_SAGA_ID] for entry in claimed]

    def leases(self) -> list[LeaseInfo]:
        with self._lock:
            self._check_open()
            now = time.time()
            kept = self._leases
            rows = [kept.get(p, _NEVER_HELD) for p in range(self._partition_count)]
        return [
            LeaseInfo(partition, holder, epoch, expires_at, renewed_at,
                      holder is not None and expires_at is not None and expires_at > now)
            for partition, (holder, epoch, expires_at, renewed_at) in enumerate(rows)
        ]

    def heartbeat(self, member: str, info: dict[str, Any] | None = None) -> None:
        check_member(member)
        text = check_member_info(info)
        with self._lock:
            self._check_open()
            now = time.time()
            known = self._members.get(member)
            if known is None:
                self._members[member] = (now, now, "{}" if text is None else text)
            else:
                self._members[member] = (known[0], now, known[2] if text is None else text)

    def members(self) -> list[MemberInfo]:
        with self._lock:
            self._check_open()
            now = time.time()
            found = sorted(self._members.items())
        return [MemberInfo(member, started_at, last_seen, now - last_seen, _decode(info))
                for member, (started_at, last_seen, info) in found]

    def leave(self, member: str) -> None:
        check_member(member)
        with self._lock:
            self._check_open()
            self._members.pop(member, None)
            self._release(member, [p for p, lease in self._leases.items() if lease[0] == member])

    def writers(self, saga_id: str) -> list[Writer]:
        with self._lock:
            entry = self._entry(saga_id)
        return [Writer(row[1], row[_MEMBER], row[_EPOCH]) for row in entry[_EVENTS]]

