"""The engine's behaviour beyond the §4 rules: retries, inbox semantics, pools, threads, hangs."""

from __future__ import annotations

import threading
import time
import zlib
from itertools import pairwise
from typing import Any

import pytest

from actors import Rejected, Service, handles
from sagas import Runtime
from sagas.testing import SagaTestEnvironment
from tests.support import Scripted, StepSpec, make_flow, types


def test_retries_attempts_count_total_tries_and_backoff_grows_by_the_multiplier():
    service = Scripted({("b", "action"): ["error"] * 4})
    with SagaTestEnvironment(services={"svc": service}) as env:
        result = env.run(make_flow("a", "b", attempts=4, backoff="1s", multiplier=3,
                                   max_backoff="5s"), {})
    assert result.status == "compensated"
    assert service.actions().count("b") == 4  # attempts: 4 means four tries in all
    started = [e for e in result.history if e.type == "step.started" and e.step == "b"]
    assert [e.attempt for e in started] == [1, 2, 3, 4]
    gaps = [round(later.at - earlier.at, 6) for earlier, later in pairwise(started)]
    assert gaps == [1.0, 3.0, 5.0]  # 1s, 3s, then 9s capped at max_backoff 5s
    retrying = [e for e in result.history if e.type == "step.retrying"]
    assert [e.attempt for e in retrying] == [1, 2, 3]


def test_retries_jitter_draws_from_the_seeded_random_source():
    def delays(seed: int) -> list[float]:
        service = Scripted({("a", "action"): ["error"] * 3})
        with SagaTestEnvironment(services={"svc": service}, seed=seed) as env:
            result = env.run(make_flow("a", attempts=4, backoff="10s", jitter=True), {})
        return [round(e.data["next_attempt_at"] - e.at, 6)
                for e in result.history if e.type == "step.retrying"]

    first, again, other = delays(1), delays(1), delays(2)
    assert first == again != other
    for delay, base in zip(first, [10, 20, 40], strict=True):
        assert base * 0.5 <= delay < base


def test_retry_after_an_error_runs_the_handler_again():
    service = Scripted({("a", "action"): ["error"]})
    with SagaTestEnvironment(services={"svc": service}) as env:
        result = env.run(make_flow("a", attempts=2), {})
    assert result.status == "completed"
    assert [c.attempt for c in service.calls] == [1, 2]
    assert all(c.key == f"{result.saga_id}:a" for c in service.calls)  # one key for all tries


def test_redelivery_after_success_returns_the_stored_reply_without_running():
    service = Scripted()
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.faults.add(step="a", phase="action", kind="duplicate")
        result = env.run(make_flow("a", "b"), {})
    assert result.status == "completed"
    assert service.actions() == ["a", "b"]  # the duplicate did not run a second time
    assert [e.data["outcome"] for e in result.history if e.type == "reply.ignored"] == \
        ["succeeded"]


def test_handlers_run_on_their_actors_thread():
    pool = [Scripted() for _ in range(3)]
    with SagaTestEnvironment(services={"svc": pool}) as env:
        flow = make_flow("a", "b", instances=3)
        for n in range(12):
            env.run(flow, {"n": n})
    caller = threading.current_thread().name
    for instance in pool:
        threads = {c.thread for c in instance.calls}
        assert len(threads) <= 1 and caller not in threads
    assert len({c.thread for i in pool for c in i.calls}) == sum(1 for i in pool if i.calls) > 1


class Exploding(Service):
    """Raises exceptions that are hard to report: unprintable, unpicklable, SystemExit."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        self.tries += 1
        kind = command.payload.get("kind")
        if kind == "unprintable":
            class Unprintable(Exception):
                def __str__(self) -> str:
                    raise RuntimeError("no")

                def __repr__(self) -> str:
                    raise RuntimeError("no")
            raise Unprintable()
        if kind == "unpicklable":
            raise ValueError(threading.Lock())
        if kind == "exit":
            raise SystemExit(3)
        if kind == "not_a_dict":
            return ["not", "an", "object"]  # type: ignore[return-value]
        if kind == "not_json":
            return {"when": object()}
        raise Rejected("unknown kind")

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("kind", ["unprintable", "unpicklable", "exit", "not_a_dict",
                                  "not_json"])
def test_handlers_raising_arbitrary_exceptions_are_errors_and_the_actor_lives(kind):
    service = Exploding()
    flow = make_flow("a", "b", attempts=2)
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.faults.add(step="a", kind="error", attempts={99})  # unused rule: faults stay empty
        result = env.run(flow, {"kind": kind})
        failures = [e for e in result.history if e.type == "step.failed"]
        assert result.status == "compensated"
        assert [f.data["kind"] for f in failures] == ["error", "error"]
        assert all(f.data["error"] and "\n" not in f.data["error"] for f in failures)
        assert service.tries == 2
        # the actor still serves: a later saga runs its handler again
        again = env.run(flow, {"kind": "other"})
        assert again.status == "compensated" and service.tries == 3


def _instance_of(saga_id: str, instances: int) -> int:
    return zlib.crc32(saga_id.encode()) % instances


@pytest.mark.parametrize("pivot", [False, True])
def test_a_hung_handler_times_out_and_other_instances_keep_working(pivot):
    """A step with attempts: 2 whose handler blocks until both attempts have timed out."""
    pool = [Scripted() for _ in range(8)]
    stuck_id = "stuck-saga"
    blocked = pool[_instance_of(stuck_id, 8)]
    blocked.script = {("b", "action"): ["block"]}
    flow = make_flow("a", StepSpec("b", pivot=pivot), attempts=2, timeout="5s", backoff="1s",
                     instances=8)
    with SagaTestEnvironment(services={"svc": pool}) as env:
        env.start(flow, {}, saga_id=stuck_id)
        assert blocked.blocked.wait(10)
        env.advance(5)  # attempt 1 times out
        env.wait_for(stuck_id, "step.retrying", step="b")
        env.advance(1)  # attempt 2 is sent, and queues behind the blocked call
        env.wait_for(stuck_id, "step.started", step="b", attempt=2)
        env.advance(5)  # attempt 2 times out: the step has run out of attempts
        env.wait_for(stuck_id, "saga.failed" if pivot else "compensation.started")
        # meanwhile, sagas routed to the other instances complete
        others = [f"other-{n}" for n in range(40)]
        others = [i for i in others if _instance_of(i, 8) != _instance_of(stuck_id, 8)][:10]
        for saga_id in others:
            env.start(flow, {}, saga_id=saga_id)
        for saga_id in others:
            env.wait_for(saga_id, "saga.completed")
        blocked.release.set()
        result = env.drive(stuck_id)
    b_events = [(e.type, e.attempt) for e in result.history if e.step == "b"]
    if pivot:
        assert (result.status, result.reason) == ("failed", "pivot_unknown")
        # the late replies arrive after the terminal event: nothing is recorded
        assert result.history[-1].type == "saga.failed"
        assert "reply.ignored" not in types(result)
    else:
        assert result.status == "compensated"
        ignored = [e.data for e in result.history if e.type == "reply.ignored"]
        # both late action replies, from attempts 1 and 2, come while compensating: ignored
        assert ignored == [{"phase": "action", "attempt": 1, "outcome": "succeeded"},
                           {"phase": "action", "attempt": 2, "outcome": "succeeded"}]
        assert ("compensation.succeeded", 1) in b_events
    assert [c.attempt for c in blocked.calls if c.step == "b" and c.phase == "action"] == [1]


class Slow(Service):
    """Actions take real time; records when each call starts and ends."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str, float, float]] = []
        self.pause = threading.Event()

    def _work(self, command: Any, phase: str) -> dict[str, Any]:
        begin = time.monotonic()
        if phase == "action" and command.payload.get("slow"):
            self.pause.wait(0.05)  # longer than the step's timeout
        self.log.append((f"{command.saga_id}:{command.step}", phase, begin, time.monotonic()))
        return {}

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        return self._work(command, "action")

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return self._work(command, "compensation")


def test_pool_of_8_with_timeouts_never_runs_a_compensation_before_its_action_finished():
    pool = [Slow() for _ in range(8)]
    flow = make_flow("a", "b", attempts=1, timeout="20ms", instances=8)
    with Runtime(services={"svc": pool}, shards=2) as runtime:
        ids = [runtime.start(flow, {"slow": n % 2 == 0}) for n in range(40)]
        results = [runtime.wait(i, timeout=30) for i in ids]
    timed_out = [r for r in results if any(e.type == "step.timed_out" for e in r.history)]
    assert len(timed_out) >= 10  # the slow half timed out while their actions still ran
    for instance in pool:
        ended: dict[str, float] = {}
        for key, phase, begin, end in instance.log:
            if phase == "action":
                ended[key] = end
            else:
                assert key not in ended or ended[key] <= begin, key
                assert key in ended  # the compensation did not overtake a queued action


class _Replies:
    """A reply_to that collects replies and lets the test wait for them."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.arrived = threading.Condition()

    def tell(self, reply: Any) -> None:
        with self.arrived:
            self.replies.append(reply)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[Any]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.replies) >= count, 10)
            return list(self.replies)


def test_a_late_action_after_its_compensation_is_rejected_without_running():
    from actors import Command, MemoryInbox, ServicePool

    service = Scripted()
    replies = _Replies()
    undo = Command("c-2", "s-1", "b", "compensation", "undo", 1, "s-1:b:compensation", {})
    late = Command("c-1", "s-1", "b", "action", "do", 1, "s-1:b", {})
    with ServicePool.start("svc", [service], inbox=MemoryInbox()) as pool:
        pool.tell(undo, replies)
        pool.tell(late, replies)
        compensation, action = replies.wait(2)
    assert compensation.outcome == "succeeded"
    assert action.outcome == "rejected" and not action.replayed
    assert [c.phase for c in service.calls] == ["compensation"]  # the action never ran
