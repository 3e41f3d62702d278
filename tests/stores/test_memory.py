"""The memory store passes the store contract."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from sagas.stores import MemoryStore, open_store

from .contract import StoreContract, append, new_saga


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
    sagas, their events and the global log are no tracked containers, however many."""
    store = MemoryStore()
    store.register_owner("o")
    sagas = 1000
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(sagas):
        store.create(new_saga(f"s{i}", n_events=3, owner="o"))
        store.append([append(f"s{i}", 4, 2, status="completed" if i % 2 else "running")])
    store.request("s0", "cancel")
    assert store.adopt("p", include_failed=True) == []
    gc.collect()
    gc.collect()
    assert len(gc.get_objects()) - before < sagas // 20
    assert len(store.read_all(0, 10 * sagas)) == 5 * sagas
