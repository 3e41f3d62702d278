"""The memory store passes the store contract."""

from __future__ import annotations

from pathlib import Path

from sagas.stores import MemoryStore, open_store

from .contract import StoreContract, new_saga


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
