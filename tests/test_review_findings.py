"""Adversarial review of the engine against DESIGN.md §3, §4 (1–6, 9) and the §6 JSON shapes.

Tests named ``test_guard_*`` confirm behaviour that is correct today in a corner nothing else
covers; every other test reproduces a bug found in the review (it fails until the bug is fixed).
Everything runs on virtual time (``SagaTestEnvironment``) or on the pure core with a fake env.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actors import Rejected, Service, handles
from sagas import IdConflict, core
from sagas.compiler import compile_flow
from sagas.errors import InputError, StoreError
from sagas.events import TERMINAL_EVENTS, Event
from sagas.stores.memory import MemoryStore
from sagas.testing import SagaTestEnvironment
from tests.support import Scripted, StepSpec, make_flow

ROOT = Path(__file__).resolve().parent.parent

# -- the §6 EVENT contract and the §4.5 invariants, checked on every history below -------------
DATA_KEYS = {
    "saga.started": {"input", "deadline_at"},
    "step.started": {"payload", "timeout_at"},
    "compensation.started": {"payload", "timeout_at"},
    "step.succeeded": {"output"},
    "compensation.succeeded": {"output"},
    "step.failed": {"error", "kind"},
    "compensation.failed": {"error", "kind"},
    "step.retrying": {"next_attempt_at"},
    "compensation.retrying": {"next_attempt_at"},
    "reply.ignored": {"phase", "attempt", "outcome"},
    "saga.failed": {"reason"},
}
PER_ATTEMPT = ("step.", "compensation.")
REPLY_OUTCOMES = ("succeeded", "failed")


def check_history(history: list[Event] | tuple[Event, ...]) -> None:
    """DESIGN.md §6 EVENT shape, §4.1 (nothing after a terminal event but a retry) and §4.5
    (an attempt has at most one ``timed_out`` and one reply outcome)."""
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    seen: set[str] = set()
    outcomes: Counter[tuple[str, str, str | None, int | None]] = Counter()
    ended = False
    for event in history:
        where = f"seq {event.seq} {event.type}"
        assert not ended or event.type == "saga.retried", f"{where} after a terminal event"
        ended = event.type in TERMINAL_EVENTS or (ended and event.type != "saga.retried")
        assert DATA_KEYS.get(event.type, set()) <= set(event.data), where
        if event.type.startswith(PER_ATTEMPT) or event.type == "reply.ignored":
            assert event.step is not None and event.attempt is not None, where
        if event.type.endswith(".failed") and event.type != "saga.failed":
            assert event.data["kind"] in ("rejected", "error"), where
        if event.type.startswith(PER_ATTEMPT):
            prefix, _, what = event.type.partition(".")
            bucket = "reply" if what in REPLY_OUTCOMES else what
            if bucket in ("reply", "timed_out"):
                outcomes[(prefix, bucket, event.step, event.attempt)] += 1
        if event.seq > 1 and event.type not in ("saga.cancelled", "saga.retried"):
            assert event.causation_id in seen, f"{where}: causation {event.causation_id!r}"
        seen.add(event.event_id)
    doubled = {k: n for k, n in outcomes.items() if n > 1}
    assert not doubled, f"an attempt has more than one outcome of a kind: {doubled}"


def attempts_of(history: Any, type_: str, step: str) -> list[int | None]:
    return [e.attempt for e in history if e.type == type_ and e.step == step]


# -- a service whose attempts can block and then answer in a chosen way -----------------------
class Gated(Service):
    """``do``/``undo`` for every step. ``script[(step, phase)]`` lists what each *call* does:
    ``ok``, ``reject``, ``error``, ``block`` (wait for :attr:`release`, then succeed) or
    ``block_reject`` (wait, then raise ``Rejected``); calls past the list succeed."""

    def __init__(self, script: dict[tuple[str, str], list[str]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[str, str, int]] = []
        self.release = threading.Event()
        self.blocked = threading.Event()

    def _run(self, command: Any, phase: str) -> dict[str, Any]:
        index = sum(1 for s, p, _ in self.calls if s == command.step and p == phase)
        self.calls.append((command.step, phase, command.attempt))
        plan = self.script.get((command.step, phase), [])
        what = plan[index] if index < len(plan) else "ok"
        if what.startswith("block"):
            self.blocked.set()
            assert self.release.wait(30), "the test never released the handler"
        if what in ("reject", "block_reject"):
            raise Rejected(f"{command.step} {phase} says no")
        if what == "error":
            raise RuntimeError(f"{command.step} {phase} broke")
        return {"step": command.step, "attempt": command.attempt}

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        return self._run(command, "action")

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return self._run(command, "compensation")


def _block_compensation_until_attempt_2_is_sent(env: SagaTestEnvironment, gate: Gated,
                                                flow: Any) -> str:
    """b is rejected; a's compensation attempt 1 blocks past its 5s timeout; after the 1s
    backoff attempt 2 is sent (and queues behind the blocked call)."""
    saga_id = env.start(flow, {})
    assert gate.blocked.wait(10)
    env.advance(5)
    env.wait_for(saga_id, "compensation.timed_out", step="a", attempt=1)
    env.advance(1)
    env.wait_for(saga_id, "compensation.started", step="a", attempt=2)
    return saga_id


# == bugs ======================================================================================
def test_late_rejected_compensation_reply_does_not_end_compensation_with_attempt_2_in_flight():
    """§3: a compensation's ``Rejected`` counts as a failed attempt; §4.5: only a late
    *succeeded*/*rejected* reply that ends the step is acted on, any other late reply is
    ``reply.ignored``. Here a's compensation attempt 1 timed out (already counted as a failed
    attempt) and attempt 2 is in flight when attempt 1's late ``Rejected`` arrives: it must not
    count attempt 1 a second time and exhaust the compensation while attempt 2 (which then
    succeeds) is still running. §4.2: the saga ends ``compensated``."""
    gate = Gated({("b", "action"): ["reject"], ("a", "compensation"): ["block_reject"]})
    flow = make_flow("a", "b", attempts=2, timeout="5s", backoff="1s")
    with SagaTestEnvironment(services={"svc": gate}) as env:
        saga_id = _block_compensation_until_attempt_2_is_sent(env, gate, flow)
        gate.release.set()
        result = env.drive(saga_id)
    assert (result.status, result.reason) == ("compensated", None)
    assert attempts_of(result.history, "compensation.succeeded", "a") == [2]
    check_history(result.history)


def test_late_rejected_compensation_reply_does_not_discard_the_in_flight_attempts_success():
    """§4.5: replies are matched on (phase, step, attempt); only "a late error, a reply for a
    step no longer in progress, a duplicate" are ``reply.ignored``. With ``attempts: 3``,
    attempt 1's late ``Rejected`` (attempt 2 in flight) is recorded as
    ``compensation.failed`` #1, which also marks the saga as having nothing in flight and
    schedules a backoff; attempt 2's ``succeeded`` then arrives for the attempt in progress and
    is recorded as ``reply.ignored``, and a third, needless compensation attempt runs.
    Expected: attempt 2's success completes the compensation; the handler runs twice."""
    gate = Gated({("b", "action"): ["reject"], ("a", "compensation"): ["block_reject"]})
    flow = make_flow("a", "b", attempts=3, timeout="5s", backoff="1s")
    with SagaTestEnvironment(services={"svc": gate}) as env:
        saga_id = _block_compensation_until_attempt_2_is_sent(env, gate, flow)
        gate.release.set()
        result = env.drive(saga_id)
    assert result.status == "compensated"
    assert attempts_of(result.history, "compensation.succeeded", "a") == [2]
    assert [a for s, p, a in gate.calls if p == "compensation"] == [1, 2]
    check_history(result.history)


def test_duplicate_late_rejected_compensation_reply_records_one_outcome_for_the_attempt():
    """§4.5: "an attempt has at most one ``timed_out`` and one reply outcome"; a duplicate
    reply is ``reply.ignored``. A's compensation attempt 1 times out, then its ``Rejected``
    arrives twice (a duplicated delivery) during the backoff: today both are recorded as
    ``compensation.failed`` for attempt 1 (each followed by another ``compensation.retrying``)."""
    gate = Gated({("b", "action"): ["reject"],
                  ("a", "compensation"): ["block_reject", "reject"]})
    flow = make_flow("a", "b", attempts=5, timeout="5s", backoff="1m")
    with SagaTestEnvironment(services={"svc": gate}) as env:
        env.faults.add(step="a", phase="compensation", kind="duplicate", attempts={1})
        saga_id = env.start(flow, {})
        assert gate.blocked.wait(10)
        env.advance(5)
        env.wait_for(saga_id, "compensation.retrying", step="a")
        gate.release.set()
        env.settle()
        result = env.drive(saga_id)
    assert result.status == "compensated"
    assert len(attempts_of(result.history, "compensation.failed", "a")) <= 1
    assert len(attempts_of(result.history, "compensation.retrying", "a")) == 1
    check_history(result.history)


def test_on_end_of_the_first_caller_survives_an_idempotent_start_of_the_same_id():
    """§4.9 (starting an existing id returns the existing saga) and ``Runtime.start``'s
    contract: ``on_end`` "is called when the saga ends". A second, idempotent ``start`` of a
    running saga with its own ``on_end`` overwrites the first caller's callback
    (``runtime.py``: ``self._callbacks[saga_id] = on_end``), which is then never called."""
    service = Scripted({("a", "action"): ["block"]})
    seen: list[tuple[str, str, str, str | None]] = []
    flow = make_flow("a")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.runtime.start(flow, {"n": 1}, "order-1",
                          on_end=lambda *args: seen.append(("first", *args)))
        assert service.blocked.wait(10)
        assert env.runtime.start(flow, {"n": 1}, "order-1",
                                 on_end=lambda *args: seen.append(("second", *args))) \
            == "order-1"
        service.release.set()
        env.drive("order-1")
        env.settle()
    assert sorted(seen) == [("first", "order-1", "completed", None),
                            ("second", "order-1", "completed", None)]


def test_a_conflicting_start_does_not_drop_the_running_sagas_on_end():
    """§4.9: a start with a different input is an error ("id exists with different input") —
    and nothing else. Today the failed start first overwrites the running saga's ``on_end``
    with its own, then pops it on the error: the original caller is never told the saga
    ended (``saga run --count`` waits on exactly this callback)."""
    service = Scripted({("a", "action"): ["block"]})
    seen: list[tuple[str, str | None]] = []
    flow = make_flow("a")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.runtime.start(flow, {"n": 1}, "order-2",
                          on_end=lambda _id, status, reason: seen.append((status, reason)))
        assert service.blocked.wait(10)
        with pytest.raises(IdConflict, match="different input"):
            env.runtime.start(flow, {"n": 2}, "order-2", on_end=lambda *args: None)
        service.release.set()
        env.drive("order-2")
        env.settle()
    assert seen == [("completed", None)]


def test_guard_retry_resumes_a_parked_compensation_and_ends_compensated():
    """Guard, §4.2: after a compensation runs out of attempts (``park``), ``saga retry ID``
    "appends ``saga.retried`` and resumes from the parked compensation". A bug at HEAD
    1e0f6f1 (``Runtime.retry`` told the shard, which had forgotten the ended saga: a silent
    no-op); the in-progress ``LoadSaga`` change re-hosts it. Keeps it fixed."""
    service = Scripted({("c", "action"): ["reject"], ("b", "compensation"): ["error", "error"]})
    with SagaTestEnvironment(services={"svc": service}) as env:
        first = env.run(make_flow("a", "b", "c", attempts=2), {})
        assert (first.status, first.reason) == ("failed", "compensation_failed")
        env.runtime.retry(first.saga_id)
        result = env.drive(first.saga_id)
    assert "saga.retried" in [e.type for e in result.history]
    assert result.status == "compensated"
    assert service.compensations() == ["b", "b", "b", "a"]
    check_history(result.history)


def test_retry_after_forward_recovery_rejection_runs_the_step_again():
    """§4.3: after the pivot, "if one is rejected or runs out, the saga ends ``failed``
    (``forward_recovery``) and ``saga retry`` drives it forward". The inbox stores an
    action's ``Rejected`` under ``saga_id:step`` (§3) and a retried attempt reuses that key,
    so the handler never runs again: every retry replays the old rejection (``saga.retried``,
    ``step.started`` #2, ``step.failed`` #2 "z says no", ``saga.failed`` again)."""
    service = Scripted({("z", "action"): ["reject"]})
    flow = make_flow("a", StepSpec("p", pivot=True), StepSpec("z", compensation=False))
    with SagaTestEnvironment(services={"svc": service}) as env:
        first = env.run(flow, {})
        assert (first.status, first.reason) == ("failed", "forward_recovery")
        env.runtime.retry(first.saga_id)
        result = env.drive(first.saga_id)
    assert service.actions().count("z") == 2  # the retry ran the handler again
    assert result.status == "completed"


def test_input_with_non_string_keys_is_refused_at_start_instead_of_hanging_the_saga():
    """§2/§6: the saga input is a JSON object; "a bad input" is an error at start (exit 2),
    and §4.1: every saga ends. ``validate_input`` only checks that ``json.dumps`` accepts the
    input, which silently turns ``{1: "x"}`` into ``{"1": "x"}``; the first step's command
    then fails to build (``Command`` refuses a non-string key) *after* ``start()`` returned,
    the step's timeout timer (sent after the command) is never set, and the saga stays
    ``running`` with nothing in flight, for ever. ``start()`` either returns its id or — when
    the shard's late ``ticket.resolve(error=...)`` wins the race — raises that ``TypeError``
    (an "internal error" for a CLI user), the saga being stuck in the store all the same."""
    with SagaTestEnvironment(services={"svc": Scripted()}) as env:
        with pytest.raises(InputError):
            env.start(make_flow("a"), {1: "x"})
        env.settle()
        assert env.runtime.store.in_flight() == []


def test_mutating_the_input_after_start_does_not_change_later_payloads():
    """§2: a step's payload is its ``input:`` evaluated on the saga context, whose ``input`` is
    the one recorded in ``saga.started``; §6 "recovery needs nothing beyond the log" and §3
    "payloads are immutable". The shard keeps the caller's own dict as ``saga.input``, so a
    caller that reuses its dict after ``start()`` changes what later steps are sent — the live
    run and a replay of its log disagree."""
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


class _CommitFails(MemoryStore):
    """A store whose appends fail (a full disk, a locked database) once ``failing`` is set."""

    failing = False

    def write(self, creates: Any, appends: Any) -> Any:
        if self.failing and appends:
            raise StoreError("disk I/O error")
        return super().write(creates, appends)


def test_wait_surfaces_a_failed_commit_instead_of_hanging():
    """§6: "5 for a store that cannot be used"; errors are one line, nothing hangs. When a
    decision cannot be committed the shard drops the saga from memory (``Shard._commit``) but
    nobody waiting on it is told: ``Runtime.wait``/``run`` (and so ``saga run``, which waits
    without a timeout) poll the store's ``running`` status for ever. Expected: the waiter gets
    a ``StoreError``."""
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


def test_cli_run_with_the_id_of_an_orphaned_running_saga_returns_instead_of_hanging(tmp_path):
    """§4.9: starting an id that exists with the same definition and input "returns the
    existing saga (running or finished)"; §5: ``saga run`` drives only its own sagas. A saga
    left ``running`` by a runtime that is gone is driven by no one, yet ``saga run --id`` waits
    for it to end, without a timeout: the command hangs. Expected: it prints the existing
    saga."""
    flow = make_flow("a", name="orphan_flow")
    path = tmp_path / "orphan_flow.yaml"
    path.write_text(flow.text, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with SagaTestEnvironment(store=url) as env:
        env.faults.add(step="a", kind="drop")  # a's reply never comes: the saga stays running
        env.start(path, {}, "order-7")
        env.settle()
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "run", str(path), "--input", "{}", "--id",
             "order-7", "--store", url, "--json"],
            capture_output=True, text=True, cwd=ROOT, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("`saga run --id` of an orphaned running saga hangs")
    assert json.loads(proc.stdout)["saga_id"] == "order-7", proc.stderr


# -- the pure core, with a fake env -----------------------------------------------------------
class FakeEnv:
    def __init__(self, now: float = 1_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def random(self, key: str) -> float:
        return 0.5


class CoreSaga:
    """Drives one saga through ``sagas.core`` by hand: replies and timers, in a chosen order."""

    def __init__(self, flow: Any, saga_id: str = "s-1") -> None:
        self.env = FakeEnv()
        self.compiled = compile_flow(flow)
        self.saga, self.events, commands = core.start(self.compiled, saga_id, {"n": 1},
                                                      self.env)
        self.timers = [c for c in commands if isinstance(c, core.SetTimer)]
        self.sent = [c for c in commands if isinstance(c, core.Execute)]

    def _take(self, result: tuple[list[Event], list[core.Command]]) -> list[Event]:
        events, commands = result
        self.events += events
        self.timers += [c for c in commands if isinstance(c, core.SetTimer)]
        self.sent += [c for c in commands if isinstance(c, core.Execute)]
        return events

    def send(self, signal: core.Signal) -> list[Event]:
        return self._take(core.handle(self.saga, signal, self.env))

    def reply(self, step: str, attempt: int, outcome: str = "succeeded",
              phase: str = "action") -> list[Event]:
        command = next(c for c in self.sent
                       if (c.step, c.phase, c.attempt) == (step, phase, attempt))
        ok = outcome == "succeeded"
        return self.send(core.ReplyReceived(phase, step, attempt, outcome,
                                            {"from": attempt} if ok else None,
                                            None if ok else f"{outcome}!", command.command_id))

    def fire(self, kind: str, step: str | None = None, attempt: int | None = None,
             phase: str | None = "action") -> list[Event]:
        """Fire the latest timer of ``kind`` (for ``phase``/``step``/``attempt``) at its time."""
        timer = [t for t in self.timers if t.kind == kind and
                 (kind == "deadline" or (t.phase, t.step) == (phase, step)) and
                 (attempt is None or t.attempt == attempt)][-1]
        self.env.t = max(self.env.t, timer.at)
        return self.send(timer.fired())

    def types(self) -> list[str]:
        return [f"{e.type}:{e.step}" if e.step else e.type for e in self.events]


def test_resume_rearms_the_deadline_with_its_causation():
    """§5: every event carries ``causation_id`` (the event or command that caused it). A saga
    replayed and resumed (§4.7) re-arms its deadline with ``causation_id=None``
    (``core.resume``), so the ``saga.deadline_exceeded`` it later records traces back to
    nothing, where an un-resumed saga's traces back to ``saga.started``."""
    run = CoreSaga(make_flow("a", deadline="10s", timeout="1m"))
    replayed = core.replay("s-1", run.compiled, run.events)
    _, commands = core.resume(replayed, run.env)
    timer = next(c for c in commands if isinstance(c, core.SetTimer) and c.kind == "deadline")
    run.env.t = timer.at
    events, _ = core.handle(replayed, timer.fired(), run.env)
    assert events[0].type == "saga.deadline_exceeded"
    assert events[0].causation_id == run.events[0].event_id  # saga.started


def test_resume_keeps_causation_of_backoff_and_timeout_after_an_ignored_reply():
    """§5 causation. After an ignored reply, ``core.resume`` re-arms the backoff (and records
    a passed timeout) with ``saga.last_event_id`` as the cause — the ``reply.ignored`` event —
    so the next ``step.started`` claims to be caused by an ignored reply instead of by its
    ``step.retrying`` (as it is without a resume)."""
    run = CoreSaga(make_flow("a", attempts=3, backoff="1m", timeout="5s"))
    run.fire("timeout", "a", 1)  # a#1 timed out, backoff 1m
    run.reply("a", 1, "error")  # late error: reply.ignored
    assert run.events[-1].type == "reply.ignored"
    retrying = next(e for e in run.events if e.type == "step.retrying")
    replayed = core.replay("s-1", run.compiled, run.events)
    _, commands = core.resume(replayed, run.env)
    backoff = next(c for c in commands if isinstance(c, core.SetTimer) and c.kind == "backoff")
    run.env.t = backoff.at
    events, _ = core.handle(replayed, backoff.fired(), run.env)
    assert events[0].type == "step.started" and events[0].causation_id == retrying.event_id


# == guards: correct today, in corners nothing else covers ======================================
def test_guard_late_success_of_timed_out_attempt_while_attempt_2_in_flight_ends_the_step():
    """Guard, §4.5: a late ``succeeded`` from timed-out attempt 1 ends the step with attempt
    1 while attempt 2 is in flight; attempt 2's reply is then ``reply.ignored``."""
    run = CoreSaga(make_flow("a", "b", attempts=3, backoff="1s", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    run.fire("backoff", "b", 1)
    run.reply("b", 1)
    run.reply("b", 2)
    b = [(e.type, e.attempt) for e in run.events if e.step == "b"]
    assert b == [("step.started", 1), ("step.timed_out", 1), ("step.retrying", 1),
                 ("step.started", 2), ("step.succeeded", 1)]
    assert run.saga.status == "completed"
    check_history(run.events)


def test_guard_late_reply_after_the_terminal_event_is_not_recorded():
    """Guard, §4.5: "never after a terminal event" — at the level of the core."""
    run = CoreSaga(make_flow("a", attempts=2, backoff="1s", timeout="5s"))
    run.fire("timeout", "a", 1)
    run.fire("backoff", "a", 1)
    run.reply("a", 2)
    assert run.saga.status == "completed"
    assert run.reply("a", 1) == [] and run.reply("a", 2) == []
    assert run.send(core.Cancel()) == []
    check_history(run.events)


def test_guard_late_rejection_of_timed_out_attempt_recovers_backward_without_compensating_it():
    """Guard, §4.2/§4.5: attempt 1 of b timed out, attempt 2 is in flight, attempt 1's late
    ``Rejected`` ends b as rejected: b is not compensated, a is."""
    run = CoreSaga(make_flow("a", "b", attempts=3, backoff="1s", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    run.fire("backoff", "b", 1)
    run.reply("b", 1, "rejected")
    assert run.types()[-2:] == ["step.failed:b", "compensation.started:a"]
    assert run.events[-2].attempt == 1 and run.events[-2].data["kind"] == "rejected"
    run.reply("b", 2, "rejected")  # attempt 2's (replayed) rejection: ignored
    run.reply("a", 1, phase="compensation")
    assert run.saga.status == "compensated"
    assert "compensation.started:b" not in run.types()
    check_history(run.events)


def test_guard_late_error_of_timed_out_attempt_is_ignored():
    """Guard, §4.5: a late *error* is ``reply.ignored`` and does not count again."""
    run = CoreSaga(make_flow("a", attempts=2, backoff="1s", timeout="5s"))
    run.fire("timeout", "a", 1)
    run.reply("a", 1, "error")
    assert run.events[-1].type == "reply.ignored"
    assert run.events[-1].data == {"phase": "action", "attempt": 1, "outcome": "error"}
    run.fire("backoff", "a", 1)
    run.reply("a", 2)
    assert run.saga.status == "completed"
    check_history(run.events)


def test_guard_deadline_during_backoff_compensates_the_step_without_a_timed_out():
    """Guard, §4.4: a deadline during backoff cancels it; the step (started, its outcome an
    error) is compensated (§4.2); no ``step.timed_out`` since nothing was in flight."""
    run = CoreSaga(make_flow("a", "b", attempts=3, backoff="1m", timeout="5s",
                             deadline="30s"))
    run.reply("a", 1)
    run.reply("b", 1, "error")
    run.fire("deadline")
    assert run.types()[-2:] == ["saga.deadline_exceeded", "compensation.started:b"]
    assert run.fire("backoff", "b", 1) == []  # the cancelled backoff is stale
    run.reply("b", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.saga.status == "compensated"
    check_history(run.events)


def test_guard_deadline_and_timeout_due_at_the_same_instant_time_the_attempt_out_once():
    """Guard, §4.4/§4.5: timeout and deadline both at t+10, in either order: one
    ``step.timed_out`` for the attempt, recovery backward once."""
    for order in (("timeout", "deadline"), ("deadline", "timeout")):
        run = CoreSaga(make_flow("a", "b", timeout="10s", deadline="10s"))
        for kind in order:
            if kind == "deadline":
                run.fire("deadline")
            else:
                run.fire("timeout", "a", 1)
        assert [e.type for e in run.events].count("step.timed_out") == 1
        assert run.types()[-1] == "compensation.started:a"
        check_history(run.events)


def test_guard_deadline_and_a_reply_at_the_same_instant_either_order():
    """Guard, §4.4/§4.5: the deadline first: the in-flight b counts as timed out, its reply is
    then ``reply.ignored`` and b is compensated; the reply first: b succeeded, c (now in
    flight) counts as timed out. Either way one outcome per attempt."""
    run = CoreSaga(make_flow("a", "b", "c", timeout="1m", deadline="10s"))
    run.reply("a", 1)
    run.fire("deadline")
    run.reply("b", 1)
    assert run.types()[-4:] == ["saga.deadline_exceeded", "step.timed_out:b",
                                "compensation.started:b", "reply.ignored:b"]
    check_history(run.events)
    run = CoreSaga(make_flow("a", "b", "c", timeout="1m", deadline="10s"))
    run.reply("a", 1)
    run.env.t += 10
    run.reply("b", 1)
    run.fire("deadline")
    assert run.types()[-3:] == ["saga.deadline_exceeded", "step.timed_out:c",
                                "compensation.started:c"]
    check_history(run.events)


def test_guard_cancel_during_backoff_compensates_the_step_in_backoff():
    """Guard, §4.4: cancel takes the deadline path: backoff dropped, no ``step.timed_out``,
    the errored step and its predecessors are compensated. A second cancel does nothing."""
    run = CoreSaga(make_flow("a", "b", attempts=3, backoff="1m"))
    run.reply("a", 1)
    run.reply("b", 1, "error")
    run.send(core.Cancel())
    assert run.types()[-2:] == ["saga.cancelled", "compensation.started:b"]
    assert run.send(core.Cancel()) == []
    run.reply("b", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.saga.status == "compensated"
    check_history(run.events)


def test_guard_cancel_after_the_pivot_is_recorded_and_the_saga_carries_on():
    """Guard, §4.4: after the pivot succeeded, a cancel records ``saga.cancelled`` and forward
    recovery carries on (the in-flight step is left alone)."""
    run = CoreSaga(make_flow(StepSpec("p", pivot=True), StepSpec("z", compensation=False)))
    run.reply("p", 1)
    assert run.send(core.Cancel())[0].type == "saga.cancelled"
    assert run.saga.status == "running" and run.saga.in_flight
    run.reply("z", 1)
    assert run.saga.status == "completed"
    check_history(run.events)


@pytest.mark.parametrize("outcome, status, reason", [
    ("succeeded", "completed", None),
    ("rejected", "compensated", None),
    ("error", "failed", "pivot_unknown"),
])
def test_guard_a_flow_of_only_a_pivot(outcome, status, reason):
    """Guard, §4.3: a lone pivot: success completes; rejected recovers backward (nothing to
    undo: ``compensated``); out of attempts, its outcome is unknown: ``pivot_unknown``."""
    run = CoreSaga(make_flow(StepSpec("p", pivot=True)))
    run.reply("p", 1, outcome)
    assert (run.saga.status, run.saga.reason) == (status, reason)
    assert not any(e.type.startswith("compensation.") for e in run.events)
    check_history(run.events)


def test_guard_first_step_pivot_in_flight_at_the_deadline_ends_pivot_unknown():
    """Guard, §4.4: an in-flight pivot at the deadline counts as timed out: ``failed``
    (``pivot_unknown``), nothing compensated — also when it is the first step."""
    run = CoreSaga(make_flow(StepSpec("p", pivot=True), StepSpec("z", compensation=False),
                             timeout="1m", deadline="10s"))
    run.fire("deadline")
    assert run.types()[-3:] == ["saga.deadline_exceeded", "step.timed_out:p", "saga.failed"]
    assert run.saga.reason == "pivot_unknown"
    check_history(run.events)


def test_guard_pivot_in_backoff_at_the_deadline_ends_pivot_unknown():
    """Guard, §4.3/§4.4: a pivot whose attempt errored, in backoff at the deadline, has an
    unknown outcome: ``pivot_unknown`` and nothing compensated."""
    run = CoreSaga(make_flow("a", StepSpec("p", pivot=True), attempts=3, backoff="1m",
                             deadline="10s"))
    run.reply("a", 1)
    run.reply("p", 1, "error")
    run.fire("deadline")
    assert (run.saga.status, run.saga.reason) == ("failed", "pivot_unknown")
    assert not any(e.type.startswith("compensation.") for e in run.events)


def test_guard_steps_without_compensation_before_the_pivot_are_skipped_backward():
    """Guard, §4.2: steps without a compensation (a and c) are passed over; b is undone."""
    flow = make_flow(StepSpec("a", compensation=False, extra={"effects": "none"}), "b",
                     StepSpec("c", compensation=False, extra={"effects": "none"}),
                     StepSpec("p", pivot=True))
    run = CoreSaga(flow)
    for step in ("a", "b", "c"):
        run.reply(step, 1)
    run.reply("p", 1, "rejected")
    assert [t for t in run.types() if t.startswith("compensation.started")] == \
        ["compensation.started:b"]
    run.reply("b", 1, phase="compensation")
    assert run.saga.status == "compensated"
    check_history(run.events)


def test_guard_compensation_timeout_then_late_success_completes_it_once():
    """Guard, §4.2 ("each completes exactly once") and §4.5: a's compensation attempt 1 times
    out; its late success during backoff ends it (attempt 1); the stale backoff and a
    duplicate success do nothing more."""
    run = CoreSaga(make_flow("a", "b", attempts=3, backoff="1m", timeout="5s"))
    run.reply("a", 1)
    run.reply("b", 1, "rejected")
    run.fire("timeout", "a", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.saga.status == "compensated"
    assert run.reply("a", 1, phase="compensation") == []
    assert attempts_of(run.events, "compensation.succeeded", "a") == [1]
    check_history(run.events)


def test_guard_retry_forever_keeps_compensating_through_timeouts_with_capped_backoff():
    """Guard, §4.1/§4.2: ``retry_forever`` never gives up on timeouts either, its backoff
    capped; the deadline stays disarmed while compensating."""
    run = CoreSaga(make_flow("a", "b", attempts=2, backoff="10s", max_backoff="40s",
                             timeout="5s", deadline="1h", on_compensation_failure="retry_forever"))
    run.reply("a", 1)
    run.reply("b", 1, "rejected")
    for attempt in range(1, 9):
        run.fire("timeout", "a", attempt, phase="compensation")
        run.fire("backoff", "a", attempt, phase="compensation")
    assert run.saga.status == "compensating"
    assert run.fire("deadline") == []
    delays = [e.data["next_attempt_at"] - e.at for e in run.events
              if e.type == "compensation.retrying"]
    assert max(delays) == 40.0
    run.reply("a", 9, phase="compensation")
    assert run.saga.status == "compensated"
    check_history(run.events)


def test_guard_compensation_carries_the_action_payload_and_result_and_its_own_key():
    """Guard, §3: a compensation carries its action's payload and ``result`` (the output, or
    ``None`` when the action's outcome is unknown), key ``saga_id:step:compensation``."""
    run = CoreSaga(make_flow("a", "b", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    comps = [c for c in run.sent if c.phase == "compensation"]
    assert [(c.step, c.key, c.result) for c in comps] == [("b", "s-1:b:compensation", None)]
    run.reply("b", 1, phase="compensation")
    a_comp = [c for c in run.sent if c.phase == "compensation"][-1]
    a_action = next(c for c in run.sent if c.step == "a" and c.phase == "action")
    assert (a_comp.key, a_comp.payload, a_comp.result) == \
        ("s-1:a:compensation", a_action.payload, {"from": 1})
    assert a_action.key == "s-1:a"


def test_guard_histories_through_the_runtime_keep_the_event_contract():
    """Guard, §6 EVENT shape and §4.5 on real runs: retries, a timeout with a late success, a
    duplicate, compensations, a cancel."""
    gate = Gated({("b", "action"): ["block"], ("c", "action"): ["error", "reject"]})
    flow = make_flow("a", "b", "c", attempts=3, backoff="1m", timeout="5s")
    with SagaTestEnvironment(services={"svc": gate}) as env:
        env.faults.add(step="a", kind="duplicate")
        saga_id = env.start(flow, {})
        assert gate.blocked.wait(10)
        env.advance(5)
        env.wait_for(saga_id, "step.retrying", step="b")
        gate.release.set()
        result = env.drive(saga_id)
        cancelled = env.runtime.cancel(saga_id)  # terminal: nothing happens
    assert result.status == "compensated"
    assert len(cancelled.history) == len(result.history)
    check_history(result.history)
    doc = result.to_json()
    assert json.loads(json.dumps(doc)) == doc
    for event in doc["history"]:
        if event["type"].startswith("saga."):
            assert event["attempt"] is None


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
