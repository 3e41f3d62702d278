"""The engine's behaviour beyond the §4 rules: retries (and the keys a retry asks under), inbox
semantics, pools, threads, hangs, the saga input, and failures of the store and of a timer."""

from __future__ import annotations

import threading
import time
import zlib
from itertools import pairwise
from typing import Any

import pytest

from actors import Rejected, Service, handles
from sagas import Runtime
from sagas.engine import core
from sagas.errors import InputError, StoreError
from sagas.stores import MemoryStore
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


def test_retry_after_forward_recovery_rejection_runs_the_step_again():
    """§4.3: after the pivot, "if one is rejected or runs out, the saga ends ``failed``
    (``forward_recovery``) and ``saga retry`` drives it forward". The inbox stores an
    action's ``Rejected`` under ``saga_id:step`` (§3); a retried attempt must ask anew under
    another key, or the handler never runs again and every retry replays the old rejection
    (``saga.retried``, ``step.started`` #2, ``step.failed`` #2 "z says no", ``saga.failed``
    again), as it once did."""
    service = Scripted({("z", "action"): ["reject"]})
    flow = make_flow("a", StepSpec("p", pivot=True), StepSpec("z", compensation=False))
    with SagaTestEnvironment(services={"svc": service}) as env:
        first = env.run(flow, {})
        assert (first.status, first.reason) == ("failed", "forward_recovery")
        env.runtime.retry(first.saga_id)
        result = env.drive(first.saga_id)
    assert service.actions().count("z") == 2  # the retry ran the handler again
    assert result.status == "completed"


def test_a_retry_after_a_visit_that_timed_out_keeps_the_key_of_the_rejected_one():
    """§3 and the retry rule: a retry asks anew (a fresh key) only when the visit that parked
    the saga ended in a *rejection*. Here the first visit of z is rejected (so the first retry
    uses ``:retry1``), the second visit runs out on time-outs while the service's late "no" is
    stored under ``:retry1``; the second retry must send that key again (and get the stored
    "no"), not ask anew: the engine used to remember the first visit's rejection. Found by
    ``tests/test_engine_stateful.py``."""
    service = Scripted({("z", "action"): ["reject", "reject"]})
    flow = make_flow("a", StepSpec("p", pivot=True), StepSpec("z", compensation=False),
                     attempts=2, timeout="1s")
    with SagaTestEnvironment(services={"svc": service}) as env:
        first = env.run(flow, {})
        assert (first.status, first.reason) == ("failed", "forward_recovery")
        env.faults.add(step="z", kind="run_then_drop")  # the "no" is stored, its reply lost
        env.runtime.retry(first.saga_id)
        second = env.drive(first.saga_id)
        assert (second.status, second.reason) == ("failed", "forward_recovery")
        env.faults.clear()
        env.runtime.retry(first.saga_id)
        third = env.drive(first.saga_id)
    keys = [c.key for c in service.calls if c.step == "z"]
    assert keys == [f"{first.saga_id}:z", f"{first.saga_id}:z:retry1"]  # no third run
    last = [e for e in third.history if e.step == "z" and e.type == "step.failed"][-1]
    assert last.data["kind"] == "rejected"
    assert (third.status, third.reason) == ("failed", "forward_recovery")


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


# -- the saga input ---------------------------------------------------------------------------
def test_input_with_non_string_keys_is_refused_at_start_instead_of_hanging_the_saga():
    """§2/§6: the saga input is a JSON object; "a bad input" is an error at start (exit 2),
    and §4.1: every saga ends. ``json.dumps`` silently turns ``{1: "x"}`` into
    ``{"1": "x"}``, so an input check that only asks whether it can be dumped lets it through;
    the first step's command then fails to build (``Command`` refuses a non-string key) *after*
    ``start()`` returned, the step's timeout timer is never set, and the saga stays
    ``running`` with nothing in flight, for ever (or ``start()`` raises the shard's late
    ``TypeError``, the saga stuck in the store all the same). It is refused at start."""
    with SagaTestEnvironment(services={"svc": Scripted()}) as env:
        with pytest.raises(InputError):
            env.start(make_flow("a"), {1: "x"})
        env.settle()
        assert env.runtime.store.in_flight() == []


def test_mutating_the_input_after_start_does_not_change_later_payloads():
    """§2: a step's payload is its ``input:`` evaluated on the saga context, whose ``input`` is
    the one recorded in ``saga.started``; §6 "recovery needs nothing beyond the log" and §3
    "payloads are immutable". The shard must not keep the caller's own dict as
    ``saga.input``: a caller that reuses its dict after ``start()`` would change what later
    steps are sent, and the live run and a replay of its log would disagree."""
    service = Scripted({("a", "action"): ["block"]})
    flow = make_flow("a", StepSpec("b", extra={"input": {"qty": "$.input.qty"}}))
    order = {"qty": 1}
    with SagaTestEnvironment(services={"svc": service}) as env:
        saga_id = env.start(flow, order)
        assert service.blocked.wait(10)
        order["qty"] = 99  # the caller reuses its dict for the next order
        service.release.set()
        result = env.drive(saga_id)
    started_b = next(e for e in result.history if e.type == "step.started" and e.step == "b")
    assert result.history[0].data["input"] == {"qty": 1}
    assert started_b.data["payload"] == {"qty": 1}



# -- a store that fails, a timer that fails ---------------------------------------------------
class _CommitFails(MemoryStore):
    """A store whose appends fail (a full disk, a locked database) once ``failing`` is set."""

    failing = False

    def write(self, creates: Any, appends: Any) -> Any:
        if self.failing and appends:
            raise StoreError("disk I/O error")
        return super().write(creates, appends)


def test_wait_surfaces_a_failed_commit_instead_of_hanging():
    """§6: "5 for a store that cannot be used"; errors are one line, nothing hangs. When a
    decision cannot be committed the shard drops the saga from memory (``Shard._commit``);
    whoever waits on it is told with a ``StoreError``, where ``Runtime.wait``/``run`` (and so
    ``saga run``, which waits without a timeout) once polled the store's ``running`` status
    for ever."""
    store = _CommitFails()
    try:
        with SagaTestEnvironment(store=store) as env:
            store.failing = True
            saga_id = env.start(make_flow("a", "b"), {})  # saga.started is a create: it works
            env.settle()  # a's reply cannot be committed
            with pytest.raises(StoreError):
                env.runtime.wait(saga_id, timeout=0.5)
    finally:
        store.close()


def test_a_timer_that_fails_does_not_stop_the_other_timers(monkeypatch: pytest.MonkeyPatch):
    """A bug in deciding one saga's timer fails that saga's timer only: the others still
    fire (here the good saga's step times out and it is compensated)."""
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
