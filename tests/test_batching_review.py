"""Regressions found by a review of the batching engine (issue 6): one failure must stay one
saga's problem, and the runtime's idle count must not run ahead of the replies."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support import make_flow

from actors import Activity, Command, Faults, MemoryInbox, Service, ServicePool, handles
from sagas import Runtime, core
from sagas.events import Event
from sagas.stores import Append, MemoryStore
from sagas.testing import SagaTestEnvironment

WAIT = 10.0


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


class Echo(Service):
    @handles("do")
    def do(self, command: Command) -> dict[str, Any]:
        return {"ok": command.saga_id}


class BreaksOn:
    """A fault injector that crashes the actor on one saga's command."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id

    def decide(self, command: Command) -> None:
        if command.saga_id == self.saga_id:
            raise RuntimeError("fault injector broke")


class Probe(Activity):
    """An Activity that records how many replies had arrived each time it became idle."""

    def __init__(self, received: list[Any]) -> None:
        super().__init__()
        self.received = received
        self.idle_at: list[int] = []

    def end(self, n: int = 1) -> None:
        super().end(n)
        if self.count == 0:
            self.idle_at.append(len(self.received))


def test_a_crashing_batch_is_idle_only_after_its_replies_are_sent():
    received: list[Any] = []
    activity = Probe(received)
    lock = threading.Condition()

    class Receiver:  # handles each reply at once, as a shard would
        def tell(self, message: Any) -> None:
            with lock:
                received.extend(getattr(message, "replies", (message,)))
                lock.notify_all()
            activity.end()

    pool = ServicePool.start("svc", [Echo()], inbox=MemoryInbox(), faults=BreaksOn("boom"),
                             activity=activity)
    try:
        commands = [Command(f"c{i}", saga_id, "a", "action", "do", 1, f"{saga_id}:a", {})
                    for i, saga_id in enumerate(["ok-1", "ok-2", "boom"])]
        pool.tell_many(commands, activity.counting(Receiver()))
        with lock:
            assert lock.wait_for(lambda: len(received) == 3, WAIT)
        assert activity.wait_idle(WAIT)
    finally:
        pool.stop()
    assert [r.outcome for r in received] == ["succeeded", "succeeded", "error"]
    idle_at = activity.idle_at
    assert idle_at and all(n == 3 for n in idle_at), idle_at  # never idle with replies unsent


def test_one_saga_that_cannot_be_resumed_does_not_strand_the_others():
    flow = make_flow("a", "b", timeout="1h")
    store = MemoryStore()
    faults = Faults()
    faults.add(step="a", kind="drop")  # every saga stays in flight at step a
    first = Runtime(store, faults=faults)
    ids = [first.start(flow, {"n": n}, f"s-{n}") for n in range(5)]
    assert first.wait_idle(WAIT)
    header = store.header("s-0")  # a corrupt log: a step.started without an attempt
    seq = header.last_seq + 1
    store.append([Append("s-0", (Event(seq, "step.started", "a", None, time.time(),
                                       f"s-0/{seq}", None, {"payload": None}),),
                         "running", None, time.time())])
    store._owners.discard(first.owner)  # the first runtime "died": its sagas are orphans
    try:
        with Runtime(store) as second:
            assert sorted(second.recover(ids)) == ids
            for saga_id in ids[1:]:
                assert second.wait(saga_id, timeout=WAIT).status == "completed"
    finally:
        first.close()


def test_a_timer_that_fails_does_not_stop_the_other_timers(monkeypatch: pytest.MonkeyPatch):
    real = core.handle

    def handle(saga: Any, signal: Any, env: Any) -> Any:
        if saga.saga_id == "bad" and isinstance(signal, core.TimerFired):
            raise RuntimeError("a bug deciding one timer")
        return real(saga, signal, env)

    monkeypatch.setattr(core, "handle", handle)
    flow = make_flow("a", timeout="10s", attempts=1)
    with SagaTestEnvironment(shards=1) as env:
        env.faults.add(step="a", kind="drop")
        env.start(flow, {"k": 0}, "bad")
        env.settle()
        env.advance(1)
        env.start(flow, {"k": 1}, "good")
        env.settle()
        env.advance(30)
        env.settle()
        result = env.result("good")
    assert result.status == "compensated"
    assert "step.timed_out" in [e.type for e in result.history]
