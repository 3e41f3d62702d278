"""A runtime that fails part-way through starting stops what it started: no thread is left to
keep the process alive, and the error is the store's own."""

from __future__ import annotations

import threading

import pytest

from sagas.engine.runtime import Runtime
from sagas.stores.memory import MemoryStore


def started_by(action) -> set[threading.Thread]:
    """The non-daemon threads that ``action`` left running (threads others start meanwhile,
    such as `saga test`'s daemon workers, do not keep a process alive and are not counted)."""
    before = set(threading.enumerate())
    action()
    return {t for t in set(threading.enumerate()) - before if not t.daemon}


class BrokenStore(MemoryStore):
    """A store that opens, then fails when the runtime reads where its event log ends."""

    def last_event_position(self) -> int:
        raise OSError("disk I/O error")


def test_a_store_failing_after_the_shards_started_leaves_no_thread_running():
    def start() -> None:
        with pytest.raises(OSError, match="disk I/O error"):
            Runtime(BrokenStore())

    for thread in started_by(start):
        thread.join(timeout=10)
        assert not thread.is_alive(), f"{thread.name} is still running"


def test_a_refused_subscriber_stops_the_runtime_it_was_given_to():
    from sagas.bus import Subscriber

    def start() -> None:
        with pytest.raises(ValueError):
            Runtime("memory://", subscribers=[Subscriber("", ["*"], lambda delivery: None)])

    for thread in started_by(start):
        thread.join(timeout=10)
        assert not thread.is_alive(), f"{thread.name} is still running"
