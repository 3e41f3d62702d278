"""The memory store passes the store contract (:mod:`sagas.stores.contract`)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from sagas.stores import MemoryStore, open_store
from sagas.stores.contract import StoreContract, append, new_saga


class TestMemoryStore(StoreContract):
    def make_store(self, tmp_path: Path) -> MemoryStore:
        return MemoryStore()


def test_each_memory_store_is_fresh_and_empty() -> None:
    first = open_store("memory://")
    first.create(new_saga("s"))
    second = open_store("memory://")
    assert isinstance(second, MemoryStore) and second is not first
    assert second.list() == []
    assert MemoryStore().list() == []
    assert first.url == second.url == "memory://"


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's collector")
def test_what_the_store_keeps_is_not_traversed_by_the_garbage_collector() -> None:
    """Full collections stay cheap as the store grows (issue 6): after a collection or two,
    sagas, their events, the global log and the external events are no tracked containers,
    however many."""
    store = MemoryStore()
    store.register_owner("o")
    sagas = 1000
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(sagas):
        store.create(new_saga(f"s{i}", n_events=3, owner="o"))
        store.append([append(f"s{i}", 4, 2, status="completed" if i % 2 else "running")])
        store.send_event("Paid", f"o-{i % 100}", {"i": i}, event_id=f"e-{i}", sent_at=float(i))
        if i % 3 == 0:
            assert store.claim_event("Paid", f"o-{i % 100}", f"s{i}", at=float(i)) is not None
    store.request("s0", "cancel")
    assert store.adopt("p", include_failed=True) == []
    gc.collect()
    gc.collect()
    assert len(gc.get_objects()) - before < sagas // 20
    assert len(store.read_all(0, 10 * sagas)) == 5 * sagas
    assert len(store.events_after(0, 10 * sagas)) == sagas


def test_external_events_read_and_claim_across_frozen_chunks() -> None:
    store = MemoryStore()
    n = 2600  # two frozen chunks of 1024, then a tail
    for i in range(n):
        store.send_event("Paid", f"o-{i % 2}", {"i": i}, event_id=f"e-{i}", sent_at=float(i))
    assert [e.position for e in store.events_after(0, n)] == list(range(1, n + 1))
    for start, limit in [(0, 5), (1020, 10), (1000, 1100), (2047, 3), (2040, 1000), (n - 1, 9)]:
        assert [e.data["i"] for e in store.events_after(start, limit)] == list(
            range(start, min(start + limit, n))
        )
    # o-0 holds the even i: claims walk them in order, across the chunks
    for i in range(0, n, 2):
        taken = store.claim_event("Paid", "o-0", f"s{i}", at=1.0)
        assert taken is not None and taken.event_id == f"e-{i}"
    assert store.claim_event("Paid", "o-0", "late", at=1.0) is None
    again = store.claim_event("Paid", "o-0", "s0", at=2.0)
    assert again is not None and (again.position, again.consumed_at) == (1, 1.0)
    assert store.send_event("Paid", "o-0", event_id="e-1500", sent_at=0.0)[0].consumed_by == "s1500"
    assert sum(e.consumed_by is not None for e in store.events_after(0, n)) == n // 2
