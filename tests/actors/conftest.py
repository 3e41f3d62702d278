"""Fixtures for the actor runtime's tests: pools always stopped, and a thread-leak guard."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pykka
import pytest

from actors import MemoryInbox, Service, ServicePool


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every actor and thread a test starts must be gone when it ends."""
    refs_before = set(pykka.ActorRegistry.get_all())
    threads_before = set(threading.enumerate())
    yield
    leaked_refs = [ref for ref in pykka.ActorRegistry.get_all() if ref not in refs_before]
    for ref in leaked_refs:
        ref.stop(timeout=5)
    new = [t for t in threading.enumerate() if t not in threads_before]
    for thread in new:
        thread.join(timeout=5)
    alive = [t.name for t in new if t.is_alive()]
    assert not leaked_refs, f"actors left running: {leaked_refs}"
    assert not alive, f"threads left running: {alive}"


@pytest.fixture
def inbox() -> MemoryInbox:
    return MemoryInbox()


@pytest.fixture
def start_pool(inbox: MemoryInbox) -> Iterator[Callable[..., ServicePool[Any]]]:
    """``start_pool(services, name="svc", **kwargs)``: a pool stopped when the test ends."""
    pools: list[ServicePool[Any]] = []

    def start(services: Sequence[Service], name: str = "svc", **kwargs: Any) -> ServicePool[Any]:
        kwargs.setdefault("inbox", inbox)
        pool = ServicePool.start(name, services, **kwargs)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        for service in pool.instances:
            release = getattr(service, "release", None)
            if release is not None:
                release.set()
        assert pool.stop(timeout=5)
