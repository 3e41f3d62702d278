"""The SQLite store's fence: the leases a fenced change (a write of ``_log``, a ``claim`` of
``_leases``) reads and checks in its open ``BEGIN IMMEDIATE`` transaction, under SQLite's write
lock, so that no acquirer changes them before it commits."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from sagas.stores._checks import FencePlan

from ._connection import _IDS_PER_QUERY, _placeholders

_SELECT_LEASES_IN = (
    "SELECT partition, member, epoch, expires_at FROM leases WHERE partition IN ({})"
)

# A lease as judged: (member, epoch, expires_at).
_Held = tuple["str | None", int, "float | None"]


def _lease_rows(db: sqlite3.Connection, partitions: Sequence[int]) -> dict[int, _Held]:
    """The leases of ``partitions``, by partition (a few statements per 500 of them)."""
    held: dict[int, _Held] = {}
    for start in range(0, len(partitions), _IDS_PER_QUERY):
        chunk = partitions[start:start + _IDS_PER_QUERY]
        for partition, member, epoch, expires_at in db.execute(
                _placeholders(_SELECT_LEASES_IN, chunk), chunk):
            held[partition] = (member, epoch, expires_at)
    return held


def _check_fence(db: sqlite3.Connection, plan: FencePlan) -> None:
    """``LeaseLost`` for the first partition of ``plan`` whose lease its member does not hold,
    unexpired, at its epoch (in the open transaction, which holds the write lock)."""
    held = _lease_rows(db, list(plan.partitions))
    now = time.time()
    member = plan.member
    for partition, (epoch, _) in plan.partitions.items():
        holder, held_epoch, expires_at = held.get(partition, (None, 0, None))
        if holder != member or held_epoch != epoch or expires_at is None or expires_at <= now:
            raise plan.lost(partition)
