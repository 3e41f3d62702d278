"""The PostgreSQL store: the store contract against a real server, plus what only a server can
do wrong (URLs and passwords, databases and schemas, owners in other processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sagas.stores import SagaStore, open_store
from sagas.stores.contract import StoreContract
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[SagaStore]:  # noqa: F811
        self.url = postgres_url
        store = open_store(postgres_url)
        yield store
        store.close()

    def open_again(self, store: SagaStore) -> SagaStore:
        return open_store(self.url, create=False)
