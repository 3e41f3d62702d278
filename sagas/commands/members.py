"""``saga members``: the members driving a shared store, the partitions each holds, and the
sagas nobody drives.

A *member* is an orchestrator process on a store shared by several (``saga serve`` on
PostgreSQL, or a ``saga run`` there while no member is alive): it announces itself in the
store, holds the leases of a share of its partitions and drives their sagas
(:mod:`sagas.engine.membership`). :func:`store_members` is what ``saga members`` shows
(:func:`~.session.live_members` is how the other commands tell whether one is alive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..stores import LeaseInfo, MemberInfo, SagaStore, partition_of
from .session import is_alive, is_shared, store_session

__all__ = ["MembersReport", "members_of", "store_members"]


@dataclass
class MembersReport:
    """What ``saga members`` shows: the store (its masked URL), its number of partitions, its
    members (:meth:`to_json` gives each one's shape), the partitions nobody holds, and the
    sagas in flight nobody drives, each with why."""

    store: str
    partitions: int
    members: list[dict[str, Any]]
    unheld_partitions: list[int]
    undriven: list[dict[str, Any]] = field(default_factory=list)
    shared: bool = False  # a store members drive (PostgreSQL)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "partitions": self.partitions, "members": self.members,
                "unheld_partitions": self.unheld_partitions, "undriven": self.undriven}


def _member_row(member: str, known: MemberInfo | None, held: Sequence[LeaseInfo],
                partitions: int) -> dict[str, Any]:
    info = known.info if known is not None else {}
    said = info.get("undriven_sagas")
    undriven_sagas = [{"saga_id": s.get("saga_id"), "flow": s.get("flow"),
                       "partition": partition_of(str(s.get("saga_id")), partitions)}
                      for s in (said if isinstance(said, list) else ()) if isinstance(s, dict)]
    return {
        "member": member,
        "host": info.get("host"),
        "pid": info.get("pid"),
        "alive": known is not None and is_alive(known),
        "seen_ago": round(known.seen_ago, 3) if known is not None else None,
        "started_at": known.started_at if known is not None else None,
        "partitions": [lease.partition for lease in held],
        "epochs": {str(lease.partition): lease.epoch for lease in held},
        "runs": list(info.get("runs") or []),
        "undriven": info.get("undriven", len(undriven_sagas)),
        "undriven_sagas": undriven_sagas,
    }


def _flows_of(store: SagaStore, saga_ids: Sequence[str]) -> dict[str, str]:
    """The flow of each of ``saga_ids``: in a few reads when there are many."""
    if len(saga_ids) <= 20:
        return {saga_id: store.header(saga_id).flow for saga_id in saga_ids}
    wanted = set(saga_ids)
    return {h.saga_id: h.flow for status in ("running", "compensating")
            for h in store.list(status=status) if h.saga_id in wanted}


def members_of(store: SagaStore) -> MembersReport:
    """The members of an open store and what they drive (see :class:`MembersReport`)."""
    count = store.partitions()
    leases = store.leases()
    known = {m.member: m for m in store.members()}
    held: dict[str, list[LeaseInfo]] = {}
    for lease in leases:
        if lease.held and lease.member is not None:
            held.setdefault(lease.member, []).append(lease)
    rows = [_member_row(member, known.get(member), held.get(member, []), count)
            for member in sorted(set(known) | set(held))]
    unheld = [lease.partition for lease in leases if not lease.held]
    shared = is_shared(store)
    undriven: list[dict[str, Any]] = []
    if shared or any(row["alive"] for row in rows):  # else the sagas' owners drive them
        free = set(unheld)
        ids = [s for s in store.in_flight() if partition_of(s, count) in free]
        flows = _flows_of(store, ids)
        undriven = [{"saga_id": s, "flow": flows.get(s), "partition": partition_of(s, count),
                     "why": "unheld", "member": None} for s in ids]
        for row in rows:
            undriven.extend({**saga, "why": "cannot_run", "member": row["member"]}
                            for saga in row["undriven_sagas"])
    return MembersReport(store.url, count, rows, unheld, undriven, shared)


def store_members(store_url: str) -> MembersReport:
    """``saga members``: the members of the store at ``store_url`` (which must exist:
    ``StoreMissing`` otherwise, creating nothing)."""
    with store_session(store_url, create=False) as store:
        return members_of(store)

