"""``Runtime.submit``: starts that do not wait for their commit, and the group commit behind
them (the shard commits what it decided while its mailbox held more, then acts)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support import make_flow

from sagas import IdConflict, InputError, Runtime, Submitted
from sagas.stores import MemoryStore

WAIT = 30.0


class Ends:
    """An ``on_end`` callback that records what it is told and wakes waiters."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.seen: list[tuple[str, str, str | None]] = []

    def __call__(self, saga_id: str, status: str, reason: str | None) -> None:
        with self.lock:
            self.seen.append((saga_id, status, reason))
            self.lock.notify_all()

    def wait(self, n: int) -> list[tuple[str, str, str | None]]:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.seen) >= n, WAIT), self.seen
            return list(self.seen)


class CountingStore(MemoryStore):
    """A memory store that counts its write transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []  # (creates, appends) per write

    def write(self, creates: Any, appends: Any) -> Any:
        self.writes.append((len(creates), len(appends)))
        return super().write(creates, appends)


def test_submitted_sagas_all_run_and_end_through_on_end():
    ends = Ends()
    flow = make_flow("a", "b", "c")
    with Runtime() as runtime:
        pending = [runtime.submit(flow, {"n": n}, f"s-{n}", on_end=ends) for n in range(300)]
        assert all(isinstance(p, Submitted) for p in pending)
        assert [p.result(WAIT) for p in pending] == [True] * 300
        seen = ends.wait(300)
        assert sorted(seen) == sorted((f"s-{n}", "completed", None) for n in range(300))
        for p in pending[:5]:
            result = runtime.result(p.saga_id)
            assert [e.type for e in result.history].count("step.succeeded") == 3
        (service,) = runtime.instances("tests.support:Scripted")
        assert len(service.calls) == 900


def test_starts_share_commits_when_the_mailbox_is_busy():
    store = CountingStore()
    flow = make_flow("a")
    with Runtime(store, shards=1) as runtime:
        pending = [runtime.submit(flow, {"n": n}) for n in range(500)]
        assert all(p.result(WAIT) for p in pending)
        assert runtime.wait_idle(WAIT)
    creates = [c for c, _ in store.writes if c]
    assert sum(creates) == 500
    assert len(creates) < 500  # some commits carried several starts


def test_a_refused_start_is_reported_by_result_and_never_ends():
    ends = Ends()
    flow = make_flow("a")
    with Runtime() as runtime:
        runtime.run(flow, {"n": 1}, "taken", timeout=WAIT)
        refused = runtime.submit(flow, {"n": 2}, "taken", on_end=ends)
        with pytest.raises(IdConflict, match="different input"):
            refused.result(WAIT)
        assert isinstance(refused.exception(), IdConflict)
        assert runtime.wait_idle(WAIT)
    assert ends.seen == []


def test_submitting_an_ended_saga_again_calls_on_end_before_result_returns():
    ends = Ends()
    flow = make_flow("a")
    with Runtime() as runtime:
        runtime.run(flow, {"n": 1}, "done", timeout=WAIT)
        again = runtime.submit(flow, {"n": 1}, "done", on_end=ends)
        assert again.result(WAIT) is False
        assert ends.seen == [("done", "completed", None)]


def test_bad_input_is_refused_at_once():
    flow = make_flow("a", schema={"type": "object", "required": ["n"]})
    with Runtime() as runtime, pytest.raises(InputError, match="'n' is a required property"):
        runtime.submit(flow, {})


def test_a_duplicate_start_in_the_same_commit_is_the_same_saga():
    store = CountingStore()
    flow = make_flow("a")
    with Runtime(store, shards=1) as runtime:
        first = runtime.submit(flow, {"n": 1}, "twin")
        second = runtime.submit(flow, {"n": 1}, "twin")
        third = runtime.submit(flow, {"n": 2}, "twin")
        assert first.result(WAIT) is True
        assert second.result(WAIT) is False
        with pytest.raises(IdConflict):
            third.result(WAIT)
        assert runtime.wait(first.saga_id, timeout=WAIT).status == "completed"
    assert sum(c for c, _ in store.writes) == 1


def test_a_failing_flush_does_not_stop_the_shard():
    """The scheduler stopped (as while closing) makes arming a timer fail after the commit:
    every start is still answered and the shard keeps going."""
    flow = make_flow("a", "b")
    with Runtime() as runtime:
        runtime.scheduler.stop()
        pending = [runtime.submit(flow, {"n": n}, f"s-{n}") for n in range(50)]
        assert all(p.result(WAIT) for p in pending)
        assert runtime._shards[0].is_alive()
        assert runtime.wait_idle(WAIT)
        later = runtime.submit(flow, {"n": 99}, "later")
        assert later.result(WAIT) is True


class FailingCreates(MemoryStore):
    """A memory store whose creates fail once ``after`` sagas exist."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def write(self, creates: Any, appends: Any) -> Any:
        if creates and len(self.in_flight()) + len(self.list(status="completed")) >= self.after:
            from sagas import StoreUnavailable

            raise StoreUnavailable("saga store: disk full")
        return super().write(creates, appends)


def test_a_batch_run_stops_with_the_error_of_a_refused_start():
    from sagas.commands.batch import run_batch

    flow = make_flow("a")
    with Runtime(FailingCreates(after=5)) as runtime, \
            pytest.raises(Exception, match="disk full"):
        run_batch(runtime, flow, [{"n": 1}], total=50, concurrency=10)
